/*
 * profile.c: replay of a trace into per-stack figures.
 *
 * Semantics (the README states them for users):
 *  - bytes are the requested size (calloc: n*size);
 *  - realloc(p, n) is a free of p and an allocation of n at the realloc's call site;
 *  - inuse means allocated and not freed by the end of the trace;
 *  - a free of an address the trace never saw allocated (allocated before the shim was active,
 *    or by a call the shim could not record) is counted apart, never subtracted from a site.
 */
#include "profile.h"

#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const ap_metric_names[AP_M__COUNT] = {"alloc_objects", "alloc_space", "inuse_objects",
                                                  "inuse_space"};

int ap_metric_parse(const char *name)
{
	for (int i = 0; i < AP_M__COUNT; i++)
		if (!strcmp(name, ap_metric_names[i]))
			return i;
	return -1;
}

/* ---- replay ----------------------------------------------------------------------------------------- */

/* How many allocations one recorded allocation of this size stands for: exactly 1 when every
 * allocation was recorded; in sampled mode the inverse of its probability of being sampled,
 * 1 - exp(-s/R) (see preload/sampler.c), which makes every sum an unbiased estimate. expm1 keeps
 * the precision for s much smaller than R. Zero-byte requests were sampled as one byte. */
double ap_profile_weight(const ap_profile *p, uint64_t size)
{
	if (!p->sample_bytes)
		return 1;
	double s = size ? (double)size : 1;
	return 1 / -expm1(-s / (double)p->sample_bytes);
}

static __attribute__((noinline)) ap_site *site_grow(ap_profile *p, uint32_t id)
{
	while (p->sites.n <= id) {
		ap_site s = {0};
		AP_VEC_PUSH(p->sites, s);
	}
	return &p->sites.v[id];
}

static inline ap_site *site(ap_profile *p, uint32_t id)
{
	if (__builtin_expect(id < p->sites.n, 1))
		return &p->sites.v[id];
	return site_grow(p, id);
}

/* ap_profile_weight, with the full-mode case inline. */
static inline double weight(const ap_profile *p, uint64_t size)
{
	return __builtin_expect(!p->sample_bytes, 1) ? 1 : ap_profile_weight(p, size);
}

static __attribute__((noinline)) uint32_t block_append(ap_profile *p)
{
	if (!p->blocks.n) {
		struct ap_live zero = {0};
		AP_VEC_PUSH(p->blocks, zero); /* index 0 means "none" */
	}
	struct ap_live b = {0};
	AP_VEC_PUSH(p->blocks, b);
	return (uint32_t)(p->blocks.n - 1);
}

static inline __attribute__((always_inline)) uint32_t block_new(ap_profile *p, uint64_t size, uint32_t site_id)
{
	uint32_t i = p->free_block;
	if (__builtin_expect(i != 0, 1))
		p->free_block = p->blocks.v[i].next_free;
	else
		i = block_append(p);
	p->blocks.v[i].size = size;
	p->blocks.v[i].site = site_id;
	return i;
}

static inline void block_release(ap_profile *p, uint32_t i)
{
	p->blocks.v[i].next_free = p->free_block;
	p->free_block = i;
}

/* A live block as the live map (and last_free) keep it, 0 for none. Without an observer, which
 * is told block indexes, its size and site are packed in the map's value itself (LIVE_PACKED
 * set), so that a free reads one cache line, the map's slot, rather than also the block's entry
 * (and an allocation pops no free list); else, or when they do not fit, the index of its entry
 * in p->blocks. */
#define LIVE_PACKED (1ull << 63)

static inline __attribute__((always_inline)) uint64_t live_new(ap_profile *p, uint64_t size, uint32_t site_id)
{
	if (!p->opts.observe && size <= UINT32_MAX && site_id < (1u << 31))
		return LIVE_PACKED | (uint64_t)site_id << 32 | size;
	return block_new(p, size, site_id);
}

static inline uint64_t live_size(const ap_profile *p, uint64_t v)
{
	return v & LIVE_PACKED ? (uint32_t)v : p->blocks.v[v].size;
}

static inline uint32_t live_site(const ap_profile *p, uint64_t v)
{
	return v & LIVE_PACKED ? (uint32_t)(v >> 32) & ~(1u << 31) : p->blocks.v[v].site;
}

static inline void live_release(ap_profile *p, uint64_t v)
{
	if (!(v & LIVE_PACKED))
		block_release(p, (uint32_t)v);
}

/* What the observer is told: the block's index (packed blocks exist only without one). */
static inline uint32_t live_block(uint64_t v)
{
	return v & LIVE_PACKED ? 0 : (uint32_t)v;
}

