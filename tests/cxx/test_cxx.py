#!/usr/bin/env python3
"""C++ allocations land on the right functions and lines (issue: symbols, source lines and pprof).

operator new/new[] and libstdc++'s allocator frames are hidden by default, so the user function
that asked for memory is the flat one (for std::vector growth that is libstdc++'s
_M_realloc_insert, for a long std::string its _M_construct, as heaptrack and gperftools show them,
with the user function in cum); --show-allocator-frames brings operator new back. Template
instances are told apart by their demangled names; an always-inlined helper is its own node, with
its caller's cum; `list` shows the figures on the allocating lines.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def top(allocprof, trace, *opts):
    r = subprocess.run([allocprof, "top", "--json", *opts, trace], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["rows"]


def find(rows, pattern):
    hits = [r for r in rows if re.search(pattern, r["function"])]
    return hits[0] if len(hits) == 1 else None


def site_line(src, tag):
    for i, line in enumerate(open(src), 1):
        if tag in line:
            return i
    raise SystemExit(f"marker {tag} not in {src}")


def main():
    allocprof, prog, src = sys.argv[1], sys.argv[2], sys.argv[3]
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "cxx.trace")
        r = subprocess.run([allocprof, "record", "-q", "-o", trace, "--", prog], capture_output=True,
                           text=True, timeout=60)
        check(r.returncode == 0, f"record failed: {r.stderr}")
        rows = top(allocprof, trace)
        expect = {  # regex on the function name: flat alloc_objects, alloc_space, inuse_objects, inuse_space
            r"^build_list\b": (1000, 16000, 0, 0),
            r"make_array<int>": (1, 200, 1, 200),
            r"make_array<double>": (1, 400, 0, 0),
            r"vector<int, std::allocator<int> >::_M_realloc_insert": (8, 4 * 255, 0, 0),
            r"^long_string\b": (1, 32, 1, 32),
            r"basic_string<.*>::_M_construct": (1, 101, 1, 101),
            r"^grab\b": (300, 300 * 48, 0, 0),
        }
        for pat, (ao, asp, io, isp) in expect.items():
            row = find(rows, pat)
            if row is None:
                failures.append(f"no single function matching {pat}: "
                                f"{[x['function'] for x in rows if re.search(pat.strip('^'), x['function'])]}")
                continue
            got = tuple(row["flat"][k] for k in ("alloc_objects", "alloc_space", "inuse_objects", "inuse_space"))
            check(got == (ao, asp, io, isp), f"{row['function']}: flat {got}, want {(ao, asp, io, isp)}")
        fv = find(rows, r"^fill_vector\b")
        check(fv is not None and fv["cum"]["alloc_objects"] == 8 and fv["cum"]["alloc_space"] == 1020,
              f"fill_vector: cum should hold the vector's 8 allocations (1020 B): {fv}")
        ls = find(rows, r"^long_string\b")
        check(ls is not None and ls["cum"]["alloc_objects"] == 2 and ls["cum"]["inuse_space"] == 133,
              f"long_string: cum should hold both allocations (133 B): {ls}")
        use = find(rows, r"^use_inline\b")
        check(use is not None and use["cum"]["alloc_objects"] == 300 and use["flat"]["alloc_objects"] == 0,
              f"use_inline: the inlined grab's allocations belong to its cum, not its flat: {use}")
        for row in rows:
            check(not re.match(r"operator new|std::allocator|__gnu_cxx::new_allocator|std::__new_allocator",
                               row["function"]) or row["flat"]["alloc_objects"] == 0,
                  f"allocator frame {row['function']} is flat by default")

        # --show-allocator-frames: operator new is the innermost frame again.
        raw = top(allocprof, trace, "--show-allocator-frames")
        new = [x for x in raw if x["function"].startswith("operator new")]
        check(sum(x["flat"]["alloc_objects"] for x in new) >= 1000 + 2 + 8 + 2 - 1,
              f"--show-allocator-frames: operator new flat {[(x['function'], x['flat']) for x in new]}")
        bl = find(raw, r"^build_list\b")
        check(bl is not None and bl["flat"]["alloc_objects"] == 0 and bl["cum"]["alloc_objects"] == 1000,
              f"--show-allocator-frames: build_list should be cum only: {bl}")

        # list: the figures sit on the allocating lines.
        for fn, tag, n in (("build_list", "SITE-node", 1000), ("^grab", "SITE-inline", 300),
                           ("use_inline", "CALL-inline", 300)):
            r = subprocess.run([allocprof, "list", "--sample-index=alloc_objects", fn, trace],
                               capture_output=True, text=True, timeout=60)
            line = site_line(src, tag)
            hit = [ln for ln in r.stdout.splitlines() if re.match(rf"\s*\S+\s+\S+\s+{line}:", ln)]
            check(hit and re.match(rf"\s*(\d+|\.)\s+{n}\s+{line}:", hit[0]) is not None,
                  f"list {fn}: line {line} should show cum {n}: {hit or r.stdout[:400]}")
    for f in failures:
        print("FAIL:", f)
    print(f"cxx: {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
