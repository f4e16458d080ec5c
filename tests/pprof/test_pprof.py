#!/usr/bin/env python3
"""`allocprof pprof`: the profile.proto it writes, read back with an independent decoder.

Records tests/pprof/pprof_prog.c, converts the trace, decodes the file with pprofdec (a strict
stdlib-only protobuf reader) and checks: everything pprof itself rejects (string_table[0], value
counts, dangling ids), the heap-profile conventions (sample types, period, default type),
mappings against the ELF files' build-ids (readelf -n), addresses inside their mappings, the
inline chain and the pseudo frame "[truncated]", and above all that the figures per function,
aggregated the way pprof aggregates, equal `allocprof top --json` exactly for all four metrics.
"""
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'lib'))
sys.path.insert(0, HERE)
import aptest  # noqa: E402
from aptest import METRICS, four  # noqa: E402
import pprofdec  # noqa: E402

# Flat figures of pprof_prog.c's functions (see the comments there), exact trace.
FLAT = {
    'alloc_small': four(20, 20 * 48, 15, 15 * 48),
    'alloc_big': four(3, 3 * 100000, 2, 2 * 100000),
    'inl_alloc': four(7, 7 * 200, 7, 7 * 200),
    'recurse': four(4, 4 * 128, 3, 3 * 128),
    'deep': four(1, 64, 1, 64),
    'main': four(2, 2000, 1, 1000),
}
# Functions a made-up frame name looks like: allocprof's "module+0xoffset" / "0xaddress".
FALLBACK = re.compile(r'^(0x[0-9a-f]+|.+\+0x[0-9a-f]+)$')

t = aptest.Test('pprof')
prog = t.prog('pprof_prog')
src = os.path.join(HERE, 'pprof_prog.c')


def pprof(*args, expect_rc=0, **kw):
    cmd = [t.allocprof, 'pprof', *args]
    p = t.run(cmd, **kw)
    if expect_rc is not None:
        t.check(p.returncode == expect_rc, '%s: %s (expected %d)\nstderr:\n%s'
                % (' '.join(cmd), aptest.describe_status(p.returncode), expect_rc, aptest.clip(p.stderr)))
    return p


def decode(path, what):
    try:
        prof = pprofdec.load(path)
    except (pprofdec.DecodeError, OSError, EOFError, ValueError) as e:
        t.abort('%s: cannot decode %s: %s' % (what, path, e))
    t.check(not prof.problems, '%s: pprof would reject it:\n  %s' % (what, '\n  '.join(prof.problems)))
    return prof


