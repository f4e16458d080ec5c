"""aptest: shared helpers for allocprof's end-to-end and CLI tests (python3 stdlib only).

A test script does:

    import os, sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
    import aptest
    t = aptest.Test('known')          # parses --allocprof, --shim, --prog NAME=PATH
    ...
    t.finish()                        # exit 0 if every check passed, 1 otherwise

Checks do not stop at the first failure: each failed check is collected with a clear message and
all are printed at the end, so one run shows everything that is wrong. Exit status 77 means
"skipped" to meson. The scratch directory is removed on success and kept (its path printed) on
failure.
"""

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

METRICS = ('alloc_objects', 'alloc_space', 'inuse_objects', 'inuse_space')
SKIP = 77
DEFAULT_TIMEOUT = 60


class Abort(Exception):
    """A failure after which the test cannot go on."""


def describe_status(rc):
    if rc is None:
        return 'no status'
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = 'signal %d' % -rc
        return 'killed by %s (returncode %d)' % (name, rc)
    return 'exit status %d' % rc


def clip(text, limit=3000):
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    if text is None:
        return ''
    if len(text) > limit:
        return text[:limit] + '\n... (%d more characters)' % (len(text) - limit)
    return text


class Test:
    def __init__(self, name, extra_args=None):
        self.name = name
        ap = argparse.ArgumentParser(description='allocprof test ' + name)
        ap.add_argument('--allocprof', required=True, help='path of the allocprof command')
        ap.add_argument('--shim', required=True, help='path of liballocprof.so')
        ap.add_argument('--prog', action='append', default=[], metavar='NAME=PATH',
                        help='a test program (repeatable)')
        ap.add_argument('--keep', action='store_true', help='keep the scratch directory')
        for args, kwargs in (extra_args or []):
            ap.add_argument(*args, **kwargs)
        self.args = ap.parse_args()
        self.allocprof = os.path.abspath(self.args.allocprof)
        self.shim = os.path.abspath(self.args.shim)
        self.progs = {}
        for spec in self.args.prog:
            k, sep, v = spec.partition('=')
            if not sep:
                ap.error('--prog wants NAME=PATH, got %r' % spec)
            self.progs[k] = os.path.abspath(v)
        self.failures = []
        self.nchecks = 0
        self.tmp = tempfile.mkdtemp(prefix='aptest-%s-' % name)
        for what, path in [('allocprof', self.allocprof), ('shim', self.shim)] + list(self.progs.items()):
            if not os.path.exists(path):
                self.abort('%s not found at %s (was it built?)' % (what, path))

    # ---- reporting ------------------------------------------------------------------------------

    def log(self, msg):
        print('[%s] %s' % (self.name, msg), flush=True)

    def fail(self, msg):
        self.failures.append(msg)
        print('[%s] FAIL: %s' % (self.name, msg), flush=True)

    def check(self, cond, msg):
        self.nchecks += 1
        if not cond:
            self.fail(msg)
        return bool(cond)

    def check_eq(self, label, actual, expected):
        self.nchecks += 1
        if actual != expected:
            self.fail('%s: expected %r, got %r' % (label, expected, actual))
            return False
        return True

    def abort(self, msg):
        self.fail(msg)
        self.finish()

    def finish(self):
        if self.failures:
            print('\n[%s] %d of %d checks FAILED:' % (self.name, len(self.failures), self.nchecks))
            for f in self.failures:
                print('  - ' + f.replace('\n', '\n    '))
            print('[%s] scratch directory kept: %s' % (self.name, self.tmp))
            sys.stdout.flush()
            sys.exit(1)
        print('[%s] all %d checks passed' % (self.name, self.nchecks))
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        sys.exit(0)

    def skip(self, why):
        print('[%s] SKIP: %s' % (self.name, why))
        shutil.rmtree(self.tmp, ignore_errors=True)
        sys.exit(SKIP)

    # ---- running things -------------------------------------------------------------------------

    def prog(self, name):
        if name not in self.progs:
            self.abort('test program %r not passed with --prog %s=PATH' % (name, name))
        return self.progs[name]

    def env(self, extra=None, drop_allocprof=True):
        """The environment for a child: ours minus any ALLOCPROF_* / LD_PRELOAD that leaked in
        from the caller, plus extra."""
        e = dict(os.environ)
        for k in list(e):
            if (drop_allocprof and k.startswith('ALLOCPROF_')) or k == 'LD_PRELOAD':
                del e[k]
        e.setdefault('LC_ALL', 'C')
        if extra:
            for k, v in extra.items():
                if v is None:
                    e.pop(k, None)
                else:
                    e[k] = v
        return e

    def run(self, cmd, env=None, input=None, timeout=DEFAULT_TIMEOUT, cwd=None, what=None, **kw):
        """Runs cmd, capturing stdout and stderr (bytes). A hang is a failure that aborts."""
        what = what or ' '.join(cmd)
        try:
            return subprocess.run(cmd, env=self.env() if env is None else env, input=input,
                                  stdout=kw.pop('stdout', subprocess.PIPE),
                                  stderr=kw.pop('stderr', subprocess.PIPE),
                                  stdin=kw.pop('stdin', None if input is not None else subprocess.DEVNULL),
                                  timeout=timeout, cwd=cwd or self.tmp, **kw)
        except subprocess.TimeoutExpired as e:
            self.abort('%s: no result after %d s (hang?)\nstdout so far:\n%s\nstderr so far:\n%s'
                       % (what, timeout, clip(e.stdout), clip(e.stderr)))

    def record(self, cmd, out=None, env_extra=None, timeout=DEFAULT_TIMEOUT, expect_rc=0, input=None,
               record_args=()):
        """allocprof record -o OUT -- CMD; returns (trace path, CompletedProcess). Checks the
        exit status (expect_rc; None = do not check) and that the trace exists."""
        if out is None:
            out = os.path.join(tempfile.mkdtemp(prefix='rec-', dir=self.tmp), 'trace')
        full = [self.allocprof, 'record', *record_args, '-o', out, '--', *cmd]
        p = self.run(full, env=self.env(env_extra), timeout=timeout, input=input)
        if expect_rc is not None and p.returncode != expect_rc:
            self.abort('%s: %s (expected %s)\nstdout:\n%s\nstderr:\n%s'
                       % (' '.join(full), describe_status(p.returncode), describe_status(expect_rc),
                          clip(p.stdout), clip(p.stderr)))
        path = out
        if '%p' in out:
            cands = glob.glob(out.replace('%p', '[0-9]*'))
            if len(cands) != 1:
                self.abort('%s: expected exactly one trace matching %s, found %r\nstderr:\n%s'
                           % (' '.join(full), out, cands, clip(p.stderr)))
            path = cands[0]
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            self.abort('%s: no trace (or an empty one) at %s\nstderr:\n%s'
                       % (' '.join(full), path, clip(p.stderr)))
        return path, p

    def top_json(self, trace, *args, timeout=DEFAULT_TIMEOUT):
        """allocprof top --json [args] TRACE, parsed. Aborts on failure."""
        cmd = [self.allocprof, 'top', '--json', *args, trace]
        p = self.run(cmd, timeout=timeout)
        if p.returncode != 0:
            self.abort('%s: %s\nstderr:\n%s' % (' '.join(cmd), describe_status(p.returncode), clip(p.stderr)))
        try:
            data = json.loads(p.stdout.decode('utf-8'))
        except (ValueError, UnicodeDecodeError) as e:
            self.abort('%s: stdout is not JSON (%s):\n%s' % (' '.join(cmd), e, clip(p.stdout)))
        self.validate_top(data, ' '.join(cmd))
        return data

    def validate_top(self, data, what):
        """The shape of `top --json` output (the contract), so later lookups cannot KeyError."""
        def metrics_ok(d):
            return isinstance(d, dict) and all(isinstance(d.get(m), int) and not isinstance(d.get(m), bool)
                                               for m in METRICS)
        if not isinstance(data, dict):
            self.abort('%s: JSON is not an object' % what)
        if not isinstance(data.get('sample_index'), str):
            self.abort('%s: no "sample_index" string in %s' % (what, clip(json.dumps(data), 500)))
        if not metrics_ok(data.get('total')):
            self.abort('%s: "total" lacks one of %s: %r' % (what, METRICS, data.get('total')))
        rows = data.get('rows')
        if not isinstance(rows, list):
            self.abort('%s: "rows" is not a list' % what)
        for i, r in enumerate(rows):
            if not (isinstance(r, dict) and isinstance(r.get('function'), str)
                    and metrics_ok(r.get('flat')) and metrics_ok(r.get('cum'))):
                self.abort('%s: row %d malformed: %r' % (what, i, r))

    # ---- comparing profiles ---------------------------------------------------------------------

    def rows_by_function(self, data, names=None):
        """{function: row}. Functions listed in names must appear at most once."""
        out = {}
        for r in data['rows']:
            f = r['function']
            if f in out and (names is None or f in names):
                self.fail('function %s appears in more than one row' % f)
            out.setdefault(f, r)
        return out

    def compare_rows(self, data, expected, label=''):
        """expected: {function: {'flat': {metric: n}, 'cum': {metric: n}}} (either part optional,
        any subset of metrics). Prints one table of every mismatch."""
        rows = self.rows_by_function(data, set(expected))
        bad = []
        for fn in sorted(expected):
            want = expected[fn]
            row = rows.get(fn)
            if row is None:
                self.nchecks += 1
                bad.append('%-22s missing from rows (functions present: %s)'
                           % (fn, ', '.join(sorted(rows)[:60])))
                continue
            for part in ('flat', 'cum'):
                for m, v in sorted(want.get(part, {}).items()):
                    self.nchecks += 1
                    got = row[part][m]
                    if got != v:
                        bad.append('%-22s %-5s %-14s expected %10d  got %10d  (%+d)'
                                   % (fn, part, m, v, got, got - v))
        if bad:
            self.fail('%sprofile differs from the expected figures:\n%s'
                      % (label + ': ' if label else '', '\n'.join(bad)))
        return not bad