/* Adds (sign 1) or removes (sign -1) block v from its site's inuse figures and the totals. */
static inline __attribute__((always_inline)) void inuse_add(ap_profile *p, uint64_t v, double sign)
{
	if (p->inuse_later)
		return;
	uint64_t size = live_size(p, v);
	ap_site *s = &p->sites.v[live_site(p, v)];
	double w = sign * weight(p, size);
	s->v[AP_M_INUSE_OBJECTS] += w;
	s->v[AP_M_INUSE_SPACE] += w * (double)size;
	p->inuse_objects += w;
	p->inuse_space += w * (double)size;
}

/* Takes the block at addr off the live set and off its site's inuse figures; 0 if unknown. */
static inline __attribute__((always_inline)) uint64_t take_live(ap_profile *p, uint64_t addr)
{
	uint64_t v;
	if (!ap_map_del(&p->live, addr + 1, &v)) /* +1: address 0 is a valid key */
		return 0;
	inuse_add(p, v, -1);
	return v;
}

static inline __attribute__((always_inline)) void put_live(ap_profile *p, uint64_t addr, uint64_t v)
{
	bool added;
	uint64_t *slot = ap_map_put(&p->live, addr + 1, &added);
	if (__builtin_expect(!added, 0)) {
		/* A block allocated twice without a free between: its free was not recorded. Drop
		 * the older one from inuse, and count the anomaly. */
		p->double_allocs++;
		inuse_add(p, *slot, -1);
		live_release(p, *slot);
	}
	*slot = v;
	inuse_add(p, v, 1);
}

/* The inuse figures summed from the live set rather than kept event by event (inuse_later).
 * When only the end of the trace counts (no observer, no --at) and every allocation was recorded,
 * the replay's additions and subtractions of a block's 1 and size are of integers, exact in a
 * double while every sum stays below 2^53, and always so when the bytes allocated since the
 * replay started leaving them do: then each site's figures at the end are exactly the count and
 * bytes of its blocks still live, in whatever order they are added. This saves the replay, for
 * every free, reading the freed block's site (a second random access after the live map's), and
 * the arithmetic. Past 2^53 bytes the figures are summed there and kept event by event again. */
#define LATER_MAX_BYTES (1ull << 53)

static void inuse_catch_up(ap_profile *p)
{
	if (!p->inuse_later)
		return;
	p->inuse_later = false;
	for (size_t i = 0; i < p->live.cap; i++)
		if (p->live.slots[i].key)
			inuse_add(p, p->live.slots[i].val, 1);
	if (p->live.has_zero)
		inuse_add(p, p->live.zero_val, 1);
}

static inline __attribute__((always_inline)) void later_count(ap_profile *p, uint64_t size)
{
	if (!p->inuse_later)
		return;
	if (__builtin_expect(size >= LATER_MAX_BYTES - p->later_bytes, 0))
		inuse_catch_up(p);
	else
		p->later_bytes += size;
}

/* --at: keeps the sites' inuse figures of the moment asked for; ap_profile_load_ex puts them
 * back in place of the final ones once the replay is done (the alloc figures stay whole-run). */
static void at_snapshot(ap_profile *p, uint64_t last_index, uint64_t stamp)
{
	p->at_taken = true;
	p->at_event_index = last_index;
	p->at_stamp_taken = stamp;
	p->at_nsnap = p->sites.n;
	p->at_snap = ap_xcalloc(2 * p->at_nsnap + 1, sizeof(*p->at_snap));
	for (size_t i = 0; i < p->at_nsnap; i++) {
		p->at_snap[2 * i] = p->sites.v[i].v[AP_M_INUSE_OBJECTS];
		p->at_snap[2 * i + 1] = p->sites.v[i].v[AP_M_INUSE_SPACE];
	}
}