def build_id(path):
    """The GNU build-id of an ELF file per readelf -n, or None."""
    p = subprocess.run(['readelf', '-n', path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30)
    m = re.search(r'Build ID:\s*([0-9a-f]+)', p.stdout.decode('utf-8', 'replace'))
    return m.group(1) if m else None


def compare_with_top(prof, trace, what):
    """Per-function flat and cum of every metric, as pprof aggregates the file, against
    allocprof top --json on the same trace: equal, exactly (exact trace: integral figures)."""
    top = t.top_json(trace)
    rows = {r['function']: r for r in top['rows']}
    mine = prof.per_function()
    bad = []
    fallback_top = [0] * 4
    for name, r in rows.items():
        if FALLBACK.match(name):
            for i, m in enumerate(METRICS):
                fallback_top[i] += r['flat'][m]
            continue
        got = mine.get(name)
        for part in ('flat', 'cum'):
            want = [r[part][m] for m in METRICS]
            have = got[part] if got else [0] * 4
            if want != have:
                bad.append('%-20s %-4s top %s  pprof file %s' % (name, part, want, have))
    for name in mine:
        if name is not None and name not in rows and any(mine[name]['cum']):
            bad.append('%-20s only in the pprof file: %s' % (name, mine[name]))
    # Unresolved addresses have no lines in the file (pprof shows the address): their flat
    # figures must still add up to those of top's "module+0x..." rows.
    none_flat = mine.get(None, {'flat': [0] * 4})['flat']
    if none_flat != fallback_top:
        bad.append('unresolved frames: top %s, pprof file %s' % (fallback_top, none_flat))
    t.check(not bad, '%s: figures per function differ from allocprof top --json:\n%s' % (what, '\n'.join(bad)))
    return mine


def line_of(pattern):
    with open(src) as f:
        for i, line in enumerate(f, 1):
            if pattern in line:
                return i
    t.abort('%r not found in %s' % (pattern, src))


def location_of(prof, leaf_name):
    """The leaf location of the sample whose innermost function is leaf_name."""
    for smp in prof.samples:
        fr = prof.frames(smp)
        if fr and fr[0][0] == leaf_name:
            return smp, fr[0][1]
    return None, None


# ---- exact trace, full depth ----------------------------------------------------------------------
start = time.time()
trace, _ = t.record([prog], out=os.path.join(t.tmp, 'prog.trace'))
out = os.path.join(t.tmp, 'prog.pb.gz')
pprof('-o', out, trace)
prof = decode(out, 'exact')

t.check(prof.gzipped, 'the file is not gzip-compressed')
t.check_eq('string_table[0]', prof.strings[0] if prof.strings else None, '')
t.check_eq('sample types', prof.sample_types,
           [('alloc_objects', 'count'), ('alloc_space', 'bytes'), ('inuse_objects', 'count'), ('inuse_space', 'bytes')])
t.check_eq('period_type', prof.period_type, ('space', 'bytes'))
t.check_eq('period (exact trace)', prof.period, 1)
t.check_eq('default_sample_type', prof.default_sample_type, 'inuse_space')
t.check(abs(prof.time_nanos / 1e9 - start) < 600, 'time_nanos %d is not the time of the run (%d)' % (prof.time_nanos, start))
t.check(0 < prof.duration_nanos < 600e9, 'duration_nanos %d not plausible' % prof.duration_nanos)
t.check(prof.samples, 'no samples')
for smp in prof.samples:
    if not t.check(len(smp['values']) == 4 and any(smp['values']), 'sample with values %r' % smp['values']):
        break

# Mappings: the program first; build-ids as the ELF files say; every address inside its mapping.
t.check(prof.mapping_order and prof.mappings[prof.mapping_order[0]]['filename'] == os.path.realpath(prog),
        'mapping[0] is not the program: %r' % [prof.mappings[i]['filename'] for i in prof.mapping_order[:3]])
if shutil.which('readelf'):
    checked = 0
    for m in prof.mappings.values():
        if m['filename'] and os.path.isfile(m['filename']):
            t.check_eq('build-id of %s' % m['filename'], m['build_id'], build_id(m['filename']))
            checked += 1
    t.check(checked >= 2, 'build-ids checked for %d mappings only' % checked)
else:
    t.log('readelf not found: build-ids not checked')
for loc in prof.locations.values():
    mid = loc['mapping_id']
    if mid:
        m = prof.mappings.get(mid)
        if not t.check(m is not None, 'location %d: mapping %d does not exist' % (loc['id'], mid)):
            continue
        t.check(m['memory_start'] <= loc['address'] < m['memory_limit'],
                'location %d: address %#x outside mapping %d [%#x, %#x)'
                % (loc['id'], loc['address'], mid, m['memory_start'], m['memory_limit']))
main_map = prof.mappings.get(prof.mapping_order[0]) if prof.mapping_order else None
t.check(main_map and main_map['has_functions'], 'the program mapping lacks has_functions: pprof would re-symbolize it')

# Figures.
mine = compare_with_top(prof, trace, 'exact')
for fn, want in FLAT.items():
    got = mine.get(fn, {'flat': None})['flat']
    t.check_eq('flat of %s' % fn, got, [want[m] for m in METRICS])
t.check_eq('cum of recurse (once per stack)', mine.get('recurse', {}).get('cum'), [4, 512, 3, 384])

# The leaf location is the call (return address - 1), with the inline chain innermost first.
smp, loc = location_of(prof, 'alloc_small')
if t.check(loc is not None, 'no sample with alloc_small as leaf'):
    t.check_eq('line of the alloc_small leaf', loc['lines'][0][1] if loc['lines'] else None, line_of('malloc(48)'))
    t.check(any(k == 'bytes' and num == 48 for k, _, num, _ in smp['labels']), 'alloc_small sample labels %r lack bytes=48' % smp['labels'])
smp, loc = location_of(prof, 'inl_alloc')
if t.check(loc is not None, 'no sample with inl_alloc as leaf'):
    names = [prof.functions[fid]['name'] for fid, _ in loc['lines']]
    t.check_eq('inline chain of the inl_alloc location', names, ['inl_alloc', 'via_inline'])
    t.check_eq('line of inl_alloc', loc['lines'][0][1], line_of('void *p = malloc(n);'))
    t.check_eq('line of via_inline', loc['lines'][-1][1], line_of('hold(inl_alloc(200))'))
    fn = prof.functions[loc['lines'][0][0]]
    t.check(fn['filename'] and fn['filename'].endswith('pprof_prog.c'), 'inl_alloc filename %r' % fn['filename'])
    # One Location per physical frame: no other location shares its mapping and address.
    dup = [x['id'] for x in prof.locations.values()
           if x is not loc and x['address'] == loc['address'] and x['mapping_id'] == loc['mapping_id']]
    t.check(not dup, 'locations %r duplicate location %d' % (dup, loc['id']))


def exec_vaddr(path, file_offset):
    """The vaddr of the executable PT_LOAD segment at file_offset (readelf -lW), or None."""
    p = subprocess.run(['readelf', '-lW', path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30)
    for line in p.stdout.decode('utf-8', 'replace').splitlines():
        f = line.split()
        if len(f) >= 8 and f[0] == 'LOAD' and 'E' in f[6:-1] and int(f[1], 16) == file_offset:
            return int(f[2], 16)
    return None


def call_ends(path):
    """The addresses just after every call instruction of the file (objdump -d over the whole
    file: a window could start inside an instruction and desynchronise the disassembly)."""
    p = subprocess.run(['objdump', '-d', path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60)
    out = set()
    for line in p.stdout.decode('utf-8', 'replace').splitlines():
        m = re.match(r'^\s*([0-9a-f]+):\t((?:[0-9a-f]{2} )+)\s*\t(\S+)', line)
        if m and m.group(3).startswith('call'):
            out.add(int(m.group(1), 16) + len(m.group(2).split()))
    return out


# Every address of the program's own frames is a return address - 1, mapped back to the file
# through memory_start/file_offset as pprof does.
if shutil.which('readelf') and shutil.which('objdump') and main_map:
    vbase = exec_vaddr(main_map['filename'], main_map['file_offset'])
    if t.check(vbase is not None, 'no executable PT_LOAD at offset %#x in %s' % (main_map['file_offset'], prog)):
        own = [x for x in prof.locations.values() if x['mapping_id'] == prof.mapping_order[0] and x['lines']
               and prof.functions[x['lines'][-1][0]]['name'] in ('alloc_small', 'alloc_big', 'via_inline', 'recurse', 'deep', 'main')]
        t.check(len(own) >= 6, 'only %d locations in pprof_prog.c functions' % len(own))
        ends = call_ends(prog)
        for x in own:
            va = x['address'] - main_map['memory_start'] + vbase
            t.check(va + 1 in ends, 'location %d (%s): %#x + 1 does not follow a call instruction'
                    % (x['id'], prof.functions[x['lines'][-1][0]]['name'], va))
else:
    t.log('readelf/objdump not found: addresses not checked against the code')

# Functions are unique by (name, filename).
keys = [(f['name'], f['filename']) for f in prof.functions.values()]
t.check(len(keys) == len(set(keys)), 'duplicate functions')

# ---- shallow recording: the "[truncated]" pseudo frame ----------------------------------------
trace_d, _ = t.record([prog], out=os.path.join(t.tmp, 'depth.trace'), record_args=('--depth', '8'))
out_d = os.path.join(t.tmp, 'depth.pb.gz')
pprof('-o', out_d, trace_d)
prof_d = decode(out_d, '--depth 8')
compare_with_top(prof_d, trace_d, '--depth 8')
trunc = [f for f in prof_d.functions.values() if f['name'] == '[truncated]']
if t.check(len(trunc) == 1, 'expected one [truncated] function, got %d' % len(trunc)):
    locs = [x for x in prof_d.locations.values() if any(fid == trunc[0]['id'] for fid, _ in x['lines'])]
    t.check(locs and all(x['mapping_id'] == 0 and x['address'] == 0 for x in locs),
            '[truncated] locations should have no mapping and no address: %r' % locs)
    t.check(any(prof_d.frames(s)[-1][0] == '[truncated]' for s in prof_d.samples),
            'no sample ends (root side) with [truncated]')

# ---- options -------------------------------------------------------------------------------------
out_a = os.path.join(t.tmp, 'alloc.pb.gz')
pprof('--sample-index=alloc_space', '-o', out_a, trace)
t.check_eq('default_sample_type with --sample-index=alloc_space', decode(out_a, 'alloc_space').default_sample_type,
           'alloc_space')
pprof(trace)  # default name: prog.trace -> prog.pb.gz (overwritten, not appended to)
t.check_eq('samples of the default-named file', decode(out, 'default name').samples, prof.samples)
p = pprof('-o', '-', trace)
t.check(p.stdout[:2] == b'\x1f\x8b', '-o - did not write gzip to stdout')
try:
    t.check_eq('samples written to stdout', pprofdec.Profile(p.stdout).samples, prof.samples)
except (pprofdec.DecodeError, OSError, EOFError) as e:
    t.fail('-o -: cannot decode stdout: %s' % e)
pprof(expect_rc=2)
pprof('--sample-index=nope', trace, expect_rc=2)
pprof('-o', os.path.join(t.tmp, 'x.pb.gz'), os.path.join(t.tmp, 'missing.trace'), expect_rc=2)
pprof('-o', os.path.join(t.tmp, 'no', 'such', 'dir.pb.gz'), trace, expect_rc=2)

# ---- sampled trace: period is the sampling interval ----------------------------------------------
trace_s, _ = t.record([prog], out=os.path.join(t.tmp, 'sampled.trace'), record_args=('--sample-bytes', '4096'))
out_s = os.path.join(t.tmp, 'sampled.pb.gz')
pprof('-o', out_s, trace_s)
prof_s = decode(out_s, 'sampled')
t.check_eq('period (sampled trace)', prof_s.period, 4096)
t.check(any('4096' in (c or '') for c in prof_s.comments), 'no comment about sampling: %r' % prof_s.comments)
# The 100000-byte blocks are sampled with probability 1 - e^-24: their figures are exact.
big = prof_s.per_function().get('alloc_big', {'flat': None})['flat']
t.check_eq('alloc_big in the sampled profile', big, [3, 300000, 2, 200000])

t.finish()
