#!/usr/bin/env python3
"""End to end: cross-thread free-and-reuse stress (tests/progs/xthread.c).

Threads hand blocks to each other so that addresses are freed by one thread and handed out again
by malloc in another within microseconds. The analyzer must order those events by their stamps
(allocprof/trace.h, "Stamps"); if it processes a malloc of an address before the other thread's
free of it, the live set comes out wrong. Run under both ALLOCPROF_CLOCK=tsc and =counter, with
glibc's default malloc and with the tcache off (GLIBC_TUNABLES=glibc.malloc.tcache_count=0: every
free goes straight back to the shared arena, so reuse across threads is immediate).

Exact figures, derived from xthread.c (T threads, N iterations each):
  stress_worker flat: T*N allocations; bytes T * sum(SIZE(i) for i < N), SIZE(i) = 24 + 8*(i%8);
                      nothing live (every block is freed by the next thread);
  keep_blocks flat:   T*KEEP allocations of KEEP_SIZE bytes, all live at exit;
  stress_worker cum:  the two together (keep_blocks is called by stress_worker).
Cross-checked with heaptrack (T=4, N=40000): stress_worker 160000 allocations, 0 B leaked;
keep_blocks 100 allocations, 5600 B leaked; pthread_create's 4 DTV callocs (320 B each, leaked)
under main -- not asserted.
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import aptest  # noqa: E402
from aptest import four, add  # noqa: E402

# Must match tests/progs/xthread.c.
KEEP = 25
KEEP_SIZE = 56


def size(i):
    return 24 + 8 * (i % 8)


def expected(nthreads, iters):
    stress = four(nthreads * iters, nthreads * sum(size(i) for i in range(iters)), 0, 0)
    keep = four(nthreads * KEEP, nthreads * KEEP * KEEP_SIZE, nthreads * KEEP, nthreads * KEEP * KEEP_SIZE)
    return {
        'stress_worker': {'flat': stress, 'cum': add(stress, keep)},
        'keep_blocks': {'flat': keep, 'cum': keep},
    }


def main():
    t = aptest.Test('xthread', extra_args=[
        (('--iters',), dict(type=int, default=200000)),
        (('--threads',), dict(type=int, default=4)),
        (('--clocks',), dict(default='tsc,counter')),
    ])
    prog = t.prog('xthread')
    T, N = t.args.threads, t.args.iters
    exp = expected(T, N)
    # e.g. T=4, N=200000: 800000 allocations; per thread 200000/8 cycles of 24+32+...+80 = 416 B,
    # 25000 * 416 = 10400000 B, x4 = 41600000 B; keep: 100 blocks, 5600 B.
    if (T, N) == (4, 200000):
        assert exp['stress_worker']['flat'] == four(800000, 41600000, 0, 0)
        assert exp['keep_blocks']['flat'] == four(100, 5600, 100, 5600)
    want_line = re.compile(rb'^xthread: threads=%d iters=%d keep=%d cross_reuse=(\d+)\n$' % (T, N, KEEP))

    total_reuse = 0
    for clock in t.args.clocks.split(','):
        for tunables in (None, 'glibc.malloc.tcache_count=0'):
            label = 'ALLOCPROF_CLOCK=%s%s' % (clock, ' GLIBC_TUNABLES=' + tunables if tunables else '')
            env = {'ALLOCPROF_CLOCK': clock, 'GLIBC_TUNABLES': tunables}
            t0 = time.monotonic()
            trace, rec = t.record([prog, str(N), str(T)], env_extra=env, timeout=120)
            elapsed = time.monotonic() - t0
            m = want_line.match(rec.stdout)
            if t.check(m, '%s: unexpected output %r' % (label, rec.stdout)):
                total_reuse += int(m.group(1))
            data = t.top_json(trace, '--sample-index=inuse_objects')
            t.compare_rows(data, exp, label)
            tr = data.get('trace')
            if isinstance(tr, dict):  # optional fields: a misordered free shows up as unknown
                for k in ('unknown_frees', 'lost_allocs', 'lost_frees'):
                    if k in tr:
                        t.check_eq('%s: trace.%s' % (label, k), tr[k], 0)
            tot = data['total']
            t.check(tot['alloc_objects'] >= exp['stress_worker']['cum']['alloc_objects'],
                    '%s: total alloc_objects %d below stress_worker\'s' % (label, tot['alloc_objects']))
            # Live at the end: the kept blocks plus a few of libc's own (DTVs of the threads).
            extra = tot['inuse_objects'] - T * KEEP
            t.check(0 <= extra <= 4 * T + 8,
                    '%s: total inuse_objects = %d, expected %d kept blocks + a few of libc\'s'
                    % (label, tot['inuse_objects'], T * KEEP))
            t.log('%s: %.1f s, %s' % (label, elapsed, m.group(0).decode().strip() if m else '?'))
    # The test means something only if addresses really moved between threads.
    t.check(total_reuse >= 1000,
            'only %d allocations reused an address freed by another thread: the stress did not stress'
            % total_reuse)
    t.finish()


if __name__ == '__main__':
    main()