/* Applies one event. Inline in its one caller, replay_loop, compiled twice (replay_batch). */
static inline __attribute__((always_inline)) void replay(ap_profile *p, const ap_event *e, bool plain)
{
	if (!plain && p->opts.at == AP_AT_STAMP && !p->at_taken && e->stamp > p->opts.at_stamp)
		at_snapshot(p, p->events ? p->events - 1 : UINT64_MAX, p->last_stamp);
	if (!p->events++)
		p->first_stamp = e->stamp;
	p->last_stamp = e->stamp;
	uint32_t blk = 0; /* the block the event concerns, for the observer */
	switch (e->kind) {
	case AP_EV_ALLOC: {
		ap_site *s = site(p, e->stack);
		double w = weight(p, e->size);
		s->v[AP_M_ALLOC_OBJECTS] += w;
		s->v[AP_M_ALLOC_SPACE] += w * (double)e->size;
		later_count(p, e->size); /* before put_live: past the bound it adds this block */
		uint64_t v = live_new(p, e->size, e->stack);
		blk = live_block(v);
		put_live(p, e->addr, v);
		break;
	}
	case AP_EV_FREE: {
		uint64_t v = take_live(p, e->addr);
		if (!v) {
			p->unknown_frees++;
			break;
		}
		blk = live_block(v);
		if (e->api == AP_API_REALLOC || e->api == AP_API_REALLOCARRAY) {
			/* Kept until this thread's next free of a realloc, in case the realloc failed
			 * and an UNFREE brings the block back. */
			bool added;
			uint64_t *held = ap_map_put(&p->last_free, (uint64_t)e->tid + 1, &added);
			if (!added && *held)
				live_release(p, *held);
			*held = v;
			break;
		}
		live_release(p, v);
		break;
	}
	case AP_EV_UNFREE: {
		uint64_t *held = ap_map_get(&p->last_free, (uint64_t)e->tid + 1);
		if (held && *held) {
			blk = live_block(*held);
			put_live(p, e->addr, *held);
			*held = 0;
		}
		break;
	}
	case AP_EV_LOST:
		/* Saturating: a corrupt count must not wrap around to a small one. */
		p->lost_allocs = e->lost_allocs > UINT64_MAX - p->lost_allocs ? UINT64_MAX : p->lost_allocs + e->lost_allocs;
		p->lost_frees = e->lost_frees > UINT64_MAX - p->lost_frees ? UINT64_MAX : p->lost_frees + e->lost_frees;
		break;
	}
	if (plain)
		return;
	if (p->opts.observe)
		p->opts.observe(p->opts.observe_ctx, p, e, blk);
	if (p->opts.at == AP_AT_EVENT && !p->at_taken && p->events - 1 == p->opts.at_event)
		at_snapshot(p, p->events - 1, e->stamp);
}

/* Items of a batch that are not events (the replay thread's queue, below): kinds past those
 * of events. */
enum { QK_STACK = 0x80, QK_CLOCK = 0x81, QK_PAIRS = 0x82 };
static void apply_queued(ap_profile *p, const ap_event_rec *x);

/* How many events ahead the replay asks the cache for the live map's slot of an address (and an
 * allocation's site): a trace's addresses are random and a big live set's map is larger than the
 * cache, so each lookup would wait for memory (python3 trace: 0.60 -> 0.50 s; 8, 16 and 32 do
 * about as well). always_inline, here and in ap_map_prefetch: with plain inline, GCC 12 at -O2
 * dropped the prefetches altogether (the calls vanish in its interprocedural passes). */
#define PREFETCH_AHEAD 16
static inline __attribute__((always_inline)) void prefetch(const ap_profile *p, const ap_event_rec *x)
{
	/* Without a branch on the kind, which is as random as the addresses in a trace of mixed
	 * allocations and frees: a prefetch the event does not need costs less than a mispredicted
	 * branch. (A free's stack is 0, an allocation's below sites.n: index 0 then.) */
	ap_map_prefetch(&p->live, x->addr + 1);
	uint32_t site_id = x->stack < p->sites.n ? x->stack : 0;
	__builtin_prefetch(&p->sites.v[site_id]);
}

/* Applies n events (and, from the replay thread's queue, the other items) in order; plain: see
 * replay_batch. */
static inline __attribute__((always_inline)) void replay_loop(ap_profile *p, const ap_event_rec *v,
                                                              size_t n, bool plain)
{
	for (size_t i = 0; i < n; i++) {
		if (i + PREFETCH_AHEAD < n)
			prefetch(p, &v[i + PREFETCH_AHEAD]);
		if (__builtin_expect(v[i].kind >= QK_STACK, 0)) {
			apply_queued(p, &v[i]);
			continue;
		}
		ap_event e = ap_event_from_rec(&v[i]);
		replay(p, &e, plain);
	}
}

/* Only the end of the trace counts: no observer, no --at. */
static bool end_only(const ap_profile *p)
{
	return !p->opts.observe && p->opts.at == AP_AT_END;
}

/* The loop compiled twice: once for the common load (end_only, so nothing to check after each
 * event), once for the rest. */
static void replay_batch(ap_profile *p, const ap_event_rec *v, size_t n)
{
	if (end_only(p))
		replay_loop(p, v, n, true);
	else
		replay_loop(p, v, n, false);
}

static void on_events(void *ctx, const ap_event_rec *v, size_t n)
{
	replay_batch(ctx, v, n);
}

/* Whether the reader may fold blocks allocated and freed within a chunk into per-stack totals
 * (on_pairs): when only the end of the trace counts (no observer, no --at) and every allocation
 * was recorded. Then a pair adds exactly 1 and its size to its stack's alloc figures in any
 * order (integers, exact in a double below 2^53), and leaves the inuse ones as they were. In
 * sampled mode the weights are fractions whose sums depend on the order of the additions. */
