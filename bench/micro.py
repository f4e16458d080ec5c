#!/usr/bin/env python3
"""Microbenchmarks of the hot paths, so a regression shows up where it happens:
ns per malloc+free pair untraced, traced with the stack cache hitting, missing (1024 distinct
chains), and disabled (unwinding every time), sampled at 512 KiB; and the analyzer's ns per event.
Each figure is the median of --runs runs. Usage: python3 bench/micro.py [--build-dir build] [--runs 5]
"""
import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time


def pair_ns(cmd, env):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300).stdout
    return float(re.search(r"ns_per_pair: ([0-9.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=2000000)
    ap.add_argument("--depth", type=int, default=12)
    a = ap.parse_args()
    micro = os.path.join(a.build_dir, "bench", "micro")
    shim = os.path.abspath(os.path.join(a.build_dir, "preload", "liballocprof.so"))
    allocprof = os.path.join(a.build_dir, "analyzer", "allocprof")
    with tempfile.TemporaryDirectory() as tmp:
        def env(**kw):
            e = dict(os.environ, ALLOCPROF_OUTPUT=os.path.join(tmp, "m.%p.trace"), ALLOCPROF_QUIET="1")
            e.update(kw)
            return e
        base = dict(os.environ)
        traced = env(LD_PRELOAD=shim)
        cases = [
            ("untraced", "same", base),
            ("traced, stack cache hit", "same", traced),
            ("traced, stack cache miss (1024 chains)", "varied", traced),
            ("traced, cache off (unw_backtrace)", "same", env(LD_PRELOAD=shim, ALLOCPROF_STACK_CACHE="0")),
            ("sampled 512 KiB", "same", env(LD_PRELOAD=shim, ALLOCPROF_SAMPLE_BYTES="524288")),
            ("untraced, 1024 chains", "varied", base),
        ]
        results = {name: [] for name, _, _ in cases}
        for _ in range(a.runs):  # interleaved, so noise hits every case alike
            for name, mode, e in cases:
                results[name].append(pair_ns([micro, mode, str(a.depth), str(a.pairs)], e))
                for f in os.listdir(tmp):
                    os.unlink(os.path.join(tmp, f))
        print(f"malloc+free pairs at depth {a.depth} (+ main and libc frames), {a.pairs} pairs, median of {a.runs}:")
        for name, _, _ in cases:
            v = results[name]
            print(f"  {name:42s} {statistics.median(v):8.1f} ns/pair   (min {min(v):.1f}, max {max(v):.1f})")
        # The analyzer: ns per event decoded and replayed by `top`.
        trace = os.path.join(tmp, "decode.trace")
        subprocess.run([allocprof, "record", "-q", "-o", trace, "--", micro, "same", str(a.depth),
                        str(a.pairs)], env=dict(os.environ), capture_output=True, timeout=300)
        times = []
        for _ in range(a.runs):
            t0 = time.monotonic()
            subprocess.run([allocprof, "top", "-n", "1", trace], capture_output=True, timeout=300)
            times.append(time.monotonic() - t0)
        events = 2 * (a.pairs + 1000)
        print(f"  {'analyzer top, per event':42s} {statistics.median(times) / events * 1e9:8.1f} ns/event  "
              f"({events} events, {os.path.getsize(trace) / events:.2f} bytes/event on disk)")


if __name__ == "__main__":
    main()
