#!/usr/bin/env python3
"""Exit paths and descriptors.

Every way out leaves a readable trace holding at least everything up to the last flush, and
`allocprof info` says how the process ended when that is known: run with the shim preloaded
directly (no `allocprof record` to append the status), so what info reports is what the shim
wrote itself (exit/return: EXIT record from on_exit; _exit/_Exit/abort: END with how/status).
SIGSEGV and SIGKILL: the allocations made 350 ms before (three writer rounds) are all there.

Descriptors: a program that closes every descriptor (loop, close_range) or dup2s its own file
over all of them keeps being traced exactly, never finds trace data in its own file, and sees no
descriptor it did not open once it closed them."""
import os
import lifetest
from lifetest import aptest, kv

t = aptest.Test('lifecycle-exits')
life = t.prog('life')


def run_direct(name, args, rc):
    out = os.path.join(t.tmp, name + '.trace')
    env = t.env({'LD_PRELOAD': t.shim, 'ALLOCPROF_OUTPUT': out})
    p = t.run([life] + args, env=env)
    t.check_eq('%s: exit status' % name, p.returncode, rc)
    return out, p


CASES = [  # mode, returncode, info end.how, end.status, complete (END record)
    ('ret', 4, 'exit', 4, True),
    ('exit', 5, 'exit', 5, True),
    ('_exit', 6, 'exit', 6, True),
    ('_Exit', 7, 'exit', 7, True),
    ('abort', -6, 'signal', 6, True),
    ('thread', 8, 'exit', 8, True),
    ('segv', -11, 'unknown', None, False),
    ('kill', -9, 'unknown', None, False),
]
for mode, rc, how, status, complete in CASES:
    trace, p = run_direct(mode, ['exit-' + mode, '100'], rc)
    if not os.path.exists(trace):
        t.fail('%s: no trace' % mode)
        continue
    i = lifetest.info(t, trace)
    t.check_eq('%s: info end.how' % mode, i.get('end', {}).get('how'), how)
    t.check_eq('%s: info end.status' % mode, i.get('end', {}).get('status'), status)
    t.check_eq('%s: END record present' % mode, i.get('complete'), complete)
    t.check_eq('%s: allocations up to the end' % mode, lifetest.flat(t, trace).get('parent_work'), 101)

# Under record, the status record appends agrees (and wins).
traces, p = lifetest.record(t, 'rec-segv', [life, 'exit-segv', '10'], expect_rc=-11)
t.check_eq('record segv: info says signal 11', lifetest.info(t, traces[0]).get('end', {}).get('status'), 11)

# Descriptors closed or replaced under the shim.
for how in ('closeall', 'closerange', 'dup2'):
    own = os.path.join(t.tmp, 'own-' + how)
    trace, p = run_direct('fds-' + how, ['fds-' + how, '200', own], 0)
    out = kv(p.stdout)
    t.check_eq('fds-%s: traced exactly after the descriptors went' % how, lifetest.flat(t, trace),
               {'parent_work': 201, 'child_work': 201, 'leaf_work': 201})
    t.check_eq('fds-%s: complete trace' % how, lifetest.info(t, trace).get('complete'), True)
    if how == 'dup2':
        t.check_eq('fds-dup2: nothing written into the program\'s own file', os.path.getsize(own), 0)
    else:
        t.check_eq('fds-%s: descriptors right after closing' % how, out.get('fds_after_close'), 0)
        t.check_eq('fds-%s: descriptors the program did not open, at the end' % how, out.get('fds_at_end'), 0)
t.finish()
