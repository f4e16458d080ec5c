#!/usr/bin/env python3
"""Views: record tests/views/views_prog.c and check `allocprof list/peek/traces/folded/top` figure
by figure, with --focus, --ignore, --hide, --lines and --sample-index.

The source lines of the allocating calls are found by their marker comments (ALLOC-x, CALL-x) in
views_prog.c, so the test follows edits of the program's layout. The expected figures are those
its header comment lists. Exit status: 0 all checks passed, 1 some failed, 77 skipped.
Standard library only; no shared helper, so this directory stands on its own.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import aptest  # noqa: E402  (the shared helpers: pprof's byte format)

METRICS = ('alloc_objects', 'alloc_space', 'inuse_objects', 'inuse_space')
SEP_PEEK = '----------------------------------------------------------+-------------'
SEP_TRACES = '-----------+-------------------------------------------------------'

# Per stack below main (root first, function granularity): the four figures.
STACKS = {
    ('alpha',): (4, 1300, 1, 1000),
    ('beta', 'alpha'): (4, 1300, 1, 1000),
    ('beta',): (2, 100, 2, 100),
    ('gamma_', 'add_two'): (4, 28, 0, 0),
    ('rec', 'rec', 'rec', 'rec'): (1, 64, 1, 64),
}
TOTAL = tuple(sum(v[m] for v in STACKS.values()) for m in range(4))


class Checker:
    def __init__(self, args):
        self.allocprof = args.allocprof
        self.failures = []
        self.checks = 0
        self.env = dict(os.environ, DEBUGINFOD_URLS='')
        if args.shim:
            self.env['ALLOCPROF_SHIM'] = args.shim

    def check(self, cond, msg):
        self.checks += 1
        if not cond:
            self.failures.append(msg)
        return cond

    def eq(self, got, want, what):
        return self.check(got == want, '%s:\n  got:  %r\n  want: %r' % (what, got, want))

    def run(self, *args, rc=0, cwd=None):
        cmd = [self.allocprof] + [str(a) for a in args]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env, cwd=cwd,
                           universal_newlines=True, timeout=60)
        self.check(p.returncode == rc, '%s: exit status %d, want %d; stderr:\n%s'
                   % (' '.join(cmd), p.returncode, rc, p.stderr[-2000:]))
        return p.stdout


def fmt_value(v, metric):
    """pprof's (and allocprof's) value format: bytes scaled by 1024, two decimals, trailing zeros cut."""
    if metric in ('alloc_objects', 'inuse_objects') or v == 0:
        return '%d' % v
    return aptest.fmt_bytes(v)


def fmt_pct(v, total):
    pct = 100.0 * v / total if total else 0
    if 99.95 <= abs(pct) <= 100.05:
        return '100%'
    if abs(pct) >= 1:
        return '%.2f%%' % pct
    return '0%' if pct == 0 else '%.2g%%' % pct


def markers(source):
    """Line number of every /* ALLOC-x */ and /* CALL-x */ marker in the program's source."""
    found = {}
    with open(source) as f:
        for n, line in enumerate(f, 1):
            for m in re.findall(r'/\* ((?:ALLOC|CALL)-[A-Z0-9]+) \*/', line):
                found[m] = n
    return found


def below_main(line):
    """A folded line without the frames above main (libc's start-up, which varies)."""
    stack, _, weight = line.rpartition(' ')
    frames = stack.split(';')
    names = [f.split(' ')[0] for f in frames]
    return ';'.join(frames[names.index('main'):]) if 'main' in names else None, weight


def folded_set(t, *args):
    out = t.run('folded', *args)
    got = {}
    for line in out.splitlines():
        t.check(re.fullmatch(r'\S.* [1-9][0-9]*', line) is not None, 'folded line not "stack weight": %r' % line)
        stack, weight = below_main(line)
        t.check(stack is not None, 'folded line without main: %r' % line)
        got[stack] = got.get(stack, 0) + int(weight)
    return got


