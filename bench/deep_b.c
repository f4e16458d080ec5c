#include "deep.h"
#include "bench_common.h"

/* One frame of the deep recursion: bit `level` of the path picks which of
 * the two functions the next frame is, so each path number yields its own
 * sequence of return addresses (a distinct stack).  The result is used
 * after the call so the calls cannot become tail calls. */
NOINLINE uint64_t deep_b(struct deep_ctx *c, unsigned level)
{
    uint64_t r;
    if (c->remaining == 0)
        r = deep_leaf(c);
    else if (c->remaining--, (c->path_bits >> level) & 1)
        r = deep_b(c, level + 1);
    else
        r = deep_a(c, level + 1);
    NOTAIL();
    return r + 1;
}
