#!/usr/bin/env python3
"""Analyses: record tests/analyses/analyses_prog.c (base and new modes, --clock tsc so that times
are exact) and check `allocprof timeline` (text, JSON, SVG), `--at` on the views, `leaks` and
--fail-on-leaks, `temps` and --sample-index=temp_*, `sizes`, and `diff` (table, JSON, pprof input
and the diff profile) against the figures the program's header comment lists.

Exit status: 0 all checks passed, 1 some failed, 77 skipped. Standard library only.
"""

import json
import os
import re
import shutil
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import aptest  # noqa: E402

PEAK_SPACE = 777 + 100 * 1000 + 50 * 200
PEAK_OBJECTS = 1 + 100 + 50


def run(t, *args, rc=0):
    cmd = [t.allocprof] + [str(a) for a in args]
    p = t.run(cmd)
    t.check(p.returncode == rc, '%s: exit status %d, want %d; stderr:\n%s'
            % (' '.join(cmd), p.returncode, rc, aptest.clip(p.stderr)))
    return p.stdout.decode('utf-8', 'replace'), p.stderr.decode('utf-8', 'replace')


def run_json(t, *args, rc=0):
    out, _ = run(t, *args, rc=rc)
    try:
        return json.loads(out)
    except ValueError as e:
        t.fail('%s: not JSON (%s):\n%s' % (' '.join(map(str, args)), e, aptest.clip(out)))
        return None


def flat(top, metric='inuse_space'):
    """function -> flat figure of a `top --json`, zero rows dropped."""
    return {r['function']: r['flat'][metric] for r in top['rows'] if r['flat'][metric]}


fmt_bytes = aptest.fmt_bytes


