"""tracegen: builds allocprof trace streams (include/allocprof/trace.h, format versions 1 to 3) from
Python, for tests that need traces no program would write: malformed, adversarial or huge. Also
splits a real stream into records. Python 3 stdlib only; compression uses the zstd command.
"""

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from aptest import get_varint, put_varint  # noqa: E402  (the varint codec the tests share)

MAGIC = b'ALLOCPRF'
REC_HEADER, REC_MODULE, REC_UNLOAD, REC_STACK, REC_CHUNK, REC_SYNC, REC_CLOCK, REC_THREAD, \
    REC_END, REC_EXIT, REC_TOTALS = range(1, 12)
EV_ALLOC, EV_FREE, EV_UNFREE, EV_LOST, EV_ALLOC_LOCAL, EV_FREE_BACK = 1, 2, 3, 4, 5, 6
EV_ALLOC_ORD, EV_FREE_ORD = 0, 7  # format 3
EV_UNFREE_ORD = 'unfree-ord'      # format 3: an UNFREE naming its block by ordinal (kind 3)
TAG_STEP1 = 0x8
API_MALLOC, API_REALLOC, API_FREE = 0, 2, 9
U64 = (1 << 64) - 1


def varint(v):
    assert 0 <= v <= U64, v
    return put_varint(v)


def svarint(v):
    v = ((v << 1) ^ (v >> 63)) & U64 if v < 0 else (v << 1) & U64
    return varint(v)


def sdelta(new, old):
    """svarint of new - old, modulo 2^64 as the reader adds it."""
    d = (new - old) & U64
    return svarint(d - (1 << 64) if d >= 1 << 63 else d)


def string(s):
    if isinstance(s, str):
        s = s.encode()
    return varint(len(s)) + s


def record(kind, payload):
    return bytes([kind]) + varint(len(payload)) + payload


def magic(version=1):
    return MAGIC + varint(version)


def header(pid=4242, exe='/usr/bin/fake', argv=('fake',), sample_bytes=0, clock=2, flags=0,
           hostname='host', start_stamp=0):
    p = b''.join(varint(v) for v in (pid, 1, 1700000000000000000, clock, start_stamp, 1000,
                                     sample_bytes, 64, 7, 4096))
    p += string(exe) + varint(len(argv)) + b''.join(string(a) for a in argv)
    p += varint(flags) + string(hostname)
    return record(REC_HEADER, p)


def module(mid, path, base=0x400000, segs=((0, 0x10000, 0, 5),), gen=0, stamp=0, build_id=b''):
    p = varint(mid) + varint(gen) + varint(stamp) + varint(base) + string(path) + string(build_id)
    p += varint(len(segs)) + b''.join(b''.join(varint(x) for x in s) for s in segs)
    return record(REC_MODULE, p)


def unload(mid, new_gen, stamp=0):
    return record(REC_UNLOAD, varint(mid) + varint(stamp) + varint(new_gen))


def stack(sid, frames, gen=0, flags=0):
    p = varint(sid) + varint(gen) + varint(flags) + varint(len(frames))
    prev = None
    for f in frames:
        p += varint(f) if prev is None else sdelta(f, prev)
        prev = f
    return record(REC_STACK, p)


def chunk2(tid, events, base_stamp=0, seq=0, lens=None, tail=b''):
    """A format-2 CHUNK. events: tuples (kind, stamp, ...): ALLOC (addr, size, stack), FREE/UNFREE
    (addr), LOST (nallocs, nfrees), ALLOC_LOCAL (size, stack), FREE_BACK (k); optional last
    element api. A stamp one above the previous one is written as the STEP1 flag. lens replaces
    the section lengths written (to corrupt them); tail is appended to the payload."""
    return _columns(2, tid, events, base_stamp, seq, 0, lens, tail)


def chunk3(tid, events, base_stamp=0, seq=0, first_ord=0, lens=None, tail=b''):
    """A format-3 CHUNK: as chunk2, plus ALLOC_ORD (size, stack), FREE_ORD (ordinal) and
    EV_UNFREE_ORD (ordinal); an UNFREE (addr) gets its form 0 in backs. Ordinals are given
    absolute and written as differences, as the writer does."""
    return _columns(3, tid, events, base_stamp, seq, first_ord, lens, tail)


