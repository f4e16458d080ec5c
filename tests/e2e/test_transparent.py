#!/usr/bin/env python3
"""End to end: a traced program behaves exactly as untraced.

  * io (tests/progs/io.c): arguments, stdin (1 MiB of it), stdout, stderr and exit status 3 are
    the same with and without `allocprof record`; stdin/stdout/stderr are the caller's own pipes
    (not copies through a relay), so the program sees the same inodes;
  * sig (tests/progs/sig.c): a program that dies of a signal (SIGTERM, SIGINT, SIGKILL, SIGSEGV,
    SIGABRT, SIGTERM from another thread) or _exit()s from a thread: `allocprof record` ends the
    same way, so a Python caller sees the same negative returncode and a shell sees 128+N;
  * fds (tests/progs/fds.c): the descriptors the program has open are the untraced run's (an
    inherited extra descriptor included), plus at most descriptors that are close-on-exec (the
    shim's trace file); and open()/pipe() in the program return the same numbers as untraced.

allocprof's own messages on stderr are the lines that start with "allocprof"; they are removed
before comparing stderr.
"""
import os
import re
import resource
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import aptest  # noqa: E402
from aptest import clip, describe_status  # noqa: E402

TIMEOUT = 60


def no_core():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def own_lines(stderr):
    """stderr without allocprof's own lines."""
    lines = stderr.decode('utf-8', 'replace').splitlines(keepends=True)
    return ''.join(l for l in lines if not l.startswith('allocprof'))