def test_timeline(t, base):
    tl = run_json(t, 'timeline', '--json', base)
    if not tl:
        return None
    t.check_eq('timeline peak inuse_space', tl['peak']['inuse_space'], PEAK_SPACE)
    t.check_eq('timeline peak inuse_objects', tl['peak']['inuse_objects'], PEAK_OBJECTS)
    t.check_eq('timeline end inuse_space', tl['end']['inuse_space'], 777 + 300)
    t.check_eq('timeline end inuse_objects', tl['end']['inuse_objects'], 4)
    pts = tl['points']
    t.check(len(pts) >= 60, 'timeline: only %d points' % len(pts))
    t.check_eq('timeline: maximum of the points', max(p['inuse_space'] for p in pts), PEAK_SPACE)
    t.check(all(pts[i]['seconds'] <= pts[i + 1]['seconds'] for i in range(len(pts) - 1)),
            'timeline: points not in time order')
    t.check(0 < tl['peak']['seconds'] < tl['duration'], 'timeline: peak at %r s, duration %r s'
            % (tl['peak']['seconds'], tl['duration']))
    # The run lasts at least the 60 + 30 ms it sleeps.
    t.check(0.09 <= tl['duration'] < 30, 'timeline: duration %r s' % tl['duration'])
    # The 60 ms hold at the peak: the heap stays there for at least 50 ms of points.
    held = [p['seconds'] for p in pts if p['inuse_space'] == PEAK_SPACE]
    t.check(held and max(held) - min(held) >= 0.05, 'timeline: peak held over %r' % held[:3])
    sites = [(s['function'], s['peak_inuse_space']) for s in tl['sites']]
    t.check_eq('timeline top sites at the peak', sites,
               [('ramp_alloc', 100000), ('ramp_small', 10000), ('leak_early', 777)])
    for s in tl['sites']:
        t.check_eq('timeline series length of ' + s['function'], len(s['inuse_space']), len(pts))
    ra = tl['sites'][0]['inuse_space'] if tl['sites'] else []
    t.check_eq('timeline ramp_alloc series maximum', max(ra) if ra else None, 100000)
    t.check_eq('timeline ramp_alloc at the end', ra[-1] if ra else None, 0)

    # The text chart: the peak marked and labelled, the axes in seconds and bytes.
    out, _ = run(t, 'timeline', '--ascii', '--width', '60', base)
    pk = fmt_bytes(PEAK_SPACE)
    t.check('Peak: %s in %d objects at ' % (pk, PEAK_OBJECTS) in out, 'timeline text: no Peak line:\n' + out)
    t.check(re.search(r'\^ peak %s at [0-9.e-]+s|peak %s at [0-9.e-]+s \^' % (re.escape(pk), re.escape(pk)), out),
            'timeline text: peak not marked:\n' + out)
    rows = [l for l in out.splitlines() if re.match(r'^ {0,9}\S* \|', l)]
    t.check_eq('timeline text: chart rows', len(rows), 10)
    t.check(all(len(r.split('|', 1)[1]) == 60 for r in rows), 'timeline text: rows not 60 columns:\n' + out)
    t.check(rows and rows[0].strip().startswith(pk), 'timeline text: top of the heap axis is not the peak:\n' + out)
    t.check(re.search(r'^\s+0s\s+\S+s\s+\S+s$', out, re.M), 'timeline text: no time axis:\n' + out)
    out, _ = run(t, 'timeline', '--unicode', base)
    t.check('\u2588' in out and '\u25b2 peak' in out, 'timeline --unicode: no block characters:\n' + out)

    # The SVG: parses, carries the peak's value and the legend.
    svg = os.path.join(t.tmp, 'timeline.svg')
    run(t, 'timeline', '-o', svg, base)
    try:
        root = ET.parse(svg).getroot()
    except (ET.ParseError, OSError) as e:
        t.fail('timeline SVG does not parse: %s' % e)
        return tl
    ns = '{http://www.w3.org/2000/svg}'
    t.check_eq('SVG root', root.tag, ns + 'svg')
    texts = [''.join(e.itertext()) for e in root.iter(ns + 'text')]
    t.check(any(('peak %s' % pk) in s for s in texts), 'SVG: no "peak %s" text in %r' % (pk, texts))
    peak = [g for g in root.iter(ns + 'g') if g.get('id') == 'peak']
    t.check(peak and peak[0].get('data-bytes') == str(PEAK_SPACE), 'SVG: peak group data-bytes')
    legend = [''.join(e.itertext()) for g in root.iter(ns + 'g') if g.get('id') == 'legend' for e in g]
    t.check(any(s.startswith('ramp_alloc') for s in legend), 'SVG legend: %r' % legend)
    t.check(any(s.endswith('s') and re.fullmatch(r'[0-9.]+s', s) for s in texts), 'SVG: no time axis labels')
    t.check(any(s == fmt_bytes(20 * 1024) or s.endswith('kB') for s in texts), 'SVG: no heap axis in kB')
    t.check_eq('SVG stacked areas', len([p for p in root.iter(ns + 'path') if p.get('class') == 'area']), 4)
    return tl


