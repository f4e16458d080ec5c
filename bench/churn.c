/* churn: single-threaded malloc/free churn of varied small sizes, called
 * from a stack depth of ~15 frames.
 *
 * Models the hot path of an allocation-heavy program (parsers, servers,
 * interpreters): short-lived small objects freed soon after allocation,
 * with a short window of live objects so the pattern is not pure LIFO.
 *
 * Usage: churn [SCALE]      (full scale: 20,000,000 malloc/free pairs)
 */
#include "bench_common.h"

#define FULL_PAIRS 20000000ULL
#define DEPTH 15
#define BATCH 1 /* descend to full depth for every pair */
#define WINDOW 64 /* power of two */

static void *live[WINDOW];
static uint64_t live_head;
static uint64_t rng = 0x1234567;
static uint64_t n_malloc, n_free;

/* Size classes with a realistic skew towards tiny objects. */
static inline size_t pick_size(uint64_t r)
{
    static const unsigned short sizes[16] = {
        8, 16, 16, 24, 24, 32, 32, 40, 48, 64, 64, 96, 128, 200, 256, 512,
    };
    return sizes[r & 15] + ((r >> 4) & 7);
}

NOINLINE static void leaf(uint64_t count)
{
    for (uint64_t i = 0; i < count; i++) {
        uint64_t r = bench_splitmix64(&rng);
        uint64_t slot = live_head++ & (WINDOW - 1);
        if (live[slot]) {
            free(live[slot]);
            n_free++;
        }
        void *p = malloc(pick_size(r));
        ESCAPE(p);
        if (!p)
            abort();
        n_malloc++;
        *(volatile char *)p = (char)r;
        live[slot] = p;
    }
}

NOINLINE static void level(int depth, uint64_t count)
{
    if (depth <= 1)
        leaf(count);
    else
        level(depth - 1, count);
    NOTAIL();
}

int main(int argc, char **argv)
{
    double scale = argc > 1 ? bench_parse_scale(argv[1]) : 1.0;
    uint64_t pairs = bench_scaled(FULL_PAIRS, scale);

    /* main -> level x (DEPTH-2) -> leaf -> malloc: ~15 frames incl. libc start. */
    uint64_t done = 0;
    while (done < pairs) {
        uint64_t n = pairs - done < BATCH ? pairs - done : BATCH;
        level(DEPTH - 3, n);
        done += n;
    }
    for (unsigned i = 0; i < WINDOW; i++) {
        if (live[i]) {
            free(live[i]);
            n_free++;
        }
    }
    bench_report_events(n_malloc + n_free);
    return 0;
}
