"""Helpers shared by the lifecycle tests (python3, stdlib only)."""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import aptest  # noqa: E402,F401
from aptest import clip, describe_status  # noqa: E402,F401


def kv(out):
    """'key=value' lines of a program's stdout -> {key: int}."""
    d = {}
    for line in out.decode('utf-8', 'replace').split():
        k, sep, v = line.partition('=')
        if sep and v.lstrip('-').isdigit():
            d[k] = int(v)
    return d


def record(t, name, cmd, env_extra=None, record_args=(), expect_rc=0, timeout=60):
    """allocprof record -o DIR/t.%p -- CMD; returns (sorted trace paths, CompletedProcess)."""
    d = os.path.join(t.tmp, name)
    os.makedirs(d, exist_ok=True)
    full = [t.allocprof, 'record', *record_args, '-o', os.path.join(d, 't.%p'), '--', *cmd]
    p = t.run(full, env=t.env(env_extra), timeout=timeout)
    if expect_rc is not None:
        t.check_eq('%s: exit status of %s' % (name, ' '.join(cmd)), p.returncode, expect_rc)
    return sorted(glob.glob(os.path.join(d, 't.*'))), p


def info(t, trace):
    p = t.run([t.allocprof, 'info', '--json', trace])
    if p.returncode != 0:
        t.fail('allocprof info --json %s: %s\n%s' % (trace, describe_status(p.returncode), clip(p.stderr)))
        return {}
    return json.loads(p.stdout.decode())


def flat(t, trace, suffixes=('_work',), metric='alloc_objects', extra=()):
    """{function: flat metric} for the functions whose names end with one of suffixes."""
    data = t.top_json(trace, *extra)
    return {r['function']: r['flat'][metric] for r in data['rows']
            if any(r['function'].endswith(s) for s in suffixes)}