def test_at(t, base, tl):
    want_peak = {'ramp_alloc': 100000, 'ramp_small': 10000, 'leak_early': 777}
    top = run_json(t, 'top', '--json', '--at', 'peak', base)
    if top:
        t.check_eq('top --at peak: flat inuse_space', flat(top), want_peak)
        t.check_eq('top --at peak: total inuse_objects', top['total']['inuse_objects'], PEAK_OBJECTS)
        t.check_eq('top --at peak: alloc figures stay whole-run', top['total']['alloc_objects'],
                   2184)
        t.check_eq('top --at peak: at.spec', top.get('at', {}).get('spec'), 'peak')
        if tl:
            ev = top['at']['event']
            t.check_eq('top --at peak: event = timeline peak event', ev, tl['peak']['event'])
            top2 = run_json(t, 'top', '--json', '--at', 'event:%d' % ev, base)
            t.check_eq('top --at event:N (the peak)', top2 and flat(top2), want_peak)
            top3 = run_json(t, 'top', '--json', '--at', 'event:%d' % (ev - 1), base)
            t.check_eq('top --at event:N-1 (just before the peak)', top3 and sum(flat(top3).values()),
                       PEAK_SPACE - 1000)
            # 20 ms into the 60 ms hold: the same figures.
            top4 = run_json(t, 'top', '--json', '--at', '%.6fs' % (tl['peak']['seconds'] + 0.02), base)
            t.check_eq('top --at PEAK+20ms', top4 and flat(top4), want_peak)
            top5 = run_json(t, 'top', '--json', '--at', '%.3fms' % ((tl['peak']['seconds'] + 0.02) * 1000), base)
            t.check_eq('top --at PEAK+20ms (in ms)', top5 and flat(top5), want_peak)
    top = run_json(t, 'top', '--json', '--at', '0', base)
    t.check_eq('top --at 0: nothing in use', top and flat(top), {})
    top = run_json(t, 'top', '--json', '--at', 'end', base)
    t.check_eq('top --at end', top and flat(top), {'leak_early': 777, 'leak_many': 300})
    out, _ = run(t, 'top', '--at', 'peak', base)
    t.check('Inuse at: peak: %s in %d objects' % (fmt_bytes(PEAK_SPACE), PEAK_OBJECTS) in out,
            'top --at peak: no "Inuse at" header:\n' + out)
    # Every view takes --at.
    out, _ = run(t, 'folded', '--at', 'peak', '--sample-index=inuse_space', base)
    got = {}
    for line in out.splitlines():
        stack, _, w = line.rpartition(' ')
        got[stack.split(';')[-1]] = got.get(stack.split(';')[-1], 0) + int(w)
    t.check_eq('folded --at peak', got, want_peak)
    out, _ = run(t, 'traces', '--at', 'peak', base)
    t.check('inuse_space:  97.66kB' in out, 'traces --at peak: no 97.66kB stack:\n' + aptest.clip(out))
    out, _ = run(t, 'peek', '--at', 'peak', 'ramp$', base)
    t.check(re.search(r'107.42kB .*\| ramp$', out, re.M) is not None, 'peek --at peak:\n' + out)
    out, _ = run(t, 'list', '--at', 'peak', '^ramp_small$', base)
    t.check('9.77kB' in out, 'list --at peak:\n' + out)
    pb = os.path.join(t.tmp, 'peak.pb.gz')
    run(t, 'pprof', '--at', 'peak', '-o', pb, base)
    d = run_json(t, 'diff', '--json', '--sample-index=inuse_space', base, pb)
    if d:
        t.check_eq('pprof --at peak: total inuse_space (read back by diff)', d['new']['total'], PEAK_SPACE)
    run(t, 'top', '--at', 'bogus', base, rc=2)
    run(t, 'leaks', '--at', 'peak', base, rc=2)


def test_leaks(t, base):
    lk = run_json(t, 'leaks', '--json', base)
    if lk:
        t.check_eq('leaks not_freed', lk['not_freed'], {'objects': 4, 'space': 1077, 'stacks': 2})
        got = [(s['objects'], s['space'], s['frames'][0]['function']) for s in lk['stacks']]
        t.check_eq('leaks stacks', got, [(1, 777, 'leak_early'), (3, 300, 'leak_many')])
        t.check(lk['stacks'] and lk['stacks'][1]['frames'][1]['function'] == 'main', 'leaks: leak_many caller')
    out, _ = run(t, 'leaks', base)
    t.check('Not freed at exit: 1.05kB in 4 blocks from 2 stacks' in out, 'leaks text:\n' + out)
    t.check('leaked' not in out.lower(), 'leaks says "leaked"')
    t.check(re.search(r'^\s+777B\s+1 block not freed \(of 1 allocated here\)\n\s+leak_early\n\s+main$', out, re.M),
            'leaks text: the 777B stack:\n' + out)
    run(t, 'leaks', '--fail-on-leaks', base, rc=1)
    run(t, 'leaks', '--fail-on-leaks=1076', base, rc=1)
    run(t, 'leaks', '--fail-on-leaks=1077', base, rc=0)
    run(t, 'leaks', '--fail-on-leaks=1K', base, rc=1)
    run(t, 'leaks', '--fail-on-leaks=2K', base, rc=0)
    run(t, 'leaks', '--fail-on-leaks', '--ignore', 'leak_', base, rc=0)
    run(t, 'leaks', '--fail-on-leaks=x', base, rc=2)


