/*
 * events.c: per-thread event buffers, the pool they come from, the queue of full ones, and the
 * meta stream (stacks, modules) that the writer puts before them.
 *
 * A thread owns its current buffer through one atomic pointer, t->cur:
 *
 *     buffer pointer   the buffer, free to take
 *     NULL             someone holds it: the owner writing one event, or the writer stealing it
 *     AP_NOBUF         no buffer: the owner takes one from the pool at its next event
 *
 * The owner takes it with an exchange, stamps and encodes one event, and puts it back. The writer
 * steals with the same exchange and leaves AP_NOBUF. Because the owner stamps only while holding
 * the buffer, every event stamped before the writer began a round is in a buffer the writer
 * stole or found in the queue: that is what lets it write SYNC records (see allocprof/trace.h).
 * The hot path is one uncontended exchange and one store on a line only this thread uses.
 */
#include "events.h"

#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <time.h>

/* ---- the spinlock used for the pool, the queue and the meta stream -------------------------- */

/* Held for a few instructions at a time, never around a system call that can block for long. */
void ap_lock(ap_spinlock *l)
{
	while (atomic_flag_test_and_set_explicit(l, memory_order_acquire)) {
		for (int i = 0; i < 64; i++)
			__builtin_ia32_pause();
		sched_yield();
	}
}

void ap_unlock(ap_spinlock *l)
{
	atomic_flag_clear_explicit(l, memory_order_release);
}

/* ---- buffer pool and full-buffer queue ------------------------------------------------------- */

/* Buffers outstanding (in threads, queued, being written) at most; past that, threads wait for the
 * writer instead of growing without bound. 128 x 32 KiB = 4 MiB: the traced program may grow by
 * 10% + 16 MiB at most, and a larger pool only fills when the writer is behind anyway. */
#define AP_MAX_BUFFERS 128

static ap_spinlock pool_lock = ATOMIC_FLAG_INIT;
static struct ap_buf *pool_free;
static unsigned pool_total;
static struct ap_buf *queue_head, *queue_tail;
static unsigned queue_len; /* buffers in the queue */

/* Full buffers queued before a thread wakes the writer early (else its 100 ms timer does): one
 * futex wake per 8 buffers rather than per buffer, which the program's threads pay (churn, full
 * mode: 6% less added CPU than waking at each; churn_mt the same within noise). The frame size
 * does not depend on it (writer.c).
 * The pool (AP_MAX_BUFFERS) leaves room for the threads' current buffers and for the writer's
 * lag, and a thread that finds it empty wakes the writer anyway (pool_get). */
#define AP_WAKE_QUEUED 8

static struct ap_buf *pool_try_get(bool unbounded)
{
	ap_lock(&pool_lock);
	struct ap_buf *b = pool_free;
	if (b)
		pool_free = b->next;
	else if (unbounded || pool_total < AP_MAX_BUFFERS) {
		pool_total++;
		ap_unlock(&pool_lock);
		b = ap_sys_map(sizeof(struct ap_buf));
		if (!b) {
			ap_lock(&pool_lock);
			pool_total--;
			ap_unlock(&pool_lock);
		}
		return b;
	}
	ap_unlock(&pool_lock);
	return b;
}

/* Waits when the writer is behind: the program slows down rather than losing events. */
static struct ap_buf *pool_get(void)
{
	for (;;) {
		int state = atomic_load_explicit(&ap_state, memory_order_relaxed);
		/* Before the writer runs (and after it stopped) nobody would return buffers. */
		bool unbounded = state != AP_STATE_ON || !ap_writer_running();
		struct ap_buf *b = pool_try_get(unbounded);
		if (b)
			return b;
		ap_writer_wake();
		struct timespec ts = {0, 200000};
		nanosleep(&ts, NULL);
	}
}

void ap_pool_put(struct ap_buf *b)
{
	ap_lock(&pool_lock);
	b->next = pool_free;
	pool_free = b;
	ap_unlock(&pool_lock);
}

static void queue_push(struct ap_buf *b)
{
	b->next = NULL;
	ap_lock(&pool_lock);
	if (queue_tail)
		queue_tail->next = b;
	else
		queue_head = b;
	queue_tail = b;
	bool wake = ++queue_len >= AP_WAKE_QUEUED;
	ap_unlock(&pool_lock);
	if (wake)
		ap_writer_wake();
}

void ap_queue_requeue(struct ap_buf *list)
{
	if (!list)
		return;
	struct ap_buf *last = list;
	unsigned n = 1;
	while (last->next) {
		last = last->next;
		n++;
	}
	ap_lock(&pool_lock);
	queue_len += n;
	if (queue_tail)
		queue_tail->next = list;
	else
		queue_head = list;
	queue_tail = last;
	ap_unlock(&pool_lock);
}

