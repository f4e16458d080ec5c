/*
 * shim.h: the internal contract between the files of liballocprof.so.
 *
 * The shim lives inside someone else's process. Rules that hold for every function here:
 *  - no allocation through the traced program's allocator: memory comes from mmap (ap_sys_*);
 *  - no stdio; messages go through ap_log, which formats into a stack buffer and write(2)s;
 *  - thread-local state uses the initial-exec TLS model (the general-dynamic model may call
 *    __tls_get_addr, which may allocate, from inside malloc);
 *  - the hot path (one allocation or free) takes no lock.
 *
 * Files, in the order data flows: hooks.c (the interposed functions, bootstrap, re-entrancy
 * guard; lifecycle.c: start, fork, exec, exit) -> stacks.c (unwinding, stack table) -> events.c
 * (per-thread buffers, event encoding)
 * -> writer.c (writer thread, zstd, the file); config.c, modules.c and sys.c serve them.
 */
#ifndef AP_SHIM_H
#define AP_SHIM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "allocprof/trace.h"

#define AP_TLS __thread __attribute__((tls_model("initial-exec")))
#define AP_LIKELY(x) __builtin_expect(!!(x), 1)
#define AP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define AP_HIDDEN __attribute__((visibility("hidden")))

/* ---- config.c: the options, one table, read once from the environment ---------------------- */

typedef struct ap_config {
	char output[4096];  /* ALLOCPROF_OUTPUT, a path; %p = pid, %e = program name */
	uint32_t depth;     /* ALLOCPROF_DEPTH: frames kept per stack */
	int clock;          /* ALLOCPROF_CLOCK: enum ap_clock, 0 = choose */
	bool quiet;         /* ALLOCPROF_QUIET */
	bool verbose;       /* ALLOCPROF_VERBOSE: print the effective options */
	bool stack_cache;   /* ALLOCPROF_STACK_CACHE: see stackcache.c */
	uint64_t sample_bytes; /* ALLOCPROF_SAMPLE_BYTES: mean bytes between samples, 0 = all */
	uint64_t seed;      /* ALLOCPROF_SEED: the sampler's seed (default: time, pid) */
	bool seed_given;
	bool no_children;   /* ALLOCPROF_NO_CHILDREN: trace this process only (not fork/exec) */
	char run_log[4096]; /* ALLOCPROF_RUN_LOG: file to append "pid ppid path" to (record sets it) */
} ap_config;

extern ap_config ap_cfg AP_HIDDEN;
/* Reads the environment into ap_cfg; bad values warn once each and keep the default. */
void ap_config_init(void) AP_HIDDEN;

/* ---- sys.c: the OS --------------------------------------------------------------------------- */

/* Formats (%s %d %u %x %lu %lx %llu %zu %p %%) into a stack buffer and writes one line to
 * stderr, prefixed "allocprof: ". Async-signal-safe. Silent when ap_cfg.quiet. */
void ap_log(const char *fmt, ...) __attribute__((format(printf, 1, 2))) AP_HIDDEN;
/* Like ap_log but only the first time for a given flag. */
#define AP_WARN_ONCE(...)                                                                          \
	do {                                                                                       \
		static atomic_bool ap_warned_;                                                     \
		if (!atomic_exchange(&ap_warned_, true))                                           \
			ap_log(__VA_ARGS__);                                                       \
	} while (0)
int ap_snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4))) AP_HIDDEN;

/* Page-granular memory straight from mmap; counted in ap_sys_mapped. NULL on failure. */
void *ap_sys_map(size_t size) AP_HIDDEN;
void ap_sys_unmap(void *p, size_t size) AP_HIDDEN;
/* Small, never-freed allocations for the shim's long-lived state (16-byte aligned). */
void *ap_sys_alloc(size_t size) AP_HIDDEN;
extern atomic_size_t ap_sys_mapped AP_HIDDEN;

uint32_t ap_sys_tid(void) AP_HIDDEN;
/* In a fork child, whose cached tid is the parent thread's. */
void ap_sys_reset_tid(void) AP_HIDDEN;
uint64_t ap_sys_monotonic_ns(void) AP_HIDDEN;
uint64_t ap_sys_realtime_ns(void) AP_HIDDEN;
/* Writes all of buf, retrying on EINTR and short writes. 0, or -errno. */
int ap_sys_write_all(int fd, const void *buf, size_t len) AP_HIDDEN;
/* Expands %p/%e in the pattern and creates the file exclusively (O_EXCL|O_NOFOLLOW, 0600),
 * adding ".N" when the name is taken; moves it to a high close-on-exec descriptor. Returns the
 * descriptor and stores the name in path_out, or -errno. */
int ap_sys_create_trace(const char *pattern, char *path_out, size_t path_size) AP_HIDDEN;
/* Moves fd to a high close-on-exec descriptor (closing fd); returns the new one, or fd itself
 * when that is not possible. */