def four(alloc_objects, alloc_space, inuse_objects, inuse_space):
    """The four metrics as a dict."""
    return dict(alloc_objects=alloc_objects, alloc_space=alloc_space,
                inuse_objects=inuse_objects, inuse_space=inuse_space)


def add(*ds):
    out = dict.fromkeys(METRICS, 0)
    for d in ds:
        for m in METRICS:
            out[m] += d[m]
    return out


ZERO = four(0, 0, 0, 0)


def zstd_compress(data):
    """Compresses bytes with the zstd command (stdlib has no zstd)."""
    zstd = shutil.which('zstd')
    if not zstd:
        raise Abort('the zstd command is needed to craft test traces')
    p = subprocess.run([zstd, '-q', '-c'], input=data,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if p.returncode != 0:
        raise Abort('zstd failed: %s' % clip(p.stderr))
    return p.stdout


def zstd_decompress(path):
    """zstd -dc PATH (also works on a file cut short, up to the cut); (bytes, ok)."""
    p = subprocess.run(['zstd', '-q', '-dc', path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    return p.stdout, p.returncode == 0


def fmt_bytes(v):
    """pprof's (and allocprof's) byte format: scaled by 1024, two decimals, trailing zeros cut."""
    units = ['B', 'kB', 'MB', 'GB']
    u = 0
    while u < 3 and abs(v) >= 1024:
        v /= 1024.0
        u += 1
    s = '%.2f' % v
    if s.endswith('.00'):
        s = s[:-3]
    elif s.endswith('0') and '.' in s:
        s = s[:-1]
    return s + units[u]


def put_varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7f) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def get_varint(buf, i):
    """(value, next index); raises ValueError at the end of buf."""
    v = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError('varint runs past the end')
        b = buf[i]
        i += 1
        v |= (b & 0x7f) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def unzigzag(v):
    return (v >> 1) ^ -(v & 1)


def zigzag(v):
    return (v << 1) if v >= 0 else ((-v) << 1) - 1


def parse_stream(stream):
    """Splits a decompressed trace stream (allocprof/trace.h) into
    (header bytes = magic + version, [(kind, payload bytes), ...])."""
    if stream[:8] != b'ALLOCPRF':
        raise ValueError('no magic')
    _, i = get_varint(stream, 8)
    head, records = stream[:i], []
    while i < len(stream):
        kind = stream[i]
        n, j = get_varint(stream, i + 1)
        records.append((kind, stream[j:j + n]))
        i = j + n
    return head, records


def build_stream(head, records):
    return head + b''.join(bytes([k]) + put_varint(len(p)) + p for k, p in records)


REC_STACK, REC_CHUNK = 4, 5
EV_ALLOC, EV_FREE, EV_UNFREE, EV_LOST, EV_ALLOC_LOCAL, EV_FREE_BACK = 1, 2, 3, 4, 5, 6
EV_ALLOC_ORD, EV_FREE_ORD = 0, 7
TAG_STEP1 = 0x8
# Fields of each event kind (format version 2), with the section each comes from and whether it
# is signed. 'dstamp' is absent when the tag has TAG_STEP1.
_V2_LAYOUT = {
    EV_ALLOC: [('daddr', 'addrs', 1), ('size', 'infos', 0), ('stack', 'infos', 0)],
    EV_FREE: [('daddr', 'addrs', 1)],
    EV_UNFREE: [('form', 'backs', 0), ('daddr', 'addrs', 1)],  # daddr only when form is 0
    EV_LOST: [('nallocs', 'others', 0), ('nfrees', 'others', 0)],
    EV_ALLOC_LOCAL: [('size', 'infos', 0), ('stack', 'infos', 0)],
    EV_FREE_BACK: [('back', 'backs', 0)],
    EV_ALLOC_ORD: [('size', 'infos', 0), ('stack', 'infos', 0)],
    EV_FREE_ORD: [('dord', 'backs', 1)],
}
_V2_SECTIONS = ('stamps', 'addrs', 'backs', 'infos', 'others')


def event_kind(tag):
    """The kind of an event tag (format versions 2 and 3: bits 0-2)."""
    return tag & 7


def parse_chunk(payload):
    """A CHUNK payload (format version 3) -> (prefix fields (tid, seq, base_stamp, first_ord),
    [event dicts]). Each event has 'tag', 'fields' [(name, value, signed)], so it can be
    re-encoded after a change by build_chunk."""
    tid, i = get_varint(payload, 0)
    seq, i = get_varint(payload, i)
    base, i = get_varint(payload, i)
    first_ord, i = get_varint(payload, i)
    n, i = get_varint(payload, i)
    lens = []
    for _ in _V2_SECTIONS:
        v, i = get_varint(payload, i)
        lens.append(v)
    tags = payload[i:i + n]
    i += n
    sec = {}
    for name, ln in zip(_V2_SECTIONS, lens):
        sec[name] = [payload[i:i + ln], 0]
        i += ln
    if i != len(payload):
        raise ValueError('chunk sections do not add up to the payload')

    def take(section, signed):
        buf, pos = sec[section]
        v, pos = get_varint(buf, pos)
        sec[section][1] = pos
        return unzigzag(v) if signed else v

    events = []
    for tag in tags:
        lay = _V2_LAYOUT.get(event_kind(tag))
        if lay is None:
            raise ValueError('unknown event tag %#x' % tag)
        fields = [] if tag & TAG_STEP1 else [['dstamp', take('stamps', 0), 0]]
        for name, section, signed in lay:
            if name == 'daddr' and fields and fields[-1][0] == 'form' and fields[-1][1]:
                break  # an UNFREE by ordinal: no address
            fields.append([name, take(section, signed), signed])
        events.append({'tag': tag, 'fields': fields})
    return (tid, seq, base, first_ord), events


def build_chunk(prefix, events):
    """The inverse of parse_chunk."""
    sec = {name: bytearray() for name in _V2_SECTIONS}
    where = {'dstamp': 'stamps'}
    for lay in _V2_LAYOUT.values():
        for name, section, _ in lay:
            where[name] = section
    tags = bytearray()
    for e in events:
        tags.append(e['tag'])
        for name, v, signed in e['fields']:
            sec[where[name]] += put_varint(zigzag(v) if signed else v)
    out = bytearray(b''.join(put_varint(v) for v in prefix))
    out += put_varint(len(events))
    for name in _V2_SECTIONS:
        out += put_varint(len(sec[name]))
    out += tags
    for name in _V2_SECTIONS:
        out += sec[name]
    return bytes(out)


def normalize_numbers(line):
    return re.sub(r'\d+', 'N', line)
