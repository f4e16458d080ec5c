#!/usr/bin/env python3
"""End to end: the quick start's demo (tests/progs/demo.c) profiles as the README says.

demo analyses 20000 generated log lines of exactly 10 space-separated tokens each; copy_token()
mallocs every token (len + 1 bytes) and parse_line() frees it at once. Figures (the token bytes
are fixed by demo's xorshift seed; measured with an LD_PRELOAD counter and heaptrack, which also
counts 200000 calls in copy_token, 15 in intern_word, 4 in read_line, 4 in load_config):
  copy_token   200000 allocations (20000 lines x 10 tokens), 1682591 B, none live
  intern_word  15 (one per distinct path/status), 15 x (16-byte header + word + NUL) = 378 B,
               freed by free_table at the end
  read_line    4 reallocs growing the line buffer 16 -> 32 -> 64 -> 128: 240 B, freed
  report       1 malloc of 15 pointers = 120 B, freed
  load_config  the intentional leak: struct config (24 B) + "demo web server" (16) +
               the log format (24) + "UTC" (4) = 4 blocks, 68 B, all live at exit
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import aptest  # noqa: E402
from aptest import four  # noqa: E402

FLAT = {
    'copy_token': four(20000 * 10, 1682591, 0, 0),
    'intern_word': four(15, 378, 0, 0),
    'read_line': four(4, 16 + 32 + 64 + 128, 0, 0),
    'report': four(1, 15 * 8, 0, 0),
    'load_config': four(4, 24 + 16 + 24 + 4, 4, 68),
}


def main():
    t = aptest.Test('demo')
    demo = t.prog('demo')
    trace, rec = t.record([demo])
    out = rec.stdout.decode('utf-8', 'replace')
    t.check(out.startswith('demo web server: analysing 20000 lines') and
            '20000 log lines, 15 distinct paths and statuses' in out,
            'demo output unexpected:\n%s' % out)

    data = t.top_json(trace, '--sample-index=alloc_objects')
    t.compare_rows(data, {fn: {'flat': v} for fn, v in FLAT.items()})
    # parse_line allocates nothing itself; its cum is copy_token's + intern_word's.
    t.compare_rows(data, {'parse_line': {'flat': aptest.ZERO,
                                         'cum': aptest.add(FLAT['copy_token'], FLAT['intern_word'])}})
    rows = data['rows']
    t.check(rows and rows[0]['function'] == 'copy_token',
            'the hot spot copy_token is not the first row by alloc_objects: %s'
            % [r['function'] for r in rows[:5]])

    d = t.top_json(trace, '--sample-index=inuse_space', '-n', '5')
    names = [r['function'] for r in d['rows']]
    t.check('load_config' in names, 'the leak (load_config) is not in the top 5 by inuse_space: %s' % names)
    t.finish()


if __name__ == '__main__':
    main()
