#!/usr/bin/env python3
"""Processes: fork (with and without threads busy allocating), fork + async-signal-safe child +
exec, vfork, posix_spawn, exec chains through sh -c, --no-children / ALLOCPROF_NO_CHILDREN,
static and setuid programs.

tests/lifecycle/life.c's WORKER(name)(n) makes n allocations plus one calloc, all attributed to
name: n + 1 alloc_objects."""
import os
import re
import shutil
import stat
import lifetest
from lifetest import aptest, kv

t = aptest.Test('lifecycle-processes')
life = t.prog('life')


def by_pid(traces):
    return {lifetest.info(t, p).get('pid'): p for p in traces}


# fork: the child's file holds the child's events from the fork on; the parent's is unharmed.
traces, p = lifetest.record(t, 'fork', [life, 'fork', '100'])
t.check_eq('fork: number of traces', len(traces), 2)
err = p.stderr.decode()
t.check('2 traces written' in err and all(x in err for x in traces),
        'fork: record lists both traces:\n' + err)
got = sorted((lifetest.flat(t, x) for x in traces), key=lambda d: -len(d))
t.check_eq('fork: parent trace', got[0], {'parent_work': 101, 'after_work': 26})
t.check_eq('fork: child trace', got[1], {'child_work': 51})
infos = [lifetest.info(t, x) for x in traces]
t.check_eq('fork: both traces end with exit status 0', sorted(i['end'].get('status') for i in infos), [0, 0])

# fork from a multi-threaded parent, a thread allocating all the time: 20 children, no deadlock,
# each child's trace exact (half of them leave with _exit, half with exit).
traces, p = lifetest.record(t, 'forkmt', [life, 'forkmt', '40'], timeout=60)
t.check_eq('forkmt: number of traces', len(traces), 21)
kids = [f for f in (lifetest.flat(t, x) for x in traces) if 'child_work' in f]
t.check_eq('forkmt: child traces', kids, [{'child_work': 21}] * 20)

# fork + exec with only async-signal-safe calls in between; vfork; posix_spawn: the exec'ed
# program has its own trace, the parent's is exact.
for mode in ('forkexec', 'vfork', 'spawn'):
    traces, p = lifetest.record(t, mode, [life, mode, '60'])
    flats = [lifetest.flat(t, x) for x in traces]
    t.check({'parent_work': 61, 'after_work': 16} in flats, '%s: parent trace exact: %r' % (mode, flats))
    t.check({'leaf_work': 61} in flats, '%s: exec\'ed program traced exactly: %r' % (mode, flats))
    t.check_eq('%s: no other trace holds events of ours' % mode,
               sum(1 for f in flats if f), 2)

# exec chains: sh -c with a pipeline and a sequence: one trace per process, each exec'ed life
# exact; record lists them all.
sh = shutil.which('sh')
script = '%s leaf 10; %s leaf 20 | cat; exec %s leaf 30' % (life, life, life)
traces, p = lifetest.record(t, 'sh', [sh, '-c', script])
flats = [lifetest.flat(t, x) for x in traces]
leafs = sorted(f['leaf_work'] for f in flats if 'leaf_work' in f)
t.check_eq('sh -c: the three exec\'ed programs', leafs, [11, 21, 31])
listed = re.findall(r'pid (\d+) \(parent (\d+)\): (\S+)', p.stderr.decode())
t.check_eq('sh -c: record lists every trace', sorted(x[2] for x in listed), traces)

# --no-children and ALLOCPROF_NO_CHILDREN: the first process only.
for how, kw in (('option', {'record_args': ['--no-children']}),
                ('env', {'env_extra': {'ALLOCPROF_NO_CHILDREN': '1'}})):
    traces, p = lifetest.record(t, 'nochildren-' + how, [sh, '-c', script + '; true'], **kw)
    t.check_eq('--no-children (%s): only sh is traced' % how, len(traces), 1)
    traces, p = lifetest.record(t, 'nochildren-fork-' + how, [life, 'fork', '100'], **kw)
    t.check_eq('--no-children (%s): fork child not traced' % how, len(traces), 1)
    if traces:
        t.check_eq('--no-children (%s): parent exact' % how, lifetest.flat(t, traces[0]),
                   {'parent_work': 101, 'after_work': 26})
# the shim removes itself from LD_PRELOAD, and only itself
env = t.env({'LD_PRELOAD': t.shim + ':' + t.prog('bump'), 'ALLOCPROF_NO_CHILDREN': '1',
             'ALLOCPROF_OUTPUT': os.path.join(t.tmp, 'np.%p')})
p = t.run([sh, '-c', 'echo "$LD_PRELOAD"'], env=env)
t.check_eq('ALLOCPROF_NO_CHILDREN: LD_PRELOAD seen by children', p.stdout.decode().strip(), t.prog('bump'))

# static and setuid programs: refused with the reason.
if 'static' in t.progs:
    p = t.run([t.allocprof, 'record', '-o', os.path.join(t.tmp, 's.%p'), '--', t.prog('static'), 'leaf'])
    t.check(p.returncode == 2 and b'statically linked' in p.stderr,
            'static program: %s\n%s' % (lifetest.describe_status(p.returncode), p.stderr.decode()))
if os.geteuid() == 0:
    suid = os.path.join(t.tmp, 'suid-life')
    shutil.copy(life, suid)
    os.chown(suid, 65534, 65534)
    os.chmod(suid, 0o755 | stat.S_ISUID)
    p = t.run([t.allocprof, 'record', '-o', os.path.join(t.tmp, 'u.%p'), '--', suid, 'leaf'])
    t.check(p.returncode == 2 and b'setuid' in p.stderr,
            'setuid program: %s\n%s' % (lifetest.describe_status(p.returncode), p.stderr.decode()))
else:
    t.log('setuid check skipped: not root (cannot make a file owned by another user)')
t.finish()
