#!/usr/bin/env python3
"""Libraries.

  * dlopen liba.so, allocate 7 blocks from it, dlclose, dlopen libb.so (the same code under
    another name, so usually mapped at liba's old address): liba_many 7 and libb_many 11.
  * jemalloc: a program linked with -ljemalloc using mallocx/rallocx/xallocx/dallocx/sdallocx
    (nallocx allocates nothing), and a plain program with libjemalloc.so.2 preloaded after the
    shim: exact counts. Without jemalloc, the shim's exported mallocx returns NULL (ENOMEM).
  * C++: new/delete in every form attributed to the calling function; exceptions thrown through
    allocating frames; an exception thrown while malloc fails (libstdc++'s emergency pool).
"""
import glob
import os
import lifetest
from lifetest import aptest, kv

t = aptest.Test('lifecycle-libs')
life = t.prog('life')


def rows(trace):
    return {r['function']: r for r in t.top_json(trace)['rows']}


traces, p = lifetest.record(t, 'dlopen', [life, 'dlopen', '0', t.prog('liba'), t.prog('libb')])
out = kv(p.stdout)
t.log('liba_many at %#x, libb_many at %#x (%s)' % (out.get('liba_at', 0), out.get('libb_at', 0),
      'same address' if out.get('liba_at') == out.get('libb_at') else 'different addresses'))
r = rows(traces[0])
for fn, n in (('liba_many', 7), ('libb_many', 11)):
    t.check_eq('dlopen: %s alloc_objects' % fn, r.get(fn, {}).get('flat', {}).get('alloc_objects'), n)

if 'jemalloc' in t.progs:
    traces, p = lifetest.record(t, 'jemalloc', [t.prog('jemalloc')])
    out = kv(p.stdout)
    xs = out.get('xallocx_ok', -1)
    r = rows(traces[0])
    # alloc_objects counts every allocation made; a resize in place is a new one (j_xallocx)
    want = {'j_malloc': (10, 0), 'j_mallocx': (8, 0), 'j_rallocx': (8, 0), 'j_xallocx': (xs, 0)}
    got = {fn: (r.get(fn, {}).get('flat', {}).get('alloc_objects', 0),
                r.get(fn, {}).get('flat', {}).get('inuse_objects', 0)) for fn in want}
    t.check_eq('jemalloc (linked): (alloc_objects, inuse_objects) by function', got, want)
else:
    t.log('jemalloc_prog not built (no jemalloc development files): linked case skipped')

jem = [p for p in glob.glob('/usr/lib/*/libjemalloc.so.2') + glob.glob('/usr/lib*/libjemalloc.so.2')]
if jem:
    traces, p = lifetest.record(t, 'jemalloc-preload', [life, 'leaf', '500'], env_extra={'LD_PRELOAD': jem[0]})
    r = rows(traces[0])
    t.check_eq('jemalloc (preloaded): leaf_work', (r.get('leaf_work', {}).get('flat', {}).get('alloc_objects'),
               r.get('leaf_work', {}).get('flat', {}).get('inuse_objects')), (501, 251))
else:
    t.log('libjemalloc.so.2 not installed: preloaded case skipped')

traces, p = lifetest.record(t, 'nojemalloc', [life, 'nojemalloc'])
t.check_eq('no jemalloc: mallocx exported and failing cleanly', kv(p.stdout),
           {'mallocx_found': 1, 'mallocx_null': 1, 'mallocx_enomem': 1})

if 'cxx' in t.progs:
    p0 = t.run([t.prog('cxx')])
    traces, p = lifetest.record(t, 'cxx', [t.prog('cxx')])
    # the number of blocks until the address space is full differs from run to run
    t.check_eq('cxx: output as untraced', p.stdout.split(b'\n')[0], p0.stdout.split(b'\n')[0])
    out = kv(p.stdout)
    t.check_eq('cxx: exceptions caught, emergency pool used', (out.get('caught'), out.get('exhausted'),
               out.get('pool_caught')), (5, 1, 1))
    r = rows(traces[0])

    def fc(fn, part='flat'):
        m = r.get(fn, {}).get(part, {})
        return (m.get('alloc_objects'), m.get('inuse_objects'))
    t.check_eq('cxx: cxx_new (new, new[], aligned new, aligned new[])', fc('cxx_new'), (4, 0))
    t.check_eq('cxx: cxx_nothrow (nothrow new, nothrow new[], sized delete)', fc('cxx_nothrow'), (2, 0))
    # 5 throws, each through 5 frames with a vector, plus the exception and its message
    t.check_eq('cxx: thrower (cum)', fc('thrower', 'cum'), (35, 0))
    t.check_eq('cxx: cxx_exhaust', fc('cxx_exhaust'), (out.get('exhaust_blocks'), 0))
else:
    t.log('C++ compiler not found: cxx skipped')
t.finish()