def expect_folded(metric, keep=lambda s: True, rename=None):
    m = METRICS.index(metric)
    want = {}
    for s, v in STACKS.items():
        if not keep(s) or not v[m]:
            continue
        key = ';'.join(rename(s) if rename else ('main',) + s)
        want[key] = want.get(key, 0) + v[m]
    return want


def test_folded(t):
    t.eq(folded_set(t, T), expect_folded('alloc_space'), 'folded (default alloc_space)')
    for metric in METRICS:
        t.eq(folded_set(t, '--sample-index=' + metric, T), expect_folded(metric), 'folded ' + metric)
    t.eq(folded_set(t, '--focus', '^beta$', T), expect_folded('alloc_space', lambda s: 'beta' in s),
         'folded --focus ^beta$')
    t.eq(folded_set(t, '--ignore', 'beta', T), expect_folded('alloc_space', lambda s: 'beta' not in s),
         'folded --ignore beta')
    t.eq(folded_set(t, '--focus', 'alpha', '--ignore', 'beta', T),
         expect_folded('alloc_space', lambda s: s == ('alpha',)), 'folded --focus alpha --ignore beta')
    # --focus also matches a frame's file: every stack has frames in views_prog.c.
    t.eq(folded_set(t, '--focus', r'views_prog\.c$', T), expect_folded('alloc_space'), 'folded --focus FILE')
    # Hiding alpha makes its callers the leaves; main;beta then merges two stacks.
    t.eq(folded_set(t, '--hide', 'alpha', T),
         expect_folded('alloc_space', rename=lambda s: ('main',) + tuple(f for f in s if f != 'alpha')),
         'folded --hide alpha')
    # The shim records from the caller of malloc: with these direct calls nothing more shows.
    t.eq(folded_set(t, '--show-allocator-frames', T), expect_folded('alloc_space'),
         'folded --show-allocator-frames')

    # --lines: every frame is "function file:line"; the file is the one the debug info names.
    out = t.run('folded', '--lines', '--sample-index=alloc_objects', T)
    m = re.search(r';alpha (\S+):\d+', out)
    if not t.check(m is not None, 'folded --lines: no "alpha FILE:LINE" frame in:\n' + out):
        return
    f = m.group(1)
    t.check(os.path.basename(f) == 'views_prog.c', 'folded --lines: file %r is not views_prog.c' % f)
    L = MARK
    want = {
        'main %s:%d;alpha %s:%d' % (f, L['CALL-MA'], f, L['ALLOC-A1']): 3,
        'main %s:%d;alpha %s:%d' % (f, L['CALL-MA'], f, L['ALLOC-A2']): 1,
        'main %s:%d;beta %s:%d;alpha %s:%d' % (f, L['CALL-MB'], f, L['CALL-BA'], f, L['ALLOC-A1']): 3,
        'main %s:%d;beta %s:%d;alpha %s:%d' % (f, L['CALL-MB'], f, L['CALL-BA'], f, L['ALLOC-A2']): 1,
        'main %s:%d;beta %s:%d' % (f, L['CALL-MB'], f, L['ALLOC-B']): 2,
        'main %s:%d;gamma_ %s:%d;add_two %s:%d' % (f, L['CALL-MG'], f, L['CALL-G'], f, L['ALLOC-G']): 4,
        'main %s:%d;' % (f, L['CALL-MR']) + ';'.join(['rec %s:%d' % (f, L['CALL-R'])] * 3) +
        ';rec %s:%d' % (f, L['ALLOC-R']): 1,
    }
    got = {}
    for line in out.splitlines():
        stack, weight = below_main(line)
        got[stack] = int(weight)
    t.eq(got, want, 'folded --lines --sample-index=alloc_objects')
    return f


def source_lines(path):
    with open(path) as fh:
        return fh.read().split('\n')


