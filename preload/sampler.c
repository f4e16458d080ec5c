/*
 * sampler.c: Poisson sampling by bytes (as Go's runtime and jemalloc do), and the set of sampled
 * blocks that are still live, so that frees are written only for those.
 *
 * Sampling: each thread counts down the bytes to its next sample. The distance is drawn as
 * floor(-R ln u) + 1 with u uniform in (0, 1], a geometric variable with mean ~R; since it is
 * memoryless, an allocation of s bytes is sampled with probability 1 - exp(-s/R) whatever came
 * before, independently of every other allocation. The analyzer weights each sample by the
 * inverse of that probability (Horvitz-Thompson), which makes every estimate unbiased.
 * Zero-byte requests count as one byte so that they can be sampled at all.
 *
 * The countdown, ap_hot.sample_left, is read and decremented inline by the hooks (sampler.h); this
 * file is only reached when it runs out (a sample) or is not armed, always under the guard, so
 * what it reads and arms is the parked copy, ap_hot.parked (shim.h).
 *
 * The set: open addressing with backward-shift deletion. Writers (a sampled allocation or free,
 * rare by construction) take a spinlock; readers take no lock: they read a sequence counter
 * before and after probing and retry if a writer ran meanwhile. In front of it, a counting filter
 * (sampler.h) keyed by address bits 4-19: an unsampled free is one byte load, and the table
 * is probed only when the byte is non-zero (a live sampled block in the same bucket).
 */
#include "events.h"
#include "sampler.h"

#include <math.h>
#include <string.h>
#include <sys/mman.h>

static AP_TLS uint64_t tl_rng;
static atomic_uint_fast64_t seed_sequence;

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t draw(void)
{
	/* xorshift64*: a few cycles, per thread, no shared state. */
	tl_rng ^= tl_rng >> 12;
	tl_rng ^= tl_rng << 25;
	tl_rng ^= tl_rng >> 27;
	uint64_t r = tl_rng * 0x2545f4914f6cdd1dull;
	double u = (double)((r >> 11) + 1) * 0x1p-53; /* (0, 1] */
	double d = -(double)ap_cfg.sample_bytes * log(u);
	return d >= 0x1p62 ? (uint64_t)INT64_MAX : (uint64_t)d + 1;
}

void ap_sample_arm(void)
{
	if (!ap_cfg.sample_bytes || !ap_events_attached())
		return;
	if (AP_UNLIKELY(!tl_rng)) {
		/* A thread's generator is seeded from the process seed and a per-process sequence,
		 * so threads (and, through the seed, processes) sample differently, while a fixed
		 * ALLOCPROF_SEED makes a single-threaded run reproducible. */
		uint64_t x = ap_cfg.seed + atomic_fetch_add(&seed_sequence, 1) * 0x9e3779b97f4a7c15ull;
		tl_rng = splitmix64(&x) | 1;
	}
	ap_hot.parked = draw(); /* >= 1: armed */
}

/* The same decision as the hooks' inline take: sampled iff the weight reaches the countdown. */
bool ap_sample_slow(size_t size)
{
	if (AP_UNLIKELY(!ap_sample_armed())) {
		ap_sample_arm();
		if (!ap_sample_armed())
			return false; /* no record: nothing of this thread could be written */
	}
	uint64_t w = ap_sample_weight(size);
	if (w < ap_hot.parked) {
		ap_hot.parked -= w;
		return false;
	}
	ap_hot.parked = draw();
	return true;
}

/* ---- the set of live sampled blocks ------------------------------------------------------------- */

struct table {
	size_t cap; /* a power of two */
	_Atomic(uintptr_t) slot[];
};

_Atomic uint8_t ap_sampled_filter[1u << AP_FILTER_BITS];

/* Under set_lock. A saturated bucket stays saturated (it may then say "maybe" for nothing). */
static void filter_inc(const void *p)
{
	_Atomic uint8_t *b = &ap_sampled_filter[ap_filter_slot(p)];
	uint8_t v = atomic_load_explicit(b, memory_order_relaxed);
	if (v != UINT8_MAX)
		atomic_store_explicit(b, v + 1, memory_order_relaxed);
}

static void filter_dec(const void *p)
{
	_Atomic uint8_t *b = &ap_sampled_filter[ap_filter_slot(p)];
	uint8_t v = atomic_load_explicit(b, memory_order_relaxed);
	if (v != UINT8_MAX && v)
		atomic_store_explicit(b, v - 1, memory_order_relaxed);
}

static _Atomic(struct table *) table;
static atomic_uint seq; /* odd while a writer is changing the table */
static ap_spinlock set_lock = ATOMIC_FLAG_INIT;
static size_t count;

