/*
 * record.c: `allocprof record -- CMD`: runs CMD with the shim preloaded and stays out of its way:
 * CMD keeps its stdin, stdout, stderr, process group and signals, and record exits as CMD did
 * (re-raising CMD's fatal signal on itself), so scripts and shells see no difference.
 *
 * Every process of the run (fork children, exec'ed programs) writes its own trace; each appends
 * "pid ppid path" to a run log (ALLOCPROF_RUN_LOG, a temporary file) when it creates its file,
 * which is how record lists them all at the end, whatever names %p and %e gave them.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glob.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include "allocprof/trace.h"
#include "cli.h"
#include "util.h"

static const char record_usage[] =
	"usage: allocprof record [-o PATH] [--sample-bytes N] [--seed N] [--depth N] [--clock auto|tsc|counter]\n"
	"                        [--no-children] [--quiet] -- CMD [ARGS...]\n"
	"  -o PATH          trace file; %p = pid, %e = program name (default allocprof.%e.%p.trace).\n"
	"                   Children (fork, exec) write their own files: without %p in PATH they\n"
	"                   get PATH.1, PATH.2, ...\n"
	"  --no-children    trace CMD's first process only\n";

struct run_entry {
	long pid, ppid;
	char *path;
};

/* The run log's lines, in the order the files were created. */
static size_t read_run_log(const char *log, struct run_entry **out)
{
	*out = NULL;
	FILE *f = fopen(log, "re");
	if (!f)
		return 0;
	size_t n = 0, cap = 0;
	char *line = NULL;
	size_t lcap = 0;
	ssize_t len;
	while ((len = getline(&line, &lcap, f)) > 0) {
		if (line[len - 1] == '\n')
			line[--len] = 0;
		long pid, ppid;
		int off = 0;
		if (sscanf(line, "%ld %ld %n", &pid, &ppid, &off) < 2 || !off || !line[off])
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			*out = ap_xrealloc(*out, cap * sizeof(**out));
		}
		(*out)[n++] = (struct run_entry){pid, ppid, ap_xstrdup(line + off)};
	}
	free(line);
	fclose(f);
	return n;
}

static bool readable(const char *path)
{
	return path && access(path, R_OK) == 0;
}

/* The shim next to this binary in a build tree, or where `meson install` put it. */
static bool find_shim(char *out, size_t size)
{
	const char *env = getenv("ALLOCPROF_SHIM");
	if (env) {
		snprintf(out, size, "%s", env);
		return readable(out);
	}
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = 0;
		const char *rel[] = {"/../preload/liballocprof.so", "/../lib/liballocprof.so",
		                     "/../lib/x86_64-linux-gnu/liballocprof.so", "/../lib64/liballocprof.so"};
		for (size_t i = 0; i < sizeof(rel) / sizeof(*rel); i++) {
			char cand[PATH_MAX + 64];
			snprintf(cand, sizeof(cand), "%s%s", exe, rel[i]);
			if (readable(cand) && realpath(cand, out))
				return true;
		}
	}
	snprintf(out, size, "%s", AP_SHIM_INSTALL_PATH);
	return readable(out);
}

/* execvp's search, to inspect the program before running it. */
static bool resolve_cmd(const char *cmd, char *out, size_t size)
{
	if (strchr(cmd, '/')) {
		snprintf(out, size, "%s", cmd);
		return access(out, X_OK) == 0;
	}
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		size_t len = strcspn(path, ":");
		snprintf(out, size, "%.*s/%s", (int)len, len ? path : ".", cmd);
		struct stat st;
		if (stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0)
			return true;
		path += len + (path[len] == ':');
	}
	return false;
}

/* LD_PRELOAD cannot reach a static executable, a 32-bit one, or a setuid one run by another user:
 * say so instead of producing an empty trace. NULL if the program looks traceable. */
