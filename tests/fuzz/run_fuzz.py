"""Runs one libFuzzer target of the analyzer's reader for a bounded time (meson suite 'fuzz').

The seed corpus (corpus/) is copied to a scratch directory first: what the fuzzer adds stays out
of the source tree. A crash, a sanitizer report, a leak, a timeout (-timeout) or an out-of-memory
(-rss_limit_mb) fails the test; the input is kept in BUILD/tests/fuzz/artifacts/ and the message
says how to make it a regression input (tests/fuzz/regress/, replayed by the fuzz-regress suite).

Exit 0: no problem found; 1: a problem, or the fuzzer misbehaved; 77: skipped (no libFuzzer).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--name', required=True)
    ap.add_argument('--fuzzer', help='the libFuzzer binary; absent with --skip')
    ap.add_argument('--skip', help='why there is no fuzzer (the test then exits 77)')
    ap.add_argument('--corpus', required=True)
    ap.add_argument('--seconds', type=int, default=40)
    ap.add_argument('--workdir', required=True)
    a = ap.parse_args()
    tag = '[fuzz-%s]' % a.name
    if not a.fuzzer:
        print('%s SKIP: libFuzzer is not available: %s' % (tag, a.skip or 'no fuzzer built'))
        return 77

    artifacts = os.path.join(a.workdir, 'artifacts', a.name)
    os.makedirs(artifacts, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix='fuzz-%s-' % a.name)
    try:
        corpus = os.path.join(scratch, 'corpus')
        shutil.copytree(a.corpus, corpus)
        log_path = os.path.join(a.workdir, 'fuzz-%s.log' % a.name)
        cmd = [a.fuzzer, '-max_total_time=%d' % a.seconds, '-timeout=10', '-rss_limit_mb=1024',
               '-print_final_stats=1', '-artifact_prefix=' + artifacts + '/', corpus]
        print('%s %s' % (tag, ' '.join(cmd)), flush=True)
        with open(log_path, 'wb') as log:
            try:
                p = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=scratch,
                                   timeout=a.seconds + 60)
                rc = p.returncode
            except subprocess.TimeoutExpired:
                rc = None
        with open(log_path, 'rb') as f:
            text = f.read().decode('utf-8', 'replace')
        # The analyzer's own messages (warnings about the mutated traces) are expected noise.
        lines = [l for l in text.splitlines() if not l.startswith('allocprof:')]
        stats = dict(re.findall(r'^stat::(\w+):\s+(\d+)', text, re.M))
        cov = re.findall(r'cov: (\d+) ft: (\d+) corp: (\d+)/', text)
        print('%s executions: %s, exec/s: %s, peak RSS: %s MB, coverage: %s edges, %s features, '
              'corpus %s inputs (log: %s)'
              % (tag, stats.get('number_of_executed_units', '?'), stats.get('average_exec_per_sec', '?'),
                 stats.get('peak_rss_mb', '?'), cov[-1][0] if cov else '?', cov[-1][1] if cov else '?',
                 cov[-1][2] if cov else '?', log_path))
        if rc == 0 and 'number_of_executed_units' in stats:
            print('%s no crash, leak, hang or out-of-memory found' % tag)
            return 0
        print('\n'.join(lines[-60:]))
        found = sorted(os.listdir(artifacts))
        print('%s FAIL: the fuzzer %s' % (tag, 'did not finish' if rc is None else 'exited with %d' % rc))
        for f in found:
            print('%s input: %s\n    to keep it as a regression input: cp %s %s/' % (
                tag, os.path.join(artifacts, f), os.path.join(artifacts, f),
                os.path.join(os.path.dirname(os.path.abspath(__file__)), 'regress')))
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