int ap_sys_move_high(int fd) AP_HIDDEN;
/* Reads a small file (e.g. under /proc) into buf, NUL-terminated. Bytes read, or -errno. */
long ap_sys_read_file(const char *path, char *buf, size_t size) AP_HIDDEN;
/* Appends one line to a file (opened and closed again: O_APPEND makes concurrent lines whole). */
void ap_sys_append_line(const char *path, const char *line) AP_HIDDEN;

/* ---- stamps: the cross-thread order (see "Stamps" in allocprof/trace.h) --------------------- */

extern int ap_clock_kind AP_HIDDEN; /* enum ap_clock, fixed before the first event */
extern atomic_uint_fast64_t ap_clock_counter AP_HIDDEN;
void ap_clock_init(void) AP_HIDDEN;

/* rdtscp waits for every earlier instruction and load; the lfence keeps later ones (the real
 * free's stores) from starting before the counter is read. Both sides of a hand-over of a block
 * between threads are therefore ordered by the stamps. */
static inline uint64_t ap_stamp(void)
{
#if defined(__x86_64__)
	if (AP_LIKELY(ap_clock_kind == AP_CLOCK_TSC)) {
		uint32_t lo, hi, aux;
		__asm__ volatile("rdtscp\n\tlfence" : "=a"(lo), "=d"(hi), "=c"(aux)::"memory");
		return ((uint64_t)hi << 32) | lo;
	}
#endif
	return atomic_fetch_add(&ap_clock_counter, 1) + 1;
}

/* ---- sampler.c: which allocations are recorded in sampled mode --------------------------------- */

/* Should an allocation of size bytes be recorded (sampled mode; the hooks' inline countdown
 * test failed)? Arms the countdown first if it is not. */
bool ap_sample_slow(size_t size) AP_HIDDEN;
/* The live blocks that were sampled (sampled mode only). */
bool ap_sampled_add(const void *p) AP_HIDDEN;
bool ap_sampled_contains(const void *p) AP_HIDDEN;
bool ap_sampled_remove(const void *p) AP_HIDDEN;
void ap_sampler_forked_child(void) AP_HIDDEN;

/* ---- stacks.c: capture and deduplicate call stacks ------------------------------------------ */

void ap_stacks_init(void) AP_HIDDEN;
/* Captures the caller's stack (dropping the shim's frames) and returns its id, writing a STACK
 * record the first time a stack is seen. 0 if no stack could be captured. */
uint32_t ap_stacks_capture(void) AP_HIDDEN;
extern atomic_uint ap_generation AP_HIDDEN;
extern atomic_uint ap_stacks_count AP_HIDDEN;
/* In a fork child, which writes a new file: forget every stack, so that each is defined again
 * there, with ids from 1. (lifecycle.c has a weak no-op fallback; the generation bump done by
 * ap_modules_forked_child already keeps old ids from being used in the child.) */
void ap_stacks_forked_child(void) AP_HIDDEN;

/* ---- modules.c: the loaded ELF objects ------------------------------------------------------- */

/* Writes MODULE/UNLOAD records for what changed since the last call (all modules the first
 * time). Cheap when nothing changed. Serialised internally. */
void ap_modules_scan(bool force) AP_HIDDEN;
/* True if addr lies in the shim's own code. */
bool ap_modules_in_shim(uintptr_t addr) AP_HIDDEN;
void ap_modules_init_self(void) AP_HIDDEN;
/* The shim's own file name, as the loader has it (for removing it from LD_PRELOAD). */
const char *ap_modules_self_path(void) AP_HIDDEN;
/* Held across fork; in the child, every module is reported again (new file), in a new
 * generation, so that stacks captured in the child never reuse the parent's ids. */
void ap_modules_lock(void) AP_HIDDEN;
void ap_modules_unlock(void) AP_HIDDEN;
void ap_modules_forked_child(void) AP_HIDDEN;

/* ---- events.c: per-thread buffers and the meta stream ---------------------------------------- */

void ap_event_alloc(int api, const void *p, size_t size, uint32_t stack) AP_HIDDEN;
/* Called before the real free (or realloc) runs: see "Stamps" in allocprof/trace.h. */
void ap_event_free(int api, const void *p) AP_HIDDEN;
/* The realloc whose FREE was just written failed: p is still allocated. */
void ap_event_unfree(const void *p) AP_HIDDEN;
/* Counts an event that could not be recorded (re-entered from a signal handler). */
void ap_event_lost(bool is_free) AP_HIDDEN;
/* Counts every call, recorded or not, for the TOTALS record (in ap_hot; gives the thread a
 * record first if it has none). */
void ap_count_alloc(size_t size) AP_HIDDEN;
void ap_count_free(void) AP_HIDDEN;
/* Whether this thread has a record, so that what it counts in ap_hot is summed. */
bool ap_events_attached(void) AP_HIDDEN;
/* This process's calls so far, all threads: allocations, bytes, frees (the TOTALS record). */
void ap_events_totals(uint64_t out[3]) AP_HIDDEN;

/* Appends a complete record (kind + payload) to the meta stream: STACK, MODULE, UNLOAD,
 * THREAD records, which the writer puts before the events of the same round. */