def popen(t, cmd, env, input=None, pass_fds=()):
    """Runs cmd with pipes on 0/1/2; returns (returncode, stdout, stderr, {0: ino, 1: ino, 2: ino})
    where the inodes are those of the pipes this side created."""
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=t.tmp, pass_fds=pass_fds, preexec_fn=no_core)
    inos = {0: os.fstat(p.stdin.fileno()).st_ino, 1: os.fstat(p.stdout.fileno()).st_ino,
            2: os.fstat(p.stderr.fileno()).st_ino}
    try:
        out, err = p.communicate(input=input or b'', timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        t.abort('%s: no result after %d s (hang?)\nstdout:\n%s\nstderr:\n%s'
                % (' '.join(cmd), TIMEOUT, clip(out), clip(err)))
    return p.returncode, out, err, inos


def traced(t, cmd, name):
    out = os.path.join(t.tmp, name + '.%p.trace')
    return [t.allocprof, 'record', '-o', out, '--'] + cmd


def check_trace_readable(t, name, label):
    """After a violent end: whatever trace exists must not crash or hang the analyzer."""
    traces = [f for f in os.listdir(t.tmp) if f.startswith(name + '.') and '.trace' in f]
    for f in traces:
        cmd = [t.allocprof, 'top', '--json', os.path.join(t.tmp, f)]
        p = t.run(cmd, timeout=TIMEOUT)
        t.check(p.returncode in (0, 2) and b'Traceback' not in p.stderr,
                '%s: %s: %s\nstderr:\n%s' % (label, ' '.join(cmd), describe_status(p.returncode), clip(p.stderr)))


def test_io(t):
    prog = t.prog('io')
    args = ['plain', 'with space', '', 'ünïcödé', '--', '-o', '%p', 'a\nnewline', '*']
    data = bytes((i * 7 + i // 251) % 256 for i in range(1 << 20)) + b'\nlast line without newline'
    env = t.env()
    rc0, out0, err0, _ = popen(t, [prog] + args, env, input=data)
    t.check_eq('io untraced: exit status (the test program itself)', rc0, 3)
    rc1, out1, err1, _ = popen(t, traced(t, [prog] + args, 'io'), env, input=data)
    t.check_eq('io traced: exit status', rc1, rc0)
    if out1 != out0:
        t.fail('io traced: stdout differs (%d bytes vs %d untraced); first difference at byte %d:\n'
               'untraced: %r\ntraced:   %r' % (len(out1), len(out0),
                                              next((i for i, (a, b) in enumerate(zip(out0, out1)) if a != b),
                                                   min(len(out0), len(out1))),
                                              out0[:300], out1[:300]))
    t.check_eq('io traced: stderr (without allocprof\'s lines)', own_lines(err1), own_lines(err0))
    t.check('io: first line on stderr' in err0.decode(), 'io untraced: stderr lacks its own line: %r' % err0)

    # Through a shell: the exit status is the program's.
    sh = subprocess.run(['sh', '-c', '"$@" </dev/null >/dev/null 2>&1; echo "status=$?"', 'sh']
                        + traced(t, [prog], 'io-sh'), stdout=subprocess.PIPE, env=env, cwd=t.tmp,
                        timeout=TIMEOUT)
    t.check_eq('io traced, as a shell sees it', sh.stdout, b'status=3\n')


SIG_CASES = [
    ('term', -signal.SIGTERM),
    ('int', -signal.SIGINT),
    ('kill', -signal.SIGKILL),
    ('segv', -signal.SIGSEGV),
    ('abort', -signal.SIGABRT),
    ('thread-term', -signal.SIGTERM),
    ('exit7', 7),
]


def test_signals(t):
    prog = t.prog('sig')
    env = t.env()
    for mode, want in SIG_CASES:
        rc0, out0, err0, _ = popen(t, [prog, mode], env)
        t.check_eq('sig %s untraced: status (the test program itself)' % mode, describe_status(rc0),
                   describe_status(want))
        name = 'sig-' + mode
        rc1, out1, err1, _ = popen(t, traced(t, [prog, mode], name), env)
        t.check_eq('sig %s traced: status' % mode, describe_status(rc1), describe_status(rc0))
        t.check_eq('sig %s traced: stdout' % mode, out1, out0)
        t.check_eq('sig %s traced: stderr (without allocprof\'s lines)' % mode, own_lines(err1), own_lines(err0))
        check_trace_readable(t, name, 'sig ' + mode)

    # A shell sees 128 + N.
    for mode, sig in (('term', signal.SIGTERM), ('kill', signal.SIGKILL)):
        sh = subprocess.run(['sh', '-c', 'ulimit -c 0; "$@" >/dev/null 2>&1; echo "status=$?"', 'sh']
                            + traced(t, [prog, mode], 'sig-sh-' + mode),
                            stdout=subprocess.PIPE, env=env, cwd=t.tmp, timeout=TIMEOUT)
        t.check_eq('sig %s traced, as a shell sees it' % mode, sh.stdout, b'status=%d\n' % (128 + sig))


def parse_fds(t, out, label):
    fds, opened = {}, []
    for line in out.decode('utf-8', 'replace').splitlines():
        f = line.split(' ')
        if f[0] == 'fd' and len(f) >= 4:
            fds[int(f[1])] = (' '.join(f[2:-1]), f[-1])
        elif f[0] in ('open', 'pipe', 'high'):
            opened.append(line)
        else:
            t.fail('%s: unexpected line %r' % (label, line))
    return fds, opened


def test_fds(t):
    prog = t.prog('fds')
    env = t.env()
    # An extra inherited descriptor, not close-on-exec, at a number of our choosing.
    extra_path = os.path.join(t.tmp, 'inherited.txt')
    with open(extra_path, 'w') as f:
        f.write('x')
    fd = os.open(extra_path, os.O_RDONLY)
    EXTRA = 7
    os.dup2(fd, EXTRA, inheritable=True)
    os.close(fd)
    try:
        rc0, out0, err0, ino0 = popen(t, [prog], env, pass_fds=(EXTRA,))
        rc1, out1, err1, ino1 = popen(t, traced(t, [prog], 'fds'), env, pass_fds=(EXTRA,))
    finally:
        os.close(EXTRA)
    t.check_eq('fds untraced: exit status', rc0, 0)
    t.check_eq('fds traced: exit status', rc1, 0)
    fds0, opened0 = parse_fds(t, out0, 'fds untraced')
    fds1, opened1 = parse_fds(t, out1, 'fds traced')

    # The untraced run sees exactly 0, 1, 2 (our pipes) and the inherited one.
    t.check_eq('fds untraced: descriptors (the test itself)', sorted(fds0), [0, 1, 2, EXTRA])
    for label, fds, inos in (('untraced', fds0, ino0), ('traced', fds1, ino1)):
        for n in (0, 1, 2):
            want = 'pipe:[%d]' % inos[n]
            got = fds.get(n, ('(closed)', ''))[0]
            t.check(got == want, 'fds %s: descriptor %d is %s, not the pipe the caller passed (%s): '
                                 'the program\'s standard streams must be its own, not relayed'
                    % (label, n, got, want))
        t.check(fds.get(EXTRA, ('',))[0] == extra_path,
                'fds %s: inherited descriptor %d is %r, not %s' % (label, EXTRA, fds.get(EXTRA), extra_path))

    def norm(target):
        return re.sub(r'^(pipe|socket|anon_inode):\[\d+\]$', r'\1:[N]', target)

    for n, (target, cloexec) in sorted(fds0.items()):
        got = fds1.get(n)
        t.check(got is not None and (norm(got[0]), got[1]) == (norm(target), cloexec),
                'fds traced: descriptor %d is %r, untraced %r' % (n, got, (target, cloexec)))
    for n, (target, cloexec) in sorted(fds1.items()):
        if n not in fds0:
            t.check(cloexec == 'cloexec=1',
                    'fds traced: extra descriptor %d (%s) is not close-on-exec: it leaks into the '
                    'program\'s children' % (n, target))
    t.check_eq('fds traced: numbers returned by open() and pipe() in the program', opened1, opened0)


def main():
    t = aptest.Test('transparent')
    test_io(t)
    test_signals(t)
    test_fds(t)
    t.finish()


if __name__ == '__main__':
    main()
