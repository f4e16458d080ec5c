#!/usr/bin/env python3
"""`allocprof pprof` read by the real pprof (`go tool pprof`, Debian's golang-go); skipped without it.

For each of the four sample types, `-top` must show the same flat figure per function as
`allocprof top --json`; `-list`, `-peek` and `-traces` must run cleanly and name the expected
functions; `-http` must serve the UI and the flame graph.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'lib'))
import aptest  # noqa: E402
from aptest import METRICS  # noqa: E402

FALLBACK = re.compile(r'^(0x[0-9a-f]+|.+\+0x[0-9a-f]+)$')
ROW = re.compile(r'^\s*(\S+)\s+(\S+%)\s+(\S+%)\s+(\S+)\s+(\S+%)\s+(.+?)\s*$')

t = aptest.Test('pprof-go')
prog = t.prog('pprof_prog')


def find_pprof():
    """The pprof binary `go tool pprof` runs: called directly, so that stopping it stops pprof
    itself and not just the `go` wrapper above it."""
    go = shutil.which('go')
    if not go:
        return None
    try:
        p = subprocess.run([go, 'tool', '-n', 'pprof'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = p.stdout.decode().strip()
    if p.returncode == 0 and path and os.access(path, os.X_OK):
        return [path]
    return [go, 'tool', 'pprof']


pprof_cmd = find_pprof()
if pprof_cmd is None:
    t.skip('go is not installed (Debian: apt-get install --no-install-recommends golang-go): '
           'go tool pprof not available')

# pprof keeps settings under $HOME; keep it in the scratch directory.
env = t.env({'HOME': t.tmp, 'PPROF_TMPDIR': t.tmp, 'PPROF_BINARY_PATH': t.tmp})


def go_pprof(*args, timeout=120):
    cmd = pprof_cmd + ['-symbolize=none', *args]
    p = t.run(cmd, env=env, timeout=timeout)
    out = p.stdout.decode('utf-8', 'replace')
    t.check(p.returncode == 0, '%s: %s\nstderr:\n%s' % (' '.join(cmd), aptest.describe_status(p.returncode),
                                                      aptest.clip(p.stderr)))
    return out, p.stderr.decode('utf-8', 'replace')


def parse_top(text):
    """{function: flat} from pprof's -top table (values in bytes with -unit=B, or counts)."""
    rows, in_table = {}, False
    for line in text.splitlines():
        if line.lstrip().startswith('flat  flat%'):
            in_table = True
            continue
        m = ROW.match(line) if in_table else None
        if not m:
            continue
        name = re.sub(r' \((partial-)?inline\)$', '', m.group(6))
        v = m.group(1)
        num = re.match(r'^(-?[0-9.]+)(B)?$', v)
        if not num:
            t.fail('cannot parse value %r in pprof row %r' % (v, line))
            continue
        rows[name] = rows.get(name, 0) + float(num.group(1))
    return rows


trace, _ = t.record([prog], out=os.path.join(t.tmp, 'prog.trace'))
prof = os.path.join(t.tmp, 'prog.pb.gz')
p = t.run([t.allocprof, 'pprof', '-o', prof, trace])
if p.returncode != 0:
    t.abort('allocprof pprof: %s\n%s' % (aptest.describe_status(p.returncode), aptest.clip(p.stderr)))
top = t.top_json(trace)

for i, metric in enumerate(METRICS):
    out, err = go_pprof('-top', '-sample_index=' + metric, '-unit=B', '-nodefraction=0', '-edgefraction=0', prof)
    t.check('Type: ' + metric in out, '-sample_index=%s: header lacks "Type: %s":\n%s' % (metric, metric, aptest.clip(out)))
    got = parse_top(out)
    want = {r['function']: r['flat'][metric] for r in top['rows']
            if not FALLBACK.match(r['function']) and (r['flat'][metric] or r['cum'][metric])}
    bad = []
    for fn, v in sorted(want.items()):
        if got.get(fn, 0) != v:
            bad.append('%-24s allocprof top %10d   go tool pprof %s' % (fn, v, got.get(fn)))
    for fn, v in sorted(got.items()):
        if fn not in want and v and not fn.startswith('0x') and not fn.startswith('<unknown>'):
            bad.append('%-24s only in go tool pprof: %s' % (fn, v))
    t.check(not bad, '-top -sample_index=%s differs from allocprof top --json:\n%s\npprof said:\n%s'
            % (metric, '\n'.join(bad), aptest.clip(out)))
    t.check(got.get('alloc_small', 0) > 0, '-sample_index=%s: no alloc_small row' % metric)