def test_temps(t, base):
    tp = run_json(t, 'temps', '--json', base)
    if tp:
        rows = {r['function']: (r['temp_objects'], r['temp_space'], r['alloc_objects']) for r in tp['rows']}
        t.check_eq('temps rows', rows, {'make_temps': (1000, 64000, 1000)})
        t.check_eq('temps total', tp['temporary'], {'objects': 1000, 'space': 64000})
        t.check_eq('temps all allocations', tp['allocations']['objects'], 2184)
    out, _ = run(t, 'temps', base)
    t.check(re.search(r'^\s+1000\s+100%\s+100%\s+62.5kB\s+make_temps$', out, re.M), 'temps text:\n' + out)
    top = run_json(t, 'top', '--json', '--sample-index=temp_objects', base)
    if top:
        t.check_eq('top --sample-index=temp_objects', flat(top, 'alloc_objects'),
                   {'make_temps': 1000})
        t.check_eq('top --sample-index=temp_objects: sample_index', top['sample_index'], 'temp_objects')
    out, _ = run(t, 'top', '--sample-index=temp_space', base)
    t.check('Type: temp_space' in out and re.search(r'62.5kB .*make_temps$', out, re.M), 'top temp_space:\n' + out)
    run(t, 'temps', '--sample-index=alloc_space', base, rc=2)


def test_sizes(t, base):
    sz = run_json(t, 'sizes', '--json', base)
    if not sz:
        return
    by = {f['function']: f for f in sz['functions']}
    mt = by.get('make_temps', {})
    t.check_eq('sizes make_temps', (mt.get('alloc_objects'), mt.get('temp_objects'), mt.get('sizes')),
               (1000, 1000, [{'min': 33, 'max': 64, 'count': 1000}]))
    ll = by.get('long_lived', {})
    t.check_eq('sizes long_lived sizes', ll.get('sizes'), [{'min': 2049, 'max': 4096, 'count': 10}])
    # Held 30 ms: 10-100 ms, unless the machine stalled the program for a long time.
    lives = {l['bucket']: l['count'] for l in ll.get('lifetimes', [])}
    t.check_eq('sizes long_lived lifetimes', lives, {'10-100ms': 10})
    ra = by.get('ramp_alloc', {})
    t.check_eq('sizes ramp_alloc lifetimes', {l['bucket']: l['count'] for l in ra.get('lifetimes', [])},
               {'10-100ms': 100})
    le = by.get('leak_early', {})
    t.check_eq('sizes leak_early lifetimes', le.get('lifetimes'),
               [{'bucket': 'not freed', 'min_seconds': None, 'max_seconds': None, 'count': 1}])
    short = sum(l['count'] for l in mt.get('lifetimes', []) if l['bucket'] in ('<1us', '1-10us', '10-100us'))
    t.check_eq('sizes make_temps: short lifetimes', short, 1000)
    out, _ = run(t, 'sizes', base)
    t.check(re.search(r'^long_lived: 10 allocations, 40kB; median size 2kB..4kB, median lifetime 10-100ms; '
                      r'0 temporary, 0 not freed$', out, re.M), 'sizes text:\n' + out)


