#!/usr/bin/env python3
"""The analyzer's reader on malformed and adversarial traces (suite fuzz).

Every case runs `allocprof top --json` (some also `info --json`) and must end in either exit 2
with exactly one stderr line naming the file, or exit 0 with valid JSON (plus a warning where the
case says so) -- never a crash, a sanitizer report, a hang or runaway memory (each run is limited
to TIMEOUT seconds and, through RLIMIT_AS, to MEMORY_LIMIT).

Cases: a real trace cut at every record boundary and in the middle of every record (recompressed),
and cut inside the compressed file; bit flips in the stream; a newer format version; an empty
stack table; huge lengths and counts (a record length of 2^63, a stack of 10^9 frames, 10^9
segments or arguments); stacks never defined, frees before allocations, addresses 0 and ~0, sizes
whose sums overflow, saturating LOST counts, thousands of threads; module records naming
/dev/zero, a FIFO, /dev/stdin, a directory and a huge sparse file (the symbolizer must open only
regular files); 100,000 modules loaded and unloaded and deeply nested module ranges (must stay
fast); a trace without SYNC records (the held events must stay bounded); blocks summed per chunk
instead of replayed give the figures of a full replay.
"""
import json
import os
import random
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'lib'))
sys.path.insert(0, HERE)
import aptest  # noqa: E402
import tracegen as tg  # noqa: E402
from aptest import clip, describe_status  # noqa: E402

TIMEOUT = 30
MEMORY_LIMIT = 1 << 30  # address space, bytes: far above what any case needs when read right
BAD_WORDS = (b'Traceback', b'Segmentation fault', b'AddressSanitizer', b'runtime error',
             b'core dumped', b'Aborted', b'LeakSanitizer')


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


class Reader:
    def __init__(self, t):
        self.t = t
        self.n = 0

    def write(self, name, data, compress=True):
        path = os.path.join(self.t.tmp, name)
        with open(path, 'wb') as f:
            f.write(tg.compress(data) if compress else data)
        return path

    def run(self, label, path, cmd='top', stdin=subprocess.DEVNULL, timeout=TIMEOUT):
        """(CompletedProcess or None, seconds). Checks the common rules."""
        t = self.t
        argv = [t.allocprof, cmd, '--json', path]
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, env=t.env(), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=timeout, cwd=t.tmp, preexec_fn=limit_memory)
        except subprocess.TimeoutExpired as e:
            t.fail('%s: %s: no result after %d s (hang?)\nstderr so far:\n%s'
                   % (label, ' '.join(argv), timeout, clip(e.stderr, 1000)))
            return None, timeout
        secs = time.monotonic() - t0
        self.n += 1
        what = '%s: %s' % (label, ' '.join(argv))
        t.check(p.returncode in (0, 2), '%s: %s (want 0 or 2)\nstderr:\n%s'
                % (what, describe_status(p.returncode), clip(p.stderr, 1500)))
        for w in BAD_WORDS:
            t.check(w not in p.stderr, '%s: %r on stderr:\n%s' % (what, w.decode(), clip(p.stderr, 1500)))
        lines = [l for l in p.stderr.decode('utf-8', 'replace').splitlines() if l.strip()]
        if p.returncode == 2:
            t.check(len(lines) == 1 and os.path.basename(path) in lines[0],
                    '%s: exit 2 wants one stderr line naming the file, got:\n%s' % (what, clip(p.stderr, 1500)))
        elif p.returncode == 0:
            try:
                p.json = json.loads(p.stdout.decode('utf-8'))
            except ValueError as e:
                t.fail('%s: exit 0 but stdout is not JSON (%s):\n%s' % (what, e, clip(p.stdout, 800)))
                p.json = None
        p.lines = lines
        return p, secs

    def expect(self, label, path, rc, words=(), cmd='top', **kw):
        """Exit status rc (None: 0 or 2); each of words (lower case) in some stderr line."""
        p, secs = self.run(label, path, cmd=cmd, **kw)
        if p is None:
            return None
        if rc is not None:
            self.t.check(p.returncode == rc, '%s: %s, expected exit status %d\nstderr:\n%s'
                         % (label, describe_status(p.returncode), rc, clip(p.stderr, 1500)))
        err = '\n'.join(p.lines).lower()
        for w in words:
            self.t.check(w in err, '%s: no stderr line mentions %r:\n%s' % (label, w, clip(p.stderr, 1500)))
        return p


