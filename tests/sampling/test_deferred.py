#!/usr/bin/env python3
"""Sampled mode without a writer thread while the process has one (preload/writer.c).

A second thread makes glibc's malloc lock its arena on every call, so sampled mode starts none
in a single-threaded process: the thread that records a sample writes the round itself when the
last one is 100 ms old. Checked here: such a process has one thread (full mode has the writer:
two); the program's first pthread_create starts the writer (three threads then); and a process
killed with SIGKILL keeps what was recorded up to the round its last sample triggered.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lifecycle'))
import lifetest  # noqa: E402
from lifetest import aptest, kv  # noqa: E402

t = aptest.Test('deferred')
prog = t.prog('deferred')

# 1 MiB blocks at a mean interval of 4 KiB: each is sampled with probability 1 - exp(-256) and
# weighs exactly 1 in the estimates, so the figures are counts.
SAMPLED = ['--sample-bytes', '4096', '--seed', '3']

for label, args, alone, with_thread in (('sampled', SAMPLED, 1, 3), ('full', [], 2, 3)):
    traces, p = lifetest.record(t, 'threads-' + label, [prog, 'threads'], record_args=args)
    out = kv(p.stdout)
    t.check_eq('%s: threads of a single-threaded program' % label, out.get('tasks_alone'), alone)
    t.check_eq('%s: threads once it started one' % label, out.get('tasks_with_thread'), with_thread)
    if t.check(len(traces) == 1, '%s: one trace, got %r' % (label, traces)):
        i = lifetest.info(t, traces[0])
        t.check_eq('%s: complete trace' % label, i.get('complete'), True)
        t.check(i.get('totals', {}).get('alloc_calls', 0) >= 1000,
                '%s: totals %r cover the 1000 allocations' % (label, i.get('totals')))

traces, p = lifetest.record(t, 'kill', [prog, 'kill'], record_args=SAMPLED, expect_rc=-9)
if t.check(len(traces) == 1, 'kill: one trace, got %r' % traces):
    t.check_eq('kill: samples written by the round the last one triggered',
               lifetest.flat(t, traces[0]), {'before_work': 10, 'trigger_work': 1})
    tot = lifetest.info(t, traces[0]).get('totals', {})
    t.check(tot.get('alloc_calls', 0) >= 11, 'kill: totals %r cover the 11 allocations' % tot)
t.finish()
