#!/usr/bin/env python3
"""Benchmark allocprof against the untraced baseline and heaptrack.

    python3 bench/run.py [--quick] [--runs N] [--only W1,W2] [--configs C1,C2]
                         [--build-dir build] [--markdown FILE] [--json FILE]

For every workload, each configuration is run N times *interleaved*
(baseline, allocprof, ..., heaptrack, baseline, allocprof, ...) so machine
noise hits all of them alike.  Wall time is time.monotonic() around the run;
CPU time is user+sys of the whole process tree, taken from
getrusage(RUSAGE_CHILDREN) deltas.  This script makes itself a child
subreaper (prctl PR_SET_CHILD_SUBREAPER) so helper processes that outlive
their parent (heaptrack's wrapper does not always reap heaptrack_interpret
before exiting) are re-parented to us and reaped here: their CPU time is
counted too.  See bench/README.md for how to read the table.

Python stdlib only.
"""

import argparse
import ctypes
import ctypes.util
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PR_SET_CHILD_SUBREAPER = 36
SAMPLE_BYTES = 524288          # allocprof-sampled: ALLOCPROF_SAMPLE_BYTES
JEMALLOC_LG_SAMPLE = 19        # jemalloc-prof: 2^19 = 512 KiB, same rate
EVENTS_RE = re.compile(r"^events: (\d+)\s*$", re.M)

ALL_CONFIGS = ["baseline", "allocprof", "allocprof-sampled", "heaptrack", "jemalloc", "jemalloc-prof"]
# Environment variables that would change what a run measures; stripped from
# the inherited environment of every run.
SCRUB_ENV = ["LD_PRELOAD", "MALLOC_CONF", "PYTHONMALLOC", "MALLOC_CHECK_", "MALLOC_PERTURB_",
             "GLIBC_TUNABLES", "DUMP_HEAPTRACK_OUTPUT", "ALLOCCOUNT_OUT"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# process running
# --------------------------------------------------------------------------

def make_subreaper():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return False
        return True
    except (OSError, AttributeError):
        return False


def own_children():
    """PIDs of live processes whose parent is this process (orphans re-parented to us)."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        # the comm field may contain spaces/parens: split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == me:
            out.append(int(d))
    return out


def reap_orphans(deadline):
    """Reap every remaining child (re-parented helpers). Returns (count, cpu_seconds, killed)."""
    n, cpu, killed = 0, 0.0, 0
    while True:
        try:
            pid, _status, ru = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return n, cpu, killed
        if pid == 0:
            if time.monotonic() > deadline:
                for pid in own_children():
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed += 1
                    except ProcessLookupError:
                        pass
                deadline = float("inf")
            time.sleep(0.005)
            continue
        n += 1
        cpu += ru.ru_utime + ru.ru_stime


def rusage_cpu(ru):
    return ru.ru_utime + ru.ru_stime


def timed_run(argv, env, cwd, timeout):
    """Run argv; return dict(wall, cpu, rc, stdout, stderr, timed_out, orphans, orphan_cpu)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    timed_out = False
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True)
    except OSError as e:
        return dict(wall=0.0, cpu=0.0, rc=None, stdout=b"", stderr=str(e).encode(),
                    timed_out=False, orphans=0, orphan_cpu=0.0, error="cannot start: %s" % e)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
    wall = time.monotonic() - t0
    # Helpers still running after the main process exited (re-parented to us
    # as subreaper) belong to this run: wait for them, so their CPU counts.
    orphans, orphan_cpu, killed = reap_orphans(time.monotonic() + (5 if timed_out else 60))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = dict(wall=wall, cpu=rusage_cpu(after) - rusage_cpu(before), rc=p.returncode,
               stdout=out, stderr=err, timed_out=timed_out, orphans=orphans,
               orphan_cpu=orphan_cpu, error=None)
    if killed:
        res["error"] = "killed %d leftover helper process(es)" % killed
    return res


# --------------------------------------------------------------------------
# workloads
# --------------------------------------------------------------------------

