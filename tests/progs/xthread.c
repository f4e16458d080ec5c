/*
 * xthread.c: cross-thread free-and-reuse stress, for tests/e2e/test_xthread.py.
 *
 * NTHREADS threads run stress_worker. Each allocates blocks in bursts of BURST, hands every burst
 * to the next thread (a mutex-protected list per thread; the blocks themselves are the list
 * nodes, so the queues allocate nothing), then takes whatever the previous thread handed to it
 * and frees it. So nearly every block is freed by another thread than the one that allocated it,
 * and, once tcache bins are full (or with GLIBC_TUNABLES=glibc.malloc.tcache_count=0, which the
 * test sets), the freed address goes back to a shared arena and is handed out again by malloc in
 * another thread microseconds later. A profiler that orders one thread's free after another
 * thread's malloc of the same address gets the live set wrong.
 *
 * At the end every thread frees what is left in its queue and allocates exactly KEEP blocks in
 * keep_blocks, interleaved with those frees, which stay live until exit.
 *
 * Exact figures (test_xthread.py derives the same):
 *   stress_worker flat: NTHREADS * ITERS allocations, sizes SIZE(i) (see below), all freed;
 *   keep_blocks flat:   NTHREADS * KEEP allocations of KEEP_SIZE bytes, all live at the end;
 *   stress_worker cum:  both.
 *
 * Prints "xthread: threads=T iters=N keep=K cross_reuse=R\n", where R counts allocations that
 * returned an address last freed by another thread (approximate: a hashed table of last freers),
 * so the test can check that the scenario it is meant to test actually happened.
 *
 * usage: xthread [ITERS [NTHREADS]]   (defaults 40000 and 4)
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))
#define ESCAPE(p) __asm__ volatile("" : : "r"(p) : "memory")
#define OPAQUE(x)                                                                                  \
	({                                                                                         \
		__typeof__(x) opaque_ = (x);                                                       \
		__asm__ volatile("" : "+r"(opaque_));                                              \
		opaque_;                                                                           \
	})

#define MAXTHREADS 16
#define BURST 32
#define KEEP 25
#define KEEP_SIZE 56
/* Sizes of the churned blocks: 24..80 in steps of 8 (all at least a list node), by iteration. */
#define SIZE(i) ((size_t)(24 + 8 * ((i) % 8)))

struct node {
	struct node *next;
	uint32_t owner;
};

struct queue {
	pthread_mutex_t mu;
	struct node *head;
	char pad[64];
};

static struct queue queues[MAXTHREADS];
static int nthreads = 4;
static long iters = 40000;
static pthread_barrier_t barrier;
void *kept[MAXTHREADS][KEEP];

/* Last freeing thread (+1) per hashed address, to count cross-thread reuse. */
#define TABLE (1u << 16)
static _Atomic uint32_t last_freer[TABLE];
static atomic_long cross_reuse;

static uint32_t slot(const void *p)
{
	uintptr_t a = (uintptr_t)p >> 4;
	return (uint32_t)((a * 0x9E3779B97F4A7C15ull) >> 48) & (TABLE - 1);
}

static void note_alloc(const void *p, int self)
{
	uint32_t f = atomic_load_explicit(&last_freer[slot(p)], memory_order_relaxed);
	if (f && f != (uint32_t)self + 1)
		atomic_fetch_add_explicit(&cross_reuse, 1, memory_order_relaxed);
}

static void release(void *p, int self)
{
	atomic_store_explicit(&last_freer[slot(p)], (uint32_t)self + 1, memory_order_relaxed);
	free(p);
}

static void push_list(int q, struct node *first, struct node *last)
{
	pthread_mutex_lock(&queues[q].mu);
	last->next = queues[q].head;
	queues[q].head = first;
	pthread_mutex_unlock(&queues[q].mu);
}

static struct node *take_all(int q)
{
	pthread_mutex_lock(&queues[q].mu);
	struct node *n = queues[q].head;
	queues[q].head = NULL;
	pthread_mutex_unlock(&queues[q].mu);
	return n;
}

static void free_list(struct node *n, int self)
{
	while (n) {
		struct node *next = n->next;
		release(n, self);
		n = next;
	}
}

void keep_blocks(int self);
void *stress_worker(void *arg);

/* KEEP x malloc(KEEP_SIZE), each right after freeing one block handed over by another thread. */
NOIPA void keep_blocks(int self)
{
	struct node *in = take_all(self);
	for (int k = 0; k < KEEP; k++) {
		if (in) {
			struct node *next = in->next;
			release(in, self);
			in = next;
		}
		void *p = malloc(OPAQUE((size_t)KEEP_SIZE));
		if (!p)
			abort();
		note_alloc(p, self);
		memset(p, self, KEEP_SIZE);
		kept[self][k] = p;
		ESCAPE(p);
	}
	free_list(in, self);
}

/* ITERS x malloc(SIZE(i)), every block freed by the next thread. */
NOIPA void *stress_worker(void *arg)
{
	int self = (int)(intptr_t)arg;
	int next = (self + 1) % nthreads;
	struct node *first = NULL, *last = NULL;
	int inburst = 0;
	for (long i = 0; i < iters; i++) {
		struct node *n = malloc(OPAQUE(SIZE(i)));
		if (!n)
			abort();
		note_alloc(n, self);
		n->owner = (uint32_t)self;
		n->next = first;
		first = n;
		if (!last)
			last = n;
		if (++inburst == BURST) {
			push_list(next, first, last);
			first = last = NULL;
			inburst = 0;
			free_list(take_all(self), self);
		}
	}
	if (first)
		push_list(next, first, last);
	/* Everyone has handed over everything: the queues hold only what is still to be freed. */
	pthread_barrier_wait(&barrier);
	keep_blocks(self);
	pthread_barrier_wait(&barrier);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		iters = atol(argv[1]);
	if (argc > 2)
		nthreads = atoi(argv[2]);
	if (iters < 0 || nthreads < 2 || nthreads > MAXTHREADS) {
		static const char msg[] = "usage: xthread [ITERS [NTHREADS (2..16)]]\n";
		(void)!write(2, msg, sizeof msg - 1);
		return 2;
	}
	for (int i = 0; i < nthreads; i++)
		pthread_mutex_init(&queues[i].mu, NULL);
	pthread_barrier_init(&barrier, NULL, (unsigned)nthreads);
	pthread_t t[MAXTHREADS];
	for (int i = 0; i < nthreads; i++)
		if (pthread_create(&t[i], NULL, stress_worker, (void *)(intptr_t)i) != 0)
			abort();
	for (int i = 0; i < nthreads; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < nthreads; i++)
		if (queues[i].head)
			abort();
	char line[160];
	int len = snprintf(line, sizeof line, "xthread: threads=%d iters=%ld keep=%d cross_reuse=%ld\n",
			   nthreads, iters, KEEP, (long)atomic_load(&cross_reuse));
	(void)!write(1, line, (size_t)len);
	return 0;
}