struct ap_buf *ap_queue_take(size_t max, uint64_t *left_min_stamp)
{
	ap_lock(&pool_lock);
	struct ap_buf *head = queue_head, *last = NULL, *b = head;
	for (size_t n = 0; b && n < max; n++) {
		last = b;
		b = b->next;
		queue_len--;
	}
	/* b is the first buffer left for a later round: the smallest stamp among those left
	 * bounds what the round may promise (a queue is short: hundreds of buffers at most). */
	uint64_t min = UINT64_MAX;
	for (struct ap_buf *r = b; r; r = r->next)
		if (r->base_stamp < min)
			min = r->base_stamp;
	queue_head = b;
	if (!b)
		queue_tail = NULL;
	if (last)
		last->next = NULL;
	ap_unlock(&pool_lock);
	*left_min_stamp = min;
	return last ? head : NULL;
}

/* ---- threads ----------------------------------------------------------------------------------- */

static _Atomic(struct ap_thread *) all_threads;
static pthread_key_t thread_key;
static AP_TLS struct ap_thread *tl_thread;

struct ap_thread *ap_threads_first(void)
{
	return atomic_load_explicit(&all_threads, memory_order_acquire);
}

static void thread_detach(void *arg);
static void meta_init(void);

void ap_events_init(void)
{
	pthread_key_create(&thread_key, thread_detach);
	meta_init();
}

static struct ap_thread *thread_attach(void)
{
	struct ap_thread *t;
	/* Reuse the record of a thread that exited: programs that create and destroy thousands
	 * of threads keep the list short. */
	for (t = ap_threads_first(); t; t = t->next) {
		bool expect = true;
		if (atomic_load_explicit(&t->vacant, memory_order_relaxed) &&
		    atomic_compare_exchange_strong(&t->vacant, &expect, false))
			break;
	}
	if (!t) {
		t = ap_sys_alloc(sizeof(*t));
		if (!t)
			return NULL;
		atomic_store(&t->cur, AP_NOBUF);
		struct ap_thread *head = ap_threads_first();
		do
			t->next = head;
		while (!atomic_compare_exchange_weak(&all_threads, &head, t));
	}
	t->tid = ap_sys_tid();
	t->seq = 0;
	ap_hot.allocs = ap_hot.bytes = ap_hot.frees = 0; /* folded into the record at detach */
	ap_lock(&t->count_lock);
	t->hot = &ap_hot;
	ap_unlock(&t->count_lock);
	tl_thread = t;
	/* The destructor flushes the thread's buffer when it exits. */
	pthread_setspecific(thread_key, t);
	return t;
}

static inline struct ap_thread *thread_self(void)
{
	struct ap_thread *t = tl_thread;
	return AP_LIKELY(t) ? t : thread_attach();
}

static inline struct ap_buf *acquire(struct ap_thread *t)
{
	for (;;) {
		struct ap_buf *b = atomic_exchange_explicit(&t->cur, NULL, memory_order_acquire);
		if (AP_LIKELY(b != NULL && b != AP_NOBUF && b->len + AP_EVENT_MAX <= AP_BUF_DATA))
			return b;
		if (b == NULL) { /* the writer is stealing it, for a few instructions */
			__builtin_ia32_pause();
			continue;
		}
		/* Full, or none: hand the full one over and fetch another, holding nothing while
		 * waiting, so that the writer can always steal and make progress. */
		if (b != AP_NOBUF)
			queue_push(b);
		atomic_store_explicit(&t->cur, AP_NOBUF, memory_order_release);
		struct ap_buf *nb = pool_get();
		nb->tid = t->tid;
		nb->seq = t->seq++;
		nb->len = 0;
		nb->last_addr = 0;
		nb->n_events = 0;
		struct ap_buf *expect = AP_NOBUF;
		while (!atomic_compare_exchange_weak(&t->cur, &expect, nb)) {
			expect = AP_NOBUF;
			__builtin_ia32_pause();
		}
	}
}

static inline void release(struct ap_thread *t, struct ap_buf *b)
{
	atomic_store_explicit(&t->cur, b, memory_order_release);
	if (AP_UNLIKELY(atomic_load_explicit(&ap_state, memory_order_relaxed) == AP_STATE_FINAL))
		ap_writer_sync();
	else if (AP_UNLIKELY(atomic_load_explicit(&ap_writer_deferred, memory_order_relaxed)))
		ap_writer_poll();
}