static bool fold_wanted(const ap_profile *p)
{
	return end_only(p) && !p->sample_bytes;
}

static bool on_want_pairs(void *ctx)
{
	return fold_wanted(ctx);
}

static void apply_pairs(ap_profile *p, uint32_t stack, uint64_t count, uint64_t bytes)
{
	ap_site *s = site(p, stack);
	s->v[AP_M_ALLOC_OBJECTS] += (double)count;
	s->v[AP_M_ALLOC_SPACE] += (double)bytes;
	p->events += 2 * count;
}

static void on_pairs(void *ctx, uint32_t stack, uint64_t count, uint64_t bytes)
{
	apply_pairs(ctx, stack, count, bytes);
}

static void on_header(void *ctx, const ap_header *h)
{
	ap_profile *p = ctx;
	if (p->have_header)
		return;
	p->have_header = true;
	p->exe = ap_xstrdup(h->exe);
	p->argc = h->argc;
	p->argv = ap_xcalloc(h->argc + 1, sizeof(*p->argv));
	for (size_t i = 0; i < h->argc; i++)
		p->argv[i] = ap_xstrdup(h->argv[i]);
	p->pid = h->pid;
	p->start_realtime_ns = h->start_realtime_ns;
	p->start_monotonic_ns = h->start_monotonic_ns;
	p->sample_bytes = h->sample_bytes;
	p->inuse_later = fold_wanted(p); /* the same condition: integer figures, only the end */
	p->clock = h->clock;
	struct ap_clockpt c = {h->start_stamp, h->start_monotonic_ns};
	AP_VEC_PUSH(p->clock_pts, c);
}

static void on_module(void *ctx, const ap_module_desc *m)
{
	ap_profile *p = ctx;
	ap_symbols_add_module(p->syms, m);
}

static void on_unload(void *ctx, uint32_t id, uint32_t gen)
{
	ap_profile *p = ctx;
	ap_symbols_unload(p->syms, id, gen);
}

/* A copy of a stack record's frames (never NULL, even for an empty stack: non-NULL frames mark
 * a defined site). */
static uint64_t *copy_frames(const ap_stack_rec *r)
{
	uint64_t *f = ap_xmalloc((r->nframes ? r->nframes : 1) * sizeof(*f));
	if (r->nframes) /* an empty stack's frames may be NULL, which memcpy must not see */
		memcpy(f, r->frames, r->nframes * sizeof(*f));
	return f;
}

/* Defines site id with frames (taking them over, or freeing them if it was defined already). */
static void define_site(ap_profile *p, uint32_t id, uint32_t generation, uint32_t flags,
                        uint32_t nframes, uint64_t *frames)
{
	ap_site *s = site(p, id);
	if (s->frames) { /* defined twice: keep the first */
		free(frames);
		return;
	}
	s->generation = generation;
	s->flags = flags;
	s->nframes = nframes;
	s->frames = frames;
}

static void on_stack(void *ctx, const ap_stack_rec *r)
{
	ap_profile *p = ctx;
	if (r->id < p->sites.n && p->sites.v[r->id].frames)
		return;
	define_site(p, r->id, r->generation, r->flags, r->nframes, copy_frames(r));
}

static void on_clock(void *ctx, uint64_t stamp, uint64_t ns)
{
	ap_profile *p = ctx;
	if (p->clock_pts.n && stamp <= p->clock_pts.v[p->clock_pts.n - 1].stamp)
		return;
	struct ap_clockpt c = {stamp, ns};
	AP_VEC_PUSH(p->clock_pts, c);
}

/* ---- the replay thread ------------------------------------------------------------------------- */

/* Reading a file, the decoder (this thread) and the replay (a thread of its own) run side by
 * side, and the decoder's zstd in a third (decompress_ahead): the decoder's callbacks append what
 * they are given to batches, which the replay thread applies in the same order as the
 * single-threaded load would, so every figure is the same.
 * The replay thread alone touches what the replay builds (sites, blocks, the live set, clock
 * points, the observer's state) while the pipe runs; the decoder's thread keeps the symbols
 * (module and unload records), and the header, which the replay reads, is applied only when the
 * replay thread has caught up and waits. Memory: PIPE_NBUF batches of PIPE_BATCH events, 5 MiB.
 * With 32 batches (10 MiB) every batch was a fresh stretch of memory, its pages faulted in and
 * out of the caches by the time the replay read it (python3 trace: 15 ms more CPU than with 8).
 * With 8, the decoder and the replay (which share two cores with the zstd and prewarm threads)
 * waited for each other so often that a tenth of the two cores went idle: 16 gave the python3
 * trace 0.213 -> 0.196 s wall at the same CPU (24 batches, or 32 of 4096 events, did worse). */
