/*
 * sys.c: everything the shim asks of the operating system: memory from mmap, messages without
 * stdio, clocks, thread ids, and creating the trace file safely. Nothing here allocates through
 * the traced program's allocator, and ap_log is async-signal-safe.
 */
#include "shim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

atomic_size_t ap_sys_mapped;

/* ---- messages ---------------------------------------------------------------------------------- */

struct ap_out {
	char *buf;
	size_t size, len;
};

static void out_char(struct ap_out *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

static void out_str(struct ap_out *o, const char *s)
{
	if (!s)
		s = "(null)";
	while (*s)
		out_char(o, *s++);
}

static void out_num(struct ap_out *o, unsigned long long v, unsigned base, bool neg)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (neg)
		out_char(o, '-');
	while (n)
		out_char(o, tmp[--n]);
}

/* A printf subset: enough for our messages, no locale, no allocation. */
static void ap_vformat(struct ap_out *o, const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			out_char(o, *fmt);
			continue;
		}
		fmt++;
		int longs = 0;
		bool size = false;
		while (*fmt == 'l') {
			longs++;
			fmt++;
		}
		if (*fmt == 'z') {
			size = true;
			fmt++;
		}
		switch (*fmt) {
		case 's':
			out_str(o, va_arg(ap, const char *));
			break;
		case 'd': {
			long long v = size ? (long long)va_arg(ap, ssize_t)
			              : longs ? (longs > 1 ? va_arg(ap, long long) : va_arg(ap, long))
			                      : va_arg(ap, int);
			out_num(o, v < 0 ? -(unsigned long long)v : (unsigned long long)v, 10, v < 0);
			break;
		}
		case 'u':
		case 'x': {
			unsigned long long v = size ? va_arg(ap, size_t)
			                       : longs ? (longs > 1 ? va_arg(ap, unsigned long long)
			                                            : va_arg(ap, unsigned long))
			                               : va_arg(ap, unsigned);
			out_num(o, v, *fmt == 'x' ? 16 : 10, false);
			break;
		}
		case 'p':
			out_str(o, "0x");
			out_num(o, (uintptr_t)va_arg(ap, void *), 16, false);
			break;
		case '%':
			out_char(o, '%');
			break;
		default:
			out_char(o, '?');
			if (!*fmt)
				return;
		}
	}
}

int ap_snprintf(char *buf, size_t size, const char *fmt, ...)
{
	struct ap_out o = {buf, size, 0};
	va_list ap;
	va_start(ap, fmt);
	ap_vformat(&o, fmt, ap);
	va_end(ap);
	if (size)
		buf[o.len < size ? o.len : size - 1] = 0;
	return (int)o.len;
}

void ap_log(const char *fmt, ...)
{
	if (ap_cfg.quiet)
		return;
	char buf[1024];
	struct ap_out o = {buf, sizeof(buf) - 1, 0};
	out_str(&o, "allocprof: ");
	va_list ap;
	va_start(ap, fmt);
	ap_vformat(&o, fmt, ap);
	va_end(ap);
	size_t n = o.len < o.size ? o.len : o.size - 1;
	buf[n++] = '\n';
	int saved = errno;
	ap_sys_write_all(2, buf, n);
	errno = saved;
}

/* ---- memory ----------------------------------------------------------------------------------- */

void *ap_sys_map(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	atomic_fetch_add(&ap_sys_mapped, size);
	return p;
}

void ap_sys_unmap(void *p, size_t size)
{
	if (p && munmap(p, size) == 0)
		atomic_fetch_sub(&ap_sys_mapped, size);
}

/* A bump allocator over 1 MiB slabs. Lock-free: a thread claims its bytes with a CAS on the
 * cursor; the loser of a slab race unmaps its fresh slab. Nothing is ever freed: it holds
 * per-thread records and stacks, whose number is bounded by the program's own. */
#define AP_SLAB (1u << 20)
static _Atomic(uintptr_t) arena_cur, arena_end;

void *ap_sys_alloc(size_t size)
{
	size = (size + 15) & ~(size_t)15;
	if (size > AP_SLAB / 4)
		return ap_sys_map(size);
	for (;;) {
		uintptr_t cur = atomic_load(&arena_cur), end = atomic_load(&arena_end);
		if (cur && cur + size <= end) {
			if (atomic_compare_exchange_weak(&arena_cur, &cur, cur + size))
				return (void *)cur;
			continue;
		}
		char *slab = ap_sys_map(AP_SLAB);
		if (!slab)
			return NULL;
		/* Publish the new slab only if nobody else did meanwhile. end is written first so a
		 * reader never sees the new cursor with the old end. */
		uintptr_t expect = cur;
		atomic_store(&arena_end, 0);
		if (atomic_compare_exchange_strong(&arena_cur, &expect, (uintptr_t)slab + size)) {
			atomic_store(&arena_end, (uintptr_t)slab + AP_SLAB);
			return slab;
		}
		atomic_store(&arena_end, end);
		ap_sys_unmap(slab, AP_SLAB);
	}
}

