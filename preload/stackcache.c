/*
 * stackcache.c: a per-thread cache of recently seen stacks, validated before reuse, so that an
 * allocation from the same call chain as a moment ago costs a few loads instead of an unwind.
 * Return addresses on the stack are only read, never patched.
 *
 * Why validation is exact. Let ret_k be the return address stored in slot_k, the stack word the
 * call into frame k pushed (ret_0 is where the allocation call returns to, slot_0 is found by
 * walking the shim's own frame pointers). The distance slot_k - slot_{k-1} is the size of the
 * frame of the function that called from ret_{k-1}, which is fixed at that call site (the
 * compiler's CFA rule there). So if slot_0 is the same word as before and every slot computed
 * from slot_0 with those fixed sizes still holds the same return address, then by induction the
 * chain of callers is the same chain: each matching ret_{k-1} pins the function, hence the size
 * that locates slot_k, whose content is a real return address, not stale memory.
 *
 * A stack cut at the depth kept is cached too: the function that holds the last return address kept
 * had a caller when the stack was first captured, so it is not the outermost frame and has one
 * now, and the cut mark still holds.
 *
 * The sizes come from libunwind's cursor API (the CFA of each frame), which costs ~700 ns a frame
 * here, so it runs once for a stack that recurs (its second miss), and its results are shared by
 * all threads in a map from call site to frame size. A call site whose frame size varies (alloca,
 * a signal frame) is marked variable and stacks through it are never cached; a variable frame
 * would also change slot_0 itself, so the cache key catches it first.
 */
#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include "events.h"
#include "stacks.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>

#define SC_SETS 64
/* Many stacks can share a key (same call site, same stack depth, different callers further up:
 * 200 paths of depth 30-60 hit 82% with 8 ways, 94% with 16). */
#define SC_WAYS 16
#define SC_MAXF 64                /* stacks deeper than this are not cached */
#define SC_MAX_SPAN (8u << 20)    /* a slot further than this from slot_0 is not trusted */
/* Every SC_PROBE lookups, a thread whose hit rate was under a quarter pauses its cache for
 * SC_PAUSE allocations (1024 alternating call chains here: 477 ns a pair with the cache, 280
 * without). */
#define SC_PROBE 4096
#define SC_PAUSE 65536

/* ---- frame sizes by call site, shared by all threads ---------------------------------------------- */

#define FS_SLOTS (1u << 18)
#define FS_VARIABLE 1 /* the stored value for a call site whose frame size varies */

struct fs_entry {
	_Atomic(uintptr_t) ip;
	_Atomic(uint64_t) size; /* size << 1 | 0 when known; FS_VARIABLE; 0 not yet set */
};

static struct fs_entry *fs_table;

static struct fs_entry *fs_find(uintptr_t ip, bool insert)
{
	if (!fs_table)
		return NULL;
	size_t i = (size_t)((ip * 0x9e3779b97f4a7c15ull) >> 40) & (FS_SLOTS - 1);
	for (size_t n = 0; n < 64; n++, i = (i + 1) & (FS_SLOTS - 1)) {
		uintptr_t cur = atomic_load_explicit(&fs_table[i].ip, memory_order_acquire);
		if (cur == ip)
			return &fs_table[i];
		if (!cur) {
			if (!insert)
				return NULL;
			if (atomic_compare_exchange_strong(&fs_table[i].ip, &cur, ip) || cur == ip)
				return &fs_table[i];
		}
	}
	return NULL; /* a long probe run: not worth caching */
}

/* The frame size at call site ip: >= 8 when known, 0 unknown, -1 variable. */
static int64_t fs_get(uintptr_t ip)
{
	struct fs_entry *e = fs_find(ip, false);
	uint64_t v = e ? atomic_load_explicit(&e->size, memory_order_acquire) : 0;
	return v == 0 ? 0 : v == FS_VARIABLE ? -1 : (int64_t)(v >> 1);
}

static void fs_set(uintptr_t ip, int64_t size)
{
	struct fs_entry *e = fs_find(ip, true);
	if (!e)
		return;
	uint64_t want = size > 0 && size < (int64_t)SC_MAX_SPAN && !(size & 7) ? (uint64_t)size << 1 : FS_VARIABLE;
	uint64_t cur = 0;
	if (!atomic_compare_exchange_strong(&e->size, &cur, want) && cur != want)
		atomic_store(&e->size, FS_VARIABLE); /* seen with two sizes */
}

/* ---- the per-thread cache ---------------------------------------------------------------------------- */