static size_t home(const struct table *t, uintptr_t p)
{
	uint64_t h = (uint64_t)p * 0x9e3779b97f4a7c15ull;
	return (size_t)(h >> 32) & (t->cap - 1);
}

static struct table *table_new(size_t cap)
{
	struct table *t = ap_sys_map(sizeof(*t) + cap * sizeof(t->slot[0]));
	if (t)
		t->cap = cap;
	return t;
}

static void insert_into(struct table *t, uintptr_t p)
{
	size_t i = home(t, p);
	while (atomic_load_explicit(&t->slot[i], memory_order_relaxed))
		i = (i + 1) & (t->cap - 1);
	atomic_store_explicit(&t->slot[i], p, memory_order_relaxed);
}

static void write_begin(void)
{
	ap_lock(&set_lock);
	atomic_fetch_add_explicit(&seq, 1, memory_order_acq_rel);
}

static void write_end(void)
{
	atomic_fetch_add_explicit(&seq, 1, memory_order_release);
	ap_unlock(&set_lock);
}

bool ap_sampled_add(const void *ptr)
{
	uintptr_t p = (uintptr_t)ptr;
	write_begin();
	struct table *t = atomic_load_explicit(&table, memory_order_relaxed);
	if (!t || (count + 1) * 2 > t->cap) {
		/* Grow at half full. The old table is not unmapped: a reader may still be probing
		 * it (it will notice the sequence change and retry); tables only double, so what
		 * is kept is less than the current one. */
		struct table *n = table_new(t ? t->cap * 2 : 1024);
		if (!n) {
			write_end();
			return false;
		}
		if (t)
			for (size_t i = 0; i < t->cap; i++) {
				uintptr_t v = atomic_load_explicit(&t->slot[i], memory_order_relaxed);
				if (v)
					insert_into(n, v);
			}
		atomic_store_explicit(&table, n, memory_order_release);
		t = n;
	}
	insert_into(t, p);
	filter_inc(ptr);
	count++;
	write_end();
	return true;
}

void ap_sampled_pin(const void *p)
{
	ap_lock(&set_lock);
	atomic_store_explicit(&ap_sampled_filter[ap_filter_slot(p)], UINT8_MAX, memory_order_relaxed);
	ap_unlock(&set_lock);
}

static bool find(const struct table *t, uintptr_t p, size_t *at)
{
	size_t i = home(t, p);
	for (size_t n = 0; n < t->cap; n++, i = (i + 1) & (t->cap - 1)) {
		uintptr_t v = atomic_load_explicit(&t->slot[i], memory_order_relaxed);
		if (v == p) {
			*at = i;
			return true;
		}
		if (!v)
			return false;
	}
	return false;
}

bool ap_sampled_contains(const void *ptr)
{
	for (;;) {
		unsigned s = atomic_load_explicit(&seq, memory_order_acquire);
		struct table *t = atomic_load_explicit(&table, memory_order_acquire);
		if (!t)
			return false;
		size_t at;
		bool found = find(t, (uintptr_t)ptr, &at);
		atomic_thread_fence(memory_order_acquire);
		if (!(s & 1) && s == atomic_load_explicit(&seq, memory_order_relaxed))
			return found;
	}
}

bool ap_sampled_remove(const void *ptr)
{
	uintptr_t p = (uintptr_t)ptr;
	write_begin();
	struct table *t = atomic_load_explicit(&table, memory_order_relaxed);
	size_t hole;
	bool found = t && find(t, p, &hole);
	if (found) {
		/* Backward shift: no tombstones, so probes stay short however long the run. */
		size_t mask = t->cap - 1;
		for (size_t j = (hole + 1) & mask;; j = (j + 1) & mask) {
			uintptr_t v = atomic_load_explicit(&t->slot[j], memory_order_relaxed);
			if (!v)
				break;
			size_t h = home(t, v);
			if (((j - h) & mask) >= ((j - hole) & mask)) {
				atomic_store_explicit(&t->slot[hole], v, memory_order_relaxed);
				hole = j;
			}
		}
		atomic_store_explicit(&t->slot[hole], 0, memory_order_relaxed);
		filter_dec(ptr);
		count--;
	}
	write_end();
	return found;
}

void ap_sampler_forked_child(void)
{
	/* The child may not trace at all (ALLOCPROF_NO_CHILDREN, or tracing was off): its first
	 * calls take the slow path, which finds out and arms the fast paths again if it does. */
	ap_hot.parked = 0; /* under the fork handlers' guard */
	atomic_flag_clear(&set_lock);
	if (atomic_load(&seq) & 1)
		atomic_fetch_add(&seq, 1);
}