def find_python():
    # The workload must run the real interpreter binary, not a wrapper such
    # as a pyenv shim (a bash script that forks several processes).
    for cand in ("/usr/bin/python3",):
        if os.access(cand, os.X_OK):
            return cand
    return os.path.realpath(sys.executable)


def find_program(name):
    """/usr/bin/NAME if it exists (the distribution's binary, like find_python), else PATH's."""
    cand = os.path.join("/usr/bin", name)
    if os.access(cand, os.X_OK):
        return cand
    return shutil.which(name) or cand


def find_cc1(gcc):
    """The path of the cc1 that `gcc` runs (gcc -print-prog-name=cc1), or None."""
    try:
        r = subprocess.run([gcc, "-print-prog-name=cc1"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = r.stdout.decode(errors="replace").strip()
    return path if os.path.isabs(path) else None


class Generated:
    """A workload input file generated by bench/gen_inputs.py into the run's
    temp directory (once per workload, before its warm-up run).  Stands for
    an argv element: fmt % path."""

    def __init__(self, filename, kind, fmt="%s"):
        self.filename, self.kind, self.fmt = filename, kind, fmt

    def materialize(self, directory, scale):
        sys.path.insert(0, HERE)
        try:
            import gen_inputs
        finally:
            sys.path.pop(0)
        path = os.path.join(directory, self.filename)
        if not os.path.exists(path):
            text = gen_inputs.sqlite_script(scale) if self.kind == "sql" else gen_inputs.c_source(scale)
            with open(path, "w") as f:
                f.write(text)
        return self.fmt % path

    def __str__(self):
        return self.fmt % ("GEN/" + self.filename)


def materialize_argv(argv, directory, scale):
    return [a.materialize(directory, scale) if isinstance(a, Generated) else a for a in argv]


def workloads(build_dir, scale):
    """name -> (argv, extra env, description, options).  options: "multiprocess"
    (the workload runs several processes: tracers must follow children)."""
    b = os.path.join(build_dir, "bench")
    py = find_python()
    sqlite3 = find_program("sqlite3")
    gcc = find_program("gcc")
    cc1 = find_cc1(gcc) or "cc1 (not found: gcc -print-prog-name=cc1)"
    s = scale
    # -init /dev/null: do not read ~/.sqliterc.  The script's own .output
    # sends query results to /dev/null and prints one checksum line at the end.
    sql = Generated("sqlite3.sql", "sql", fmt='.read "%s"')
    csrc = Generated("big.c", "c")
    return {
        "churn": ([os.path.join(b, "churn"), s], {}, "1 thread, malloc/free pairs at depth ~15 (20M at scale 1)", {}),
        "churn_mt": ([os.path.join(b, "churn_mt"), "-t", "2", s], {}, "2 threads, cross-thread frees", {}),
        "churn_mt16": ([os.path.join(b, "churn_mt"), "-t", "16", s], {}, "16 threads, cross-thread frees", {}),
        "realloc_grow": ([os.path.join(b, "realloc_grow"), s], {}, "buffers grown by realloc", {}),
        "deep": ([os.path.join(b, "deep"), s], {}, "200 distinct stacks, depth 30-60", {}),
        "alloc_heavy": ([py, os.path.join(HERE, "alloc_heavy.py"), s], {},
                        "CPython dict/list/str churn (pymalloc)", {}),
        "alloc_heavy_sysmalloc": ([py, os.path.join(HERE, "alloc_heavy.py"), s], {"PYTHONMALLOC": "malloc"},
                                  "same, PYTHONMALLOC=malloc", {}),
        "sqlite3": ([sqlite3, "-batch", "-bail", "-init", "/dev/null", ":memory:", sql], {},
                    "sqlite3 shell, generated SQL script on an in-memory database", {}),
        "gcc": ([gcc, "-O2", "-c", csrc, "-o", "/dev/null"], {},
                "gcc -O2 -c of a generated C file (driver + cc1 + as)", {"multiprocess": True}),
        "gcc_cc1": ([cc1, "-quiet", "-O2", csrc, "-o", "/dev/null"], {},
                    "cc1 alone on the same file (one process: comparable with heaptrack)", {}),
    }


DEFAULT_WORKLOADS = ["churn", "churn_mt", "churn_mt16", "realloc_grow", "deep", "alloc_heavy",
                     "alloc_heavy_sysmalloc", "sqlite3", "gcc", "gcc_cc1"]


# --------------------------------------------------------------------------
# configurations
# --------------------------------------------------------------------------

def find_jemalloc():
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
              "/usr/lib/aarch64-linux-gnu"):
        p = os.path.join(d, "libjemalloc.so.2")
        if os.path.exists(p):
            return p
    name = ctypes.util.find_library("jemalloc")
    return name


def jemalloc_has_prof(lib):
    try:
        r = subprocess.run(["/bin/true"], env=dict(os.environ, LD_PRELOAD=lib, MALLOC_CONF="stats_print:true"),
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"config.prof: true" in r.stderr


def tool_version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, timeout=30)
        return (r.stdout or r.stderr).decode(errors="replace").strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


class Config:
    def __init__(self, name, wrap, trace_glob=None, stdout_filter=None, note="", follows_children=True):
        self.name = name
        # False: only the command's first process is traced (heaptrack's
        # preload library unsets LD_PRELOAD so children run untraced).
        self.follows_children = follows_children
        self.wrap = wrap                  # (argv, rundir) -> (argv, extra_env)
        self.trace_glob = trace_glob      # (rundir) -> list of trace files
        self.stdout_filter = stdout_filter or (lambda s: s)
        self.note = note


def all_files(rundir):
    out = []
    for dp, _dn, fns in os.walk(rundir):
        out.extend(os.path.join(dp, f) for f in fns)
    return out


HEAPTRACK_STDOUT = re.compile(
    r"^(heaptrack output will be written to .*|/\S*libheaptrack_preload\.so|"
    r"starting application, this might take some time\.\.\.)$")


def heaptrack_stdout_filter(s):
    """Drop the lines heaptrack's wrapper script itself prints on stdout."""
    lines = s.split("\n")
    while lines and HEAPTRACK_STDOUT.match(lines[0]):
        lines.pop(0)
    for i, line in enumerate(lines):
        if line.startswith("Heaptrack finished! Now run the following"):
            # keep the newline that ended the program's last line
            lines = lines[:i] + [""] if i else []
            break
    return "\n".join(lines)


def make_configs(args):
    """Returns (configs, skipped: list of (name, reason), info lines)."""
    configs, skipped, info = [], [], []
    allocprof = os.path.join(args.build_dir, "analyzer", "allocprof")
    have_allocprof = os.access(allocprof, os.X_OK)
    heaptrack = shutil.which("heaptrack")
    jemalloc = find_jemalloc()

    want = set(args.configs)

    def add(cfg):
        if cfg.name in want:
            configs.append(cfg)

    add(Config("baseline", lambda argv, rd: (argv, {})))

    if have_allocprof:
        add(Config("allocprof",
                   lambda argv, rd: ([allocprof, "record", "-o", os.path.join(rd, "%p.trace"), "--"] + argv, {}),
                   trace_glob=all_files))
        add(Config("allocprof-sampled",
                   lambda argv, rd: ([allocprof, "record", "-o", os.path.join(rd, "%p.trace"), "--"] + argv,
                                     {"ALLOCPROF_SAMPLE_BYTES": str(SAMPLE_BYTES)}),
                   trace_glob=all_files))
    else:
        for n in ("allocprof", "allocprof-sampled"):
            if n in want:
                skipped.append((n, "%s not found or not executable: build it first "
                                   "(meson setup %s && ninja -C %s)" % (allocprof, args.build_dir, args.build_dir)))

    if heaptrack:
        add(Config("heaptrack",
                   lambda argv, rd: ([heaptrack, "-o", os.path.join(rd, "ht")] + argv, {}),
                   trace_glob=lambda rd: [f for f in all_files(rd) if os.path.basename(f).startswith("ht.")],
                   stdout_filter=heaptrack_stdout_filter, follows_children=False))
        info.append("heaptrack: %s (%s)" % (heaptrack, tool_version([heaptrack, "--version"])))
    elif "heaptrack" in want:
        skipped.append(("heaptrack", "heaptrack not installed (apt-get install heaptrack)"))

    if jemalloc:
        add(Config("jemalloc", lambda argv, rd: (argv, {"LD_PRELOAD": jemalloc})))
        info.append("jemalloc: %s" % jemalloc)
        if jemalloc_has_prof(jemalloc):
            # prof_final dumps the sampled heap profile at exit (into the run
            # dir) so jemalloc-prof, like the tracers, produces an output file.
            add(Config("jemalloc-prof",
                       lambda argv, rd: (argv, {"LD_PRELOAD": jemalloc,
                                                "MALLOC_CONF": "prof:true,lg_prof_sample:%d,prof_final:true,"
                                                               "prof_prefix:%s" % (JEMALLOC_LG_SAMPLE,
                                                                                    os.path.join(rd, "jeprof"))}),
                       trace_glob=all_files))
        elif "jemalloc-prof" in want:
            skipped.append(("jemalloc-prof", "this jemalloc is built without --enable-prof (config.prof: false)"))
    else:
        for n in ("jemalloc", "jemalloc-prof"):
            if n in want:
                skipped.append((n, "libjemalloc.so.2 not found (apt-get install libjemalloc2)"))
    return configs, skipped, info


# --------------------------------------------------------------------------
# machine info
# --------------------------------------------------------------------------

def machine_info():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    distro = "?"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        libc = "?"
    return [
        "machine: nproc=%s (online %s), CPU: %s" % (usable, os.cpu_count(), model),
        "kernel: %s %s, %s, %s" % (platform.system(), platform.release(), distro, libc),
    ]


# --------------------------------------------------------------------------
# statistics and tables
# --------------------------------------------------------------------------

def fmt_s(x):
    if x is None:
        return "-"
    return "%.3f" % x if x < 10 else "%.2f" % x


def fmt_ratio(x, digits=2):
    if x is None:
        return "-"
    return ("%%.%df" % digits) % x


def fmt_bpe(x):
    if x is None:
        return "-"
    return "%.2f" % x if x >= 0.1 else "%.2g" % x


def fmt_bytes(x):
    if x is None:
        return "-"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= div:
            return "%.1f %s" % (x / div, unit)
    return "%d B" % x


def summarize(results, configs, events, partial=()):
    """results[cfg] = list of run dicts. Returns rows of dicts.  partial: the
    configurations that traced only part of a multi-process workload (their
    trace bytes per event, and ratios against them, would be meaningless)."""
    med = {}
    for c in configs:
        ok = [r for r in results.get(c, []) if r["ok"]]
        if ok:
            med[c] = (statistics.median(r["wall"] for r in ok), statistics.median(r["cpu"] for r in ok))
    base = med.get("baseline")
    ht = med.get("heaptrack")
    rows = []
    for c in configs:
        runs = results.get(c, [])
        ok = [r for r in runs if r["ok"]]
        row = dict(config=c, label=c + ("*" if c in partial else ""), ok=len(ok), runs=len(runs), wall=None, cpu=None, wall_lo=None, wall_hi=None,
                   cpu_lo=None, cpu_hi=None, slow_wall=None, slow_cpu=None, add_wall=None, add_cpu=None,
                   trace=None, bpe=None, orphans=sum(r.get("orphans", 0) for r in runs),
                   failures=[r["reason"] for r in runs if not r["ok"]])
        if ok:
            w = [r["wall"] for r in ok]
            u = [r["cpu"] for r in ok]
            row.update(wall=med[c][0], cpu=med[c][1], wall_lo=min(w), wall_hi=max(w), cpu_lo=min(u), cpu_hi=max(u))
            # jemalloc's profiler is rated against plain jemalloc, the allocator it runs in.
            own = med.get("jemalloc") if c == "jemalloc-prof" else base
            if own and c != "baseline":
                row["slow_wall"] = med[c][0] / own[0] if own[0] > 0 else None
                row["slow_cpu"] = med[c][1] / own[1] if own[1] > 0 else None
                if ht and "heaptrack" not in partial and c != "heaptrack" and c.startswith("allocprof"):
                    dw, dc = ht[0] - base[0], ht[1] - base[1]
                    row["add_wall"] = (med[c][0] - base[0]) / dw if dw > 0 else None
                    row["add_cpu"] = (med[c][1] - base[1]) / dc if dc > 0 else None
            sizes = [r["trace_bytes"] for r in ok if r.get("trace_bytes") is not None]
            if sizes:
                row["trace"] = statistics.median(sizes)
                if events and c not in partial:
                    row["bpe"] = row["trace"] / events
        rows.append(row)
    return rows


COLUMNS = ["workload", "config", "ok", "wall med s", "wall min-max", "CPU med s", "CPU min-max",
           "slowdown wall", "slowdown CPU", "added vs ht wall", "added vs ht CPU", "trace size", "trace B/event"]


def sampling_line(workload, by):
    """allocprof-sampled's added time next to jemalloc's own sampling profiler's, each against
    its own baseline (issue 4's comparison); None if neither ran."""
    def pct(r):
        if not r or r["slow_wall"] is None:
            return None
        return "%+.1f%% wall, %+.1f%% CPU" % (100 * (r["slow_wall"] - 1), 100 * (r["slow_cpu"] - 1))
    s, j = pct(by.get("allocprof-sampled")), pct(by.get("jemalloc-prof"))
    if not s and not j:
        return None
    return "%s: allocprof-sampled %s; jemalloc-prof %s" % (workload, s or "-", j or "-")


def row_cells(workload, r):
    def mm(lo, hi):
        return "-" if lo is None else "%s-%s" % (fmt_s(lo), fmt_s(hi))
    return [workload, r.get("label", r["config"]), "%d/%d" % (r["ok"], r["runs"]), fmt_s(r["wall"]), mm(r["wall_lo"], r["wall_hi"]),
            fmt_s(r["cpu"]), mm(r["cpu_lo"], r["cpu_hi"]),
            fmt_ratio(r["slow_wall"]) + ("x" if r["slow_wall"] is not None else ""),
            fmt_ratio(r["slow_cpu"]) + ("x" if r["slow_cpu"] is not None else ""),
            fmt_ratio(r["add_wall"], 3), fmt_ratio(r["add_cpu"], 3),
            fmt_bytes(r["trace"]), fmt_bpe(r["bpe"])]


def text_table(table):
    widths = [max(len(str(row[i])) for row in [COLUMNS] + table) for i in range(len(COLUMNS))]
    lines = []
    for k, row in enumerate([COLUMNS] + table):
        cells = []
        for i, cell in enumerate(row):
            cells.append(str(cell).ljust(widths[i]) if i < 3 else str(cell).rjust(widths[i]))
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(table):
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(COLUMNS) - 3)) + "|"]
    for row in table:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def parse_events(stderr_bytes):
    m = EVENTS_RE.findall(stderr_bytes.decode(errors="replace"))
    return int(m[-1]) if m else None