static void thread_detach(void *arg)
{
	struct ap_thread *t = arg;
	int saved = ap_guard_enter(1);
	struct ap_buf *b;
	while (!(b = atomic_exchange(&t->cur, NULL)))
		__builtin_ia32_pause();
	if (b != AP_NOBUF) {
		if (b->len)
			queue_push(b);
		else
			ap_pool_put(b);
	}
	atomic_store(&t->cur, AP_NOBUF);
	/* The TLS block goes away with the thread: its counts stay with the record. */
	ap_lock(&t->count_lock);
	t->done[0] += ap_hot.allocs;
	t->done[1] += ap_hot.bytes;
	t->done[2] += ap_hot.frees;
	t->hot = NULL;
	ap_unlock(&t->count_lock);
	ap_hot.allocs = ap_hot.bytes = ap_hot.frees = 0;
	/* Later calls of this thread (other destructors) take the general path, which attaches
	 * it again before anything is counted. */
	ap_hot.parked = 0; /* the countdown, while the guard is set */
	tl_thread = NULL;
	atomic_store(&t->vacant, true);
	ap_guard_leave(saved);
}

void ap_events_forked_child(void)
{
	/* Only the forking thread exists in the child; its buffers belong to the parent's trace
	 * (the memory is left alone: copy-on-write pages that nobody touches cost nothing). Its
	 * thread-specific value names the parent's record: cleared, or the key's destructor would
	 * hand the parent's events to the child's writer when this thread exits. */
	atomic_store(&all_threads, NULL);
	tl_thread = NULL;
	pthread_setspecific(thread_key, NULL);
	atomic_store(&ap_lost_total, 0);
	atomic_store(&ap_orphan_lost_allocs, 0);
	atomic_store(&ap_orphan_lost_frees, 0);
	pool_free = NULL;
	pool_total = 0;
	queue_head = queue_tail = NULL;
	queue_len = 0;
	atomic_flag_clear(&pool_lock);
	ap_meta_reset();
}

/* ---- encoding ---------------------------------------------------------------------------------- */

static inline uint8_t *begin_event(struct ap_thread *t, struct ap_buf *b, int tag, uint64_t *now)
{
	uint64_t s = ap_stamp();
	if (b->len == 0)
		b->base_stamp = b->last_stamp = s;
	if (AP_UNLIKELY(s <= b->last_stamp) && b->len)
		s = b->last_stamp + 1; /* keep a thread's stamps strictly increasing */
	uint8_t *q = b->data + b->len;
	if (AP_UNLIKELY(atomic_load_explicit(&t->lost_allocs, memory_order_relaxed) |
	                atomic_load_explicit(&t->lost_frees, memory_order_relaxed))) {
		*q++ = AP_EV_LOST;
		q = ap_put_varint(q, s - b->last_stamp);
		q = ap_put_varint(q, atomic_exchange(&t->lost_allocs, 0));
		q = ap_put_varint(q, atomic_exchange(&t->lost_frees, 0));
		b->last_stamp = s;
		b->n_events++;
	}
	b->n_events++;
	*q++ = (uint8_t)tag;
	q = ap_put_varint(q, s - b->last_stamp);
	b->last_stamp = s;
	*now = s;
	return q;
}

static inline uint8_t *put_addr(struct ap_buf *b, uint8_t *q, const void *p)
{
	q = ap_put_svarint(q, (int64_t)((uintptr_t)p - b->last_addr));
	b->last_addr = (uintptr_t)p;
	return q;
}

void ap_event_alloc(int api, const void *p, size_t size, uint32_t stack)
{
	struct ap_thread *t = thread_self();
	if (!t)
		return;
	struct ap_buf *b = acquire(t);
	uint64_t now;
	uint8_t *q = begin_event(t, b, AP_EV_ALLOC | api << 4, &now);
	q = put_addr(b, q, p);
	q = ap_put_varint(q, size);
	q = ap_put_varint(q, stack);
	b->len = (size_t)(q - b->data);
	release(t, b);
}

/* A FREE or an UNFREE. */
static void event_addr(int tag, const void *p)
{
	struct ap_thread *t = thread_self();
	if (!t)
		return;
	struct ap_buf *b = acquire(t);
	uint64_t now;
	uint8_t *q = begin_event(t, b, tag, &now);
	q = put_addr(b, q, p);
	b->len = (size_t)(q - b->data);
	release(t, b);
}

void ap_event_free(int api, const void *p)
{
	event_addr(AP_EV_FREE | api << 4, p);
}

void ap_event_unfree(const void *p)
{
	event_addr(AP_EV_UNFREE | AP_API_REALLOC << 4, p);
}

