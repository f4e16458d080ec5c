#!/usr/bin/env python3
"""The analyzer's memory follows the live heap and the stack table, not the trace's length
(suite fuzz).

Records memprog (tests/fuzz/memprog.c) and measures the peak RSS of `allocprof top` on the traces
(os.wait4's rusage of that one child):
  - churn: 5 and 20 million malloc/free pairs (10 and 40 million events) with 1000 blocks live: the peak must stay far below
    the decompressed stream's size and grow by less than GROWTH_MB from the short trace to the
    4x longer one;
  - live N: N blocks live at the end, for several N: the slope is the cost of one live block;
  - stacks 2^L: as many distinct stacks: the slope is the cost of one stack (replay and the
    symbolization `top` does).
The figures are printed (the README quotes them). Pass --quick for smaller sizes.
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'lib'))
sys.path.insert(0, HERE)
import aptest  # noqa: E402
from aptest import clip, describe_status  # noqa: E402

# Allowed growth of the peak from the 10M- to the 40M-event trace, after taking out the one part
# that legitimately varies: the events held between two SYNC records (a round of the shim, 100 ms
# of the program, longer on a loaded machine; at most 2^20 events, decode.c's cap). The analyzer
# reports the most it held (max_pending in top --json); each costs PENDING_BYTES, counted with the
# transient copy while its array grows. Memory that grew with the trace would add 30 MB per byte
# kept per event: 8 MB still catches it.
GROWTH_MB = 8
PENDING_BYTES = 40 * 2.5
CHURN_BOUND_MB = 32   # bound on the peak above the baseline for the churn traces, held events aside


def stream_size(path):
    """Decompressed size of a trace, streaming (never held in memory)."""
    p = subprocess.Popen(['zstd', '-q', '-dc', path], stdout=subprocess.PIPE)
    n = 0
    while True:
        b = p.stdout.read(1 << 20)
        if not b:
            break
        n += len(b)
    p.wait()
    return n


def run_measured(t, trace, label):
    """Peak RSS (KiB) and seconds of `allocprof top` on trace, from this child's own rusage."""
    kib, secs, _ = run_measured_json(t, trace, label)
    return kib, secs


def run_measured_json(t, trace, label):
    """Like run_measured, with `top --json -n 1`'s output parsed."""
    argv = [t.allocprof, 'top', '--json', '-n', '1', trace]
    t0 = time.monotonic()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(devnull, 2)
            os.chdir(t.tmp)
            os.execve(argv[0], argv, t.env())
        finally:
            os._exit(127)
    os.close(out_w)
    with os.fdopen(out_r, 'rb') as f:
        out = f.read()
    _, status, ru = os.wait4(pid, 0)
    secs = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        t.abort('%s: %s: %s' % (label, ' '.join(argv), describe_status(rc)))
    import json
    return ru.ru_maxrss, secs, json.loads(out)


def slope(points):
    """Least-squares slope of [(x, y)]."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def main():
    t = aptest.Test('memory', extra_args=[(('--quick',), {'action': 'store_true'})])
    prog = t.prog('memprog')
    quick = t.args.quick
    rec = lambda args, label: t.record([prog] + args, out=os.path.join(t.tmp, label + '.trace'), timeout=240)[0]

    # ---- what the analyzer needs for next to nothing (its libraries, buffers) ----
    trace = rec(['live', '1'], 'tiny')
    base, _ = run_measured(t, trace, 'tiny')
    t.log('baseline: peak RSS %.1f MB on a trace of one allocation' % (base / 1024))

    # ---- long traces, small live heap ----
    peaks = {}
    sizes = (1, 4) if quick else (5, 20)  # million pairs: 10 and 40 million events
    for pairs in sizes:
        n = pairs * 1000000
        t0 = time.monotonic()
        trace = rec(['churn', str(n), '1000'], 'churn%d' % pairs)
        rec_s = time.monotonic() - t0
        size = stream_size(trace)
        raw, secs, top = run_measured_json(t, trace, 'churn %dM' % pairs)
        held = top['trace']['max_pending']
        kib = raw - held * PENDING_BYTES / 1024
        peaks[pairs] = kib
        t.log('churn %dM pairs (%dM events): file %.1f MB, stream %.0f MB, recorded in %.1f s; '
              'analyzer peak RSS %.1f MB in %.1f s, of which up to %.1f MB for the %d events held '
              'between two SYNC records'
              % (pairs, 2 * pairs, os.path.getsize(trace) / 1e6, size / 1e6, rec_s, raw / 1024, secs,
                 held * PENDING_BYTES / 2**20, held))
        t.check(held <= 1 << 20, 'churn %dM: %d events held, more than the reader\'s cap of 2^20'
                % (pairs, held))
        if pairs == max(sizes):
            t.check(raw * 1024 * 2 < size, 'churn %dM: peak RSS %.1f MB is not far below the stream (%.0f MB)'
                    % (pairs, raw / 1024, size / 1e6))
        t.check(kib - base < CHURN_BOUND_MB * 1024, 'churn %dM: peak RSS %.1f MB, held events aside, '
                'is more than %d MB above the baseline' % (pairs, kib / 1024, CHURN_BOUND_MB))
        os.unlink(trace)
    a, b = sorted(peaks)
    growth = (peaks[b] - peaks[a]) / 1024
    t.log('peak RSS growth from %dM to %dM pairs: %+.1f MB' % (a, b, growth))
    t.check(growth < GROWTH_MB, 'peak RSS grew by %.1f MB from the %dM- to the %dM-pair trace (bound %d MB; the events held between two SYNC records, one round of the shim, depend on the machine\'s load)'
            % (growth, a, b, GROWTH_MB))

    # ---- cost of a live block ----
    pts = []
    for n in ((100000, 200000, 400000) if quick else (250000, 500000, 1000000)):
        trace = rec(['live', str(n)], 'live%d' % n)
        kib, _ = run_measured(t, trace, 'live %d' % n)
        pts.append((n, kib * 1024))
        t.log('live %7d blocks: peak RSS %.1f MB' % (n, kib / 1024))
        os.unlink(trace)
    per_block = slope(pts)
    t.log('analyzer memory per live block: %.0f bytes' % per_block)
    t.check(per_block < 200, 'a live block costs %.0f bytes (bound 200)' % per_block)

    # ---- cost of a distinct stack ----
    pts = []
    for lv in ((10, 12, 13) if quick else (12, 14, 16)):
        trace = rec(['stacks', str(lv)], 'stacks%d' % lv)
        kib, _ = run_measured(t, trace, 'stacks 2^%d' % lv)
        pts.append((1 << lv, kib * 1024))
        t.log('%6d distinct stacks (%d frames each): peak RSS %.1f MB' % (1 << lv, lv + 4, kib / 1024))
        os.unlink(trace)
    per_stack = slope(pts)
    t.log('analyzer memory per distinct stack (about %d frames, with `top`): %.0f bytes' % (16 if not quick else 14, per_stack))
    t.check(per_stack < 8192, 'a stack costs %.0f bytes (bound 8192)' % per_stack)
    t.finish()


if __name__ == '__main__':
    main()
