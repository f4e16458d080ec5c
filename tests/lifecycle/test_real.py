#!/usr/bin/env python3
"""Real software, unchanged: under `allocprof record`, /usr/bin/python3 (a script allocating
heavily), sqlite3 (a workload), gcc (compiling a file: driver, cc1, as, collect2, ld processes),
an `sh -c` pipeline, `make`, and a multi-threaded program give the same stdout and exit status
as untraced, and every trace they leave analyzes (`top --json`, `info --json`).

Where heaptrack is installed, allocprof's count of allocation calls (info --json ->
totals.alloc_calls) equals heaptrack's ("calls to allocation functions") for a deterministic C
program (life leaf 2000, which uses malloc and calloc only: heaptrack does not hook memalign or
pvalloc, and counts realloc(p, 0) differently). The one expected difference is heaptrack's own:
its preload library is C++, and libstdc++'s start-up allocation of its exception emergency pool
(~72 KiB, one call from libstdc++) happens only in the heaptrack run; it is subtracted, by
finding that site in heaptrack_print's output.
"""
import os
import re
import shutil
import lifetest
from lifetest import aptest, clip

t = aptest.Test('lifecycle-real')
life = t.prog('life')
ran = 0


def same(name, cmd, stdin=None, cwd=None, timeout=60, min_traces=1):
    global ran
    p0 = t.run(cmd, input=stdin, cwd=cwd, timeout=timeout)
    traces, p1 = lifetest.record(t, name, cmd, expect_rc=None, timeout=timeout)
    ran += 1
    t.check_eq('%s: exit status as untraced' % name, p1.returncode, p0.returncode)
    t.check(p1.stdout == p0.stdout, '%s: stdout differs from the untraced run:\n%s\n--- vs ---\n%s'
            % (name, clip(p1.stdout, 800), clip(p0.stdout, 800)))
    t.check(len(traces) >= min_traces, '%s: %d traces, expected at least %d' % (name, len(traces), min_traces))
    for tr in traces:
        i = lifetest.info(t, tr)
        t.check(i.get('totals', {}).get('alloc_calls', 0) >= 0, '%s: %s has totals' % (name, tr))
        q = t.run([t.allocprof, 'top', '--json', tr])
        t.check_eq('%s: allocprof top --json %s' % (name, os.path.basename(tr)), q.returncode, 0)
    return traces


py = '/usr/bin/python3'
if os.path.exists(py):
    script = os.path.join(t.tmp, 'alloc.py')
    with open(script, 'w') as f:
        f.write('d = {}\nfor i in range(200000):\n    d[str(i)] = [i] * (i % 7)\n'
                'print(len(d), sum(len(v) for v in d.values()))\n')
    same('python3', [py, script])
else:
    t.log('/usr/bin/python3 absent: skipped')

sqlite = shutil.which('sqlite3')
if sqlite:
    sql = ('create table t(a integer primary key, b text);\n'
           'with recursive c(x) as (select 1 union all select x + 1 from c where x < 20000)\n'
           'insert into t select x, printf("row %d", x) from c;\n'
           'create index tb on t(b);\n'
           "select count(*), sum(length(b)) from t where b like 'row 1%';\n")
    same('sqlite3', [sqlite, ':memory:', sql])
else:
    t.log('sqlite3 absent: skipped')

gcc = shutil.which('gcc')
if gcc:
    src = os.path.join(t.tmp, 'hello.c')
    with open(src, 'w') as f:
        f.write('#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n')
    traces = same('gcc', [gcc, '-O2', '-o', os.path.join(t.tmp, 'hello'), src], min_traces=3)
else:
    t.log('gcc absent: skipped')

sh = shutil.which('sh')
same('sh-pipeline', [sh, '-c', 'seq 1 20000 | sort -r | head -n 3; %s leaf 50' % life], min_traces=4)

make = shutil.which('make')
if make:
    mk = os.path.join(t.tmp, 'Makefile')
    with open(mk, 'w') as f:
        f.write('all: a b\na:\n\t@%s leaf 10\n\t@echo a\nb:\n\t@%s leaf 20\n\t@echo b\n' % (life, life))
    same('make', [make, '-s', '-f', mk, '-j1'], min_traces=3)
else:
    t.log('make absent: skipped')

same('threads', [life, 'threads', '120'])

ht, htp = shutil.which('heaptrack'), shutil.which('heaptrack_print')
if ht and htp:
    out = os.path.join(t.tmp, 'ht')
    p = t.run([ht, '-o', out, life, 'leaf', '2000'], timeout=60)
    files = [f for f in os.listdir(t.tmp) if f.startswith('ht.')]
    if p.returncode != 0 or not files:
        t.fail('heaptrack failed: %s\n%s' % (lifetest.describe_status(p.returncode), clip(p.stderr)))
    else:
        q = t.run([htp, os.path.join(t.tmp, files[0])], timeout=60)
        text = q.stdout.decode('utf-8', 'replace')
        m = re.search(r'^calls to allocation functions: (\d+)', text, re.M)
        # heaptrack's own: libstdc++'s emergency pool (one call, from libstdc++ at start-up)
        own = sum(int(n) for n, where in re.findall(
            r'^(\d+) calls to allocation functions with [^\n]*\n(?:[^\n]*\n){0,2}?\s*in (\S*libstdc\+\+[^\n]*)',
            text, re.M))
        traces, p = lifetest.record(t, 'heaptrack-cmp', [life, 'leaf', '2000'])
        ours = lifetest.info(t, traces[0]).get('totals', {}).get('alloc_calls')
        t.log('heaptrack: %s calls (%d of them libstdc++\'s, brought by heaptrack), allocprof: %s'
              % (m and m.group(1), own, ours))
        t.check(m is not None, 'heaptrack_print: no "calls to allocation functions" line:\n' + clip(text, 1500))
        if m:
            t.check_eq('allocation calls: allocprof vs heaptrack minus its own libstdc++ pool',
                       ours, int(m.group(1)) - own)
else:
    t.log('heaptrack not installed: comparison skipped')

if not ran:
    t.skip('no real program to run')
t.finish()