#define PIPE_BATCH 8192
#define PIPE_NBUF 16

/* A queued item is an event as the reader holds it, or one of the QK_ kinds: QK_STACK: stack =
 * id, tid = generation, addr = frames (owned), size = flags << 32 | nframes; QK_CLOCK: addr =
 * monotonic ns; QK_PAIRS: addr = count, size = bytes. */
static void apply_queued(ap_profile *p, const ap_event_rec *x)
{
	if (x->kind == QK_STACK)
		define_site(p, x->stack, x->tid, (uint32_t)(x->size >> 32), (uint32_t)x->size,
		            (uint64_t *)(uintptr_t)x->addr);
	else if (x->kind == QK_PAIRS)
		apply_pairs(p, x->stack, x->addr, x->size);
	else
		on_clock(p, x->stamp, x->addr);
}

typedef struct ap_pipe {
	ap_profile *p;
	ap_event_rec *buf[PIPE_NBUF];
	size_t len[PIPE_NBUF];
	ap_event_rec *cur; /* the batch being filled (buf[wi % PIPE_NBUF]) and its length */
	size_t n;
	unsigned wi, ri;
	pthread_mutex_t mu;
	pthread_cond_t filled_cv, drained_cv;
	unsigned filled;   /* batches handed over and not yet applied */
	bool done, urgent; /* no more batches will come; the decoder waits for the replay to catch up */
	bool replay_waits, decoder_waits;
	pthread_t thread;
} ap_pipe;

/* A sleeping side is woken only when PIPE_WAKE batches are ready for it (or at the end, or for
 * a drain), so that the two threads do not wake each other for every batch. */
#define PIPE_WAKE (PIPE_NBUF / 2)

