#!/usr/bin/env python3
"""Every call chain in stackcache.c gets exactly its own allocations, whether the shim's stack
cache recognises it or unwinds it (ALLOCPROF_STACK_CACHE=0 turns the cache off: same figures).

Stacks cut at the depth kept (ALLOCPROF_DEPTH) are cached too: at depths that cut the chains
above, below and at the frames that tell them apart, every figure with the cache equals every
figure without it, and the cut shows as [truncated]."""
import json
import os
import subprocess
import sys
import tempfile

N = 20000
WANT = {  # function: alloc_objects, cum
    "alloc_here": 7 * N,
    "in_coroutine": N,
    "twin_a": N, "twin_b": N,
    "outer_x": N, "outer_y": N, "recurse": 2 * N,
    "vla_x": N, "vla_y": N, "vla_caller": 2 * N,
    "main": 6 * N,
}


def main():
    allocprof, prog = sys.argv[1], sys.argv[2]
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        def rows_of(cache, depth=None):
            trace = os.path.join(tmp, f"sc{cache}-{depth}.trace")
            env = dict(os.environ, ALLOCPROF_STACK_CACHE=cache)
            if depth:
                env["ALLOCPROF_DEPTH"] = str(depth)
            r = subprocess.run([allocprof, "record", "-q", "-o", trace, "--", prog], env=env,
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                failures.append(f"cache={cache} depth={depth}: record failed: {r.stderr}")
                return {}
            top = subprocess.run([allocprof, "top", "--json", trace], capture_output=True,
                                 text=True, timeout=60)
            return {row["function"]: row for row in json.loads(top.stdout)["rows"]}

        for cache in ("1", "0"):
            rows = rows_of(cache)
            for fn, want in WANT.items():
                got = rows.get(fn, {}).get("cum", {}).get("alloc_objects")
                if got != want:
                    failures.append(f"cache={cache}: {fn}: cum alloc_objects {got}, want {want}")
            flat = rows.get("alloc_here", {}).get("flat", {}).get("alloc_objects")
            if flat != 7 * N:
                failures.append(f"cache={cache}: alloc_here flat {flat}, want {7 * N}")
        for depth in (2, 3, 5):
            on, off = rows_of("1", depth), rows_of("0", depth)
            if "[truncated]" not in off:
                failures.append(f"depth={depth}: no [truncated] row without the cache: {sorted(off)}")
            for fn in sorted(set(on) | set(off)):
                if on.get(fn) != off.get(fn):
                    failures.append(f"depth={depth}: {fn}: with the cache {on.get(fn)}, without {off.get(fn)}")
    for f in failures:
        print("FAIL:", f)
    print(f"stackcache: {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
