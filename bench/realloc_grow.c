/* realloc_grow: buffers grown step by step with realloc, then freed.
 *
 * Models string builders / byte buffers / vectors that grow by appending
 * (growth by a small fixed step, with occasional doubling like a
 * std::vector push_back).  Several buffers grow at once, interleaved, so
 * realloc often has to move the block instead of extending it in place.
 * For a profiler this stresses realloc handling: every realloc is a
 * free of the old address plus an allocation of the new one.
 *
 * Usage: realloc_grow [SCALE]
 *   full scale: 400,000 buffers, each grown in 20-99 steps (~19M events).
 */
#include "bench_common.h"

#define FULL_BUFFERS 400000ULL
#define CONCURRENT 8
#define DEPTH 10

struct buf {
    char *p;
    size_t len, cap;
    unsigned steps_left;
    int doubling; /* vector-style capacity doubling vs. exact-fit growth */
};

static uint64_t n_events;
static uint64_t rng = 0xabcdef;

NOINLINE static void grow(struct buf *b, size_t add)
{
    size_t need = b->len + add;
    if (need > b->cap) {
        size_t cap = b->doubling ? (b->cap ? b->cap * 2 : 16) : need;
        while (cap < need)
            cap *= 2;
        char *np = realloc(b->p, cap); /* realloc(NULL, n) for the first step */
        ESCAPE(np);
        if (!np)
            abort();
        n_events++;
        b->p = np;
        b->cap = cap;
    }
    memset(b->p + b->len, (int)add, add);
    b->len = need;
}

NOINLINE static void level(int depth, struct buf *b, size_t add)
{
    if (depth <= 1)
        grow(b, add);
    else
        level(depth - 1, b, add);
    NOTAIL();
}

static void start(struct buf *b, uint64_t r)
{
    b->p = NULL;
    b->len = b->cap = 0;
    b->steps_left = 20 + (unsigned)(r % 80);
    b->doubling = (r >> 8) % 4 == 0; /* 1 in 4 buffers behave like a vector */
}

int main(int argc, char **argv)
{
    double scale = argc > 1 ? bench_parse_scale(argv[1]) : 1.0;
    uint64_t total = bench_scaled(FULL_BUFFERS, scale);
    struct buf bufs[CONCURRENT];
    uint64_t started = 0, finished = 0;

    for (unsigned i = 0; i < CONCURRENT && started < total; i++, started++)
        start(&bufs[i], bench_splitmix64(&rng));
    unsigned active = (unsigned)started;

    while (finished < total) {
        for (unsigned i = 0; i < active; i++) {
            struct buf *b = &bufs[i];
            if (b->steps_left == (unsigned)-1)
                continue;
            uint64_t r = bench_splitmix64(&rng);
            if (b->steps_left > 0) {
                level(DEPTH, b, 8 + (r & 63));
                b->steps_left--;
            } else {
                ESCAPE(b->p);
                free(b->p);
                n_events++;
                finished++;
                if (started < total) {
                    start(b, r);
                    started++;
                } else {
                    b->steps_left = (unsigned)-1;
                }
            }
        }
    }
    bench_report_events(n_events);
    return 0;
}
