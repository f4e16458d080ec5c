#!/usr/bin/env python3
"""alloc_heavy: a CPython workload with heavy dict/list/str churn.

Models an interpreter-hosted application: lots of small objects handled by
CPython's own pymalloc arenas (invisible to a malloc profiler except when
arenas are created/freed) mixed with larger strings, lists and dicts that
go to the system malloc (> 512 bytes), plus list/dict resizes (realloc).
It exercises a profiler on a real, large binary with deep interpreter
stacks rather than a synthetic C loop.

Usage: python3 bench/alloc_heavy.py [SCALE]   (prints nothing on stdout)

Unlike the C workloads it cannot count its own malloc calls, so it prints
no "events:" line; bench/run.py counts them with a tiny LD_PRELOAD counter
(bench/alloc_count.c) in a separate, untimed run.
"""
import sys


def make_record(i):
    # small dict + small strings: mostly pymalloc
    return {"id": i, "name": "user%d" % i, "tags": ["t%d" % (i % 7), "x" * (i % 13)],
            "score": i * 0.5}


def build_index(records):
    # larger dicts/lists: resized as they grow -> malloc/realloc/free
    index = {}
    for r in records:
        index.setdefault(r["tags"][0], []).append(r)
    return index


def render(records):
    # big strings (> 512 bytes) go to the system malloc
    parts = []
    for r in records:
        parts.append("%(id)d:%(name)s:%(score).1f;" % r)
    blob = "".join(parts)
    return blob.upper().split(";")


def churn_round(n, seed):
    records = [make_record(seed + i) for i in range(n)]
    index = build_index(records)
    lines = render(records)
    # sets and sorted copies: more large temporary allocations
    uniq = set(line[:6] for line in lines)
    ordered = sorted(records, key=lambda r: (r["score"] % 17, r["id"]))
    total = len(index) + len(lines) + len(uniq) + len(ordered)
    # bytearray growth: realloc-like pattern on a raw buffer
    buf = bytearray()
    for r in records[: n // 4]:
        buf += r["name"].encode()
    return total + len(buf)


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    if not scale > 0:
        sys.exit("invalid scale")
    rounds = max(1, int(100 * scale))
    acc = 0
    for k in range(rounds):
        # vary the working-set size so large allocations vary in size
        acc += churn_round(2000 + (k * 3571) % 6000, k * 10000)
    if acc < 0:  # never true; keeps the work observable
        print(acc)


if __name__ == "__main__":
    main()
