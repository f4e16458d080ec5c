#!/usr/bin/env python3
"""Sampled mode gives unbiased estimates whose error stays within a bound derived from the
estimator's variance.

The program (sampled.c) is deterministic, and this script knows every one of its allocations
(SITES below). It is recorded once in full mode, where figures must equal the known truth, and
several times in sampled mode (mean interval R = 4096 bytes, fixed seeds so runs are reproducible).

The bound. Each allocation i of size s_i is sampled independently with probability
p_i = 1 - exp(-s_i/R) and, when sampled, counts w_i = 1/p_i objects and s_i*w_i bytes
(Horvitz-Thompson). So E[estimate] = truth, and with I_i the sampling indicator,

    Var(objects) = sum_i Var(I_i) w_i^2 = sum_i (1 - p_i)/p_i = sum_i 1/(exp(s_i/R) - 1)
    Var(bytes)   = sum_i s_i^2 (1 - p_i)/p_i = sum_i s_i^2/(exp(s_i/R) - 1)

The estimate is a sum of many independent small terms, so |estimate - truth| <= 5 sigma fails
with probability about 6e-7 per comparison (Gaussian tail; the exact Poisson tail is below 1.3e-6
once a site has lambda = sum p_i >= 100 expected samples, which we require before asserting).
We add 1 for the final rounding to integers. With ~40 comparisons per run the chance of a false
failure is below 1e-4; with fixed seeds the runs are deterministic anyway.

Power: the bound must be tight enough to catch a wrong weight. For page_objects (s = R) the
unweighted count and the "R/s" scaling both expect lambda = 12642 objects instead of 20000, far
outside 5 sigma (sigma = 0.54% of the truth); the script asserts this, so widening the bound
would fail the test.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

R = 4096
SEEDS = [1, 2, 3]


def sites():
    """function -> (list of allocation sizes, list of sizes still live at exit)."""
    return {
        "small_objects": ([64] * 400000, []),
        "page_objects": ([4096] * 20000, []),
        "big_objects": ([1 << 20] * 300, []),
        "calloc_mixed": ([24 * (1 + i % 16) for i in range(100000)], []),
        "realloc_growth": ([32, 256, 2048] * 50000, []),
        "aligned_kept": ([512] * 60000, [512] * 6000),
    }


def moments(sizes):
    """(objects, bytes, sigma_objects, sigma_bytes, lambda) for sampling at interval R."""
    var_o = var_b = lam = 0.0
    for s in sizes:
        se = max(s, 1)
        q = math.expm1(se / R)  # exp(s/R) - 1
        var_o += 1 / q
        var_b += s * s / q
        lam += -math.expm1(-se / R)
    return len(sizes), sum(sizes), math.sqrt(var_o), math.sqrt(var_b), lam


def run(allocprof, prog, tmp, name, env_extra):
    trace = os.path.join(tmp, name + ".trace")
    env = dict(os.environ, **env_extra)
    r = subprocess.run([allocprof, "record", "-q", "-o", trace, "--", prog], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"record failed: {r.stderr}"
    top = subprocess.run([allocprof, "top", "--json", trace], capture_output=True, text=True,
                         timeout=60)
    assert top.returncode == 0, f"top failed: {top.stderr}"
    rows = {row["function"]: row for row in json.loads(top.stdout)["rows"]}
    info = subprocess.run([allocprof, "info", "--json", trace], capture_output=True, text=True,
                          timeout=60)
    assert info.returncode == 0, f"info failed: {info.stderr}"
    return rows, json.loads(info.stdout)


def main():
    allocprof, prog = sys.argv[1], sys.argv[2]
    failures = []
    known = sites()
    with tempfile.TemporaryDirectory() as tmp:
        full, full_info = run(allocprof, prog, tmp, "full", {})
        # Full mode: every figure is the truth.
        for fn, (sizes, live) in known.items():
            want = {"alloc_objects": len(sizes), "alloc_space": sum(sizes),
                    "inuse_objects": len(live), "inuse_space": sum(live)}
            got = full.get(fn, {}).get("flat")
            if got != want:
                failures.append(f"full mode {fn}: got {got}, want {want}")
        exact_allocs = full_info["totals"]["alloc_calls"]
        exact_bytes = full_info["totals"]["alloc_bytes"]

        # The test's power: wrong weights land outside the bound (see the module docstring).
        n, b, so, sb, lam = moments(known["page_objects"][0])
        assert abs(lam - n) > 5 * so + 1, "bound too loose to catch an unweighted estimator"
        assert abs(lam * R / 4096 - n) > 5 * so + 1, "bound too loose to catch R/s scaling"

        means = {}
        for seed in SEEDS:
            est, info = run(allocprof, prog, tmp, f"seed{seed}",
                            {"ALLOCPROF_SAMPLE_BYTES": str(R), "ALLOCPROF_SEED": str(seed)})
            if info["sample_bytes"] != R:
                failures.append(f"seed {seed}: trace says sample_bytes {info['sample_bytes']}, want {R}")
            # The views say that figures are estimates, and at which rate.
            text = subprocess.run([allocprof, "top", os.path.join(tmp, f"seed{seed}.trace")],
                                  capture_output=True, text=True, timeout=60).stdout
            if "Sampled: one allocation per 4kB on average; figures are unbiased estimates" not in text:
                failures.append(f"seed {seed}: top does not say its figures are estimates: {text[:300]!r}")
            # The exact totals travel in the sampled trace too, equal to the full run's.
            if (info["totals"]["alloc_calls"], info["totals"]["alloc_bytes"]) != (exact_allocs, exact_bytes):
                failures.append(f"seed {seed}: exact totals {info['totals']} differ from the full run's "
                                f"({exact_allocs} calls, {exact_bytes} bytes)")
            for fn, (sizes, live) in known.items():
                for metric, population in (("alloc", sizes), ("inuse", live)):
                    if not population:
                        continue
                    n, b, so, sb, lam = moments(population)
                    if lam < 100:
                        continue
                    row = est.get(fn, {}).get("flat", {})
                    for kind, truth, sigma in (("objects", n, so), ("space", b, sb)):
                        key = f"{metric}_{kind}"
                        got = row.get(key, 0)
                        means.setdefault((fn, key), []).append((got, truth, sigma))
                        if abs(got - truth) > 5 * sigma + 1:
                            failures.append(f"seed {seed} {fn} {key}: estimate {got}, truth {truth}, "
                                            f"off by {abs(got - truth) / max(sigma, 1e-9):.1f} sigma")
            # Totals: the estimate over the whole program against the exact totals. Allocations
            # the test does not know (libc's own, a few dozen) are added to the bound.
            all_sizes = [s for sizes, _ in known.values() for s in sizes]
            n, b, so, sb, lam = moments(all_sizes)
            unknown = exact_allocs - n
            total = est_total(allocprof, tmp, f"seed{seed}")
            if abs(total["alloc_objects"] - exact_allocs) > 5 * so + 1 + unknown * 10:
                failures.append(f"seed {seed}: estimated total objects {total['alloc_objects']} vs exact {exact_allocs}")
            if abs(total["alloc_space"] - exact_bytes) > 5 * sb + 1 + (exact_bytes - b) * 10:
                failures.append(f"seed {seed}: estimated total bytes {total['alloc_space']} vs exact {exact_bytes}")
        # Bias check: the mean of the runs is within 5 sigma / sqrt(runs) of the truth.
        for (fn, key), runs in means.items():
            mean = sum(g for g, _, _ in runs) / len(runs)
            truth, sigma = runs[0][1], runs[0][2]
            if abs(mean - truth) > 5 * sigma / math.sqrt(len(runs)) + 1:
                failures.append(f"{fn} {key}: mean of {len(runs)} seeds {mean:.0f} vs truth {truth}")

    for f in failures:
        print("FAIL:", f)
    print(f"sampling: {len(failures)} failures")
    return 1 if failures else 0


def est_total(allocprof, tmp, name):
    trace = os.path.join(tmp, name + ".trace")
    top = subprocess.run([allocprof, "top", "--json", trace], capture_output=True, text=True,
                         timeout=60)
    return json.loads(top.stdout)["total"]


if __name__ == "__main__":
    sys.exit(main())
