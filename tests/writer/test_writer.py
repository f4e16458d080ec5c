#!/usr/bin/env python3
"""The shim writes its trace safely and never harms the program (issue: untrusted input and safe
files, writer side):
  - an existing file is never overwritten, a symlink never followed: a new name is chosen;
  - the file is created with mode 0600;
  - a directory it cannot write to: one warning, tracing off, the program unchanged;
  - a full disk (a 256 KB tmpfs this test mounts; skipped where mounting is not permitted):
    one warning, the program runs to the end with the same output and status, and the trace
    written so far is readable and says it was cut short;
  - ALLOCPROF_QUIET=1 silences the warnings.
"""
import os
import stat
import subprocess
import sys
import tempfile

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def run(prog, env_extra, args=()):
    env = dict(os.environ, LD_PRELOAD=SHIM, **env_extra)
    return subprocess.run([prog, *args], env=env, capture_output=True, text=True, timeout=120)


def shim_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("allocprof")]


def top_ok(trace):
    r = subprocess.run([ALLOCPROF, "top", "--json", trace], capture_output=True, text=True, timeout=60)
    return r


def main():
    global SHIM, ALLOCPROF
    ALLOCPROF, SHIM, prog = sys.argv[1], sys.argv[2], sys.argv[3]
    plain = subprocess.run([prog], capture_output=True, text=True, timeout=120)
    with tempfile.TemporaryDirectory() as tmp:
        # Existing file: untouched, a new name chosen.
        path = os.path.join(tmp, "existing.trace")
        with open(path, "w") as f:
            f.write("keep me")
        r = run(prog, {"ALLOCPROF_OUTPUT": path})
        check(open(path).read() == "keep me", "existing file was modified")
        check(os.path.exists(path + ".1"), "no new name chosen next to an existing file")
        check(r.stdout == plain.stdout and r.returncode == 0, "program output changed (existing file)")
        if os.path.exists(path + ".1"):
            mode = stat.S_IMODE(os.stat(path + ".1").st_mode)
            check(mode == 0o600, f"trace mode {oct(mode)}, want 0o600")
            check(top_ok(path + ".1").returncode == 0, "the trace next to an existing file does not read")

        # Symlink: never followed, its target neither created nor written.
        link = os.path.join(tmp, "link.trace")
        victim = os.path.join(tmp, "victim")
        os.symlink(victim, link)
        run(prog, {"ALLOCPROF_OUTPUT": link})
        check(not os.path.exists(victim), "the shim followed a symlink and created its target")
        check(os.path.islink(link), "the symlink was replaced")
        check(os.path.exists(link + ".1"), "no new name chosen next to a symlink")
        with open(victim, "w") as f:
            f.write("secret")
        run(prog, {"ALLOCPROF_OUTPUT": link})
        check(open(victim).read() == "secret", "the shim wrote through a symlink")

        # A directory it cannot create files in: one warning, nothing else changes.
        r = run(prog, {"ALLOCPROF_OUTPUT": "/proc/allocprof-test/x.trace"})
        lines = shim_lines(r.stderr)
        check(len(lines) == 1 and "cannot create" in lines[0],
              f"unwritable directory: want one 'cannot create' warning, got {lines}")
        check(r.stdout == plain.stdout and r.returncode == plain.returncode,
              "program output or status changed (unwritable directory)")
        r = run(prog, {"ALLOCPROF_OUTPUT": "/proc/allocprof-test/x.trace", "ALLOCPROF_QUIET": "1"})
        check(r.stderr == plain.stderr, f"ALLOCPROF_QUIET=1 left messages: {r.stderr!r}")

        # A full disk while the program runs.
        mnt = os.path.join(tmp, "small")
        os.mkdir(mnt)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt],
                                 capture_output=True).returncode == 0
        if not mounted:
            print("writer: cannot mount a tmpfs here; the full-disk case is skipped")
        else:
            try:
                trace = os.path.join(mnt, "full.trace")
                r = run(prog, {"ALLOCPROF_OUTPUT": trace}, ["600000"])
                plain_big = subprocess.run([prog, "600000"], capture_output=True, text=True, timeout=120)
                lines = shim_lines(r.stderr)
                check(r.stdout == plain_big.stdout and r.returncode == 0,
                      f"full disk: program output/status changed: {r.returncode} {r.stdout!r}")
                check(len(lines) == 1 and "cannot write" in lines[0],
                      f"full disk: want one 'cannot write' warning, got {lines}")
                t = top_ok(trace)
                check(t.returncode == 0, f"full disk: the partial trace does not read: {t.stderr}")
                check("truncated" in t.stderr or "no end record" in t.stderr,
                      f"full disk: reading the partial trace gives no warning: {t.stderr!r}")
                r = run(prog, {"ALLOCPROF_OUTPUT": os.path.join(mnt, "quiet.trace"),
                               "ALLOCPROF_QUIET": "1"}, ["600000"])
                check(not shim_lines(r.stderr), "full disk: ALLOCPROF_QUIET=1 left messages")
            finally:
                subprocess.run(["umount", mnt])
    for f in failures:
        print("FAIL:", f)
    print(f"writer: {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
