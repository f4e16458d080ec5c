#!/usr/bin/env python3
"""Every call chain in stackcache.c gets exactly its own allocations, whether the shim's stack
cache recognises it or unwinds it (ALLOCPROF_STACK_CACHE=0 turns the cache off: same figures)."""
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
        for cache in ("1", "0"):
            trace = os.path.join(tmp, f"sc{cache}.trace")
            env = dict(os.environ, ALLOCPROF_STACK_CACHE=cache)
            r = subprocess.run([allocprof, "record", "-q", "-o", trace, "--", prog], env=env,
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                failures.append(f"cache={cache}: record failed: {r.stderr}")
                continue
            top = subprocess.run([allocprof, "top", "--json", trace], capture_output=True,
                                 text=True, timeout=60)
            rows = {row["function"]: row for row in json.loads(top.stdout)["rows"]}
            for fn, want in WANT.items():
                got = rows.get(fn, {}).get("cum", {}).get("alloc_objects")
                if got != want:
                    failures.append(f"cache={cache}: {fn}: cum alloc_objects {got}, want {want}")
            flat = rows.get("alloc_here", {}).get("flat", {}).get("alloc_objects")
            if flat != 7 * N:
                failures.append(f"cache={cache}: alloc_here flat {flat}, want {7 * N}")
    for f in failures:
        print("FAIL:", f)
    print(f"stackcache: {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
