/* deep: shared declarations for the deep-stack workload (deep.c,
 * deep_a.c, deep_b.c).  deep_a() and deep_b() live in separate translation
 * units so GCC cannot merge, inline or clone them into one another. */
#ifndef ALLOCPROF_BENCH_DEEP_H
#define ALLOCPROF_BENCH_DEEP_H

#include <stdint.h>

struct deep_ctx {
    uint64_t path_bits;  /* branch choices, consumed one bit per frame */
    unsigned remaining;  /* frames still to descend */
    unsigned path;       /* path number, selects the leaf behaviour */
};

uint64_t deep_a(struct deep_ctx *c, unsigned level);
uint64_t deep_b(struct deep_ctx *c, unsigned level);
uint64_t deep_leaf(struct deep_ctx *c);

#endif
