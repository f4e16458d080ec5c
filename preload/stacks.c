/*
 * stacks.c: captures the call stack of an allocation with libunwind and gives each distinct stack
 * a small id, writing its frames to the trace once.
 *
 * The table is a fixed array of bucket heads, each a lock-free singly linked list pushed at the
 * head with a CAS. Nodes are never removed, so a reader can walk a list without any lock while
 * another thread pushes. Lookup cost: one hash over the frames, one list walk, one memcmp.
 */
#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include "stacks.h"

#include <string.h>

#define AP_BUCKETS (1u << 18)
/* Frames of the shim itself sit on top of the stack: the hook, the capture function. */
#define AP_SKIP_MAX 8

static _Atomic(struct ap_stack *) *buckets;
atomic_uint ap_stacks_count;
static atomic_uint next_id = 1;

void ap_stacks_init(void)
{
	buckets = ap_sys_map(AP_BUCKETS * sizeof(*buckets));
	/* libunwind's per-thread cache keeps unw_backtrace from searching the unwind tables of
	 * every frame every time; the cache lives in libunwind's own mmap'd pools. */
	unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
	ap_stackcache_init();
}

/* In a fork child: a table of its own, ids from 1, so that the child's trace defines every stack
 * it names (the parent's nodes stay readable, unreachable). */
void ap_stacks_forked_child(void)
{
	_Atomic(struct ap_stack *) *b = ap_sys_map(AP_BUCKETS * sizeof(*b));
	if (b)
		buckets = b;
	atomic_store(&next_id, 1);
	atomic_store(&ap_stacks_count, 0);
}

static uint64_t hash_frames(const uintptr_t *f, uint32_t n, uint32_t generation, uint32_t flags)
{
	uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)generation << 32) ^ flags ^ n;
	for (uint32_t i = 0; i < n; i++) {
		h ^= f[i];
		h *= 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	return h ? h : 1;
}

static bool emit_stack(const struct ap_stack *s)
{
	/* Programs run threads on small stacks: encode on ours only when the record is small. */
	uint8_t small[2048];
	size_t cap = 64 + (size_t)s->nframes * AP_VARINT_MAX;
	uint8_t *buf = cap <= sizeof(small) ? small : ap_sys_map(cap), *p = buf;
	if (!buf)
		return false;
	p = ap_put_varint(p, s->id);
	p = ap_put_varint(p, s->generation);
	p = ap_put_varint(p, s->flags);
	p = ap_put_varint(p, s->nframes);
	uintptr_t prev = 0;
	for (uint32_t i = 0; i < s->nframes; i++) {
		if (i == 0)
			p = ap_put_varint(p, s->frames[0]);
		else
			p = ap_put_svarint(p, (int64_t)(s->frames[i] - prev));
		prev = s->frames[i];
	}
	bool ok = ap_meta_record(AP_REC_STACK, buf, (size_t)(p - buf));
	if (buf != small)
		ap_sys_unmap(buf, cap);
	return ok;
}

static struct ap_stack *lookup(uint64_t h, const uintptr_t *frames, uint32_t n, uint32_t generation,
                               uint32_t flags, struct ap_stack *first, struct ap_stack *stop)
{
	for (struct ap_stack *s = first; s != stop; s = s->next)
		if (s->hash == h && s->nframes == n && s->generation == generation && s->flags == flags &&
		    !memcmp(s->frames, frames, n * sizeof(*frames)))
			return s;
	return NULL;
}

static struct ap_stack *intern(const uintptr_t *frames, uint32_t n, uint32_t flags)
{
	uint32_t generation = atomic_load_explicit(&ap_generation, memory_order_relaxed);
	uint64_t h = hash_frames(frames, n, generation, flags);
	_Atomic(struct ap_stack *) *head = &buckets[h & (AP_BUCKETS - 1)];
	struct ap_stack *first = atomic_load_explicit(head, memory_order_acquire);
	struct ap_stack *found = lookup(h, frames, n, generation, flags, first, NULL);
	if (AP_LIKELY(found))
		return found;

	/* A new stack may run through a library loaded since the last look, or the generation
	 * may have to move on because one went away: bring the module records up to date first,
	 * so the MODULE record precedes the STACK record. */
	ap_modules_scan(false);
	uint32_t now = atomic_load_explicit(&ap_generation, memory_order_relaxed);
	if (now != generation) {
		generation = now;
		h = hash_frames(frames, n, generation, flags);
		head = &buckets[h & (AP_BUCKETS - 1)];
		first = atomic_load_explicit(head, memory_order_acquire);
		if ((found = lookup(h, frames, n, generation, flags, first, NULL)))
			return found;
	}

	struct ap_stack *mine = ap_sys_alloc(sizeof(*mine) + n * sizeof(*frames));
	if (!mine)
		return NULL;
	mine->hash = h;
	mine->nframes = n;
	mine->generation = generation;
	mine->flags = flags;
	memcpy(mine->frames, frames, n * sizeof(*frames));
	for (;;) {
		mine->next = first;
		/* The id and the STACK record must exist before any other thread can find the node
		 * (and write an event naming it), so they come before the publishing CAS; a lost
		 * race wastes one id, which no event ever names. */
		if (!mine->id) {
			mine->id = atomic_fetch_add(&next_id, 1);
			/* A stack whose record could not be written must never be named by an
			 * event: the allocation is recorded without a stack instead. */
			if (!emit_stack(mine))
				return NULL;
		}
		struct ap_stack *seen = first;
		if (atomic_compare_exchange_strong_explicit(head, &first, mine, memory_order_acq_rel,
		                                            memory_order_acquire)) {
			atomic_fetch_add_explicit(&ap_stacks_count, 1, memory_order_relaxed);
			return mine;
		}
		/* Someone pushed meanwhile: look at the new nodes only, then retry. */
		if ((found = lookup(h, frames, n, generation, flags, first, seen)))
			return found; /* mine leaks a few bytes of arena: a rare race */
	}
}

uint32_t ap_stacks_capture(void)
{
	/* The common case: the same stack as a moment ago, recognised without unwinding. */
	struct ap_stack_key key;
	bool keyed = ap_cfg.stack_cache && ap_stackcache_key(&key);
	if (keyed) {
		struct ap_stack *hit = ap_stackcache_lookup(&key);
		if (hit)
			return hit->id;
	}

	uint32_t depth = ap_cfg.depth;
	void *ips[depth + AP_SKIP_MAX + 1]; /* depth <= 1024 (config.c) */
	int n = unw_backtrace(ips, (int)(depth + AP_SKIP_MAX + 1));
	if (n <= 0)
		return 0;
	int skip = 0;
	while (skip < n && ap_modules_in_shim((uintptr_t)ips[skip]))
		skip++;
	uint32_t count = (uint32_t)(n - skip), flags = 0;
	if (count > depth) {
		count = depth;
		flags |= AP_STACK_TRUNCATED;
	} else if (n == (int)(depth + AP_SKIP_MAX + 1)) {
		/* Full buffer but fewer than depth frames left after skipping: more frames of the
		 * shim than expected; still complete as far as the program is concerned only if
		 * the buffer was not cut, which we cannot know, so mark it. */
		flags |= AP_STACK_TRUNCATED;
	}
	/* libunwind sometimes ends with a zero or garbage frame past the outermost one. */
	while (count && !ips[skip + count - 1])
		count--;
	if (!count)
		return 0;
	struct ap_stack *s = intern((const uintptr_t *)&ips[skip], count, flags);
	if (!s)
		return 0;
	if (keyed && key.ret0 == (uintptr_t)ips[skip])
		ap_stackcache_insert(&key, s);
	return s->id;
}
