#!/usr/bin/env python3
"""Microbenchmarks of the hot paths, so a regression shows up where it happens:
ns per malloc+free pair untraced, traced with the stack cache hitting, missing (1024 distinct
chains), and disabled (unwinding every time), sampled at 512 KiB; the analyzer's ns per event; and
the trace codec alone (bench/codec.c), per event mix: CHUNK bytes per event before zstd, ns per
event encoded by the shim's chunk encoder and ns per event decoded by the analyzer's reader.
Each figure is the median of --runs runs. Usage: python3 bench/micro.py [--build-dir build] [--runs 5]

--instructions counts instructions per pair instead (untraced, and sampled at 512 KiB, whose
fast path is what it is meant for), with valgrind's callgrind: perf's hardware counters are
often missing in a VM, and an instruction count does not depend on what else the machine runs.
It runs micro at two pair counts and divides the difference, which cancels start and exit.
--shim PATH measures another build's liballocprof.so (e.g. a copy of the previous one).
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time


def pair_ns(cmd, env):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300).stdout
    return float(re.search(r"ns_per_pair: ([0-9.]+)", out).group(1))


def instructions(cmd, env, tmp):
    """Instructions run by the main thread (not the shim's writer thread, whose work depends on
    how long the run takes, which under valgrind is long)."""
    out = os.path.join(tmp, "cg.out")
    r = subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                        "--callgrind-out-file=" + out] + cmd, env=env, capture_output=True, text=True,
                       timeout=600)
    n = None
    for f in os.listdir(tmp):
        if f.startswith("cg.out"):
            if f == "cg.out-01":
                with open(os.path.join(tmp, f)) as fh:
                    m = re.search(r"^summary: ([0-9]+)", fh.read(), re.M)
                    n = int(m.group(1)) if m else None
            os.unlink(os.path.join(tmp, f))
    if n is None:
        raise SystemExit(f"callgrind failed: {r.stderr[-2000:]}")
    return n


def instructions_per_pair(micro, a, cases, tmp):
    """Instructions per pair, from runs at pairs/10 and pairs/5 (callgrind is ~50x slower)."""
    lo, hi = max(a.pairs // 10, 1000), max(a.pairs // 5, 2000)
    print(f"instructions per malloc+free pair at depth {a.depth} (callgrind, {hi} - {lo} pairs):")
    base = None
    for name, mode, e in cases:
        n = [instructions([micro, mode, str(a.depth), str(p)], e, tmp) for p in (lo, hi)]
        per = (n[1] - n[0]) / (hi - lo)
        if base is None:
            base = per
        print(f"  {name:42s} {per:8.1f} instr/pair   (+{per - base:.1f})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=2000000)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--shim", help="the liballocprof.so to measure (default: the build dir's)")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions per pair with valgrind's callgrind instead of timing")
    a = ap.parse_args()
    micro = os.path.join(a.build_dir, "bench", "micro")
    shim = os.path.abspath(a.shim or os.path.join(a.build_dir, "preload", "liballocprof.so"))
    allocprof = os.path.join(a.build_dir, "analyzer", "allocprof")
    with tempfile.TemporaryDirectory() as tmp:
        def env(**kw):
            e = dict(os.environ, ALLOCPROF_OUTPUT=os.path.join(tmp, "m.%p.trace"), ALLOCPROF_QUIET="1")
            e.update(kw)
            return e
        base = dict(os.environ)
        traced = env(LD_PRELOAD=shim)
        if a.instructions:
            if not shutil.which("valgrind"):
                raise SystemExit("--instructions needs valgrind")
            instructions_per_pair(micro, a, [
                ("untraced", "same", base),
                ("sampled 512 KiB", "same", env(LD_PRELOAD=shim, ALLOCPROF_SAMPLE_BYTES="524288")),
            ], tmp)
            return
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
    # The trace codec alone, each side on its own (bench/codec.c, which prints its own table and
    # fails if decoding does not give back the events encoded).
    codec = os.path.join(a.build_dir, "bench", "codec")
    r = subprocess.run([codec, "--runs", str(a.runs)], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"{codec} failed (exit {r.returncode}): {r.stderr.strip()}")
    print(r.stdout, end="")


if __name__ == "__main__":
    main()
