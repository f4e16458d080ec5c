/*
 * lifecycle.c: the process around the allocations: start (constructor), fork, exec, the
 * program's first thread (pthread_create, for sampled mode's writer), and every way out (return
 * from main, exit from any thread, _exit/_Exit, abort).
 *
 * fork: the prepare handler takes every lock a round or an event needs, so that the child finds
 * them consistent; the child then forgets the parent's file, buffers, modules and stacks, and
 * starts its own trace (a new file named with its pid, a new writer thread). Nothing in the
 * child handler allocates through the program's allocator, so a child of a multi-threaded parent
 * that goes on with async-signal-safe calls only (and execs) is fine.
 *
 * vfork and posix_spawn run no fork handlers and share our memory until the exec: the child must
 * not write to the shim's state. Only _exit is likely there, and it checks the pid first.
 *
 * exec: LD_PRELOAD is inherited, so the new program loads the shim and opens its own file. With
 * ALLOCPROF_NO_CHILDREN the shim removes itself from LD_PRELOAD before main runs, in place (the
 * strings of the initial environment are writable; setenv would allocate and is not
 * thread-safe), and fork children stop tracing.
 *
 * Exit: on_exit gives the status of exit() and of a return from main (an EXIT record, which
 * `allocprof record` may append again; the last counts); _exit, _Exit and abort are interposed to flush before the process goes (exit() calls the real _exit directly, so the
 * destructor has already flushed by then). Fatal signals are not intercepted: installing handlers
 * would change what the program sees through sigaction; the writer ends a zstd frame every
 * 100 ms, so a crash or SIGKILL leaves everything up to the last round readable.
 */
#include "events.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

/* ---- fork ---------------------------------------------------------------------------------------- */

static void before_fork(void)
{
	ap_guard_enter(ap_hot.guard + 1);
	ap_modules_lock();
	ap_writer_lock();
	ap_events_lock_all();
}

static void after_fork_parent(void)
{
	ap_events_unlock_all();
	ap_writer_unlock();
	ap_modules_unlock();
	ap_guard_leave(ap_hot.guard - 1);
}

static void after_fork_child(void)
{
	int st = atomic_load(&ap_state);
	ap_sys_reset_tid();
	ap_events_forked_child();
	ap_sampler_forked_child();
	ap_modules_forked_child();
	ap_stacks_forked_child();
	ap_writer_forked_child();
	/* A child forked during exit (FINAL), or while the parent was not tracing, stays off. */
	bool trace = st == AP_STATE_ON && !ap_cfg.no_children;
	if (!(trace && ap_writer_start())) /* it sets AP_STATE_ON itself */
		atomic_store(&ap_state, AP_STATE_OFF);
	ap_guard_leave(ap_hot.guard - 1);
}

/* ---- exec: ALLOCPROF_NO_CHILDREN ------------------------------------------------------------------ */

static const char *base_name(const char *s, size_t len, size_t *blen)
{
	const char *b = s;
	for (size_t i = 0; i < len; i++)
		if (s[i] == '/')
			b = s + i + 1;
	*blen = len - (size_t)(b - s);
	return b;
}

/* Removes the shim's entries (by path, or by file name) from LD_PRELOAD in place. The loader
 * separates entries with colons or spaces; what remains is joined with colons. */
static void drop_self_from_preload(void)
{
	const char *self = ap_modules_self_path();
	size_t self_blen;
	const char *self_base = base_name(self, strlen(self), &self_blen);
	if (!self_blen)
		return;
	for (char **e = environ; e && *e; e++) {
		if (strncmp(*e, "LD_PRELOAD=", 11))
			continue;
		char *val = *e + 11, *out = val;
		const char *p = val;
		while (*p) {
			size_t n = strcspn(p, ": ");
			size_t blen;
			const char *b = base_name(p, n, &blen);
			bool mine = n && ((n == strlen(self) && !memcmp(p, self, n)) ||
			                  (blen == self_blen && !memcmp(b, self_base, blen)));
			if (n && !mine) {
				if (out != val)
					*out++ = ':';
				memmove(out, p, n);
				out += n;
			}
			p += n;
			while (*p == ':' || *p == ' ')
				p++;
		}
		*out = 0;
	}
}

/* ---- exit ----------------------------------------------------------------------------------------- */