struct sc_entry {
	uintptr_t ret0, slot0;
	struct ap_stack *stack; /* NULL: empty */
	uint32_t off[SC_MAXF];  /* slot_k - slot_0 */
};

struct sc_cache {
	struct sc_cache *next_free;
	/* This thread's own stack. Only chains whose slot_0 lies inside it are cached: its memory is
	 * contiguous up to stack_hi, so every slot read is mapped. A program running on stacks of its
	 * own (coroutines, sigaltstack) is unwound every time instead. */
	uintptr_t stack_lo, stack_hi;
	/* A miss costs more than no cache at all (the insertion reads the stack again), so a thread
	 * whose stacks are too varied to hit pauses the cache, then tries again (see SC_PROBE). */
	uint32_t probes, hits, pause;
	uint8_t victim[SC_SETS];
	/* A set's keys side by side, so that a lookup scans two cache lines, not 16 entries. */
	uint64_t tag[SC_SETS][SC_WAYS]; /* 0: empty */
	struct sc_entry e[SC_SETS][SC_WAYS];
};

static AP_TLS struct sc_cache *tl_cache;
static AP_TLS bool tl_no_cache; /* this thread's stack bounds are unknown */
static pthread_key_t cache_key;
static ap_spinlock free_lock = ATOMIC_FLAG_INIT;
static struct sc_cache *free_caches;

/* At thread exit the cache goes back to a free list: programs that create thousands of
 * threads reuse a handful of caches. */
static void cache_release(void *arg)
{
	struct sc_cache *c = arg;
	tl_cache = NULL;
	ap_lock(&free_lock);
	c->next_free = free_caches;
	free_caches = c;
	ap_unlock(&free_lock);
}

void ap_stackcache_init(void)
{
	fs_table = ap_sys_map(FS_SLOTS * sizeof(*fs_table));
	pthread_key_create(&cache_key, cache_release);
}

static struct sc_cache *cache_self(void)
{
	struct sc_cache *c = tl_cache;
	if (AP_LIKELY(c) || tl_no_cache)
		return c;
	/* The stack's upper end bounds every read; glibc may allocate while finding it (it reads
	 * /proc/self/maps for the main thread): the guard makes those calls the shim's own. */
	/* Signals blocked meanwhile: a handler's malloc would pass as the shim's own, unrecorded
	 * and not counted as lost. */
	sigset_t all, old_mask;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old_mask);
	int saved = ap_guard_enter(2);
	pthread_attr_t attr;
	void *lo;
	size_t size;
	bool ok = pthread_getattr_np(pthread_self(), &attr) == 0;
	if (ok) {
		ok = pthread_attr_getstack(&attr, &lo, &size) == 0;
		pthread_attr_destroy(&attr);
	}
	ap_guard_leave(saved);
	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	if (!ok) {
		tl_no_cache = true;
		return NULL;
	}
	ap_lock(&free_lock);
	c = free_caches;
	if (c)
		free_caches = c->next_free;
	ap_unlock(&free_lock);
	if (c)
		memset(c, 0, sizeof(*c));
	else if (!(c = ap_sys_map(sizeof(*c)))) {
		tl_no_cache = true;
		return NULL;
	}
	c->stack_lo = (uintptr_t)lo;
	c->stack_hi = (uintptr_t)lo + size;
	tl_cache = c;
	pthread_setspecific(cache_key, c);
	return c;
}

bool ap_stackcache_key(struct ap_stack_key *key)
{
	/* The shim is built with frame pointers: from this function up through the interposed
	 * function, each frame's saved frame pointer and return address are at fp[0] and fp[1].
	 * The first return address outside the shim is the program's call. */
	uintptr_t *fp = __builtin_frame_address(0);
	for (int i = 0; i < 8 && fp; i++) {
		uintptr_t ret = fp[1];
		if (!ap_modules_in_shim(ret)) {
			key->ret0 = ret;
			key->slot0 = (uintptr_t)&fp[1];
			return true;
		}
		uintptr_t *up = (uintptr_t *)fp[0];
		if (up <= fp || (uintptr_t)up - (uintptr_t)fp > 65536)
			return false;
		fp = up;
	}
	return false;
}

static uint64_t hash_of(const struct ap_stack_key *key)
{
	return key->ret0 ^ (key->slot0 * 0x9e3779b97f4a7c15ull);
}

static size_t set_of(uint64_t h)
{
	return (size_t)((h >> 17) & (SC_SETS - 1));
}

static uint64_t tag_of(uint64_t h)
{
	return h | 1; /* never 0 */
}