def _columns(version, tid, events, base_stamp, seq, first_ord, lens, tail):
    tags = bytearray()
    sec = [bytearray() for _ in range(5)]  # stamps, addrs, backs, infos, others
    stamp, addr, last_ord = base_stamp, 0, first_ord
    fields = {EV_ALLOC: 3, EV_FREE: 1, EV_UNFREE: 1, EV_LOST: 2, EV_ALLOC_LOCAL: 2, EV_FREE_BACK: 1}
    if version >= 3:
        fields.update({EV_ALLOC_ORD: 2, EV_FREE_ORD: 1, EV_UNFREE_ORD: 1})
    for e in events:
        kind, st = e[0], e[1]
        nargs = fields.get(kind, 0)
        args = e[2:2 + nargs]
        api = e[2 + nargs] if len(e) > 2 + nargs else (
            API_FREE if kind in (EV_FREE, EV_FREE_BACK) or (kind == EV_FREE_ORD and version >= 3) else
            API_REALLOC if version >= 3 and kind in (EV_UNFREE, EV_UNFREE_ORD) else API_MALLOC)
        tag = (EV_UNFREE if kind == EV_UNFREE_ORD else kind) | api << 4
        if st - stamp == 1:
            tag |= TAG_STEP1
        else:
            sec[0] += varint(st - stamp)
        stamp = st
        tags.append(tag)
        if kind == EV_UNFREE and version >= 3:
            sec[2] += varint(0)  # its form: by address
        if kind in (EV_ALLOC, EV_FREE, EV_UNFREE):
            sec[1] += sdelta(args[0], addr)
            addr = args[0]
        if kind == EV_ALLOC:
            sec[3] += varint(args[1]) + varint(args[2])
        elif kind == EV_ALLOC_LOCAL or (kind == EV_ALLOC_ORD and version >= 3):
            sec[3] += varint(args[0]) + varint(args[1])
        elif kind == EV_FREE_BACK:
            sec[2] += varint(args[0])
        elif kind == EV_FREE_ORD and version >= 3:
            sec[2] += sdelta(args[0], last_ord)
            last_ord = args[0]
        elif kind == EV_UNFREE_ORD:
            sec[2] += varint(get_varint(sdelta(args[0], last_ord), 0)[0] + 1)  # zigzag + 1
            last_ord = args[0]
        elif kind == EV_LOST:
            sec[4] += varint(args[0]) + varint(args[1])
    p = varint(tid) + varint(seq) + varint(base_stamp)
    if version >= 3:
        p += varint(first_ord)
    p += varint(len(events))
    p += b''.join(varint(n) for n in (lens or [len(x) for x in sec]))
    p += bytes(tags) + b''.join(bytes(x) for x in sec) + tail
    return record(REC_CHUNK, p)


def chunk(tid, events, base_stamp=0, seq=0):
    """A format-1 CHUNK. events: tuples (kind, stamp, ...): ALLOC (addr, size, stack), FREE/UNFREE (addr),
    LOST (nallocs, nfrees); optional last element api (default malloc / free)."""
    p = bytearray(varint(tid) + varint(seq) + varint(base_stamp))
    stamp, addr = base_stamp, 0
    for e in events:
        kind, st = e[0], e[1]
        if kind == EV_ALLOC:
            a, size, sid = e[2:5]
            api = e[5] if len(e) > 5 else API_MALLOC
        elif kind in (EV_FREE, EV_UNFREE):
            a = e[2]
            api = e[3] if len(e) > 3 else API_FREE
        else:
            api = API_MALLOC
        p.append(kind | api << 4)
        p += varint(st - stamp)
        stamp = st
        if kind == EV_LOST:
            p += varint(e[2]) + varint(e[3])
            continue
        p += sdelta(a, addr)
        addr = a
        if kind == EV_ALLOC:
            p += varint(size) + varint(sid)
    return record(REC_CHUNK, bytes(p))


def sync(w):
    return record(REC_SYNC, varint(w))


def clock(stamp, mono, real=0):
    return record(REC_CLOCK, varint(stamp) + varint(mono) + varint(real))


def end(stamp=0, counters=()):
    return record(REC_END, varint(stamp) + varint(2000) + varint(0) + varint(0) +
                  varint(len(counters)) + b''.join(varint(c) for c in counters))


def split(stream):
    """(head = magic + version, [(offset, kind, whole record bytes), ...]) of a stream."""
    if stream[:8] != MAGIC:
        raise ValueError('no magic')
    _, i = get_varint(stream, 8)
    head, recs = stream[:i], []
    while i < len(stream):
        kind = stream[i]
        n, j = get_varint(stream, i + 1)
        recs.append((i, kind, stream[i:j + n]))
        i = j + n
    return head, recs


def compress(data):
    zstd = shutil.which('zstd')
    if not zstd:
        raise RuntimeError('the zstd command is needed')
    return subprocess.run([zstd, '-q', '-c', '-1'], input=data, stdout=subprocess.PIPE,
                          check=True).stdout


def decompress(path):
    return subprocess.run(['zstd', '-q', '-dc', path], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL).stdout