static void *pipe_replay(void *arg)
{
	ap_pipe *q = arg;
	ap_profile *p = q->p;
	pthread_mutex_lock(&q->mu);
	for (;;) {
		if (!q->filled) {
			if (q->done)
				break;
			q->replay_waits = true;
			pthread_cond_wait(&q->filled_cv, &q->mu);
			q->replay_waits = false;
			continue;
		}
		pthread_mutex_unlock(&q->mu);
		unsigned b = q->ri % PIPE_NBUF;
		replay_batch(p, q->buf[b], q->len[b]);
		pthread_mutex_lock(&q->mu);
		q->ri++;
		q->filled--;
		if (q->decoder_waits && (q->filled <= PIPE_NBUF - PIPE_WAKE || !q->filled))
			pthread_cond_signal(&q->drained_cv);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

/* Hands the current batch over (if not empty) and takes a free one. */
static void pipe_flush(ap_pipe *q)
{
	if (!q->n)
		return;
	pthread_mutex_lock(&q->mu);
	q->len[q->wi % PIPE_NBUF] = q->n;
	q->filled++;
	if (q->replay_waits && (q->filled >= PIPE_WAKE || q->urgent || q->done))
		pthread_cond_signal(&q->filled_cv);
	while (q->filled == PIPE_NBUF) {
		q->decoder_waits = true;
		pthread_cond_wait(&q->drained_cv, &q->mu);
		q->decoder_waits = false;
	}
	pthread_mutex_unlock(&q->mu);
	q->wi++;
	q->cur = q->buf[q->wi % PIPE_NBUF];
	q->n = 0;
}

/* Waits until the replay thread has applied everything handed over. */
static void pipe_drain(ap_pipe *q)
{
	pthread_mutex_lock(&q->mu);
	q->urgent = true;
	pthread_mutex_unlock(&q->mu);
	pipe_flush(q);
	pthread_mutex_lock(&q->mu);
	if (q->replay_waits)
		pthread_cond_signal(&q->filled_cv);
	while (q->filled) {
		q->decoder_waits = true;
		pthread_cond_wait(&q->drained_cv, &q->mu);
		q->decoder_waits = false;
	}
	q->urgent = false;
	pthread_mutex_unlock(&q->mu);
}

static inline ap_event_rec *pipe_slot(ap_pipe *q)
{
	if (__builtin_expect(q->n == PIPE_BATCH, 0))
		pipe_flush(q);
	return &q->cur[q->n++];
}

static void pipe_events(void *ctx, const ap_event_rec *v, size_t n)
{
	ap_pipe *q = ctx;
	while (n) {
		if (q->n == PIPE_BATCH)
			pipe_flush(q);
		size_t m = PIPE_BATCH - q->n < n ? PIPE_BATCH - q->n : n;
		memcpy(q->cur + q->n, v, m * sizeof(*v));
		q->n += m;
		v += m;
		n -= m;
	}
}

static void pipe_stack(void *ctx, const ap_stack_rec *r)
{
	ap_symbols_note_stack(((ap_pipe *)ctx)->p->syms, r->generation, r->frames, r->nframes);
	ap_event_rec *x = pipe_slot(ctx);
	x->kind = QK_STACK;
	x->stack = r->id;
	x->tid = r->generation;
	x->size = (uint64_t)r->flags << 32 | r->nframes;
	x->addr = (uint64_t)(uintptr_t)copy_frames(r);
}

static void pipe_clock(void *ctx, uint64_t stamp, uint64_t ns)
{
	ap_event_rec *x = pipe_slot(ctx);
	x->kind = QK_CLOCK;
	x->stamp = stamp;
	x->addr = ns;
}

static void pipe_pairs(void *ctx, uint32_t stack, uint64_t count, uint64_t bytes)
{
	ap_event_rec *x = pipe_slot(ctx);
	x->kind = QK_PAIRS;
	x->stack = stack;
	x->addr = count;
	x->size = bytes;
}

/* Asked right after pipe_header, which applied the header with the replay thread waiting. */
static bool pipe_want_pairs(void *ctx)
{
	return fold_wanted(((ap_pipe *)ctx)->p);
}

static void pipe_header(void *ctx, const ap_header *h)
{
	ap_pipe *q = ctx;
	pipe_drain(q); /* the replay reads what the header sets */
	on_header(q->p, h);
}

static void pipe_module(void *ctx, const ap_module_desc *m)
{
	on_module(((ap_pipe *)ctx)->p, m);
}

static void pipe_unload(void *ctx, uint32_t id, uint32_t gen)
{
	on_unload(((ap_pipe *)ctx)->p, id, gen);
}

/* Whether to replay in a thread of its own: with more than one processor, unless
 * ALLOCPROF_THREADS=0. */
static bool pipe_wanted(void)
{
	const char *e = getenv("ALLOCPROF_THREADS");
	if (e && !strcmp(e, "0"))
		return false;
	return sysconf(_SC_NPROCESSORS_ONLN) > 1;
}

/* ap_read_trace(path) with the replay in a second thread; -1 (nothing read) if the thread
 * could not start. */
static int read_piped(ap_profile *p, const char *path, bool *started)
{
	ap_pipe *q = ap_xcalloc(1, sizeof(*q));
	q->p = p;
	for (int i = 0; i < PIPE_NBUF; i++)
		q->buf[i] = ap_xmalloc(PIPE_BATCH * sizeof(ap_event_rec));
	q->cur = q->buf[0];
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->filled_cv, NULL);
	pthread_cond_init(&q->drained_cv, NULL);
	int err = 0;
	*started = pthread_create(&q->thread, NULL, pipe_replay, q) == 0;
	if (*started) {
		/* The module files the stacks need are opened meanwhile (symbols.c). */
		ap_symbols_prewarm_begin(p->syms);
		ap_reader_ops ops = {
			.ctx = q,
			.header = pipe_header,
			.module = pipe_module,
			.unload = pipe_unload,
			.stack = pipe_stack,
			.events = pipe_events,
			.clock = pipe_clock,
			.want_pairs = pipe_want_pairs,
			.pairs = pipe_pairs,
			.decompress_ahead = true,
		};
		err = ap_read_trace(path, &ops, &p->rr);
		/* The last batch is handed over before done is set: the replay thread stops once it
		 * sees done with nothing left, and one that starts late (a loaded machine) could see
		 * both before a late hand-over and drop the batch, which in a small trace is all of it. */
		pipe_flush(q);
		pthread_mutex_lock(&q->mu);
		q->done = true;
		pthread_cond_signal(&q->filled_cv);
		pthread_mutex_unlock(&q->mu);
		pthread_join(q->thread, NULL);
	}
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->filled_cv);
	pthread_cond_destroy(&q->drained_cv);
	for (int i = 0; i < PIPE_NBUF; i++)
		free(q->buf[i]);
	free(q);
	return err;
}

static void sym_warn(void *ctx, const char *msg)
{
	(void)ctx;
	fprintf(stderr, "allocprof: %s\n", msg);
}

static ap_load_opts default_opts;

void ap_profile_set_default_opts(const ap_load_opts *o)
{
	memset(&default_opts, 0, sizeof(default_opts));
	if (o)
		default_opts = *o;
}