/* ---- clocks, threads --------------------------------------------------------------------------- */

int ap_clock_kind = AP_CLOCK_COUNTER;
atomic_uint_fast64_t ap_clock_counter;

/* Two ways to stamp events, both exact (see "Stamps" in allocprof/trace.h):
 *  - a process-wide atomic counter: one uncontended locked add (2 ns here) and deltas of 1 that
 *    compress to nothing, but its cache line moves between CPUs when threads allocate at once;
 *  - the TSC read with fences (25 ns in a VM here): no shared line, so it scales with CPUs, but it
 *    orders events across CPUs only when the kernel trusts it as its clocksource (synchronised).
 * With few CPUs the line has few places to move to, so the counter wins; with many, the TSC.
 * ALLOCPROF_CLOCK forces either, which the tests use to cover both. */
#define AP_TSC_MIN_CPUS 9

void ap_clock_init(void)
{
	int kind = ap_cfg.clock;
#if defined(__x86_64__)
	if (!kind) {
		char cs[64];
		long n = ap_sys_read_file("/sys/devices/system/clocksource/clocksource0/current_clocksource",
		                          cs, sizeof(cs));
		bool tsc_ok = n >= 3 && !strncmp(cs, "tsc", 3);
		kind = tsc_ok && sysconf(_SC_NPROCESSORS_ONLN) >= AP_TSC_MIN_CPUS ? AP_CLOCK_TSC : AP_CLOCK_COUNTER;
	}
#else
	kind = AP_CLOCK_COUNTER;
#endif
	ap_clock_kind = kind;
}

/* Cached: gettid is a system call, and the tid is needed for every chunk. */
static AP_TLS uint32_t tl_tid;

uint32_t ap_sys_tid(void)
{
	if (!tl_tid)
		tl_tid = (uint32_t)syscall(SYS_gettid);
	return tl_tid;
}

void ap_sys_reset_tid(void)
{
	tl_tid = 0;
}

uint64_t ap_sys_monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t ap_sys_realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- files ------------------------------------------------------------------------------------- */

int ap_sys_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

long ap_sys_read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t len = 0;
	while (len + 1 < size) {
		ssize_t n = read(fd, buf + len, size - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = 0;
	return (long)len;
}

static void program_name(char *out, size_t size)
{
	char comm[64];
	long n = ap_sys_read_file("/proc/self/comm", comm, sizeof(comm));
	if (n <= 0)
		comm[0] = 0;
	for (char *c = comm; *c; c++)
		if (*c == '\n' || *c == '/')
			*c = 0;
	ap_snprintf(out, size, "%s", comm[0] ? comm : "prog");
}

static void expand_pattern(const char *pattern, char *out, size_t size)
{
	char prog[64];
	program_name(prog, sizeof(prog));
	size_t o = 0;
	for (const char *p = pattern; *p && o + 1 < size; p++) {
		if (p[0] == '%' && (p[1] == 'p' || p[1] == 'e')) {
			char tmp[80];
			if (p[1] == 'p')
				ap_snprintf(tmp, sizeof(tmp), "%d", (int)getpid());
			else
				ap_snprintf(tmp, sizeof(tmp), "%s", prog);
			for (char *t = tmp; *t && o + 1 < size; t++)
				out[o++] = *t;
			p++;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = 0;
}

/* A high descriptor stays out of the way of programs that expect their own to be the lowest
 * free ones (dup2 over 0-2, "the next open returns 3"). Below the descriptor limit, which some
 * programs lower. */
#define AP_HIGH_FD 800

int ap_sys_move_high(int fd)
{
	struct rlimit rl;
	long floor = AP_HIGH_FD;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur - 16 < floor)
		floor = (long)rl.rlim_cur - 16;
	if (fd < 0 || floor <= 3 || fd >= floor)
		return fd;
	int high = fcntl(fd, F_DUPFD_CLOEXEC, (int)floor);
	if (high < 0)
		return fd;
	close(fd);
	return high;
}

void ap_sys_append_line(const char *path, const char *line)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	ap_sys_write_all(fd, line, strlen(line));
	close(fd);
}

int ap_sys_create_trace(const char *pattern, char *path_out, size_t path_size)
{
	/* Absolute, so that the file can be opened again by name after the program changed
	 * directory (see reopening in writer.c). */
	char base[4096], rel[4096];
	expand_pattern(pattern, rel, sizeof(rel));
	char cwd[2048];
	if (rel[0] != '/' && getcwd(cwd, sizeof(cwd)))
		ap_snprintf(base, sizeof(base), "%s/%s", cwd, rel);
	else
		ap_snprintf(base, sizeof(base), "%s", rel);
	for (int i = 0; i < 1000; i++) {
		if (i == 0)
			ap_snprintf(path_out, path_size, "%s", base);
		else
			ap_snprintf(path_out, path_size, "%s.%d", base, i);
		int fd = open(path_out, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0) {
			if (errno == EEXIST)
				continue;
			return -errno;
		}
		return ap_sys_move_high(fd);
	}
	return -EEXIST;
}