static const char *untraceable(const char *path)
{
	static char why[256];
	struct stat st;
	if (stat(path, &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID)) &&
	    ((st.st_mode & S_ISUID && st.st_uid != geteuid()) || (st.st_mode & S_ISGID && st.st_gid != getegid()))) {
		snprintf(why, sizeof(why), "it is setuid/setgid: the dynamic loader ignores LD_PRELOAD for it");
		return why;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	Elf64_Ehdr eh;
	const char *res = NULL;
	if (read(fd, &eh, sizeof(eh)) == (ssize_t)sizeof(eh) && !memcmp(eh.e_ident, ELFMAG, SELFMAG)) {
		if (eh.e_ident[EI_CLASS] != ELFCLASS64) {
			res = "it is a 32-bit program and the shim is 64-bit";
		} else if (eh.e_type == ET_EXEC || eh.e_type == ET_DYN) {
			bool interp = false, dynamic = false;
			for (int i = 0; i < eh.e_phnum; i++) {
				Elf64_Phdr ph;
				if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + (uint64_t)i * eh.e_phentsize)) !=
				    (ssize_t)sizeof(ph))
					break;
				interp |= ph.p_type == PT_INTERP;
				dynamic |= ph.p_type == PT_DYNAMIC;
			}
			if (!interp && eh.e_type == ET_EXEC)
				res = "it is statically linked: there is no dynamic loader to preload the shim";
			else if (!interp && !dynamic)
				res = "it is statically linked (static-pie): there is no dynamic loader to preload the shim";
		}
	}
	close(fd);
	return res;
}

static pid_t child_pid;

static void forward(int sig)
{
	if (child_pid > 0)
		kill(child_pid, sig);
}

/* The trace files the run produced: the pattern with the pid, and the .N names the shim picks
 * when an exec'ed image of the same process finds the name taken. */
static void find_traces(const char *pattern, pid_t pid, glob_t *g)
{
	char expanded[PATH_MAX * 2], *o = expanded;
	for (const char *p = pattern; *p && o < expanded + sizeof(expanded) - 32; p++) {
		if (p[0] == '%' && p[1] == 'p') {
			o += sprintf(o, "%d", (int)pid);
			p++;
		} else if (p[0] == '%' && p[1] == 'e') {
			*o++ = '*';
			p++;
		} else if (strchr("*?[\\", *p)) {
			*o++ = '\\';
			*o++ = *p;
		} else {
			*o++ = *p;
		}
	}
	*o = 0;
	memset(g, 0, sizeof(*g));
	glob(expanded, 0, NULL, g);
	strcat(expanded, ".[0-9]*");
	glob(expanded, GLOB_APPEND, NULL, g);
}

/* Appends an EXIT record as a zstd frame of its own: the trace is a concatenation of frames. */
static void append_exit(const char *path, int status)
{
	uint8_t rec[2 + 2 * AP_VARINT_MAX], *p = rec + 2;
	uint8_t payload[2 * AP_VARINT_MAX], *q = payload;
	if (WIFSIGNALED(status)) {
		q = ap_put_varint(q, AP_END_SIGNAL);
		q = ap_put_varint(q, (uint64_t)WTERMSIG(status));
	} else {
		q = ap_put_varint(q, AP_END_EXIT);
		q = ap_put_varint(q, (uint64_t)WEXITSTATUS(status));
	}
	p = rec;
	*p++ = AP_REC_EXIT;
	p = ap_put_varint(p, (uint64_t)(q - payload));
	memcpy(p, payload, (size_t)(q - payload));
	p += q - payload;
	uint8_t frame[256];
	/* With a checksum, like the shim's frames: a flipped bit in it is then detected. */
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	if (!cc)
		return;
	ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
	size_t n = ZSTD_compress2(cc, frame, sizeof(frame), rec, (size_t)(p - rec));
	ZSTD_freeCCtx(cc);
	if (ZSTD_isError(n))
		return;
	int fd = open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, frame, n) != (ssize_t)n)
		ap_warn("%s: could not append the exit status", path);
	close(fd);
}

