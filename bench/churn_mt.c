/* churn_mt: multi-threaded malloc/free churn with cross-thread frees.
 *
 * Threads are arranged in a ring; thread i allocates blocks and hands them
 * to thread (i+1) % T through a single-producer/single-consumer queue, and
 * frees the blocks it receives from thread (i-1) % T.  So every block is
 * freed by a different thread than the one that allocated it (with T=1 the
 * thread feeds itself).  This models producer/consumer pipelines (message
 * passing, work queues) and exercises a profiler's per-thread buffers,
 * locking and cross-thread free matching.  Allocations happen at a stack
 * depth of ~15, like churn.
 *
 * Usage: churn_mt [-t THREADS] [SCALE]
 *   full scale: 20,000,000 malloc/free pairs in total, split over threads.
 */
#include "bench_common.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#define FULL_PAIRS 20000000ULL
#define DEPTH 15
#define QCAP 1024 /* power of two */
#define BATCH 8   /* blocks produced per descent */

struct queue {
    _Alignas(64) _Atomic uint64_t head; /* written by producer */
    _Alignas(64) _Atomic uint64_t tail; /* written by consumer */
    _Alignas(64) void *slot[QCAP];
};

struct worker {
    pthread_t tid;
    unsigned idx;
    uint64_t to_send;
    uint64_t to_recv;
    struct queue *out;
    struct queue *in;
    uint64_t n_malloc, n_free;
    uint64_t rng;
};

static inline size_t pick_size(uint64_t r)
{
    static const unsigned short sizes[16] = {
        8, 16, 16, 24, 24, 32, 32, 40, 48, 64, 64, 96, 128, 200, 256, 512,
    };
    return sizes[r & 15] + ((r >> 4) & 7);
}

/* Free everything currently queued for us; returns how many. */
NOINLINE static uint64_t drain(struct worker *w)
{
    struct queue *q = w->in;
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    uint64_t n = head - tail;
    for (uint64_t i = tail; i < head; i++) {
        void *p = q->slot[i & (QCAP - 1)];
        ESCAPE(p);
        free(p);
    }
    if (n)
        atomic_store_explicit(&q->tail, head, memory_order_release);
    w->n_free += n;
    w->to_recv -= n;
    return n;
}

/* Allocate up to BATCH blocks into the outgoing queue; returns how many. */
NOINLINE static uint64_t produce(struct worker *w)
{
    struct queue *q = w->out;
    uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
    uint64_t space = QCAP - (head - tail);
    uint64_t n = w->to_send < BATCH ? w->to_send : BATCH;
    if (n > space)
        n = space;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = bench_splitmix64(&w->rng);
        void *p = malloc(pick_size(r));
        ESCAPE(p);
        if (!p)
            abort();
        *(volatile char *)p = (char)r;
        q->slot[(head + i) & (QCAP - 1)] = p;
    }
    if (n)
        atomic_store_explicit(&q->head, head + n, memory_order_release);
    w->n_malloc += n;
    w->to_send -= n;
    return n;
}

NOINLINE static uint64_t level(int depth, struct worker *w, int consume)
{
    uint64_t r;
    if (depth <= 1)
        r = consume ? drain(w) : produce(w);
    else
        r = level(depth - 1, w, consume);
    NOTAIL();
    return r;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* thread start + worker_main + level x (DEPTH-4) + produce/drain + malloc */
    while (w->to_send || w->to_recv) {
        uint64_t progress = 0;
        if (w->to_send)
            progress += level(DEPTH - 4, w, 0);
        if (w->to_recv)
            progress += level(DEPTH - 4, w, 1);
        if (!progress)
            sched_yield();
    }
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: churn_mt [-t THREADS] [SCALE]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    unsigned nthreads = 2;
    int opt;
    while ((opt = getopt(argc, argv, "t:")) != -1) {
        if (opt == 't') {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 1024)
                usage();
            nthreads = (unsigned)v;
        } else {
            usage();
        }
    }
    double scale = optind < argc ? bench_parse_scale(argv[optind]) : 1.0;
    if (optind + 1 < argc)
        usage();

    uint64_t per_thread = bench_scaled(FULL_PAIRS, scale) / nthreads;
    if (per_thread == 0)
        per_thread = 1;

    struct queue *queues = aligned_alloc(64, sizeof(struct queue) * nthreads);
    struct worker *workers = calloc(nthreads, sizeof(struct worker));
    if (!queues || !workers)
        abort();
    memset(queues, 0, sizeof(struct queue) * nthreads);
    for (unsigned i = 0; i < nthreads; i++) {
        workers[i].idx = i;
        workers[i].to_send = per_thread;
        workers[i].to_recv = per_thread;
        workers[i].out = &queues[i];
        workers[i].in = &queues[(i + nthreads - 1) % nthreads];
        workers[i].rng = 0x9e37 + i * 0x51ed27ULL;
    }
    for (unsigned i = 0; i < nthreads; i++) {
        if (pthread_create(&workers[i].tid, NULL, worker_main, &workers[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    uint64_t events = 2; /* the aligned_alloc + calloc above */
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(workers[i].tid, NULL);
        events += workers[i].n_malloc + workers[i].n_free;
    }
    free(workers);
    free(queues);
    events += 2;
    /* Thread creation itself allocates (stacks are mmapped, but glibc
     * allocates DTV/TLS blocks with malloc); those are not counted. */
    bench_report_events(events);
    return 0;
}