def expect_list(src, metric, lines, lo, hi):
    """Expected `list` body lines lo..hi: figures of lines (line -> (flat, cum)) beside the text."""
    out = []
    for n in range(lo, hi + 1):
        flat, cum = lines.get(n, (0, 0))
        out.append('%10s %10s %6d:%s' % (fmt_value(flat, metric) if flat else '.',
                                         fmt_value(cum, metric) if cum else '.', n, src[n - 1]))
    return out


def check_routine(t, out, what, func, f, metric, lines, src, total):
    """One ROUTINE block of `list`: header, totals, every source line from first - 5 to last + 5."""
    text = out.split('\n')
    head = 'ROUTINE ======================== %s in %s' % (func, f)
    if not t.check(head in text, '%s: no line %r in:\n%s' % (what, head, out)):
        return
    i = text.index(head)
    flat = sum(v[0] for v in lines.values())
    cum = sum(v[1] for v in lines.values())  # pprof sums the lines' cum
    t.eq(text[i + 1], '%10s %10s (flat, cum) %6s of Total' % (fmt_value(flat, metric), fmt_value(cum, metric),
                                                          fmt_pct(cum, total)), what + ': totals line')
    lo, hi = max(1, min(lines) - 5), max(lines) + 5
    want = expect_list(src, metric, lines, lo, hi)
    t.eq(text[i + 2:i + 2 + len(want)], want, what + ': annotated lines %d..%d' % (lo, hi))


def test_list(t, f, source):
    L = MARK
    src = source_lines(source)
    ao, tot_o = 'alloc_objects', TOTAL[0]
    out = t.run('list', '--sample-index=alloc_objects', '^alpha$', T)
    t.check(out.startswith('Total: %d\n' % tot_o), 'list: first line is not "Total: %d":\n%s' % (tot_o, out))
    check_routine(t, out, 'list ^alpha$', 'alpha', f, ao, {L['ALLOC-A1']: (6, 6), L['ALLOC-A2']: (2, 2)}, src, tot_o)
    t.eq(out.count('ROUTINE'), 1, 'list ^alpha$: number of routines')

    # Recursion: line CALL-R appears three times in the stack but counts once (lines granularity).
    out = t.run('list', '^rec$', T)
    check_routine(t, out, 'list ^rec$ (inuse_space)', 'rec', f, 'inuse_space',
                  {L['CALL-R']: (0, 64), L['ALLOC-R']: (64, 64)}, src, TOTAL[3])

    # An inlined function lists under its own name; its caller shows the call line.
    out = t.run('list', '--sample-index=alloc_space', 'gamma_|add_two', T)
    check_routine(t, out, 'list add_two', 'add_two', f, 'alloc_space', {L['ALLOC-G']: (28, 28)}, src, TOTAL[1])
    check_routine(t, out, 'list gamma_', 'gamma_', f, 'alloc_space', {L['CALL-G']: (0, 28)}, src, TOTAL[1])
    t.check(out.index('ROUTINE ======================== add_two') < out.index('ROUTINE ======================== gamma_'),
            'list: routines are not in name order')

    # --focus applies to list too: only main -> beta -> alpha remains.
    out = t.run('list', '--sample-index=alloc_objects', '--focus', 'beta', '^alpha$', T)
    check_routine(t, out, 'list --focus beta ^alpha$', 'alpha', f, ao,
                  {L['ALLOC-A1']: (3, 3), L['ALLOC-A2']: (1, 1)}, src, tot_o)

    # A relative source name (the compiler's working directory is unknown) is also looked for
    # under --source-path with its leading directories dropped.
    if not os.path.isabs(f):
        elsewhere = tempfile.mkdtemp(prefix='views-cwd-')
        out = t.run('list', '--sample-index=alloc_objects', '--source-path',
                    '/nonexistent:' + os.path.dirname(os.path.abspath(source)), '^alpha$', T, cwd=elsewhere)
        check_routine(t, out, 'list --source-path', 'alpha', f, ao,
                      {L['ALLOC-A1']: (6, 6), L['ALLOC-A2']: (2, 2)}, src, tot_o)
        os.rmdir(elsewhere)

    # gamma_ has nothing in use: under inuse_space it is no node, as in pprof.
    t.run('list', 'gamma_', T, rc=1)
    t.run('list', 'no_such_function', T, rc=1)
    t.run('list', '--json', 'alpha', T, rc=2)
    t.run('list', '(', T, rc=2)


