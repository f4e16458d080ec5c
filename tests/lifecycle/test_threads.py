#!/usr/bin/env python3
"""Threads and signals.

  * 300 threads created and destroyed in batches of 64: a third allocate 10 blocks each, a third
    nothing, a third allocate one block that a pthread key destructor frees after allocating three
    more, running after the shim's own per-thread destructor (its key is older): exact counts.
  * A SIGALRM handler firing every 20 us mallocs and frees while the main loop mallocs and frees:
    no deadlock, and for each of the handler and the main loop, recorded + lost == the program's
    own count (the real allocator here is bump.so, which is async-signal-safe, unlike glibc's).
  * Recursion 200 deep with ALLOCPROF_DEPTH=16: recorded truncated, shown with "[truncated]".
"""
import math

import lifetest
from lifetest import aptest, kv

t = aptest.Test('lifecycle-threads')
life = t.prog('life')

traces, p = lifetest.record(t, 'threads', [life, 'threads', '300'])
data = t.top_json(traces[0])
rows = {r['function']: r['flat'] for r in data['rows']}
for fn, n in (('thread_work', 1000), ('dtor_thread', 100), ('dtor_work', 300)):
    t.check_eq('threads: %s alloc_objects' % fn, rows.get(fn, {}).get('alloc_objects'), n)
    t.check_eq('threads: %s inuse_objects' % fn, rows.get(fn, {}).get('inuse_objects'), 0)

# Signals. The handler's events made while the thread is inside the shim are counted as lost.
N = 300000
traces, p = lifetest.record(t, 'signals', [life, 'signals', str(N)],
                            env_extra={'LD_PRELOAD': t.prog('bump')}, timeout=60)
out = kv(p.stdout)
t.check_eq('signals: main loop count', out.get('main_count'), N)
H = out.get('handler_count', 0)
t.check(H > 1000, 'signals: the handler ran often enough to matter (%d times)' % H)
data = t.top_json(traces[0])
rows = {r['function']: r['flat'] for r in data['rows']}
i = lifetest.info(t, traces[0])
lost_a, lost_f = i.get('lost_allocs', -1), i.get('lost_frees', -1)
t.log('handler ran %d times; recorded %d of its allocations; lost %d allocations, %d frees'
      % (H, rows.get('handler_alloc', {}).get('alloc_objects', 0), lost_a, lost_f))
t.check_eq('signals: main_alloc recorded exactly', rows.get('main_alloc', {}).get('alloc_objects'), N)
t.check_eq('signals: main_alloc all freed', rows.get('main_alloc', {}).get('inuse_objects'), 0)
t.check_eq('signals: handler allocations recorded + lost', rows.get('handler_alloc', {}).get('alloc_objects', 0) + lost_a, H)
t.check(lost_a > 0, 'signals: some handler calls interrupted the shim and were counted as lost')
# A handler block is either recorded with its free, recorded with its free lost (in use), or
# not recorded (its free then is unknown or lost): frees recorded + lost frees == H.
h = rows.get('handler_alloc', {})
freed_recorded = h.get('alloc_objects', 0) - h.get('inuse_objects', 0) + i.get('unknown_frees', 0)
t.check(freed_recorded + lost_f >= H, 'signals: handler frees recorded (%d) + lost (%d) >= %d'
        % (freed_recorded, lost_f, H))
t.check_eq('signals: the trace accounts for every call (totals + lost)',
           i.get('totals', {}).get('alloc_calls', 0) + lost_a >= N + H, True)

# The same in sampled mode, where the handler interrupts the fast paths' countdown take and
# give-back too. Every call still counts once (in the totals, or as lost), and the countdown must
# stay sound: were it ever to wrap to a huge value, sampling would stop for the rest of the run
# and main_alloc's estimate would fall far outside 5 sigma of the truth (sigma as derived in
# tests/sampling/test_sampling.py: Var = N / (exp(s/R) - 1) for N allocations of s bytes).
R, S = 4096, 24
traces, p = lifetest.record(t, 'signals-sampled', [life, 'signals', str(N)],
                            env_extra={'LD_PRELOAD': t.prog('bump'), 'ALLOCPROF_SAMPLE_BYTES': str(R),
                                       'ALLOCPROF_SEED': '5'}, timeout=60)
out = kv(p.stdout)
t.check_eq('signals sampled: main loop count', out.get('main_count'), N)
H = out.get('handler_count', 0)
t.check(H > 1000, 'signals sampled: the handler ran often enough to matter (%d times)' % H)
i = lifetest.info(t, traces[0])
t.check(i.get('totals', {}).get('alloc_calls', 0) + i.get('lost_allocs', 0) >= N + H,
        'signals sampled: totals %r + lost %r cover the %d + %d calls' % (i.get('totals'), i.get('lost_allocs'), N, H))
rows = {r['function']: r['flat'] for r in t.top_json(traces[0])['rows']}
est = rows.get('main_alloc', {}).get('alloc_objects', 0)
sigma = math.sqrt(N / math.expm1(S / R))
t.check(abs(est - N) <= 5 * sigma + 1, 'signals sampled: main_alloc estimate %s vs %d (5 sigma = %.0f)'
        % (est, N, 5 * sigma))

traces, p = lifetest.record(t, 'deep', [life, 'deep', '200'], env_extra={'ALLOCPROF_DEPTH': '16'})
data = t.top_json(traces[0])
rows = {r['function']: r for r in data['rows']}
t.check_eq('deep: deep_leaf allocations', rows.get('deep_leaf', {}).get('flat', {}).get('alloc_objects'), 1)
t.check_eq('deep: [truncated] outermost frame', rows.get('[truncated]', {}).get('cum', {}).get('alloc_objects'), 1)
t.check('main' not in rows, 'deep: main is beyond the 16 frames kept')
t.finish()