/* Replays a trace from the file at path (data == NULL) or from memory. */
static int load(ap_profile *p, const char *path, const void *data, size_t len, bool compressed,
                bool open_files, const ap_load_opts *o)
{
	memset(p, 0, sizeof(*p));
	p->opts = o ? *o : default_opts; /* ap_profile_load_ex: --at, observers */
	p->at_event_index = UINT64_MAX;
	p->path = path;
	p->syms = ap_symbols_new(sym_warn, p);
	if (!p->syms) {
		fprintf(stderr, "allocprof: out of memory\n");
		return -AP_E_NOMEM;
	}
	if (!open_files)
		ap_symbols_no_files(p->syms);
	site(p, 0);
	ap_reader_ops ops = {
		.ctx = p,
		.header = on_header,
		.module = on_module,
		.unload = on_unload,
		.stack = on_stack,
		.events = on_events,
		.clock = on_clock,
		.want_pairs = on_want_pairs,
		.pairs = on_pairs,
	};
	int err;
	bool piped = false;
	if (data)
		err = ap_read_trace_mem(path, data, len, compressed, &ops, &p->rr);
	else if (!pipe_wanted() || (err = read_piped(p, path, &piped), !piped))
		err = ap_read_trace(path, &ops, &p->rr);
	inuse_catch_up(p);
	if (err) {
		fprintf(stderr, "allocprof: %s\n", p->rr.error);
		return err;
	}
	if (p->at_taken) /* --at: the inuse figures of that moment replace the final ones */
		for (size_t i = 0; i < p->sites.n; i++) {
			p->sites.v[i].v[AP_M_INUSE_OBJECTS] = i < p->at_nsnap ? p->at_snap[2 * i] : 0;
			p->sites.v[i].v[AP_M_INUSE_SPACE] = i < p->at_nsnap ? p->at_snap[2 * i + 1] : 0;
		}
	if (!p->have_header) {
		fprintf(stderr, "allocprof: %s: not an allocprof trace (no header)\n", path);
		return -AP_E_CORRUPT;
	}
	if (p->rr.truncated)
		ap_warn("%s: warning: the trace is truncated (the program was killed, or the file was cut); "
		        "figures are those up to the cut",
		        path);
	else if (!p->rr.end.has_end)
		ap_warn("%s: warning: the trace has no end record: the program was killed (or exec'ed), or the "
		        "file is truncated; figures are those up to its last write",
		        path);
	if (p->rr.unordered)
		ap_warn("%s: warning: more than a million events without a sync record (corrupt trace?); "
		        "they were replayed in stamp order only approximately",
		        path);
	if (p->lost_allocs || p->lost_frees)
		ap_warn("%s: warning: %llu allocations and %llu frees made from signal handlers inside the "
		        "allocator could not be recorded",
		        path, (unsigned long long)p->lost_allocs, (unsigned long long)p->lost_frees);
	uint64_t undefined = 0;
	for (size_t i = 1; i < p->sites.n; i++)
		if (!p->sites.v[i].frames && p->sites.v[i].v[AP_M_ALLOC_OBJECTS] > 0)
			undefined++;
	if (undefined)
		ap_warn("%s: warning: %llu stacks are used but never defined (corrupt trace?); shown as "
		        "[unknown stack]",
		        path, (unsigned long long)undefined);
	return 0;
}

int ap_profile_load(ap_profile *p, const char *path)
{
	return load(p, path, NULL, 0, true, true, NULL);
}

int ap_profile_load_ex(ap_profile *p, const char *path, const ap_load_opts *o)
{
	return load(p, path, NULL, 0, true, true, o);
}

int ap_profile_load_mem(ap_profile *p, const char *name, const void *data, size_t len,
                        bool compressed, bool open_files)
{
	/* load() tells memory from a file by data != NULL; an empty buffer is still memory. */
	static const uint8_t empty[1];
	return load(p, name, data ? data : empty, len, compressed, open_files, NULL);
}

void ap_profile_free(ap_profile *p)
{
	for (size_t i = 0; i < p->sites.n; i++)
		free(p->sites.v[i].frames);
	AP_VEC_FREE(p->sites);
	AP_VEC_FREE(p->blocks);
	AP_VEC_FREE(p->clock_pts);
	free(p->at_snap);
	ap_map_free(&p->live);
	ap_map_free(&p->last_free);
	for (size_t i = 0; i < p->argc; i++)
		free(p->argv[i]);
	free(p->argv);
	free(p->exe);
	ap_symbols_free(p->syms);
}

double ap_profile_seconds(const ap_profile *p, uint64_t stamp)
{
	size_t n = p->clock_pts.n;
	if (!n)
		return 0;
	const struct ap_clockpt *c = p->clock_pts.v;
	size_t i = 1;
	while (i < n - 1 && c[i].stamp < stamp)
		i++;
	double ns;
	/* Compared as doubles: stamps a few units apart near 2^64 convert to the same double, and
	 * the division below must not be by zero. */
	if (n == 1 || (double)c[i].stamp == (double)c[i - 1].stamp)
		ns = (double)c[0].ns;
	else
		ns = (double)c[i - 1].ns + ((double)stamp - (double)c[i - 1].stamp) *
		                               ((double)c[i].ns - (double)c[i - 1].ns) /
		                               ((double)c[i].stamp - (double)c[i - 1].stamp);
	return (ns - (double)p->start_monotonic_ns) / 1e9;
}