struct ap_stack *ap_stackcache_lookup(const struct ap_stack_key *key)
{
	struct sc_cache *c = cache_self();
	if (!c)
		return NULL;
	if (c->pause) {
		c->pause--;
		return NULL;
	}
	if (key->slot0 < c->stack_lo || key->slot0 >= c->stack_hi)
		return NULL;
	if (++c->probes == SC_PROBE) {
		if (c->hits < SC_PROBE / 4)
			c->pause = SC_PAUSE;
		c->probes = c->hits = 0;
	}
	uint32_t generation = atomic_load_explicit(&ap_generation, memory_order_relaxed);
	uint64_t h = hash_of(key), tag = tag_of(h);
	size_t si = set_of(h);
	for (int w = 0; w < SC_WAYS; w++) {
		if (c->tag[si][w] != tag)
			continue;
		struct sc_entry *e = &c->e[si][w];
		struct ap_stack *s = e->stack;
		if (!s || e->ret0 != key->ret0 || e->slot0 != key->slot0 || s->generation != generation)
			continue;
		uint32_t k = 1;
		for (; k < s->nframes; k++)
			if (*(const uintptr_t *)(key->slot0 + e->off[k]) != s->frames[k])
				break;
		if (k == s->nframes) {
			c->hits++;
			return s;
		}
	}
	return NULL;
}

/* One walk with libunwind's cursor, recording the frame size at every call site on the stack. */
static void learn_frame_sizes(void)
{
	unw_context_t ctx;
	unw_cursor_t cur;
	if (unw_getcontext(&ctx) || unw_init_local(&cur, &ctx))
		return;
	uintptr_t prev_ip = 0, prev_sp = 0;
	bool prev_signal = false;
	for (int steps = 0; steps < SC_MAXF + 16 && unw_step(&cur) > 0; steps++) {
		unw_word_t ip, sp;
		if (unw_get_reg(&cur, UNW_REG_IP, &ip) || unw_get_reg(&cur, UNW_REG_SP, &sp))
			return;
		/* After stepping into the frame at ip, sp is the CFA of the frame below: the size of
		 * the frame that called from prev_ip is the distance between the two. Past a signal
		 * trampoline the interrupted address is in the signal frame, not in a return slot:
		 * stacks through one are never cached. */
		if (prev_ip && !ap_modules_in_shim(prev_ip))
			fs_set(prev_ip, prev_signal ? -1 : (int64_t)(sp - prev_sp));
		prev_signal = unw_is_signal_frame(&cur) > 0;
		prev_ip = ip;
		prev_sp = sp;
	}
}

void ap_stackcache_insert(const struct ap_stack_key *key, struct ap_stack *s)
{
	struct sc_cache *c = cache_self();
	if (!c || c->pause || s->nframes > SC_MAXF ||
	    key->slot0 < c->stack_lo || key->slot0 >= c->stack_hi || s->frames[0] != key->ret0)
		return;
	uint32_t off[SC_MAXF];
	off[0] = 0;
	for (int attempt = 0; attempt < 2; attempt++) {
		uintptr_t slot = key->slot0;
		uint32_t k = 1;
		bool unknown = false;
		for (; k < s->nframes; k++) {
			int64_t size = fs_get(s->frames[k - 1]);
			if (size < 0)
				return; /* a variable frame on the way: never cached */
			if (size == 0) {
				unknown = true;
				break;
			}
			slot += (uintptr_t)size;
			if (slot + sizeof(uintptr_t) > c->stack_hi || slot - key->slot0 >= SC_MAX_SPAN)
				return;
			if (*(const uintptr_t *)slot != s->frames[k]) {
				/* The size learned there does not hold now: stop trusting it. */
				fs_set(s->frames[k - 1], -1);
				return;
			}
			off[k] = (uint32_t)(slot - key->slot0);
		}
		if (!unknown) {
			uint64_t h = hash_of(key);
			size_t si = set_of(h);
			unsigned w = c->victim[si]++ % SC_WAYS;
			struct sc_entry *e = &c->e[si][w];
			e->ret0 = key->ret0;
			e->slot0 = key->slot0;
			memcpy(e->off, off, s->nframes * sizeof(*off));
			e->stack = s;
			c->tag[si][w] = tag_of(h);
			return;
		}
		/* Sizes missing: learn them, but only for a stack seen before (one-off stacks are
		 * not worth a slow walk), and at most a few times per stack. */
		uint32_t seen = atomic_fetch_add_explicit(&s->sightings, 1, memory_order_relaxed) + 1;
		if (attempt || seen < 2 || seen > 4)
			return;
		learn_frame_sizes();
	}
}