out, _ = go_pprof('-list=via_inline', '-source_path=' + HERE, prof)
t.check('ROUTINE' in out and 'via_inline' in out and 'hold(inl_alloc(200))' in out,
        '-list=via_inline: no routine with its source:\n%s' % aptest.clip(out))
out, _ = go_pprof('-peek=alloc_small', prof)
t.check(re.search(r'\|\s+main\s*$', out, re.M) and re.search(r'\|\s+alloc_small\s*$', out, re.M),
        '-peek=alloc_small: main should be shown as its caller:\n%s' % aptest.clip(out))
out, _ = go_pprof('-traces', prof)
t.check('inl_alloc (inline)' in out and 'via_inline' in out and 'bytes:' in out,
        '-traces: expected the inline frame inl_alloc and bytes labels:\n%s' % aptest.clip(out))
t.check(re.search(r'^\s+\S+\s+recurse\n(\s+recurse\n){5}', out, re.M) is not None,
        '-traces: expected 6 recurse frames in a row:\n%s' % aptest.clip(out))


# ---- the web UI ------------------------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def get(url, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode('utf-8', 'replace')
    except urllib.error.HTTPError as e:
        return e.code, ''
    except (urllib.error.URLError, OSError):
        return None, ''


served = False
for attempt in range(3):  # the port may be taken between free_port() and pprof's bind
    port = free_port()
    log = open(os.path.join(t.tmp, 'http.log'), 'w+b')
    srv = subprocess.Popen(pprof_cmd + ['-symbolize=none', '-http=127.0.0.1:%d' % port, '-no_browser', prof],
                           env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=t.tmp)
    try:
        deadline = time.time() + 60
        status = None
        while time.time() < deadline and srv.poll() is None:
            status, _ = get('http://127.0.0.1:%d/ui/' % port, timeout=5)
            if status is not None:
                break
            time.sleep(0.2)
        if srv.poll() is not None and status is None:
            log.seek(0)
            text = log.read().decode('utf-8', 'replace')
            if 'address already in use' in text and attempt < 2:
                continue
            t.fail('go tool pprof -http exited: %s\n%s' % (aptest.describe_status(srv.returncode), aptest.clip(text)))
            break
        pages = [('/ui/flamegraph', 'alloc_small'), ('/ui/top', 'via_inline'), ('/ui/peek', 'alloc_small')]
        # The graph page (/ui/) runs Graphviz's dot; without it pprof answers 501.
        if shutil.which('dot'):
            pages.insert(0, ('/ui/', 'alloc_big'))  # alloc_small is under the graph's 0.5% cut
        else:
            t.log('graphviz (dot) not installed: /ui/ (the graph) is expected to answer 501')
            status, _ = get('http://127.0.0.1:%d/ui/' % port, timeout=30)
            t.check(status == 501, '-http: GET /ui/ without graphviz: status %r (expected 501)' % status)
        for page, needle in pages:
            status, body = get('http://127.0.0.1:%d%s' % (port, page), timeout=30)
            t.check(status == 200, '-http: GET %s: status %r' % (page, status))
            t.check(needle in body, '-http: %s does not mention %s' % (page, needle))
        served = True
    finally:
        if srv.poll() is None:
            srv.terminate()
            try:
                srv.wait(timeout=10)
            except subprocess.TimeoutExpired:
                srv.kill()
                srv.wait(timeout=10)
        log.close()
    break
t.check(served, '-http: the server never answered')

t.finish()