int ap_record_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"output", required_argument, NULL, 'o'},
		{"depth", required_argument, NULL, 'd'},
		{"clock", required_argument, NULL, 'c'},
		{"sample-bytes", required_argument, NULL, 's'},
		{"seed", required_argument, NULL, 'S'},
		{"quiet", no_argument, NULL, 'q'},
		{"no-children", no_argument, NULL, 'N'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *output = NULL;
	bool quiet = false;
	optind = 1;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, "+:o:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			output = optarg;
			break;
		case 'd':
			setenv("ALLOCPROF_DEPTH", optarg, 1);
			break;
		case 'c':
			setenv("ALLOCPROF_CLOCK", optarg, 1);
			break;
		case 's':
			setenv("ALLOCPROF_SAMPLE_BYTES", optarg, 1);
			break;
		case 'S':
			setenv("ALLOCPROF_SEED", optarg, 1);
			break;
		case 'q':
			quiet = true;
			setenv("ALLOCPROF_QUIET", "1", 1);
			break;
		case 'N':
			setenv("ALLOCPROF_NO_CHILDREN", "1", 1);
			break;
		case 'h':
			fputs(record_usage, stdout);
			return 0;
		default:
			fprintf(stderr, "allocprof: record: %s %s\n%s", c == ':' ? "missing value for" : "unknown option",
			        argv[optind - 1], record_usage);
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "allocprof: record: which program? %s", record_usage);
		return 2;
	}
	char **cmd = argv + optind;

	char shim[PATH_MAX];
	if (!find_shim(shim, sizeof(shim))) {
		fprintf(stderr, "allocprof: cannot find the shim liballocprof.so (looked next to this program and "
		                "in %s; set ALLOCPROF_SHIM to its path)\n", AP_SHIM_INSTALL_PATH);
		return 2;
	}
	if (strpbrk(shim, " :")) {
		fprintf(stderr, "allocprof: the shim's path %s contains a space or colon, which LD_PRELOAD cannot "
		                "carry\n", shim);
		return 2;
	}
	char prog[PATH_MAX];
	if (!resolve_cmd(cmd[0], prog, sizeof(prog))) {
		fprintf(stderr, "allocprof: %s: command not found or not executable\n", cmd[0]);
		return 127;
	}
	const char *why = untraceable(prog);
	if (why) {
		fprintf(stderr, "allocprof: cannot trace %s: %s\n", prog, why);
		return 2;
	}

	/* The pattern must be absolute: the program may change directory before it starts. */
	char pattern[PATH_MAX * 2], cwd[PATH_MAX];
	if (!output)
		output = "allocprof.%e.%p.trace"; /* %e: each exec'ed program is told apart by name */
	char *abs = NULL;
	if (output[0] != '/' && getcwd(cwd, sizeof(cwd))) {
		abs = ap_xmalloc(strlen(cwd) + strlen(output) + 2);
		sprintf(abs, "%s/%s", cwd, output);
		output = abs;
	}
	if (strlen(output) >= sizeof(pattern)) {
		fprintf(stderr, "allocprof: the output path is too long\n");
		return 2;
	}
	memmove(pattern, output, strlen(output) + 1);
	free(abs);
	if (!strstr(pattern, "%p") && access(pattern, F_OK) == 0) {
		fprintf(stderr, "allocprof: %s exists; not overwriting it (remove it, or use %%p in -o)\n", pattern);
		return 2;
	}

	const char *old = getenv("LD_PRELOAD");
	char *preload = ap_xmalloc(strlen(shim) + (old ? strlen(old) : 0) + 2);
	sprintf(preload, "%s%s%s", shim, old && *old ? ":" : "", old && *old ? old : "");
	setenv("LD_PRELOAD", preload, 1);
	setenv("ALLOCPROF_OUTPUT", pattern, 1);
	free(preload);
	const char *tmpdir = getenv("TMPDIR");
	char run_log[PATH_MAX];
	snprintf(run_log, sizeof(run_log), "%s/allocprof-run.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
	int log_fd = mkstemp(run_log);
	if (log_fd < 0) {
		snprintf(run_log, sizeof(run_log), "/tmp/allocprof-run.XXXXXX");
		log_fd = mkstemp(run_log);
	}
	if (log_fd >= 0) {
		close(log_fd);
		setenv("ALLOCPROF_RUN_LOG", run_log, 1);
	} else {
		run_log[0] = 0;
	}

	/* Like system(): the terminal's SIGINT and SIGQUIT go to the whole foreground group, and
	 * the program decides what they mean; we wait for its verdict. */
	struct sigaction ign = {.sa_handler = SIG_IGN}, fwd = {.sa_handler = forward}, old_int, old_quit;
	sigaction(SIGINT, &ign, &old_int);
	sigaction(SIGQUIT, &ign, &old_quit);
	sigaction(SIGTERM, &fwd, NULL);
	sigaction(SIGHUP, &fwd, NULL);

	child_pid = fork();
	if (child_pid < 0) {
		fprintf(stderr, "allocprof: fork: %s\n", strerror(errno));
		return 2;
	}
	if (child_pid == 0) {
		sigaction(SIGINT, &old_int, NULL);
		sigaction(SIGQUIT, &old_quit, NULL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		execv(prog, cmd);
		fprintf(stderr, "allocprof: cannot run %s: %s\n", prog, strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}
	int status;
	while (waitpid(child_pid, &status, 0) < 0 && errno == EINTR)
		;

	struct run_entry *runs;
	size_t nruns = run_log[0] ? read_run_log(run_log, &runs) : 0;
	if (run_log[0])
		unlink(run_log);
	if (nruns) {
		/* The exit status we saw is that of the last image of the first process. */
		const char *last = NULL;
		for (size_t i = 0; i < nruns; i++)
			if (runs[i].pid == (long)child_pid)
				last = runs[i].path;
		if (last)
			append_exit(last, status);
		if (!quiet) {
			if (nruns == 1) {
				fprintf(stderr, "allocprof: trace written to %s\n", runs[0].path);
			} else {
				fprintf(stderr, "allocprof: %zu traces written, one per process (and per exec):\n", nruns);
				for (size_t i = 0; i < nruns; i++)
					fprintf(stderr, "allocprof:   pid %ld (parent %ld): %s\n", runs[i].pid, runs[i].ppid,
					        runs[i].path);
			}
			fprintf(stderr, "allocprof: view it with: allocprof top %s\n", last ? last : runs[0].path);
		}
		for (size_t i = 0; i < nruns; i++)
			free(runs[i].path);
		free(runs);
		goto done;
	}
	glob_t g;
	find_traces(pattern, child_pid, &g);
	if (g.gl_pathc) {
		/* The last name is the last image of the process: the one whose exit we saw. */
		append_exit(g.gl_pathv[g.gl_pathc - 1], status);
		if (!quiet) {
			for (size_t i = 0; i < g.gl_pathc; i++)
				fprintf(stderr, "allocprof: trace written to %s\n", g.gl_pathv[i]);
			fprintf(stderr, "allocprof: view it with: allocprof top %s\n", g.gl_pathv[g.gl_pathc - 1]);
		}
	} else if (!quiet) {
		fprintf(stderr, "allocprof: no trace was written (the program may have changed LD_PRELOAD, or "
		                "could not create %s)\n", pattern);
	}
	globfree(&g);
done:
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		/* Die the same way, without a second core dump. */
		struct rlimit nocore = {0, 0};
		setrlimit(RLIMIT_CORE, &nocore);
		signal(sig, SIG_DFL);
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, sig);
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		raise(sig);
		return 128 + sig;
	}
	return WEXITSTATUS(status);
}