def test_list_missing_source(t, source, tmp):
    """Figures are still listed by line when the source file is gone."""
    cc = shutil.which('cc') or shutil.which('gcc')
    if not cc:
        print('views: no C compiler; skipping the missing-source check')
        return
    copy = os.path.join(tmp, 'gone.c')
    shutil.copy(source, copy)
    exe = os.path.join(tmp, 'gone')
    p = subprocess.run([cc, '-O1', '-g', '-fno-omit-frame-pointer', '-fno-optimize-sibling-calls', '-o', exe, copy])
    if p.returncode:
        print('views: cannot compile %s; skipping the missing-source check' % copy)
        return
    os.unlink(copy)
    trace = os.path.join(tmp, 'gone.trace')
    t.run('record', '-o', trace, '--', exe)
    out = t.run('list', '--sample-index=alloc_objects', '^alpha$', trace)
    L = MARK
    t.check(' Error: could not find file %s' % copy in out, 'list without source: no error line in:\n' + out)
    want = ['%10s %10s %6d:' % ('6', '6', L['ALLOC-A1']), '%10s %10s %6d:' % ('2', '2', L['ALLOC-A2'])]
    t.check(all(w in out.split('\n') for w in want), 'list without source: want lines %r in:\n%s' % (want, out))


def peek_block(t, out, node_name, what):
    """The lines of peek's entry for node_name, between two separators."""
    blocks = out.split(SEP_PEEK + '\n')
    for b in blocks:
        lines = b.rstrip('\n').split('\n')
        if any(l.endswith('                | ' + node_name) for l in lines):
            return lines
    t.check(False, '%s: no entry for %s in:\n%s' % (what, node_name, out))
    return []


def edge(w, pct, name):
    return '%50s %6s |   %s' % (w, pct, name)


def node(flat, sum_, cum, total):
    return '%10s %6s %6s %10s %6s                | ' % ('%d' % flat, fmt_pct(flat, total), fmt_pct(sum_, total),
                                                       '%d' % cum, fmt_pct(cum, total))


def test_peek(t):
    tot = TOTAL[0]
    out = t.run('peek', '--sample-index=alloc_objects', '^alpha$', T)
    lines = out.split('\n')
    t.check('      flat  flat%   sum%        cum   cum%   calls calls% + context' in lines,
            'peek: no legend line in:\n' + out)
    t.eq(peek_block(t, out, 'alpha', 'peek ^alpha$'),
         [edge('4', '50.00%', 'beta'), edge('4', '50.00%', 'main'), node(8, 8, 8, tot) + 'alpha'],
         'peek ^alpha$')
    t.check(out.endswith(SEP_PEEK + '\n'), 'peek: output does not end with a separator')

    out = t.run('peek', '--sample-index=alloc_objects', '^beta$', T)
    t.eq(peek_block(t, out, 'beta', 'peek ^beta$'),
         [edge('6', '100%', 'main'), node(2, 2, 6, tot) + 'beta', edge('4', '66.67%', 'alpha')], 'peek ^beta$')

    out = t.run('peek', '--sample-index=alloc_objects', 'add_two', T)
    t.eq(peek_block(t, out, 'add_two', 'peek add_two'),
         [edge('4', '100%', 'gamma_ (inline)'), node(4, 4, 4, tot) + 'add_two'], 'peek add_two')

    # Recursion: no rec -> rec self edge, cum counted once.
    out = t.run('peek', '--sample-index=alloc_objects', '^rec$', T)
    t.eq(peek_block(t, out, 'rec', 'peek ^rec$'), [edge('1', '100%', 'main'), node(1, 1, 1, tot) + 'rec'],
         'peek ^rec$')

    # Two matches: sum% runs over the matched nodes in top order (alpha 8, then beta 2).
    out = t.run('peek', '--sample-index=alloc_objects', '^(alpha|beta)$', T)
    b = peek_block(t, out, 'beta', 'peek alpha|beta')
    t.check(node(2, 10, 6, tot) + 'beta' in b, 'peek alpha|beta: running sum%% wrong in %r' % b)
    t.check(out.index('| alpha') < out.index('| beta'), 'peek: matched nodes not in top order')

    out = t.run('peek', '-n', '1', '--sample-index=alloc_objects', '^(alpha|beta)$', T)
    t.check('| beta\n' not in out, 'peek -n 1 printed a second node')
    t.run('peek', 'no_such_function', T, rc=1)


