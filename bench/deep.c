/* deep: allocations from deep and varied call stacks.
 *
 * 200 distinct call paths, each 30-60 frames deep, built like jemalloc's
 * btalloc test helper: two noinline functions in separate translation
 * units (deep_a.c, deep_b.c) recurse into each other, choosing at each
 * level which one to call by one bit of a per-path hash, so every path
 * number produces a distinct stack.  At the bottom a block is allocated
 * and an older one (from a window of live blocks) is freed.
 *
 * Models big applications (C++ frameworks, GUI toolkits, interpreters with
 * deep call chains) where a profiler's cost is dominated by unwinding and
 * by storing/deduplicating many long stacks.
 *
 * Usage: deep [SCALE]     (full scale: 6,000,000 malloc/free pairs)
 */
#include "deep.h"
#include "bench_common.h"

#define FULL_PAIRS 6000000ULL
#define NPATHS 200
#define MIN_DEPTH 30
#define MAX_DEPTH 60
#define WINDOW 128 /* power of two */

static void *live[WINDOW];
static uint64_t live_head;
static uint64_t n_malloc, n_free;

NOINLINE uint64_t deep_leaf(struct deep_ctx *c)
{
    uint64_t slot = live_head++ & (WINDOW - 1);
    if (live[slot]) {
        free(live[slot]);
        n_free++;
    }
    size_t size = 16 + (c->path * 24) % 1000;
    void *p = malloc(size);
    ESCAPE(p);
    if (!p)
        abort();
    n_malloc++;
    *(volatile char *)p = 1;
    live[slot] = p;
    return size;
}

int main(int argc, char **argv)
{
    double scale = argc > 1 ? bench_parse_scale(argv[1]) : 1.0;
    uint64_t pairs = bench_scaled(FULL_PAIRS, scale);
    uint64_t bits[NPATHS];
    unsigned depth[NPATHS];
    for (unsigned i = 0; i < NPATHS; i++) {
        bits[i] = bench_mix(i + 1);
        depth[i] = MIN_DEPTH + (unsigned)(bench_mix(i + 1000) % (MAX_DEPTH - MIN_DEPTH + 1));
    }

    uint64_t rng = 42, sink = 0;
    for (uint64_t i = 0; i < pairs; i++) {
        unsigned path = (unsigned)(bench_splitmix64(&rng) % NPATHS);
        /* first frame is always deep_a; the bits pick the rest */
        struct deep_ctx c = { bits[path], depth[path] - 1, path };
        sink += deep_a(&c, 0);
    }
    ESCAPE(sink);
    for (unsigned i = 0; i < WINDOW; i++) {
        if (live[i]) {
            free(live[i]);
            n_free++;
        }
    }
    bench_report_events(n_malloc + n_free);
    return 0;
}
