#!/usr/bin/env python3
"""CLI: `allocprof top` on bad input, and the shim on bad environment values.

Bad trace files -- missing, empty, a directory, text, random bytes, zstd or gzip data that is not a
trace, a trace of a newer format version -- must give exit status 2 and exactly one line on
stderr that names the file. A real trace cut short (at every 1/20th of the file and a few bytes
short of the end) must give either that, or exit 0 with the results up to the cut (valid JSON,
no more than the whole trace's totals) and a warning line mentioning "truncated". A trace with
bytes flipped (in the compressed file, or in the decompressed stream and recompressed) must give
exit status 2 with one line naming the file, or exit 0 with valid JSON; a flip in the compressed
file must not go unnoticed (exit 0 needs a warning line, unless the output is exactly the intact
trace's). Never a crash, a hang or a traceback.

A bad ALLOCPROF_* value (ALLOCPROF_DEPTH=abc etc.) prints exactly one extra line on stderr,
starting with "allocprof:" and naming the variable, compared with a run without it; the program's
output and exit status do not change, and the trace is still right.
"""
import gzip
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import aptest  # noqa: E402
from aptest import clip, describe_status, four  # noqa: E402

TIMEOUT = 20
BAD_WORDS = (b'Traceback', b'Segmentation fault', b'AddressSanitizer', b'runtime error', b'core dumped',
             b'Aborted')


def stderr_lines(p):
    return [l for l in p.stderr.decode('utf-8', 'replace').splitlines() if l.strip()]


class Runner:
    def __init__(self, t):
        self.t = t
        self.full_totals = None
        self.full_trace = None

    def top(self, path, json_mode, label=''):
        """Runs allocprof top [--json] PATH; (cmd, CompletedProcess or None after a hang)."""
        cmd = [self.t.allocprof, 'top'] + (['--json'] if json_mode else []) + [path]
        try:
            return cmd, subprocess.run(cmd, env=self.t.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, timeout=TIMEOUT, cwd=self.t.tmp)
        except subprocess.TimeoutExpired as e:
            self.t.fail('%s: %s: no result after %d s (hang, or runaway memory use?)\nstderr so far:\n%s'
                        % (label, ' '.join(cmd), TIMEOUT, clip(e.stderr, 1000)))
            return cmd, None

    def reference(self, path):
        """The outputs of the intact trace, for 'the corruption changed nothing' comparisons."""
        self.ref = {}
        for json_mode in (True, False):
            cmd, p = self.top(path, json_mode, 'reference')
            if p is None or p.returncode != 0:
                self.t.abort('%s failed on the intact trace' % ' '.join(cmd))
            self.ref[json_mode] = p.stdout

    def same_as_reference(self, out, json_mode):
        if not json_mode:
            return out == self.ref[False]
        try:
            a, b = json.loads(out.decode('utf-8')), json.loads(self.ref[True].decode('utf-8'))
        except ValueError:
            return False
        for d in (a, b):  # the file's name may be part of the output
            if isinstance(d, dict) and isinstance(d.get('trace'), dict):
                d['trace'].pop('file', None)
        return a == b

    def sane(self, label, cmd, p):
        """Common to every case: no crash, no traceback, status 0 or 2."""
        t = self.t
        ok = t.check(p.returncode in (0, 2),
                     '%s: %s: %s (want 0 or 2)\nstderr:\n%s'
                     % (label, ' '.join(cmd), describe_status(p.returncode), clip(p.stderr, 1500)))
        for w in BAD_WORDS:
            if w in p.stderr:
                t.fail('%s: %s: %r on stderr:\n%s' % (label, ' '.join(cmd), w.decode(), clip(p.stderr, 1500)))
                ok = False
        return ok

    def error_line(self, label, cmd, p, path, must_mention=None):
        """Exit 2 with exactly one stderr line naming the file."""
        t = self.t
        lines = stderr_lines(p)
        name = os.path.basename(path)
        if not t.check(len(lines) == 1, '%s: %s: exit 2 wants exactly one line on stderr, got %d:\n%s'
                       % (label, ' '.join(cmd), len(lines), clip(p.stderr, 1500))):
            return
        t.check(name in lines[0], '%s: the error line does not name the file (%s): %r' % (label, name, lines[0]))
        if must_mention:
            t.check(any(w in lines[0].lower() for w in must_mention),
                    '%s: the error line mentions none of %r: %r' % (label, must_mention, lines[0]))

    def expect_error(self, label, path, must_mention=None):
        for json_mode in (True, False):
            cmd, p = self.top(path, json_mode, label)
            if p is None or not self.sane(label, cmd, p):
                continue
            if self.t.check(p.returncode == 2, '%s: %s: %s, expected exit status 2\nstdout:\n%s\nstderr:\n%s'
                            % (label, ' '.join(cmd), describe_status(p.returncode), clip(p.stdout, 500),
                               clip(p.stderr, 500))):
                self.error_line(label, cmd, p, path, must_mention)

    def expect_error_or_partial(self, label, path, warn_word, warning_needed=True):
        """Exit 2 (one line naming the file) or exit 0 with valid JSON, totals not above the full
        trace's, and (if warning_needed) a stderr line containing warn_word."""
        t = self.t
        for json_mode in (True, False):
            cmd, p = self.top(path, json_mode, label)
            if p is None or not self.sane(label, cmd, p):
                continue
            if p.returncode == 2:
                self.error_line(label, cmd, p, path)
                continue
            lines = stderr_lines(p)
            # A change that loses or alters nothing the report shows (the cut removes only the
            # EXIT frame `allocprof record` appends; a flipped zstd window-size byte) may pass
            # silently: the output is exactly the intact trace's.
            if not lines and self.same_as_reference(p.stdout, json_mode):
                continue
            if warning_needed:
                t.check(any(warn_word.lower() in l.lower() for l in lines),
                        '%s: %s: exit 0 wants a warning line mentioning %r on stderr, got:\n%s'
                        % (label, ' '.join(cmd), warn_word, clip(p.stderr, 1500)))
            if json_mode:
                try:
                    data = json.loads(p.stdout.decode('utf-8'))
                except ValueError as e:
                    t.fail('%s: %s: exit 0 but stdout is not JSON (%s):\n%s'
                           % (label, ' '.join(cmd), e, clip(p.stdout, 500)))
                    continue
                tot = data.get('total') if isinstance(data, dict) else None
                if not t.check(isinstance(tot, dict), '%s: no "total" in the JSON' % label):
                    continue
                if warn_word == 'truncated' and self.full_totals:
                    for k in ('alloc_objects', 'alloc_space'):
                        t.check(isinstance(tot.get(k), int) and 0 <= tot[k] <= self.full_totals[k],
                                '%s: total %s = %r, but the whole trace has %d'
                                % (label, k, tot.get(k), self.full_totals[k]))