def test_traces(t, f):
    L = MARK
    data = json.loads(t.run('traces', '--json', '--sample-index=alloc_objects', T))
    t.eq(data.get('sample_index'), 'alloc_objects', 'traces --json: sample_index')
    t.eq(tuple(data['total'][m] for m in METRICS), TOTAL, 'traces --json: total')
    got = {}
    order = []
    for tr in data['traces']:
        names = [fr['function'] for fr in tr['frames']]
        below = tuple(reversed(names[:names.index('main')])) if 'main' in names else tuple(names)
        got[below] = tuple(tr['values'][m] for m in METRICS)
        order.append(tr['values']['alloc_objects'])
        if below == ('gamma_', 'add_two'):
            t.eq([fr['inlined'] for fr in tr['frames'][:2]], [True, False], 'traces --json: add_two inlined')
    t.eq(got, STACKS, 'traces --json: stacks and figures')
    t.eq(order, sorted(order, reverse=True), 'traces --json: heaviest first')

    data = json.loads(t.run('traces', '--json', '--lines', '-n', '1', '--sample-index=inuse_space', T))
    t.eq(len(data['traces']), 1, 'traces --json -n 1: number of traces')
    fr = data['traces'][0]['frames'][0]
    t.eq((fr['function'], fr['file'], fr['line'], data['traces'][0]['values']['inuse_space']),
         ('alpha', f, L['ALLOC-A2'], 1000), 'traces --json --lines: the heaviest in-use stack')

    out = t.run('traces', '--sample-index=alloc_objects', T)
    lines = out.split('\n')
    t.check(lines[0].startswith('File: '), 'traces: no File: header')
    t.check('Type: alloc_objects' in lines, 'traces: no Type: line')
    t.eq(out.count(SEP_TRACES + '\n'), len(STACKS) + 1, 'traces: separators')
    if t.check('%10s   %s' % ('4', 'add_two (inline)') in lines, 'traces: no "4   add_two (inline)" line in:\n' + out):
        i = lines.index('%10s   %s' % ('4', 'add_two (inline)'))
        t.eq(lines[i + 1], '%10s   %s' % ('', 'gamma_'), 'traces: the frame after add_two')
        t.eq(lines[i - 4:i], ['%14s:  %s' % (m, fmt_value(v, m)) for m, v in zip(METRICS, (4, 28, 0, 0))],
             'traces: the labels of the add_two stack')
    out = t.run('traces', '--lines', '--sample-index=alloc_objects', T)
    t.check('%10s   alpha %s:%d' % ('3', f, L['ALLOC-A1']) in out.split('\n'),
            'traces --lines: no "3   alpha FILE:ALLOC-A1" line in:\n' + out)


