#!/usr/bin/env python3
"""Sampled mode's exact call totals (the TOTALS record) across thread lifetimes and fork.

In sampled mode most calls take the fast paths, which count into the thread's TLS block; a
thread's counts move into its record when it exits, records are reused by later threads, a thread
that only frees must arm itself, and a fork child starts from zero. totals.c exercises each of
these. The full-mode run counts every call through the general path, so its totals are the truth
for the same program; at every sampling interval the totals must equal them exactly, the fork
child's must equal what the child itself called, and the parent's must cover what it called.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import aptest  # noqa: E402

t = aptest.Test('totals')
prog = t.prog('totals')


def record(label, sample_bytes):
    out = os.path.join(t.tmp, label, 'trace')
    os.makedirs(os.path.dirname(out))
    args = ['--seed', '7'] + (['--sample-bytes', str(sample_bytes)] if sample_bytes else [])
    parent, p = t.record([prog], out=out, record_args=args)
    own = {}
    for line in p.stdout.decode().splitlines():
        m = re.match(r'(parent|child): (\d+) allocations, (\d+) bytes, (\d+) frees$', line)
        if m:
            own[m.group(1)] = tuple(int(x) for x in m.group(2, 3, 4))
    t.check(set(own) == {'parent', 'child'}, '%s: program output %r' % (label, p.stdout))
    traces = {'parent': parent, 'child': parent + '.1'}
    totals = {}
    for who, path in traces.items():
        if not t.check(os.path.isfile(path), '%s: no %s trace at %s' % (label, who, path)):
            continue
        r = t.run([t.allocprof, 'info', '--json', path])
        info = json.loads(r.stdout)
        t.check_eq('%s %s: lost calls' % (label, who), (info['lost_allocs'], info['lost_frees']), (0, 0))
        tot = info['totals']
        totals[who] = (tot['alloc_calls'], tot['alloc_bytes'], tot['free_calls'])
    return own, totals


own, truth = record('full', 0)
if 'parent' in own and 'parent' in truth:
    t.check(all(a >= b for a, b in zip(truth['parent'], own['parent'])),
            'full: parent totals %r do not cover the program\'s own calls %r' % (truth['parent'], own['parent']))
if 'child' in own:
    t.check_eq('full: child totals are the child\'s own calls', truth.get('child'), own['child'])

# 512 KiB: nearly every call takes a fast path; 4096: many take the general path too.
for rate in (524288, 4096):
    own_s, got = record('sampled-%d' % rate, rate)
    t.check_eq('sampled %d: program output' % rate, own_s, own)
    for who in ('parent', 'child'):
        t.check_eq('sampled %d: %s totals (calls, bytes, frees) equal the full run\'s' % (rate, who),
                   got.get(who), truth.get(who))
t.finish()