def count_events(argv, env, cwd, counter, tmp):
    """Untimed run under the counting shim; returns (total events over all
    processes, number of processes), or (None, 0)."""
    out = os.path.join(tmp, "alloccount.txt")
    if os.path.exists(out):
        os.unlink(out)
    e = dict(env, LD_PRELOAD=counter, ALLOCCOUNT_OUT=out)
    try:
        subprocess.run(argv, env=e, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return None, 0
    total, procs = 0, 0
    try:
        with open(out) as f:
            for line in f:
                m = re.search(r"\bevents=(\d+)", line)
                if m:
                    total += int(m.group(1))
                    procs += 1
    except OSError:
        return None, 0
    return total, procs


def main():
    ap = argparse.ArgumentParser(description="allocprof benchmark suite (see bench/README.md)")
    ap.add_argument("--quick", action="store_true", help="1/10 scale, 3 runs by default")
    ap.add_argument("--runs", type=int, help="runs per configuration (default 5, quick 3)")
    ap.add_argument("--only", help="comma-separated workloads (default: %s)" % ",".join(DEFAULT_WORKLOADS))
    ap.add_argument("--configs", default=",".join(ALL_CONFIGS),
                    help="comma-separated configurations (default: all available: %s)" % ",".join(ALL_CONFIGS))
    ap.add_argument("--build-dir", default="build", help="meson build directory (default: build)")
    ap.add_argument("--scale", type=float, help="explicit scale factor (overrides --quick's 0.1)")
    ap.add_argument("--timeout", type=float,
                    help="per-run timeout in seconds (default: max(120, 100 x the untraced time))")
    ap.add_argument("--markdown", metavar="FILE", help="also write the results as markdown")
    ap.add_argument("--json", metavar="FILE", help="also write raw per-run results as JSON")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory with the traces")
    args = ap.parse_args()

    command = shlex.join(["python3"] + sys.argv)
    args.build_dir = os.path.abspath(os.path.join(ROOT, args.build_dir)) if not os.path.isabs(args.build_dir) \
        else args.build_dir
    runs = args.runs or (3 if args.quick else 5)
    if runs < 1:
        ap.error("--runs must be >= 1")
    scale = args.scale if args.scale else (0.1 if args.quick else 1.0)
    scale_s = ("%g" % scale)
    wl_all = workloads(args.build_dir, scale_s)
    names = args.only.split(",") if args.only else DEFAULT_WORKLOADS
    for n in names:
        if n not in wl_all:
            ap.error("unknown workload %r (known: %s)" % (n, ", ".join(wl_all)))
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in args.configs:
        if c not in ALL_CONFIGS:
            ap.error("unknown configuration %r (known: %s)" % (c, ", ".join(ALL_CONFIGS)))
    if "baseline" not in args.configs:
        args.configs.insert(0, "baseline")

    subreaper = make_subreaper()
    configs, skipped, info = make_configs(args)
    cfg_names = [c.name for c in configs]
    counter = os.path.join(args.build_dir, "bench", "liballoccount.so")
    if not os.path.exists(counter):
        counter = None

    header = machine_info()
    header.append("command: %s" % command)
    header.append("scale: %s, runs per configuration: %d (interleaved: %s)" % (scale_s, runs, ", ".join(cfg_names)))
    header.extend(info)
    for n, why in skipped:
        header.append("SKIPPED %s: %s" % (n, why))
    if not subreaper:
        header.append("WARNING: could not become a child subreaper; CPU of helpers that outlive their "
                      "parent is not counted")
    for line in header:
        print(line, flush=True)

    missing = [n for n in names if not os.access(wl_all[n][0][0], os.X_OK)]
    if missing:
        built = [n for n in missing if wl_all[n][0][0].startswith(args.build_dir + os.sep)]
        system = [n for n in missing if n not in built]
        if built:
            print("ERROR: workload binaries missing (%s); build them: meson setup %s && ninja -C %s"
                  % (", ".join(built), args.build_dir, args.build_dir), file=sys.stderr)
        if system:
            print("ERROR: programs missing for workloads %s (install them: apt-get install sqlite3 gcc)"
                  % ", ".join("%s: %s" % (n, wl_all[n][0][0]) for n in system), file=sys.stderr)
        return 2

    tmp = tempfile.mkdtemp(prefix="allocprof-bench-")
    base_env = {k: v for k, v in os.environ.items() if k not in SCRUB_ENV and not k.startswith("ALLOCPROF_")}
    all_tables = []
    raw = dict(header=header, workloads={})
    notes = []
    sampling = []
    cmd_lines = []
    exit_status = 0
    try:
        for wname in names:
            argv, wenv, desc, wopts = wl_all[wname]
            gendir = os.path.join(tmp, "gen")
            os.makedirs(gendir, exist_ok=True)
            argv = materialize_argv(argv, gendir, scale)
            env = dict(base_env, **wenv)
            envs = " ".join("%s=%s" % kv for kv in wenv.items())
            log("== %s: %s%s" % (wname, (envs + " ") if envs else "", shlex.join(argv)))

            # Untimed warm-up run: reference stdout / exit code / events.
            ref = timed_run(argv, env, ROOT, None if args.timeout is None else args.timeout)
            ref_events = parse_events(ref["stderr"])
            if ref["rc"] != 0 or ref["timed_out"]:
                log("  warm-up run failed (rc=%s): %s" % (ref["rc"], ref["stderr"].decode(errors="replace")[-2000:]))
                notes.append("%s: untraced warm-up run failed (rc=%s); workload skipped" % (wname, ref["rc"]))
                exit_status = 1
                continue
            counted, procs = count_events(argv, env, ROOT, counter, tmp) if counter else (None, 0)
            events = ref_events if ref_events is not None else counted
            ev_note = "events: %s" % (events if events is not None else "unknown")
            if ref_events is not None and counted is not None:
                ev_note += " (self-reported; LD_PRELOAD counter saw %d in total incl. libc/runtime)" % counted
            elif counted is not None:
                ev_note += " (counted by LD_PRELOAD counter, untimed run%s)" % (
                    ", summed over %d processes" % procs if procs > 1 else "")
            log("  " + ev_note)
            timeout = args.timeout or max(120.0, 100.0 * ref["wall"])
            ref_stdout = ref["stdout"].decode(errors="replace")

            results = {c.name: [] for c in configs}
            for i in range(runs):
                for cfg in configs:
                    rundir = os.path.join(tmp, "%s-%s-%d" % (wname, cfg.name, i))
                    os.mkdir(rundir)
                    full, extra = cfg.wrap(list(argv), rundir)
                    if i == 0 and wname == names[0]:
                        e = " ".join("%s=%s" % kv for kv in extra.items())
                        cmd_lines.append("%s: %s%s" % (cfg.name, (e + " ") if e else "", shlex.join(full)))
                    r = timed_run(full, dict(env, **extra), ROOT, timeout)
                    reason = None
                    out = cfg.stdout_filter(r["stdout"].decode(errors="replace"))
                    ev = parse_events(r["stderr"])
                    if r["error"] and r["rc"] is None:
                        reason = r["error"]
                    elif r["timed_out"]:
                        reason = "timeout after %.0f s" % timeout
                    elif r["rc"] != ref["rc"]:
                        reason = "exit code %s (untraced: %s)" % (r["rc"], ref["rc"])
                    elif out != ref_stdout:
                        reason = "stdout differs from untraced run (%d vs %d bytes)" % (len(out), len(ref_stdout))
                    elif ref_events is not None and ev != ref_events:
                        reason = "events line %s (untraced: %s)" % (ev, ref_events)
                    trace_bytes = None
                    if cfg.trace_glob and reason is None:
                        files = cfg.trace_glob(rundir)
                        if files:
                            trace_bytes = sum(os.path.getsize(f) for f in files)
                        elif cfg.name != "jemalloc-prof":
                            reason = "no trace file written"
                    ok = reason is None
                    if not ok:
                        tail = r["stderr"].decode(errors="replace").strip().splitlines()[-3:]
                        reason += (": " + " | ".join(tail)) if tail else ""
                    results[cfg.name].append(dict(wall=r["wall"], cpu=r["cpu"], ok=ok, reason=reason,
                                                  trace_bytes=trace_bytes, orphans=r["orphans"],
                                                  orphan_cpu=r["orphan_cpu"], rc=r["rc"]))
                    log("  run %d/%d %-17s %s  wall %7.3f s  CPU %7.3f s%s%s" % (
                        i + 1, runs, cfg.name, "ok  " if ok else "FAIL", r["wall"], r["cpu"],
                        ("  trace %s" % fmt_bytes(trace_bytes)) if trace_bytes is not None else "",
                        ("  [%s]" % reason) if reason else ""))
                    if not args.keep_tmp:
                        shutil.rmtree(rundir, ignore_errors=True)

            partial = [c.name for c in configs if wopts.get("multiprocess") and not c.follows_children]
            rows = summarize(results, cfg_names, events, partial)
            for c in partial:
                notes.append("%s/%s*: traces only the first of the workload's %s processes (the gcc driver, not "
                             "cc1 or as): its time is what `%s gcc ...` costs, but its trace B/event and "
                             "allocprof's added-vs-ht ratios are left out; see %s_cc1 for a like-for-like "
                             "comparison" % (wname, c, procs or "several", c, wname)
                             if wname == "gcc" else
                             "%s/%s*: traces only the workload's first process; trace B/event and added-vs-ht "
                             "ratios are left out" % (wname, c))
            for r in rows:
                all_tables.append(row_cells(wname, r))
                if r["failures"]:
                    exit_status = 1
                    notes.append("%s/%s: %d of %d runs FAILED: %s" % (wname, r["config"], len(r["failures"]),
                                                                     r["runs"], r["failures"][0]))
                if r["orphans"]:
                    notes.append("%s/%s: %d helper process(es) outlived their parent and were reaped by the "
                                 "harness (their CPU is included)" % (wname, r["config"], r["orphans"]))
            by = {r["config"]: r for r in rows}
            line = sampling_line(wname, by)
            if line:
                sampling.append(line)
            s, u = by.get("allocprof-sampled"), by.get("allocprof")
            if s and u and s["bpe"] and u["bpe"] and s["bpe"] > 0.5 * u["bpe"]:
                notes.append("%s/allocprof-sampled: trace is %.0f%% of the unsampled one: ALLOCPROF_SAMPLE_BYTES "
                             "seems not to be in effect yet" % (wname, 100.0 * s["bpe"] / u["bpe"]))
            raw["workloads"][wname] = dict(argv=argv, env=wenv, description=desc, events=events,
                                           events_self=ref_events, events_counted=counted,
                                           processes=procs, runs=results,
                                           summary=rows)
            print("\n" + text_table([row_cells(wname, r) for r in rows]), flush=True)
    except KeyboardInterrupt:
        log("interrupted")
        exit_status = 130
    finally:
        if args.keep_tmp:
            log("traces kept in %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    ev_lines = []
    for w, d in raw["workloads"].items():
        ev_lines.append("%s: %s; events=%s%s" % (
            w, d["description"], d["events"],
            "" if d["events_counted"] is None else " (LD_PRELOAD counter: %d%s)" % (
                d["events_counted"], " in %d processes" % d["processes"] if d["processes"] > 1 else "")))

    print("\n" + "=" * 30 + " summary " + "=" * 30)
    for line in header:
        print(line)
    print("configurations (first workload shown; TMP is a fresh per-run directory):")
    for line in cmd_lines:
        print("  " + line.replace(tmp, "TMP"))
    print()
    print(text_table(all_tables))
    print()
    for line in ev_lines:
        print("  " + line)
    if sampling:
        print("sampling at 512 KiB, time added (allocprof-sampled over baseline; jemalloc-prof over jemalloc):")
        for line in sampling:
            print("  " + line)
    if notes:
        print("notes:")
        for n in notes:
            print("  - " + n)

    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("# allocprof benchmark results\n\n")
            for line in header:
                f.write("- %s\n" % line.replace(tmp, "TMP"))
            f.write("\nConfigurations (TMP is a fresh per-run directory):\n\n")
            for line in cmd_lines:
                f.write("- `%s`\n" % line.replace(tmp, "TMP"))
            f.write("\n" + md_table(all_tables) + "\n\n")
            f.write("Workloads:\n\n")
            for line in ev_lines:
                f.write("- %s\n" % line)
            if sampling:
                f.write("\nSampling at 512 KiB, time added (allocprof-sampled over baseline; jemalloc-prof "
                        "over jemalloc):\n\n")
                for line in sampling:
                    f.write("- %s\n" % line)
            if notes:
                f.write("\nNotes:\n\n")
                for n in notes:
                    f.write("- %s\n" % n)
            f.write("\nSee bench/README.md for how to read this table.\n")
        log("markdown written to %s" % args.markdown)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1, default=str)
        log("json written to %s" % args.json)
    return exit_status


if __name__ == "__main__":
    sys.exit(main())