def test_diff(t, base, new):
    d = run_json(t, 'diff', '--json', '--sample-index=alloc_objects', base, new)
    if d:
        rows = {r['function']: (r['base'], r['new'], r['delta']) for r in d['rows']}
        t.check_eq('diff make_temps', rows.get('make_temps'), (1000, 2000, 1000))
        t.check_eq('diff leak_many', rows.get('leak_many'), (3, 5, 2))
        t.check_eq('diff unchanged ramp_alloc', rows.get('ramp_alloc'), (100, 100, 0))
        t.check_eq('diff order', [r['function'] for r in d['rows']][:2], ['make_temps', 'leak_many'])
        t.check_eq('diff totals', (d['base']['total'], d['new']['total']), (2184, 3186))
        t.check_eq('diff delta%', [r['delta_pct'] for r in d['rows']][:2], [100.0, 66.6667])
    out, _ = run(t, 'diff', '--sample-index=alloc_objects', base, new)
    t.check(re.search(r'^\s+1000\s+2000\s+\+1000\s+\+100.00%\s+make_temps$', out, re.M), 'diff text:\n' + out)
    out, _ = run(t, 'diff', '--sample-index=inuse_space', base, new)
    t.check(re.search(r'^\s+300B\s+500B\s+\+200B\s+\+66.67%\s+leak_many$', out, re.M), 'diff inuse_space:\n' + out)
    # --cum: main holds everything.
    d = run_json(t, 'diff', '--json', '--cum', '--sample-index=alloc_objects', base, new)
    if d:
        rows = {r['function']: (r['base'], r['new']) for r in d['rows']}
        t.check_eq('diff --cum main', rows.get('main'), (2184, 3186))
    # A pprof file we wrote as either side gives the same table.
    pb = os.path.join(t.tmp, 'base.pb.gz')
    run(t, 'pprof', '-o', pb, base)
    d2 = run_json(t, 'diff', '--json', '--sample-index=alloc_objects', pb, new)
    if d and d2:
        t.check_eq('diff with a pprof BASE', d2['rows'][:2], run_json(t, 'diff', '--json', '--sample-index=alloc_objects',
                                                                      base, new)['rows'][:2])
    bad = os.path.join(t.tmp, 'bad.pb')
    with open(bad, 'wb') as f:
        f.write(b'\x0a\xff\xff\xff')
    run(t, 'diff', bad, new, rc=2)
    # The diff profile: NEW positive, BASE negated; its sums are the deltas.
    dp = os.path.join(t.tmp, 'diff.pb.gz')
    run(t, 'diff', '--pprof', '-o', dp, '--sample-index=alloc_objects', base, new)
    t.check(os.path.exists(dp), 'diff --pprof wrote nothing')
    run(t, 'diff', os.path.join(t.tmp, 'missing.pb.gz'), dp, rc=2)
    # The diff profile read back through our own reader:
    dd = run_json(t, 'diff', '--json', '--sample-index=alloc_objects', pb, dp)
    if dd:
        t.check_eq('diff profile total (NEW - BASE)', dd['new']['total'], 3186 - 2184)
        rows = {r['function']: r['new'] for r in dd['rows']}
        t.check_eq('diff profile make_temps', rows.get('make_temps'), 1000)
        t.check_eq('diff profile ramp_alloc', rows.get('ramp_alloc', 0), 0)
    go = shutil.which('go')
    if go:
        p = t.run([go, 'tool', 'pprof', '-sample_index=alloc_objects', '-nodefraction=0', '-top', dp], timeout=120,
                  env=t.env({'HOME': t.tmp, 'GOCACHE': os.path.join(t.tmp, 'gocache'), 'GOFLAGS': '-mod=mod'}))
        out = p.stdout.decode('utf-8', 'replace')
        t.check(p.returncode == 0 and re.search(r'^\s+1000\s.*make_temps$', out, re.M)
                and re.search(r'^\s+2\s.*leak_many$', out, re.M),
                'go tool pprof -top on the diff profile:\n%s\n%s' % (out, aptest.clip(p.stderr)))
    else:
        t.log('go not installed: the diff profile is checked with our own reader only')


def main():
    t = aptest.Test('analyses')
    prog = t.prog('analyses')
    base, _ = t.record([prog, 'base'], out=os.path.join(t.tmp, 'base.trace'), record_args=['--clock', 'tsc'])
    new, _ = t.record([prog, 'new'], out=os.path.join(t.tmp, 'new.trace'), record_args=['--clock', 'tsc'])
    tl = test_timeline(t, base)
    test_at(t, base, tl)
    test_leaks(t, base)
    test_temps(t, base)
    test_sizes(t, base)
    test_diff(t, base, new)
    t.finish()


if __name__ == '__main__':
    main()