void ap_event_lost(bool is_free)
{
	struct ap_thread *t = tl_thread;
	if (t)
		atomic_fetch_add(is_free ? &t->lost_frees : &t->lost_allocs, 1);
	else /* the thread is being attached: the writer collects these */
		atomic_fetch_add(is_free ? &ap_orphan_lost_frees : &ap_orphan_lost_allocs, 1);
	atomic_fetch_add(&ap_lost_total, 1);
}

atomic_ulong ap_lost_total, ap_orphan_lost_allocs, ap_orphan_lost_frees;

void ap_count_alloc(size_t size)
{
	if (thread_self()) {
		ap_hot_add(&ap_hot.allocs, 1);
		ap_hot_add(&ap_hot.bytes, size);
	}
}

void ap_count_free(void)
{
	if (thread_self())
		ap_hot_add(&ap_hot.frees, 1);
}

bool ap_events_attached(void)
{
	return tl_thread != NULL;
}

void ap_events_totals(uint64_t out[3])
{
	out[0] = out[1] = out[2] = 0;
	for (struct ap_thread *t = ap_threads_first(); t; t = t->next) {
		ap_lock(&t->count_lock);
		const struct ap_hot *h = t->hot;
		out[0] += t->done[0] + (h ? __atomic_load_n(&h->allocs, __ATOMIC_RELAXED) : 0);
		out[1] += t->done[1] + (h ? __atomic_load_n(&h->bytes, __ATOMIC_RELAXED) : 0);
		out[2] += t->done[2] + (h ? __atomic_load_n(&h->frees, __ATOMIC_RELAXED) : 0);
		ap_unlock(&t->count_lock);
	}
}

/* ---- the meta stream ----------------------------------------------------------------------------- */

static ap_spinlock meta_lock = ATOMIC_FLAG_INIT;
static struct ap_buf *meta_cur, *meta_full_head, *meta_full_tail;
/* For when mmap fails (address space exhausted, a program testing out-of-memory paths): a STACK
 * record that cannot be written leaves events naming an undefined stack. Refilled by the writer
 * each round from buffers it gave back. Under meta_lock. */
#define AP_META_RESERVE 4
static struct ap_buf *meta_reserve[AP_META_RESERVE];

static struct ap_buf *meta_buf_get(void)
{
	struct ap_buf *b = pool_try_get(true);
	for (int i = 0; !b && i < AP_META_RESERVE; i++) {
		b = meta_reserve[i];
		meta_reserve[i] = NULL;
	}
	return b;
}

static void meta_refill(void)
{
	for (int i = 0; i < AP_META_RESERVE; i++)
		if (!meta_reserve[i])
			meta_reserve[i] = pool_try_get(true);
}

bool ap_meta_record(int kind, const uint8_t *payload, size_t len)
{
	size_t need = 1 + AP_VARINT_MAX + len;
	if (need > AP_BUF_DATA)
		return false; /* cannot happen: records are bounded well below a buffer */
	ap_lock(&meta_lock);
	if (!meta_cur || meta_cur->len + need > AP_BUF_DATA) {
		if (meta_cur) {
			meta_cur->next = NULL;
			if (meta_full_tail)
				meta_full_tail->next = meta_cur;
			else
				meta_full_head = meta_cur;
			meta_full_tail = meta_cur;
		}
		/* Never waits: the writer needs this lock to make progress. */
		meta_cur = meta_buf_get();
		if (meta_cur)
			meta_cur->len = 0;
	}
	if (meta_cur) {
		uint8_t *q = meta_cur->data + meta_cur->len;
		*q++ = (uint8_t)kind;
		q = ap_put_varint(q, len);
		memcpy(q, payload, len);
		meta_cur->len = (size_t)(q + len - meta_cur->data);
	}
	bool ok = meta_cur != NULL;
	ap_unlock(&meta_lock);
	return ok;
}

static void meta_init(void)
{
	ap_lock(&meta_lock);
	meta_refill();
	ap_unlock(&meta_lock);
}

struct ap_buf *ap_meta_take_all(void)
{
	ap_lock(&meta_lock);
	meta_refill();
	struct ap_buf *head = meta_full_head;
	if (meta_cur && meta_cur->len) {
		meta_cur->next = NULL;
		if (meta_full_tail)
			meta_full_tail->next = meta_cur;
		else
			head = meta_cur;
		meta_cur = NULL;
	}
	meta_full_head = meta_full_tail = NULL;
	ap_unlock(&meta_lock);
	return head;
}

void ap_meta_reset(void)
{
	meta_cur = meta_full_head = meta_full_tail = NULL;
	atomic_flag_clear(&meta_lock);
}

void ap_events_lock_all(void)
{
	ap_lock(&meta_lock);
	ap_lock(&pool_lock);
}

void ap_events_unlock_all(void)
{
	ap_unlock(&pool_lock);
	ap_unlock(&meta_lock);
}