/* The functions this file interposes, the next definitions (the C library's). */
static struct {
	void (*exit_)(int) __attribute__((noreturn));
	void (*Exit)(int) __attribute__((noreturn));
	void (*abort)(void) __attribute__((noreturn));
	int (*pthread_create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
} real;

/* Registered by our constructor, which runs before __libc_start_main registers the loader's
 * destructor call: so this runs after every destructor (ours wrote END), and adds an EXIT record
 * with the status. */
static void on_exit_status(int status, void *arg)
{
	(void)arg;
	ap_writer_exit_record(AP_END_EXIT, status & 0xff);
}

/* Flushes the trace before the process goes, if this process owns it and this thread is not in
 * the middle of the shim (a signal handler that exits from inside malloc). */
static void flush_at_end(int how, int status)
{
	if (atomic_load(&ap_trace_pid) != (int)getpid()) /* vfork child, or not tracing */
		return;
	if (ap_hot.guard || atomic_load(&ap_state) != AP_STATE_ON)
		return;
	ap_writer_set_end(how, status);
	ap_guard_enter(2);
	ap_writer_finish();
	ap_guard_leave(0);
}

#define AP_EXPORT __attribute__((visibility("default")))

AP_EXPORT __attribute__((noreturn)) void _exit(int status)
{
	flush_at_end(AP_END_EXIT, status & 0xff);
	if (!real.exit_)
		real.exit_ = (__typeof__(real.exit_))dlsym(RTLD_NEXT, "_exit");
	if (real.exit_)
		real.exit_(status);
	for (;;)
		syscall(SYS_exit_group, status);
}

AP_EXPORT __attribute__((noreturn)) void _Exit(int status)
{
	flush_at_end(AP_END_EXIT, status & 0xff);
	if (!real.Exit)
		real.Exit = (__typeof__(real.Exit))dlsym(RTLD_NEXT, "_Exit");
	if (real.Exit)
		real.Exit(status);
	for (;;)
		syscall(SYS_exit_group, status);
}

/* The trace says SIGABRT; should the program's SIGABRT handler not return (longjmp), later
 * events are still written, synchronously (state FINAL). */
AP_EXPORT __attribute__((noreturn)) void abort(void)
{
	flush_at_end(AP_END_SIGNAL, SIGABRT);
	if (!real.abort)
		real.abort = (__typeof__(real.abort))dlsym(RTLD_NEXT, "abort");
	if (real.abort)
		real.abort();
	for (;;) {
		signal(SIGABRT, SIG_DFL);
		raise(SIGABRT);
	}
}

/* ---- threads -------------------------------------------------------------------------------------- */

/* Only to start the writer thread where sampled mode went without one (writer.c): just before
 * the program's first thread, from the program's own call. */
AP_EXPORT int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*fn)(void *),
                             void *arg)
{
	if (!real.pthread_create) {
		real.pthread_create = (__typeof__(real.pthread_create))dlsym(RTLD_NEXT, "pthread_create");
		if (!real.pthread_create)
			return EAGAIN;
	}
	if (AP_UNLIKELY(atomic_load_explicit(&ap_writer_deferred, memory_order_relaxed)) &&
	    !ap_hot.guard) {
		int saved_errno = errno;
		ap_guard_enter(2);
		ap_writer_thread_needed();
		ap_guard_leave(0);
		errno = saved_errno;
	}
	return real.pthread_create(thread, attr, fn, arg);
}

/* ---- start and end -------------------------------------------------------------------------------- */

__attribute__((constructor(101))) static void ap_constructor(void)
{
	if (!ap_hooks_ready())
		return;
	int saved = ap_guard_enter(2);
	ap_early_init();
	/* Resolved now, while nothing is in a hurry: _exit may be called from a vfork child. */
	real.exit_ = (__typeof__(real.exit_))dlsym(RTLD_NEXT, "_exit");
	real.Exit = (__typeof__(real.Exit))dlsym(RTLD_NEXT, "_Exit");
	real.abort = (__typeof__(real.abort))dlsym(RTLD_NEXT, "abort");
	if (ap_cfg.no_children)
		drop_self_from_preload();
	pthread_atfork(before_fork, after_fork_parent, after_fork_child);
	bool ok = ap_writer_start(); /* sets AP_STATE_ON itself */
	if (ok)
		on_exit(on_exit_status, NULL);
	else
		atomic_store(&ap_state, AP_STATE_OFF);
	ap_guard_leave(saved);
}

__attribute__((destructor(101))) static void ap_destructor(void)
{
	if (atomic_load(&ap_state) != AP_STATE_ON || atomic_load(&ap_trace_pid) != (int)getpid())
		return;
	int saved = ap_guard_enter(2);
	ap_writer_finish();
	ap_guard_leave(saved);
}