/* ---- frames ------------------------------------------------------------------------------------------- */

/* The allocator's own machinery: a site's flat figure should mean "this function called the
 * allocator", so these frames are dropped from the innermost end of every stack. */
static const char *const default_hide[] = {
	"malloc", "calloc", "realloc", "free", "reallocarray", "posix_memalign", "aligned_alloc",
	"memalign", "valloc", "pvalloc", "__libc_.*", "_?_?GI_.*",
	"operator new.*", "operator delete.*", "__gnu_cxx::new_allocator<.*>::allocate.*",
	"std::__new_allocator<.*>::allocate.*", "std::allocator<.*>::allocate.*",
	"std::allocator_traits<.*>::allocate.*",
	/* libstdc++ containers' one-line wrappers around their allocator: the container function
	 * that called them (vector's _M_realloc_insert, string's _M_construct) is the flat one. */
	"std::_Vector_base<.*>::_M_allocate.*", "std::__cxx11::basic_string<.*>::_M_create.*",
	"std::basic_string<.*>::_M_create.*", "std::_Rb_tree<.*>::_M_get_node.*",
	"std::_List_base<.*>::_M_get_node.*", "std::_Deque_base<.*>::_M_allocate_(map|node).*",
	"std::__detail::_Hashtable_alloc<.*>::_M_allocate_(node|buckets).*",
	"__rust_alloc.*", "__rdl_alloc.*", "__rust_realloc", "alloc::alloc::.*",
	"strdup", "strndup", "__strdup", "__strndup", "wcsdup",
};

static regex_t hide_re;
static bool hide_ready;
static AP_VEC(char *) hide_extra;

void ap_profile_hide_add(const char *regex)
{
	AP_VEC_PUSH(hide_extra, ap_xstrdup(regex));
	if (hide_ready) {
		regfree(&hide_re);
		hide_ready = false;
	}
}

static void hide_compile(void)
{
	size_t len = 16;
	for (size_t i = 0; i < sizeof(default_hide) / sizeof(*default_hide); i++)
		len += strlen(default_hide[i]) + 1;
	for (size_t i = 0; i < hide_extra.n; i++)
		len += strlen(hide_extra.v[i]) + 3;
	char *re = ap_xmalloc(len), *q = re;
	q += sprintf(q, "^(");
	for (size_t i = 0; i < sizeof(default_hide) / sizeof(*default_hide); i++)
		q += sprintf(q, "%s%s", i ? "|" : "", default_hide[i]);
	for (size_t i = 0; i < hide_extra.n; i++)
		q += sprintf(q, "|(%s)", hide_extra.v[i]);
	sprintf(q, ")$");
	if (regcomp(&hide_re, re, REG_EXTENDED | REG_NOSUB)) {
		ap_warn("invalid --hide expression; using the default hide list");
		regcomp(&hide_re, "^$", REG_EXTENDED | REG_NOSUB);
	}
	free(re);
	hide_ready = true;
}

static bool hidden(const ap_symframe *f)
{
	if (!hide_ready)
		hide_compile();
	return f->resolved && regexec(&hide_re, f->function, 0, NULL, 0) == 0;
}

static const ap_symframe unknown_stack = {.function = "[unknown stack]"};
/* Stands for the outer frames a stack deeper than the recording depth lost. */
static const ap_symframe truncated_frame = {.function = "[truncated]"};
static const ap_symframe no_stack = {.function = "[no stack]"};

size_t ap_profile_site_frames(ap_profile *p, uint32_t id, bool show_allocator, ap_frame_vec *out)
{
	out->n = 0;
	ap_site *s = &p->sites.v[id];
	if (!id || !s->frames) {
		AP_VEC_PUSH(*out, id ? &unknown_stack : &no_stack);
		return out->n;
	}
	for (uint32_t i = 0; i < s->nframes; i++) {
		const ap_symframe *f;
		size_t n = ap_symbols_resolve(p->syms, s->generation, s->frames[i], &f);
		for (size_t j = 0; j < n; j++)
			AP_VEC_PUSH(*out, &f[j]);
	}
	if (s->flags & AP_STACK_TRUNCATED)
		AP_VEC_PUSH(*out, &truncated_frame);
	if (!show_allocator) {
		size_t skip = 0;
		while (skip < out->n && hidden(out->v[skip]))
			skip++;
		if (skip < out->n && skip) {
			memmove(out->v, out->v + skip, (out->n - skip) * sizeof(*out->v));
			out->n -= skip;
		}
	}
	return out->n;
}