def write(t, name, data):
    path = os.path.join(t.tmp, name)
    with open(path, 'wb') as f:
        f.write(data)
    return path


def test_not_traces(t, r, stream):
    r.expect_error('missing file', os.path.join(t.tmp, 'no-such-file.trace'))
    r.expect_error('empty file', write(t, 'empty.trace', b''))
    os.mkdir(os.path.join(t.tmp, 'a-directory.trace'))
    r.expect_error('a directory', os.path.join(t.tmp, 'a-directory.trace'))
    r.expect_error('text file', write(t, 'text.trace', b'this is not a trace\n' * 200))
    rng = random.Random(20240601)
    r.expect_error('random bytes', write(t, 'random.trace', bytes(rng.randrange(256) for _ in range(8192))))
    r.expect_error('random bytes after a zstd magic',
                   write(t, 'zmagic.trace', b'\x28\xb5\x2f\xfd' + bytes(rng.randrange(256) for _ in range(4096))))
    r.expect_error('zstd data that is not a trace',
                   write(t, 'ztext.trace', aptest.zstd_compress(b'hello, world\n' * 1000)))
    r.expect_error('zstd data starting with a near-magic',
                   write(t, 'zbadmagic.trace', aptest.zstd_compress(b'ALLOCPRG' + stream[8:])))
    r.expect_error('zstd data shorter than the magic', write(t, 'zshort.trace', aptest.zstd_compress(b'ALLOC')))
    r.expect_error('gzip of a trace\'s stream', write(t, 'gzip.trace', gzip.compress(stream)))
    # The stream of a real trace, not compressed.
    r.expect_error('the uncompressed stream', write(t, 'raw.trace', stream))