def base_records():
    """A small valid trace: header, a module, two stacks."""
    return [tg.header(), tg.module(1, '/nonexistent/fake.so'),
            tg.stack(1, [0x401000, 0x402000]), tg.stack(2, [0x403000])]


def stream(*recs, version=1):
    out = tg.magic(version)
    for r in recs:
        out += b''.join(r) if isinstance(r, list) else r
    return out


def totals(p):
    return p.json['total'] if p is not None and p.returncode == 0 and p.json else None


# ---- cases on a real trace ------------------------------------------------------------------------

def test_cuts(t, r, real):
    head, recs = tg.split(real)
    cuts = set()
    for off, kind, rec in recs:
        cuts.add(off)                       # at the boundary
        cuts.add(off + max(2, len(rec) // 2))  # mid-record
    cuts.update((0, 4, 8, len(head), len(real) - 1))
    # Records after END (TOTALS, the EXIT that `record` appends) may go without a warning: the
    # figures are complete without them.
    end_at = max([off + len(rec) for off, kind, rec in recs if kind == tg.REC_END] or [len(real)])
    t.log('%d records; %d cuts of the stream' % (len(recs), len(cuts)))
    for c in sorted(cuts):
        p = r.expect('stream cut at %d' % c, r.write('cut-%d.trace' % c, real[:c]), None)
        # A cut after the header but before the end must say so.
        if p is not None and p.returncode == 0 and c < end_at:
            t.check(any('truncated' in l or 'no end record' in l for l in p.lines),
                    'stream cut at %d: exit 0 without a warning:\n%s' % (c, clip(p.stderr, 800)))
    # Cuts of the compressed file itself (zstd frames cut short).
    blob = tg.compress(real)
    for c in sorted(set(range(0, len(blob), max(1, len(blob) // 16))) | {len(blob) - 1}):
        r.expect('file cut at %d' % c, r.write('fcut-%d.trace' % c, blob[:c], compress=False), None)


def test_flips(t, r, real):
    rnd = random.Random(1234)
    for i in range(50):
        b = bytearray(real)
        for _ in range(rnd.choice((1, 1, 2, 8))):
            pos = rnd.randrange(8, len(b))
            b[pos] ^= 1 << rnd.randrange(8)
        r.expect('flip %d' % i, r.write('flip-%d.trace' % i, bytes(b)), None)


def test_version(t, r, real):
    _, i = tg.get_varint(real, 8)
    for v in (4, 1 << 40):
        r.expect('version %d' % v, r.write('v%d.trace' % v, tg.magic(v) + real[i:]), 2, ('newer',))
    r.expect('version 0', r.write('v0.trace', tg.magic(0) + real[i:]), 2)


def test_empty_stack_table(t, r, real):
    head, recs = tg.split(real)
    no_stacks = head + b''.join(rec for _, kind, rec in recs if kind != tg.REC_STACK)
    r.expect('no STACK records', r.write('nostacks.trace', no_stacks), 2, ('never defined',))
    # Stacks present but empty (zero frames): valid, shown as such.
    empty = head + b''.join(tg.stack(tg.get_varint(rec, 2)[0], []) if kind == tg.REC_STACK else rec
                            for _, kind, rec in recs)
    r.expect('zero-frame stacks', r.write('emptystacks.trace', empty), 0)


# ---- crafted traces ----------------------------------------------------------------------------------

def test_huge(t, r):
    cases = {
        'record length 2^63': stream(tg.header(), b'\x07' + tg.varint(1 << 63) + b'\x00' * 16),
        'record length 64 MiB + 1': stream(tg.header(), b'\x07' + tg.varint((64 << 20) + 1) + b'\x00' * 16),
        'length varint of 11 bytes': stream(tg.header(), b'\x07' + b'\xff' * 10 + b'\x01'),
        'stack of 10^9 frames': stream(tg.header(), tg.record(tg.REC_STACK, tg.varint(1) + tg.varint(0) + tg.varint(0)
                                                              + tg.varint(10 ** 9) + b'\x01' * 1000)),
        'stack of 2^64-1 frames': stream(tg.header(), tg.record(tg.REC_STACK, b'\x01\x00\x00' + tg.varint(tg.U64))),
        '10^9 segments': stream(tg.header(), tg.record(tg.REC_MODULE, tg.varint(1) + b'\x00\x00\x00' + tg.string('/x')
                                                       + tg.string(b'') + tg.varint(10 ** 9) + b'\x01' * 64)),
        '10^9 arguments': stream(tg.record(tg.REC_HEADER, b'\x01' * 10 + tg.string('/x') + tg.varint(10 ** 9)
                                           + b'\x00' * 64)),
        'string of 2^62 bytes': stream(tg.record(tg.REC_HEADER, b'\x01' * 10 + tg.varint(1 << 62) + b'ab')),
        'stack id 2^32-1': stream(tg.header(), tg.stack(2 ** 32 - 1, [1])),
        'stack id 2^33': stream(tg.header(), tg.record(tg.REC_STACK, tg.varint(1 << 33) + b'\x00\x00\x01\x01')),
        'unknown event kind': stream(tg.header(), tg.record(tg.REC_CHUNK, b'\x01\x00\x00\x0f\x01\x01')),
        'first record not a header': stream(tg.stack(1, [1]), tg.header()),
        'kind 0': stream(tg.header(), b'\x00\x01\x00'),
        'no header at all': tg.magic(),
    }
    for label, data in cases.items():
        r.expect(label, r.write(label.replace(' ', '_').replace('^', '') + '.trace', data), 2)


def test_semantics(t, r):
    A, M = tg.EV_ALLOC, tg.EV_FREE
    top = tg.U64
    # Addresses 0 and ~0 are keys like any other: allocated and freed, nothing stays in use.
    ev = [(A, 1, 0, 10, 1), (A, 2, top, 20, 1), (A, 3, top - 1, 30, 2), (M, 4, top), (M, 5, 0), (M, 6, top - 1)]
    p = r.expect('addresses 0 and ~0', r.write('edges.trace', stream(base_records(), tg.chunk(7, ev), tg.sync(100),
                                                                    tg.end())), 0)
    tot = totals(p)
    if tot is not None:
        t.check_eq('addresses 0 and ~0: alloc_space', tot['alloc_space'], 60)
        t.check_eq('addresses 0 and ~0: inuse_objects', tot['inuse_objects'], 0)
    # Frees before allocations (and of addresses never allocated) are counted apart.
    ev = [(M, 1, 0x1000), (M, 2, 0x2000), (A, 3, 0x1000, 5, 1)]
    p = r.expect('frees before allocations', r.write('freefirst.trace', stream(base_records(), tg.chunk(1, ev),
                                                                               tg.end())), 0)
    tot = totals(p)
    if tot is not None:
        t.check_eq('frees before allocations: inuse_space', tot['inuse_space'], 5)
    # Sizes whose sums overflow int64 and double precision: figures stay finite numbers.
    ev = [(A, i + 1, 0x1000 * (i + 1), tg.U64 - i, 1 + i % 2) for i in range(2000)]
    r.expect('huge sizes', r.write('hugesizes.trace', stream(base_records(), tg.chunk(1, ev), tg.end())), 0)
    # An event naming a stack that was never defined (below the largest id defined).
    r.expect('undefined stack id', r.write('undef.trace', stream(base_records(), tg.stack(9, [5]),
                                                                 tg.chunk(1, [(A, 1, 16, 8, 5)]), tg.end())), 0,
             ('never defined',))
    r.expect('stack id beyond any defined', r.write('undef2.trace', stream(base_records(),
                                                                           tg.chunk(1, [(A, 1, 16, 8, 3)]))), 2,
             ('never defined',))
    # LOST counts that would wrap around a u64 sum saturate.
    ev = [(tg.EV_LOST, 1, tg.U64, tg.U64), (tg.EV_LOST, 2, tg.U64, 5)]
    r.expect('lost counts overflow', r.write('lost.trace', stream(base_records(), tg.chunk(1, ev), tg.end())), 0,
             ('could not be recorded',))
    # Thousands of threads, each reallocating (the analyzer keeps one held block per thread).
    recs = base_records()
    for tid in range(1, 5001):
        a = 0x10000 * tid
        recs.append(tg.chunk(tid, [(A, tid * 10, a, 8, 1), (M, tid * 10 + 1, a, tg.API_REALLOC),
                                   (tg.EV_UNFREE, tid * 10 + 2, a, tg.API_REALLOC)]))
    recs += [tg.sync(10 ** 6), tg.end()]
    p = r.expect('5000 threads', r.write('threads.trace', stream(recs)), 0)
    tot = totals(p)
    if tot is not None:
        t.check_eq('5000 threads: inuse_objects (failed reallocs keep the block)', tot['inuse_objects'], 5000)
    # Unknown record kinds are skipped; a stack defined twice keeps the first; odd bytes in paths.
    recs = base_records() + [tg.record(200, b'\x01\x02\x03'), tg.stack(1, [0x999]),
                             tg.module(2, b'/tmp/\xff\x00\n\x1b[31m.so', base=0x500000),
                             tg.stack(3, [0x500010, 0, tg.U64]),
                             tg.chunk(1, [(A, 1, 16, 8, 3)]), tg.end()]
    r.expect('odd records', r.write('odd.trace', stream(recs)), 0)
    # A command line of 100,000 arguments: kept up to a bound, the rest summarised.
    data = stream(tg.header(argv=['a%d' % i for i in range(100000)]), tg.end())
    p = r.expect('100,000 arguments', r.write('argv.trace', data), 0, cmd='info')
    if p is not None and p.returncode == 0 and isinstance(p.json, dict) and isinstance(p.json.get('argv'), list):
        argv = p.json['argv']
        t.check(len(argv) <= 4097 and 'more arguments' in argv[-1],
                '100,000 arguments: argv has %d entries, last %r' % (len(argv), argv[-1][:80]))


def test_format2(t, r):
    """Format 2 chunks: blocks without addresses freed by back reference, and every way such a
    chunk can be malformed."""
    A, M, L, B = tg.EV_ALLOC, tg.EV_FREE, tg.EV_ALLOC_LOCAL, tg.EV_FREE_BACK

    def v2(name, chunks, rc, words=()):
        return r.expect(name, r.write(name.replace(' ', '-') + '.trace',
                                      stream(base_records(), chunks, tg.sync(10 ** 6), tg.end(), version=2)),
                        rc, words)
    # Two local blocks freed newest first then oldest, an addressed block that stays, a LOST.
    ev = [(L, 1, 10, 1), (L, 2, 20, 2), (A, 3, 0x5000, 40, 1), (B, 4, 1), (B, 7, 2),
          (M, 8, 0x9999), (tg.EV_LOST, 9, 2, 3)]
    p = v2('format 2 locals', tg.chunk2(1, ev), 0)
    tot = totals(p)
    if tot is not None:
        t.check_eq('format 2 locals: alloc_space', tot['alloc_space'], 70)
        t.check_eq('format 2 locals: inuse_space', tot['inuse_space'], 40)
        t.check_eq('format 2 locals: inuse_objects', tot['inuse_objects'], 1)
    # Local blocks of two chunks (two threads) never meet: the keys differ.
    p = v2('format 2 two chunks', [tg.chunk2(1, [(L, 1, 8, 1), (B, 3, 1)]),
                                   tg.chunk2(2, [(L, 2, 16, 1), (A, 4, 0x10, 1, 1)])], 0)
    tot = totals(p)
    if tot is not None:
        t.check_eq('format 2 two chunks: inuse_space', tot['inuse_space'], 16 + 1)
    # Malformed: each must be an error naming the file, never a crash or a silent answer.
    v2('format 2 back 0', tg.chunk2(1, [(L, 1, 8, 1), (B, 2, 0)]), 2, ('refers',))
    v2('format 2 back past', tg.chunk2(1, [(L, 1, 8, 1), (B, 2, 2)]), 2, ('refers',))
    v2('format 2 back twice', tg.chunk2(1, [(L, 1, 8, 1), (B, 2, 1), (B, 3, 1)]), 2, ('refers',))
    v2('format 2 back to none', tg.chunk2(1, [(A, 1, 0x10, 8, 1), (B, 2, 1)]), 2, ('refers',))
    v2('format 2 kind 7', tg.chunk2(1, [(7, 1)]), 2, ('unknown event',))
    v2('format 2 kind 0', tg.chunk2(1, [(0, 1)]), 2, ('unknown event',))
    v2('format 2 lengths short', tg.chunk2(1, [(A, 5, 0x10, 8, 1)], lens=[1, 1, 0, 1, 0]), 2, ('add up',))
    v2('format 2 lengths huge', tg.chunk2(1, [(A, 5, 0x10, 8, 1)], lens=[1, tg.U64, 0, 2, 0]), 2, ('add up',))
    v2('format 2 section left over', tg.chunk2(1, [(A, 5, 0x10, 8, 1)], lens=[1, 1, 0, 3, 0], tail=b'\x01'), 2,
       ('left over',))
    v2('format 2 section runs out', tg.chunk2(1, [(A, 5, 0x10, 8, 1)], lens=[1, 1, 0, 1, 1]), 2, ('malformed',))
    v2('format 2 undefined stack', tg.chunk2(1, [(L, 1, 8, 300)]), 2, ('never defined',))
    v2('format 2 many events, no bytes',
       tg.record(tg.REC_CHUNK, tg.varint(1) + tg.varint(0) + tg.varint(0) + tg.varint(1 << 40) + b'\0' * 5), 2,
       ('add up',))


def test_format3(t, r):
    """Format 3 chunks: allocations without addresses, freed by ordinal from any chunk (another
    thread's), an UNFREE by ordinal, and ordinals out of range."""
    A, M, L, B = tg.EV_ALLOC, tg.EV_FREE, tg.EV_ALLOC_LOCAL, tg.EV_FREE_BACK
    O, F, UO, U = tg.EV_ALLOC_ORD, tg.EV_FREE_ORD, tg.EV_UNFREE_ORD, tg.EV_UNFREE
    R = tg.API_REALLOC
    S = 1 << 14  # ordinals per chunk, as the writer spaces them

    def v3(name, chunks, rc, words=()):
        return r.expect(name, r.write(name.replace(' ', '-') + '.trace',
                                      stream(base_records(), chunks, tg.sync(10 ** 6), tg.end(), version=3)),
                        rc, words)
    # Thread 1 allocates three blocks without addresses (ordinals 0, 1, 2) and one local pair;
    # thread 2 frees two of them, in its chunk written first, and one by an address never seen.
    c1 = tg.chunk3(1, [(O, 1, 10, 1), (O, 2, 20, 2), (L, 3, 5, 1), (B, 4, 1), (O, 5, 40, 1)], first_ord=S)
    c2 = tg.chunk3(2, [(F, 6, S + 4), (F, 7, S + 1), (M, 8, 0x7777)], first_ord=2 * S)
    p = v3('format 3 cross-thread', [c2, c1], 0)
    tot = totals(p)
    if tot is not None:
        t.check_eq('format 3 cross-thread: alloc_space', tot['alloc_space'], 75)
        t.check_eq('format 3 cross-thread: inuse_space', tot['inuse_space'], 10)
        t.check_eq('format 3 cross-thread: inuse_objects', tot['inuse_objects'], 1)
    p = r.expect('format 3 cross-thread info', r.write('format-3-cross-thread.trace', stream(
        base_records(), [c2, c1], tg.sync(10 ** 6), tg.end(), version=3)), 0, cmd='info')
    if p is not None and p.returncode == 0 and isinstance(p.json, dict):
        t.check_eq('format 3 cross-thread: unknown frees', p.json.get('unknown_frees'), 1)
    # A failed realloc: its free by ordinal, then the UNFREE by ordinal brings the block back,
    # which a later free (by ordinal) ends; a second block stays.
    p = v3('format 3 unfree', tg.chunk3(1, [(O, 1, 8, 1), (O, 2, 16, 1), (F, 3, 0, R), (UO, 4, 0),
                                            (F, 5, 1), (U, 6, 0x5000)]), 0)
    tot = totals(p)
    if tot is not None:
        t.check_eq('format 3 unfree: inuse_space', tot['inuse_space'], 8)
    # Ordinals out of range: a first one past 2^62, a difference below 0 or past 2^62.
    v3('format 3 first ordinal huge', tg.chunk3(1, [(O, 1, 8, 1)], first_ord=1 << 62), 2, ('range',))
    v3('format 3 ordinal below 0', tg.chunk3(1, [(O, 1, 8, 1), (F, 2, -5)]), 2, ('range',))
    v3('format 3 ordinal past the top', tg.chunk3(1, [(F, 2, (1 << 62) + 3)]), 2, ('range',))
    v3('format 3 unfree below 0', tg.chunk3(1, [(UO, 2, -1)]), 2, ('range',))
    # A block freed twice by ordinal: the second is an unknown free, not a crash.
    v3('format 3 double free', tg.chunk3(1, [(O, 1, 8, 1), (F, 2, 0), (F, 3, 0)]), 0)
    # Backs runs out (a FREE_ORD with no field left).
    v3('format 3 backs short', tg.chunk3(1, [(O, 1, 8, 1), (F, 2, 0)], lens=[0, 1, 0, 2, 0]), 2,
       ('malformed',))


def test_fold(t, r, real):
    """Blocks allocated and freed within a chunk are summed per stack rather than replayed when
    only the end of the trace counts (decode.c's fold_scan); `--at event:N` past the end replays
    every event and must give the same figures, duration included. The cases are those the
    reader must not fold: a realloc's free that an UNFREE undoes, a pair ending its chunk (the
    trace's last event sets the duration), stamps that repeat or wrap; and a realloc chain, whose
    frees it folds but the last."""
    L, B, A, M = tg.EV_ALLOC_LOCAL, tg.EV_FREE_BACK, tg.EV_ALLOC, tg.EV_FREE
    U, R = tg.EV_UNFREE, tg.API_REALLOC

    def top(path, *extra):
        out = {}
        for fmt in ('--json', None):
            argv = [t.allocprof, 'top', '-n', '1000'] + ([fmt] if fmt else []) + list(extra) + [path]
            p = subprocess.run(argv, env=t.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=TIMEOUT, cwd=t.tmp)
            if p.returncode != 0:
                t.fail('%s: exit %d\n%s' % (' '.join(argv), p.returncode, clip(p.stderr, 800)))
                return None
            if fmt:
                j = json.loads(p.stdout.decode())
                out['json'] = (j['total'], j['rows'], j['trace']['events'], j['trace']['unknown_frees'])
            else:
                out['duration'] = [l for l in p.stdout.decode().splitlines() if l.startswith('Duration')]
        return out

    def same(label, data):
        path = r.write('fold-%s.trace' % label.replace(' ', '-'), data) if isinstance(data, bytes) else data
        folded, replayed = top(path), top(path, '--at', 'event:%d' % 10 ** 15)
        if folded is None or replayed is None:
            return None
        t.check_eq('fold %s: figures' % label, folded['json'], replayed['json'])
        t.check_eq('fold %s: duration' % label, folded['duration'], replayed['duration'])
        return folded['json'][0]

    def v2(*chunks, clocks=((0, 1000), (100, 101000))):
        recs = base_records() + [tg.clock(s, ns) for s, ns in clocks] + list(chunks)
        return stream(recs, tg.sync(10 ** 6), tg.end(), version=2)

    same('real trace', r.write('fold-real.trace', real))
    # A realloc's free of a local block, undone: the block lives on at the UNFREE's address.
    tot = same('realloc undone', v2(tg.chunk2(1, [(L, 1, 8, 1), (L, 2, 16, 2), (B, 3, 1, R), (U, 4, 0x4000, R),
                                                  (B, 5, 2), (A, 6, 0x10, 1, 1), (L, 7, 4, 1), (B, 8, 1)])))
    if tot:
        t.check_eq('fold realloc undone: inuse_space', tot['inuse_space'], 16 + 1)
        t.check_eq('fold realloc undone: alloc_objects', tot['alloc_objects'], 4)
    # A buffer grown by realloc: each free is folded once the next one ends its hold, except
    # when an UNFREE comes first.
    tot = same('realloc chain', v2(tg.chunk2(1, [(L, 1, 8, 1), (B, 2, 1, R), (L, 3, 16, 1, R), (B, 4, 1, R),
                                                 (L, 5, 24, 1, R), (U, 6, 0x4000, R), (B, 7, 1, R), (L, 8, 32, 1, R),
                                                 (B, 9, 1, R), (L, 10, 40, 1, R), (A, 11, 0x10, 1, 1)])))
    if tot:
        t.check_eq('fold realloc chain: inuse_space', tot['inuse_space'], 16 + 40 + 1)
    # The trace's last event is a pair's free: it sets the duration.
    same('last event', v2(tg.chunk2(1, [(L, 10, 8, 1), (L, 11, 16, 1), (B, 12, 1), (B, 40, 2)])))
    same('last event of each chunk', v2(tg.chunk2(1, [(L, 10, 8, 1), (L, 11, 16, 1), (B, 12, 1), (B, 13, 2)]),
                                        tg.chunk2(2, [(L, 5, 8, 2), (B, 60, 1)])))
    # Stamps that repeat, within a chunk and across threads, or wrap around: order decides.
    same('equal stamps', v2(tg.chunk2(1, [(L, 20, 8, 1), (L, 20, 16, 1), (B, 20, 1), (B, 21, 2), (A, 22, 0x10, 1, 1)]),
                            tg.chunk2(2, [(L, 20, 32, 2), (B, 20, 1), (M, 21, 0x10), (A, 23, 0x20, 2, 2)])))
    same('stamps wrap', v2(tg.chunk2(1, [(L, 30, 8, 1), (L, tg.U64, 16, 1), (B, tg.U64 + 5, 1), (B, tg.U64 + 6, 2),
                                         (A, tg.U64 + 7, 0x10, 1, 1)], base_stamp=30)))
    # Format 3: frees by ordinal and UNFREEs take fields from backs too, between the FREE_BACKs
    # the folding reads there; a realloc's local block brought back by an UNFREE by ordinal is
    # freed by ordinal after.
    O, F, UO, U = tg.EV_ALLOC_ORD, tg.EV_FREE_ORD, tg.EV_UNFREE_ORD, tg.EV_UNFREE

    def v3(*chunks):
        recs = base_records() + [tg.clock(0, 1000), tg.clock(100, 101000)] + list(chunks)
        return stream(recs, tg.sync(10 ** 6), tg.end(), version=3)
    tot = same('format 3', v3(tg.chunk3(1, [(O, 1, 100, 1), (L, 2, 8, 1), (F, 3, 0), (L, 4, 16, 2), (B, 5, 2),
                                            (O, 6, 7, 2), (L, 7, 32, 1, R), (B, 8, 1, R), (UO, 9, 6, R),
                                            (F, 10, 6), (U, 11, 0x9000), (A, 12, 0x10, 1, 1)])))
    if tot:
        t.check_eq('fold format 3: inuse_space', tot['inuse_space'], 16 + 7 + 1)
        t.check_eq('fold format 3: alloc_objects', tot['alloc_objects'], 6)


def test_module_paths(t, r):
    """Module records naming files that are not regular files: no hang, a warning, the rest works."""
    fifo = os.path.join(t.tmp, 'fifo')
    os.mkfifo(fifo)
    sparse = os.path.join(t.tmp, 'sparse.so')
    with open(sparse, 'wb') as f:
        f.truncate(1 << 40)  # 1 TiB of holes
    paths = ['/dev/zero', fifo, '/dev/stdin', '/dev/tty', '/proc/self/fd/0', t.tmp, sparse, '/dev/urandom']
    recs = [tg.header()]
    sid = 0
    for i, path in enumerate(paths):
        base = 0x10000000 * (i + 1)
        recs.append(tg.module(i + 1, path, base=base))
        sid += 1
        recs.append(tg.stack(sid, [base + 0x100]))
    recs.append(tg.chunk(1, [(tg.EV_ALLOC, s, 0x1000 * s, 10, s) for s in range(1, sid + 1)]))
    recs.append(tg.end())
    path = r.write('paths.trace', stream(recs))
    # stdin is a pipe nobody writes to: reading /dev/stdin would block until the timeout.
    rfd, wfd = os.pipe()
    try:
        p = r.expect('modules at special files', path, 0, ('not a regular file',), stdin=rfd, timeout=20)
    finally:
        os.close(rfd)
        os.close(wfd)
    if p is not None and p.returncode == 0 and p.json:
        t.check_eq('modules at special files: inuse_objects', p.json['total']['inuse_objects'], sid)


def test_scale(t, r):
    """Inputs that were quadratic: many modules loaded and unloaded, nested module ranges."""
    recs = [tg.header()]
    n = 100000
    for i in range(1, n + 1):
        recs.append(tg.module(i, '/m/%d.so' % i, base=0x1000000 * i, gen=i - 1))
        recs.append(tg.unload(1 if i % 2 else i, i))  # id 1 over and over: nothing left to unload
    for i in range(1, 2001):
        recs.append(tg.stack(i, [0x1000000 * (i * 37 % n + 1) + 0x10], gen=i * 37 % n))
    recs.append(tg.chunk(1, [(tg.EV_ALLOC, s, 0x100 * s, 1, s) for s in range(1, 2001)]))
    recs.append(tg.end())
    p, secs = r.run('100,000 modules and unloads', r.write('modules.trace', stream(recs)))
    t.check(p is not None and p.returncode == 0 and secs < 15,
            '100,000 modules and unloads: %.1f s, status %s' % (secs, p and describe_status(p.returncode)))
    t.log('100,000 modules, 2000 stacks: %.2f s' % secs)
    # 5000 modules with nested 1 TiB ranges and 20,000 distinct addresses to resolve.
    recs = [tg.header()]
    for i in range(1, 5001):
        recs.append(tg.module(i, '/n/%d.so' % i, base=0x100000000 + i * 0x1000, segs=((0, 1 << 40, 0, 5),)))
    for i in range(1, 20001):
        recs.append(tg.stack(i, [0x100000000 + 0x10000000 + i * 16]))
    recs.append(tg.chunk(1, [(tg.EV_ALLOC, s, 0x100 * s, 1, s) for s in range(1, 20001)]))
    recs.append(tg.end())
    p, secs = r.run('nested module ranges', r.write('nested.trace', stream(recs)))
    t.check(p is not None and p.returncode == 0 and secs < 15,
            'nested module ranges: %.1f s, status %s' % (secs, p and describe_status(p.returncode)))
    t.log('5000 nested 1 TiB modules, 20,000 addresses: %.2f s' % secs)


def test_no_sync(t, r):
    """3 million events and no SYNC record: delivered with a warning, memory bounded."""
    A, M = tg.EV_ALLOC, tg.EV_FREE
    recs = base_records()
    stamp = 1
    n = 3000000
    per = 1000  # events per chunk (pairs)
    for c in range(n // (2 * per)):
        ev = []
        for _ in range(per):
            ev.append((A, stamp, 0x10000 + (stamp % 64) * 16, 16, 1))
            ev.append((M, stamp + 1, 0x10000 + (stamp % 64) * 16))
            stamp += 2
        recs.append(tg.chunk(1 + c % 2, ev, base_stamp=ev[0][1]))
    recs.append(tg.end())
    data = stream(recs)
    path = r.write('nosync.trace', data)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = r.expect('no SYNC records', path, 0, ('sync',))
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    tot = totals(p)
    if tot is not None:
        t.check_eq('no SYNC records: alloc_objects', tot['alloc_objects'], n // 2)
        t.check_eq('no SYNC records: inuse_objects', tot['inuse_objects'], 0)
    if after > before:  # ru_maxrss of the children is a maximum: it grew only if this run set it
        t.log('no SYNC records: peak RSS %d MB (stream %d MB)' % (after // 1024, len(data) >> 20))
        t.check(after < 200 * 1024, 'no SYNC records: peak RSS %d MB' % (after // 1024))


def main():
    t = aptest.Test('reader')
    r = Reader(t)
    known = t.prog('known')
    trace, _ = t.record([known])
    real = tg.decompress(trace)
    if not real.startswith(tg.MAGIC):
        t.abort('the recorded trace does not decompress to a stream')
    for f in (test_cuts, test_flips, test_version, test_empty_stack_table, test_fold):
        f(t, r, real)
    for f in (test_huge, test_semantics, test_format2, test_format3, test_module_paths, test_scale, test_no_sync):
        f(t, r)
    t.log('%d analyzer runs' % r.n)
    t.finish()


if __name__ == '__main__':
    main()