def test_top(t, f):
    L = MARK
    data = json.loads(t.run('top', '--json', '--focus', '^beta$', '--sample-index=alloc_space', T))
    t.eq(tuple(data['total'][m] for m in METRICS), TOTAL, 'top --focus: total is the whole profile')
    rows = {r['function']: r for r in data['rows']}
    t.eq(set(rows) >= {'alpha', 'beta', 'main'} and 'gamma_' not in rows and 'rec' not in rows, True,
         'top --focus ^beta$: functions %s' % sorted(rows))
    if 'alpha' in rows:
        t.eq(rows['alpha']['flat']['alloc_space'], 1300, 'top --focus ^beta$: alpha flat')
    data = json.loads(t.run('top', '--json', '--ignore', 'alpha|rec', T))
    t.eq(sorted(r['function'] for r in data['rows'] if r['function'] in ('alpha', 'beta', 'gamma_', 'add_two', 'rec')),
         ['add_two', 'beta', 'gamma_'], 'top --ignore alpha|rec: functions')

    data = json.loads(t.run('top', '--json', '--lines', '--sample-index=alloc_objects', T))
    got = {(r['function'], r['line']): (r['flat']['alloc_objects'], r['cum']['alloc_objects'])
           for r in data['rows'] if r.get('file') == f}
    want = {('alpha', L['ALLOC-A1']): (6, 6), ('alpha', L['ALLOC-A2']): (2, 2), ('beta', L['CALL-BA']): (0, 4),
            ('beta', L['ALLOC-B']): (2, 2), ('add_two', L['ALLOC-G']): (4, 4), ('gamma_', L['CALL-G']): (0, 4),
            ('rec', L['CALL-R']): (0, 1), ('rec', L['ALLOC-R']): (1, 1), ('main', L['CALL-MA']): (0, 4),
            ('main', L['CALL-MB']): (0, 6), ('main', L['CALL-MG']): (0, 4), ('main', L['CALL-MR']): (0, 1)}
    t.eq(got, want, 'top --lines --json: (function, line) -> (flat, cum)')
    named = [r['name'] for r in data['rows'] if r['function'] == 'alpha']
    t.check('alpha %s:%d' % (f, L['ALLOC-A1']) in named, 'top --lines: names %r' % named)

    out = t.run('top', '--sample-index=alloc_objects', T)
    t.check(re.search(r'\n +4 +\S+ +\S+ +4 +\S+  add_two \(inline\)\n', out) is not None,
            'top: add_two is not marked (inline):\n' + out)
    t.run('folded', '-n', '3', T, rc=2)
    t.run('top', '--focus', '[', T, rc=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--allocprof', required=True)
    ap.add_argument('--shim')
    ap.add_argument('--prog', required=True, help='views_prog, built -O1 -g')
    ap.add_argument('--source', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'views_prog.c'))
    args = ap.parse_args()
    t = Checker(args)
    global MARK, T
    MARK = markers(args.source)
    tmp = tempfile.mkdtemp(prefix='views-')
    ok = False
    try:
        T = os.path.join(tmp, 'v.trace')
        t.run('record', '-o', T, '--', args.prog)
        if not os.path.exists(T):
            print('views: record wrote no trace; stopping')
            return 1
        data = json.loads(t.run('top', '--json', T))
        t.eq(tuple(data['total'][m] for m in METRICS), TOTAL, 'top --json: total')
        test_folded(t)
        f = t.run('folded', '--lines', T)
        m = re.search(r';alpha (\S+):\d+', f)
        f = m.group(1) if m else None
        if f:
            test_list(t, f, args.source)
            test_peek(t)
            test_traces(t, f)
            test_top(t, f)
        test_list_missing_source(t, args.source, tmp)
        ok = not t.failures
    finally:
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print('views: scratch directory kept: ' + tmp)
    for msg in t.failures:
        print('FAIL: ' + msg)
    print('views: %d of %d checks failed' % (len(t.failures), t.checks) if t.failures
          else 'views: all %d checks passed' % t.checks)
    return 1 if t.failures else 0


if __name__ == '__main__':
    sys.exit(main())