def test_newer_version(t, r, stream):
    # stream = "ALLOCPRF" varint(3) records...; replace the version.
    assert stream[:8] == b'ALLOCPRF' and stream[8] == 3, stream[:16]
    rest = stream[9:]
    for v in (4, 5, 200, 1 << 40):
        r.expect_error('format version %d' % v,
                       write(t, 'v%d.trace' % v, aptest.zstd_compress(b'ALLOCPRF' + aptest.put_varint(v) + rest)),
                       must_mention=('version', 'newer', 'format'))
    # A version that is not even a valid varint (11 continuation bytes).
    r.expect_error('format version varint overlong',
                   write(t, 'vbad.trace', aptest.zstd_compress(b'ALLOCPRF' + b'\xff' * 11 + rest)))


def test_truncated(t, r, blob):
    n = len(blob)
    cuts = sorted(set([n * k // 20 for k in range(1, 20)] + [n - 1, n - 2, n - 5, n - 13, 1, 4, 8]))
    for c in cuts:
        if 0 < c < n:
            r.expect_error_or_partial('truncated at %d of %d bytes' % (c, n),
                                      write(t, 'cut-%d.trace' % c, blob[:c]), 'truncated')


def test_corrupted(t, r, blob, stream):
    n = len(blob)
    # Flips in the compressed file: at the frame header, in the first and middle frames, near and
    # at the end (the last frame's content checksum). zstd frame checksums (or the decoder's own
    # checks) catch these; exit 0 without a warning means corruption went unnoticed.
    offsets = sorted(set([4, 5, 6, 10, n // 7, n // 3, n // 2, 2 * n // 3, n - 30, n - 4, n - 2, n - 1]))
    for off in offsets:
        if not 0 <= off < n:
            continue
        bad = bytearray(blob)
        bad[off] ^= 0x5a
        r.expect_error_or_partial('compressed byte %d of %d flipped' % (off, n),
                                  write(t, 'flip-%d.trace' % off, bytes(bad)), '', warning_needed=True)
    # Flips in the decompressed stream, recompressed: the zstd layer is valid, the records are not.
    # Not every such change is detectable (a changed allocation size is still a valid trace), so
    # only: no crash, no hang, exit 0 with JSON or 2 with one line.
    rng = random.Random(7)
    m = len(stream)
    spots = [9, 10, 11, 12, 20, 40] + sorted(rng.randrange(12, m) for _ in range(14))
    for i, off in enumerate(spots):
        if off >= m:
            continue
        bad = bytearray(stream)
        for k in range(off, min(m, off + 1 + (i % 3) * 3)):
            bad[k] ^= (0xff if i % 2 else 0x80)
        r.expect_error_or_partial('stream byte %d of %d changed' % (off, m),
                                  write(t, 'sflip-%d.trace' % off, aptest.zstd_compress(bytes(bad))), '',
                                  warning_needed=False)
    # Record lengths that point past the end, a huge varint where a length should be.
    huge = b'\xff\xff\xff\xff\xff\xff\xff\xff\x7f'
    for i, off in enumerate(sorted(rng.randrange(12, m) for _ in range(6))):
        bad = stream[:off] + huge + stream[off:]
        r.expect_error_or_partial('stream with a huge varint inserted at %d' % off,
                                  write(t, 'huge-%d.trace' % off, aptest.zstd_compress(bad)), '',
                                  warning_needed=False)
    # The stream cut mid-record and recompressed (a clean zstd end, an unclean trace end).
    for off in sorted(rng.randrange(12, m) for _ in range(5)):
        r.expect_error_or_partial('stream cut at %d of %d' % (off, m),
                                  write(t, 'scut-%d.trace' % off, aptest.zstd_compress(stream[:off])), 'truncated')


def test_structured(t, r, stream):
    """Corruptions made by parsing the stream (aptest.parse_stream) and changing one field, so
    they hit the same place on every run whatever the addresses and pids."""
    head, recs = aptest.parse_stream(stream)
    chunks = [i for i, (k, _) in enumerate(recs) if k == aptest.REC_CHUNK]
    stacks = [i for i, (k, _) in enumerate(recs) if k == aptest.REC_STACK]
    if not t.check(chunks and stacks, 'the reference trace has no CHUNK or no STACK record'):
        return
    ci = chunks[0]
    prefix, events = aptest.parse_chunk(recs[ci][1])
    first_alloc = next(e for e in events if aptest.event_kind(e['tag']) in (aptest.EV_ALLOC, aptest.EV_ALLOC_LOCAL,
                                                                          aptest.EV_ALLOC_ORD))

    def variant(name, change):
        rr = [list(x) for x in recs]
        ev = [{'tag': e['tag'], 'fields': [list(f) for f in e['fields']]} for e in events]
        change(rr, ev)
        rr[ci][1] = aptest.build_chunk(prefix, ev) if rr[ci][1] is recs[ci][1] else rr[ci][1]
        return write(t, name + '.trace', aptest.zstd_compress(aptest.build_stream(head, [tuple(x) for x in rr])))

    def setf(ev, e0, field, value):
        i = next(k for k, e in enumerate(ev) if e['tag'] == e0['tag'] and e['fields'] == e0['fields'])
        for f in ev[i]['fields']:
            if f[0] == field:
                f[1] = value

    # An event referring to a stack that no STACK record defines (the id as an array index would
    # mean gigabytes): detectable, so an error or a warning.
    r.expect_error_or_partial('an allocation with an undefined stack id',
                              variant('undef-stack', lambda rr, ev: setf(ev, first_alloc, 'stack', 1 << 28)), '')
    r.expect_error_or_partial('an allocation with stack id 2^40',
                              variant('undef-stack40', lambda rr, ev: setf(ev, first_alloc, 'stack', 1 << 40)), '')
    # A huge size is well-formed; no crash, whatever the report says.
    r.expect_error_or_partial('an allocation of 2^62 bytes',
                              variant('huge-size', lambda rr, ev: setf(ev, first_alloc, 'size', 1 << 62)), '',
                              warning_needed=False)

    # A STACK record claiming 2^30 frames it does not hold.
    def big_stack(rr, ev):
        payload = rr[stacks[0]][1]
        sid, i = aptest.get_varint(payload, 0)
        gen, i = aptest.get_varint(payload, i)
        flags, i = aptest.get_varint(payload, i)
        _, i = aptest.get_varint(payload, i)
        rr[stacks[0]][1] = (aptest.put_varint(sid) + aptest.put_varint(gen) + aptest.put_varint(flags)
                            + aptest.put_varint(1 << 30) + payload[i:])
    r.expect_error_or_partial('a STACK record with 2^30 frames', variant('stack-nframes', big_stack), '')

    # An unknown event tag inside a chunk.
    def bad_tag(rr, ev):
        ev.insert(1, {'tag': 0x07, 'fields': [['dstamp', 0, 0]]})
    r.expect_error_or_partial('an unknown event tag', variant('event-tag', bad_tag), '')

    # The last record's length pointing past the end of the stream.
    raw = aptest.build_stream(head, recs)
    last_kind, last_payload = recs[-1]
    cut = raw[:len(raw) - len(last_payload) - len(aptest.put_varint(len(last_payload))) - 1]
    path = write(t, 'len-past-end.trace', aptest.zstd_compress(
        cut + bytes([last_kind]) + aptest.put_varint(len(last_payload) + 1000) + last_payload))
    r.expect_error_or_partial('a record length past the end', path, '')

    # Well-formed surprises that must change nothing: an unknown record kind (skipped, as
    # trace.h says), and a free of an address never allocated (counted apart, not subtracted).
    def unknown_kind(rr, ev):
        rr.insert(1, [200, b'\x01\x02\x03 future record'])
    path = variant('unknown-kind', unknown_kind)
    d = t.top_json(path)
    t.check_eq('unknown record kind 200: totals', d['total'], r.full_totals)

    def stray_free(rr, ev):
        addr = sum(f[1] for e in ev for f in e['fields'] if f[0] in ('daddr', 'daddr_old'))
        ev.append({'tag': aptest.EV_FREE | (9 << 4), 'fields': [['dstamp', 1, 0], ['daddr', 0x10 - addr, 1]]})
    path = variant('stray-free', stray_free)
    d = t.top_json(path)
    t.check_eq('a free of an address never allocated: totals unchanged', d['total'], r.full_totals)
    tr = d.get('trace')
    if isinstance(tr, dict) and 'unknown_frees' in tr:
        t.check_eq('a free of an address never allocated: trace.unknown_frees', tr['unknown_frees'],
                   (r.full_trace or {}).get('unknown_frees', 0) + 1)


def env_lines(p, d):
    """stderr lines with the run's own directory and all numbers (pids) normalized."""
    return [aptest.normalize_numbers(l.replace(d, '<DIR>')) for l in stderr_lines(p)]


BAD_ENV = [
    ('ALLOCPROF_DEPTH', 'abc'),
    ('ALLOCPROF_DEPTH', '12abc'),
    ('ALLOCPROF_DEPTH', '-3'),
    ('ALLOCPROF_CLOCK', 'bogus'),
]


def test_bad_env(t, r, known):
    # The figures of do_malloc in tests/progs/known.c (see tests/e2e/test_known.py).
    do_malloc = four(10, 640, 4, 256)
    for how in ('LD_PRELOAD', 'record'):
        def run(extra, tag):
            d = os.path.join(t.tmp, 'env-%s-%s' % (how, tag))
            os.mkdir(d)
            out = os.path.join(d, 'k.%p.trace')
            if how == 'LD_PRELOAD':
                env = t.env(dict(extra, LD_PRELOAD=t.shim, ALLOCPROF_OUTPUT=out))
                p = t.run([known], env=env, timeout=TIMEOUT)
            else:
                p = t.run([t.allocprof, 'record', '-o', out, '--', known], env=t.env(extra), timeout=TIMEOUT)
            traces = [os.path.join(d, f) for f in os.listdir(d)]
            return p, traces, env_lines(p, d)

        control, ctraces, base = run({}, 'control')
        t.check_eq('%s control run: exit status' % how, control.returncode, 0)
        t.check_eq('%s control run: stdout' % how, control.stdout, b'known: done\n')
        t.check_eq('%s control run: one trace written' % how, len(ctraces), 1)
        for var, val in BAD_ENV:
            label = '%s with %s=%s' % (how, var, val)
            p, traces, lines = run({var: val}, '%s-%s' % (var, val))
            t.check_eq('%s: exit status' % label, p.returncode, 0)
            t.check_eq('%s: stdout' % label, p.stdout, b'known: done\n')
            extra = list(lines)
            for l in base:
                if l in extra:
                    extra.remove(l)
                else:
                    t.fail('%s: stderr lacks the control run\'s line %r' % (label, l))
            if t.check(len(extra) == 1, '%s: wanted exactly one extra stderr line, got %d:\n%s'
                       % (label, len(extra), clip(p.stderr, 1500))):
                t.check(extra[0].startswith('allocprof:') and var in extra[0],
                        '%s: the warning should start with "allocprof:" and name %s: %r' % (label, var, extra[0]))
            if t.check(len(traces) == 1, '%s: expected one trace, found %r' % (label, traces)):
                data = t.top_json(traces[0])
                t.compare_rows(data, {'do_malloc': {'flat': do_malloc, 'cum': do_malloc}}, label)


def main():
    t = aptest.Test('badinput')
    r = Runner(t)
    known = t.prog('known')
    trace, _ = t.record([known], out=os.path.join(t.tmp, 'good.trace'))
    with open(trace, 'rb') as f:
        blob = f.read()
    stream, ok = aptest.zstd_decompress(trace)
    if not t.check(ok and stream.startswith(b'ALLOCPRF\x03'),
                   'the recorded trace does not decompress to "ALLOCPRF" version 3 (zstd -dc): %r'
                   % stream[:32]):
        t.finish()
    full = t.top_json(trace)
    r.full_totals = full['total']
    r.full_trace = full.get('trace')
    r.reference(trace)
    t.log('reference trace: %d bytes, %d decompressed, %d allocations'
          % (len(blob), len(stream), full['total']['alloc_objects']))

    test_not_traces(t, r, stream)
    test_newer_version(t, r, stream)
    test_truncated(t, r, blob)
    test_corrupted(t, r, blob, stream)
    test_structured(t, r, stream)
    test_bad_env(t, r, known)
    t.finish()


if __name__ == '__main__':
    main()