/* false when out of memory: the record was not written. */
bool ap_meta_record(int kind, const uint8_t *payload, size_t len) AP_HIDDEN;

/* ---- writer.c: the file ---------------------------------------------------------------------- */

/* Opens the trace, writes the header, sets AP_STATE_ON and starts the writer thread. false:
 * tracing stays off (the caller sets AP_STATE_OFF).
 * Also in a fork child, after ap_writer_forked_child. */
bool ap_writer_start(void) AP_HIDDEN;
/* How the process ends (enum ap_end_how, status), for the END record; the last word counts. */
void ap_writer_set_end(int how, int status) AP_HIDDEN;
/* Writes an EXIT record now (exit() or return from main: the status is known only from an
 * on_exit handler, which runs after the destructors). */
void ap_writer_exit_record(int how, int status) AP_HIDDEN;
/* Final flush at exit: stops the writer thread, writes everything and the END record; events
 * after this are written synchronously. Only the first call does anything. */
void ap_writer_finish(void) AP_HIDDEN;
/* After fork in the child: the parent's file and writer are not ours; forgets them. */
void ap_writer_forked_child(void) AP_HIDDEN;
void ap_writer_wake(void) AP_HIDDEN;
/* Sampled mode while the process has one thread: no writer thread (see writer.c). */
extern atomic_bool ap_writer_deferred AP_HIDDEN;
/* Deferred: a round, from the calling thread, if one is due. Called after an event is recorded,
 * with the thread's buffer released. */
void ap_writer_poll(void) AP_HIDDEN;
/* Deferred: the program is about to create a thread; start the writer thread now. */
void ap_writer_thread_needed(void) AP_HIDDEN;
/* The pid whose trace this is (0 before the file is open): a vfork child shares our memory and
 * must not touch it. */
extern atomic_int ap_trace_pid AP_HIDDEN;

/* ---- hooks.c, lifecycle.c --------------------------------------------------------------------- */

/* Resolves the real allocator if needed; false only inside dlsym while resolving. */
bool ap_hooks_ready(void) AP_HIDDEN;
/* Options, clock, stacks, buffers: what must exist before the first event. Idempotent. */
void ap_early_init(void) AP_HIDDEN;

/* Global state: OFF until the constructor has opened the file; events before it are buffered. */
enum { AP_STATE_BOOT = 0, AP_STATE_ON = 1, AP_STATE_OFF = 2, AP_STATE_FINAL = 3 };
extern atomic_int ap_state AP_HIDDEN;
/* What every hook touches, in one initial-exec TLS block: a hook reaches all of it from one GOT
 * load of the block's offset. */
struct ap_hot {
	/* >0 while this thread runs shim code: nested allocator calls pass straight through. Set
	 * and cleared only by ap_guard_enter and ap_guard_leave. */
	int guard;
	/* Sampled mode: bytes to go before this thread's next sample; at or below 0, not armed
	 * (sampler.h). The fast paths test only this word, so while the guard is set it reads 0 and
	 * the countdown waits in parked, where the code under the guard reads and re-arms it. */
	uint64_t sample_left;
	/* Every call of this thread, recorded or not, since it attached (the TOTALS record). The
	 * owner adds: the general path with ap_hot_add under the guard, the fast paths with one
	 * addq (hooks.c); the writer reads them (events.c). */
	uint64_t allocs, bytes, frees;
	uint64_t parked;
};
extern AP_TLS struct ap_hot ap_hot AP_HIDDEN;

/* Sets the guard to v (> 0) and returns what it was, for ap_guard_leave. Setting it from 0 parks
 * the countdown: a hook called meanwhile (by a library the shim calls, or by a signal handler)
 * finds it not armed, takes the general path and sees the guard there. The guard is set before
 * the countdown is parked and cleared after it is restored, so a signal handler that lands in
 * between finds either a guard or a countdown it may take from: the program's own call, counted
 * as such (at worst the countdown loses that take, which only moves the next sample). */
static inline int ap_guard_enter(int v)
{
	int was = ap_hot.guard;
	ap_hot.guard = v;
	atomic_signal_fence(memory_order_seq_cst);
	if (!was) {
		ap_hot.parked = ap_hot.sample_left;
		ap_hot.sample_left = 0;
	}
	atomic_signal_fence(memory_order_seq_cst);
	return was;
}

static inline void ap_guard_leave(int was)
{
	atomic_signal_fence(memory_order_seq_cst);
	if (!was)
		ap_hot.sample_left = ap_hot.parked;
	atomic_signal_fence(memory_order_seq_cst);
	ap_hot.guard = was;
}

/* A plain load and store, not a locked add: only the owner writes, and its own signal handlers
 * stay off these counters while the guard is set (the countdown is parked, so the fast paths
 * take the slow one); relaxed so that the writer's concurrent read is not a data race. */
static inline void ap_hot_add(uint64_t *c, uint64_t by)
{
	__atomic_store_n(c, *c + by, __ATOMIC_RELAXED);
}

#endif
