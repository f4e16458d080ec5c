#!/usr/bin/env python3
"""End to end: record tests/progs/known.c and check `allocprof top --json` figure by figure.

known.c makes an exact number of calls of each allocation function from named functions; the
expected figures are derived below, with the arithmetic, from the source. Other functions (libc
and ld.so internals, e.g. pthread_create's calloc of the new thread's DTV) may appear in the rows;
only the figures of known.c's own functions are asserted exactly.

Cross-checked with heaptrack 1.4 (`heaptrack -o x ./known; heaptrack_print -F stacks --flamegraph-
cost-type allocations|leaked x.zst`, aggregated per function): heaptrack's allocation counts
equal ALLOC_OBJECTS below for every function it can see, and its leaked bytes equal INUSE_SPACE,
with three known differences, all heaptrack's:
  * heaptrack does not hook memalign or pvalloc: do_memalign and do_pvalloc do not appear at all;
  * heaptrack does not treat realloc(p, 0) returning NULL as a free: it reports do_realloc as
    leaking 80 bytes (the 50 and the 30), where the contract (and glibc) says the 30 is freed;
  * heaptrack's main cum therefore reads 46 allocations (44 of known.c's without the 4 memalign/
    pvalloc ones, + pthread_create's 1 DTV calloc of 320 bytes under spawn_threads).
Its per-function figures: early_init 3 allocs/200 B leaked, do_malloc 10/256, do_calloc 5/300,
do_posix_memalign 2/200, do_aligned_alloc 2/256, do_valloc 2/0, do_reallocarray 2/600,
child_a 8/256, child_b 2/200, parent 1 flat, 11 cum/456, recurse 5 (cum 5, once per stack)/48,
thread_a 7/96, thread_b 3/666, main flat 2/154.
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import aptest  # noqa: E402
from aptest import four, add  # noqa: E402

# ---- Expected figures, from tests/progs/known.c ---------------------------------------------------
# four(alloc_objects, alloc_space, inuse_objects, inuse_space)

FLAT = {
    # constructor: 3 x malloc(100) = 300 B; frees 1 -> 2 live, 200 B
    'early_init': four(3, 3 * 100, 2, 2 * 100),
    # 10 x malloc(64) = 640 B; frees 6 -> 4 live, 256 B
    'do_malloc': four(10, 10 * 64, 4, 4 * 64),
    # 5 x calloc(4, 25): bytes are n*size = 100 each -> 500 B; frees 2 -> 3 live, 300 B
    'do_calloc': four(5, 5 * 4 * 25, 3, 3 * 100),
    # realloc(NULL,10)=alloc 10; realloc(p,1000)=free 10 + alloc 1000; realloc(p,50)=free 1000 +
    # alloc 50 (kept); malloc(30); realloc(q,0)->NULL = free 30.
    # allocations: 10, 1000, 50, 30 -> 4 objects, 1090 B; live: the 50
    'do_realloc': four(4, 10 + 1000 + 50 + 30, 1, 50),
    # 2 x posix_memalign(64, 200) = 400 B; frees 1 -> 1 live, 200 B
    'do_posix_memalign': four(2, 2 * 200, 1, 200),
    # 2 x aligned_alloc(128, 256) = 512 B; frees 1 -> 1 live, 256 B
    'do_aligned_alloc': four(2, 2 * 256, 1, 256),
    # 3 x memalign(32, 100) = 300 B; frees 2 -> 1 live, 100 B
    'do_memalign': four(3, 3 * 100, 1, 100),
    # 2 x valloc(300) = 600 B; frees both
    'do_valloc': four(2, 2 * 300, 0, 0),
    # 1 x pvalloc(5000): the requested 5000, not the page-rounded 8192; leaked
    'do_pvalloc': four(1, 5000, 1, 5000),
    # reallocarray(NULL,10,20)=alloc 200; reallocarray(p,30,20)=free 200 + alloc 600 (kept)
    'do_reallocarray': four(2, 10 * 20 + 30 * 20, 1, 30 * 20),
    # called twice by parent; per call 4 x malloc(128), frees 3:
    # 2 * 4 = 8 objects, 8 * 128 = 1024 B; live 2 * 1 = 2, 256 B
    'child_a': four(2 * 4, 2 * 4 * 128, 2 * 1, 2 * 128),
    # 2 x calloc(10, 10) = 2 x 100 B, both leaked
    'child_b': four(2, 2 * 10 * 10, 2, 200),
    # its own malloc(1000), freed
    'parent': four(1, 1000, 0, 0),
    # recurse(5): one malloc(16) per level, 5 levels = 80 B; levels 4 and 2 free -> 3 live, 48 B
    'recurse': four(5, 5 * 16, 3, 3 * 16),
    # thread: 7 x malloc(48) = 336 B; frees 5 -> 2 live, 96 B
    'thread_a': four(7, 7 * 48, 2, 2 * 48),
    # thread: 3 x calloc(1, 333) = 999 B; the main thread frees one -> 2 live, 666 B
    'thread_b': four(3, 3 * 333, 2, 2 * 333),
    # main's own: 2 x malloc(77), leaked
    'main': four(2, 2 * 77, 2, 2 * 77),
}

# cum: a function's own allocations plus those of everything it calls, once per stack.
CUM = {fn: dict(v) for fn, v in FLAT.items()}
# parent = its malloc(1000) + child_a twice + child_b:
#   objects 1 + 8 + 2 = 11; bytes 1000 + 1024 + 200 = 2224; live 0 + 2 + 2 = 4, 0 + 256 + 200 = 456
CUM['parent'] = add(FLAT['parent'], FLAT['child_a'], FLAT['child_b'])
assert CUM['parent'] == four(11, 2224, 4, 456)
# recurse is on its own stack up to 5 times, but each allocation counts once: cum == flat (5, not
# 5+4+3+2+1 = 15).
assert CUM['recurse'] == four(5, 80, 3, 48)

# main's direct callees (the stacks under each are disjoint; none is on another's stack).
MAIN_CALLEES = ['do_malloc', 'do_calloc', 'do_realloc', 'do_posix_memalign', 'do_aligned_alloc',
                'do_memalign', 'do_valloc', 'do_pvalloc', 'do_reallocarray', 'parent', 'recurse',
                'spawn_threads']
# main's cum without spawn_threads (whose cum holds pthread_create's internal allocations, which
# libc decides): 2 + 10 + 5 + 4 + 2 + 2 + 3 + 2 + 1 + 2 + 11 + 5 = 49 objects,
# 154 + 640 + 500 + 1090 + 400 + 512 + 300 + 600 + 5000 + 800 + 2224 + 80 = 12300 B,
# live 2 + 4 + 3 + 1 + 1 + 1 + 1 + 0 + 1 + 1 + 4 + 3 = 22 objects,
# 154 + 256 + 300 + 50 + 200 + 256 + 100 + 0 + 5000 + 600 + 456 + 48 = 7420 B.
MAIN_KNOWN = add(FLAT['main'], *(CUM[f] for f in MAIN_CALLEES if f != 'spawn_threads'))
assert MAIN_KNOWN == four(49, 12300, 22, 7420), MAIN_KNOWN

# Everything known.c allocates itself (all flats): main's known part + early_init + the threads.
ALL_KNOWN = add(MAIN_KNOWN, FLAT['early_init'], FLAT['thread_a'], FLAT['thread_b'])
assert ALL_KNOWN == four(49 + 3 + 7 + 3, 12300 + 300 + 336 + 999, 22 + 2 + 2 + 2, 7420 + 200 + 96 + 666)

# At most this many allocations may come from outside known.c's functions (libc/ld.so internals,
# e.g. 1 DTV calloc per new thread stack). More means the shim records something twice.
SLACK_OBJECTS = 16

SAMPLE_INDEXES = ('alloc_objects', 'alloc_space', 'inuse_objects', 'inuse_space')


def check_profile(t, data, label):
    # main's cum is checked below, as the sum of its parts.
    t.compare_rows(data, {fn: {'flat': FLAT[fn], 'cum': CUM[fn]} if fn != 'main' else {'flat': FLAT[fn]}
                          for fn in FLAT}, label)
    rows = t.rows_by_function(data)

    # spawn_threads allocates nothing itself; its cum is libc's business (pthread_create).
    st = rows.get('spawn_threads')
    if st is not None:
        t.check_eq('%s: spawn_threads flat' % label, st['flat'], aptest.ZERO)
    st_cum = st['cum'] if st is not None else aptest.ZERO

    # main's cum is exactly its own allocations plus its callees' cum.
    m = rows.get('main')
    if m is not None:
        callees = add(m['flat'], *(rows[f]['cum'] for f in MAIN_CALLEES if f in rows))
        t.check_eq('%s: main cum == main flat + sum of its callees\' cum (%s)' % (label, ', '.join(MAIN_CALLEES)),
                   m['cum'], callees)
        t.check_eq('%s: main cum == the known 12300 B etc. + spawn_threads cum' % label,
                   m['cum'], add(MAIN_KNOWN, st_cum))

    # Optional "trace" fields (more fields may be present): nothing lost, no stray frees.
    tr = data.get('trace')
    if isinstance(tr, dict):
        for k in ('unknown_frees', 'lost_allocs', 'lost_frees'):
            if k in tr:
                t.check_eq('%s: trace.%s' % (label, k), tr[k], 0)
        if 'truncated' in tr:
            t.check_eq('%s: trace.truncated' % label, tr['truncated'], False)

    # Totals: at least everything known.c allocated; inuse never more than allocated.
    tot = data['total']
    for k in aptest.METRICS:
        t.check(tot[k] >= ALL_KNOWN[k], '%s: total %s = %d < %d, the sum of known.c\'s own'
                % (label, k, tot[k], ALL_KNOWN[k]))
    t.check(tot['alloc_objects'] <= ALL_KNOWN['alloc_objects'] + SLACK_OBJECTS,
            '%s: total alloc_objects = %d, more than known.c\'s %d + %d internal ones: double counting?'
            % (label, tot['alloc_objects'], ALL_KNOWN['alloc_objects'], SLACK_OBJECTS))
    t.check(tot['inuse_objects'] <= tot['alloc_objects'] and tot['inuse_space'] <= tot['alloc_space'],
            '%s: total inuse exceeds total alloc: %r' % (label, tot))
    # Every allocation has exactly one innermost function: the flats add up to at most the total.
    for k in aptest.METRICS:
        s = sum(r['flat'][k] for r in data['rows'])
        t.check(s <= tot[k], '%s: the rows\' flat %s add up to %d > total %d' % (label, k, s, tot[k]))
        for r in data['rows']:
            if not (0 <= r['flat'][k] <= r['cum'][k] <= tot[k]):
                t.fail('%s: row %s: not 0 <= flat <= cum <= total for %s: %d, %d, %d'
                       % (label, r['function'], k, r['flat'][k], r['cum'][k], tot[k]))
                break


def check_order(t, data, key, part, label):
    vals = [r[part][key] for r in data['rows']]
    t.check(vals == sorted(vals, reverse=True),
            '%s: rows not sorted by %s %s, descending: %s' % (label, part, key, vals[:30]))


def main():
    t = aptest.Test('known', extra_args=[(('--clock',), dict(default=None))])
    known = t.prog('known')
    env = {'ALLOCPROF_CLOCK': t.args.clock} if t.args.clock else None

    # Untraced first: the program itself works.
    p = t.run([known])
    t.check_eq('untraced known: exit status', p.returncode, 0)
    t.check_eq('untraced known: stdout', p.stdout, b'known: done\n')

    out = os.path.join(t.tmp, 'known.%p.trace')
    trace, rec = t.record([known], out=out, env_extra=env)
    t.check_eq('traced known: stdout', rec.stdout, b'known: done\n')
    t.check(os.path.basename(trace) in rec.stderr.decode('utf-8', 'replace'),
            'allocprof record does not print the trace path (%s) on stderr: %r' % (trace, rec.stderr))

    data = t.top_json(trace)
    check_profile(t, data, 'top --json')
    nrows = len(data['rows'])

    for si in SAMPLE_INDEXES:
        d = t.top_json(trace, '--sample-index=' + si)
        t.check_eq('--sample-index=%s: "sample_index"' % si, d['sample_index'], si)
        t.check_eq('--sample-index=%s: total' % si, d['total'], data['total'])
        check_profile(t, d, '--sample-index=' + si)
        check_order(t, d, si, 'flat', '--sample-index=' + si)
        t.check_eq('--sample-index=%s: number of rows' % si, len(d['rows']), nrows)

        dc = t.top_json(trace, '--sample-index=' + si, '--cum')
        check_profile(t, dc, '--sample-index=%s --cum' % si)
        check_order(t, dc, si, 'cum', '--sample-index=%s --cum' % si)

        # -n N: the first N rows of the full list (compared by value: ties may be in any order).
        dn = t.top_json(trace, '-n', '3', '--sample-index=' + si)
        t.check_eq('-n 3 --sample-index=%s: number of rows' % si, len(dn['rows']), min(3, nrows))
        t.check_eq('-n 3 --sample-index=%s: flat %s of the rows' % (si, si),
                   [r['flat'][si] for r in dn['rows']], [r['flat'][si] for r in d['rows'][:3]])
        t.check_eq('-n 3 --sample-index=%s: total' % si, dn['total'], data['total'])

    # The minimal reader that FORMAT.md gives for other languages reads this trace right.
    fmt = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'include', 'allocprof', 'FORMAT.md')
    with open(fmt) as f:
        m = re.search(r'```python\n(.*?)```', f.read(), re.S)
    if t.check(m, 'FORMAT.md has no python reader'):
        script = os.path.join(t.tmp, 'format_reader.py')
        with open(script, 'w') as f:
            f.write(m.group(1))
        p = t.run([sys.executable, script, trace])
        t.check_eq('FORMAT.md reader: output', p.stdout.decode(),
                   'allocations: %d\n' % data['total']['alloc_objects'])
    t.finish()


if __name__ == '__main__':
    main()
