/*
 * hooks.c: the interposed malloc family (and jemalloc's extended API when the real allocator has
 * it), how the shim finds the real allocator, and dlclose. The process lifecycle (start, fork,
 * exec, exit) is in lifecycle.c.
 *
 * Bootstrap: the first allocation can come before our constructor, from the loader or from
 * another library's constructor, and dlsym(RTLD_NEXT, ...) itself calls calloc while we look up
 * the real functions. Calls made while resolving are served from a static pool and recognised
 * when freed; events before the constructor are buffered and written once the file is open.
 *
 * Re-entrancy: ap_hot.guard is set for the whole of a general-path hook. A nested call (a signal
 * handler that allocates while this thread is inside the shim, or a library we call that
 * allocates) goes straight to the real allocator; from a hook it is counted as lost, so the
 * analyzer can say so. Sampled mode's fast paths set no guard (see below).
 */
#include "events.h"
#include "sampler.h"

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

atomic_int ap_state = AP_STATE_BOOT;
AP_TLS struct ap_hot ap_hot;

static struct {
	void *(*malloc)(size_t);
	void *(*calloc)(size_t, size_t);
	void *(*realloc)(void *, size_t);
	void (*free)(void *);
	int (*posix_memalign)(void **, size_t, size_t);
	void *(*aligned_alloc)(size_t, size_t);
	void *(*memalign)(size_t, size_t);
	void *(*valloc)(size_t);
	void *(*pvalloc)(size_t);
	size_t (*malloc_usable_size)(void *);
	int (*dlclose)(void *);
	int (*pipe2)(int *, int);
	/* jemalloc's extended API: NULL when the next allocator does not have it. */
	void *(*mallocx)(size_t, int);
	void *(*rallocx)(void *, size_t, int);
	size_t (*xallocx)(void *, size_t, size_t, int);
	void (*dallocx)(void *, int);
	void (*sdallocx)(void *, size_t, int);
} real;

/* ---- bootstrap --------------------------------------------------------------------------------- */

/* What dlsym allocates while we resolve (a dlerror buffer or two). */
static char boot_pool[64 * 1024] __attribute__((aligned(64)));
static size_t boot_used;
/* volatile: dlsym may call back into malloc (its error path allocates), but the compiler cannot
 * see that and would drop the store of true before the calls. */
static AP_TLS volatile bool tl_resolving;
static atomic_int resolve_state; /* 0 not yet, 1 in progress, 2 done */

static bool in_boot_pool(const void *p)
{
	return (const char *)p >= boot_pool && (const char *)p < boot_pool + sizeof(boot_pool);
}

static void *boot_alloc(size_t size, size_t align)
{
	if (align < 16)
		align = 16;
	size_t start = (boot_used + sizeof(size_t) + align - 1) & ~(align - 1);
	if (start + size > sizeof(boot_pool))
		return NULL;
	((size_t *)(boot_pool + start))[-1] = size;
	boot_used = start + size;
	/* Sampled mode's fast free checks only the filter: this block's free must not get past
	 * it to the real free. */
	ap_sampled_pin(boot_pool + start);
	return boot_pool + start;
}

static size_t boot_size(const void *p)
{
	return ((const size_t *)p)[-1];
}

static void resolve(void)
{
	int expect = 0;
	if (!atomic_compare_exchange_strong(&resolve_state, &expect, 1)) {
		while (atomic_load(&resolve_state) != 2) /* another thread is resolving */
			sched_yield();
		return;
	}
	tl_resolving = true;
#define R(name) real.name = (__typeof__(real.name))dlsym(RTLD_NEXT, #name)
	R(malloc);
	R(calloc);
	R(realloc);
	R(free);
	R(posix_memalign);
	R(aligned_alloc);
	R(memalign);
	R(valloc);
	R(pvalloc);
	R(malloc_usable_size);
	R(dlclose);
	R(pipe2);
	R(mallocx);
	R(rallocx);
	R(xallocx);
	R(dallocx);
	R(sdallocx);
#undef R
	tl_resolving = false;
	if (!real.malloc || !real.free || !real.calloc || !real.realloc) {
		static const char msg[] = "allocprof: cannot find the real malloc; aborting\n";
		write(2, msg, sizeof(msg) - 1);
		abort();
	}
	atomic_store(&resolve_state, 2);
}

/* Everything that must happen before the first event can be recorded; the first allocation of
 * the process may be the one that triggers it. */
void ap_early_init(void)
{
	static atomic_int done;
	int expect = 0;
	if (!atomic_compare_exchange_strong(&done, &expect, 1)) {
		while (atomic_load(&done) != 2)
			sched_yield();
		return;
	}
	ap_config_init();
	ap_clock_init();
	ap_modules_init_self();
	ap_stacks_init();
	ap_events_init();
	atomic_store(&done, 2);
}

static inline bool ready(void)
{
	if (AP_UNLIKELY(atomic_load_explicit(&resolve_state, memory_order_acquire) != 2)) {
		if (tl_resolving)
			return false;
		resolve();
	}
	return true;
}

bool ap_hooks_ready(void)
{
	return ready();
}

/* Should this call be recorded? Sets the guard when it returns true. */
static inline bool enter(bool is_free)
{
	if (AP_UNLIKELY(ap_hot.guard)) {
		if (ap_hot.guard == 1)
			ap_event_lost(is_free);
		return false;
	}
	int st = atomic_load_explicit(&ap_state, memory_order_relaxed);
	if (AP_UNLIKELY(st == AP_STATE_OFF)) {
		/* Off for good: no more fast paths on this thread (they would count for nobody). */
		ap_hot.sample_left = 0;
		return false;
	}
	/* A signal handler on this thread sees the guard set before any of the shim's work and
	 * cleared only after all of it (ap_guard_enter and ap_guard_leave hold compiler barriers). */
	ap_guard_enter(1);
	if (AP_UNLIKELY(st == AP_STATE_BOOT))
		ap_early_init();
	return true;
}

static inline void leave(void)
{
	ap_guard_leave(0);
}

/* A sampled allocation (or any, in full mode): unwound and written. */
static __attribute__((noinline)) void record_alloc_event(int api, void *p, size_t size)
{
	if (ap_cfg.sample_bytes && !ap_sampled_add(p))
		return; /* out of memory for the set: better unsampled than a free never written */
	ap_event_alloc(api, p, size, ap_stacks_capture());
}

static inline void record_alloc(int api, void *p, size_t size)
{
	ap_count_alloc(size);
	if (ap_cfg.sample_bytes && !ap_sample_slow(size))
		return;
	record_alloc_event(api, p, size);
}

/* Writes the free of p if p's allocation was recorded; false if it was not (sampled mode). */
static inline __attribute__((always_inline)) bool record_free(int api, void *p)
{
	if (ap_cfg.sample_bytes) {
		/* A thread that only frees (a consumer) would otherwise never arm its fast paths. */
		if (AP_UNLIKELY(!ap_sample_armed()))
			ap_sample_arm();
		if (!(ap_sampled_maybe(p) && ap_sampled_contains(p) && ap_sampled_remove(p)))
			return false;
	}
	ap_event_free(api, p); /* stamped before the real call: see allocprof/trace.h */
	return true;
}

/* ---- the interposed functions ------------------------------------------------------------------ */

#define AP_EXPORT __attribute__((visibility("default")))

/*
 * Sampled mode's fast paths (below): an allocation that is not sampled (its weight is below the
 * thread's countdown) and a free of a block that was not (its filter bucket is 0) are only
 * counted; everything else takes the general path, a tail call away. The countdown
 * (ap_hot.sample_left, positive when armed) is armed only in sampled mode, once this thread has a
 * record (its counters are summed) and the last general-path call found tracing on.
 */
static __attribute__((noinline)) void *malloc_slow(size_t size)
{
	if (AP_UNLIKELY(!ready()))
		return boot_alloc(size, 16);
	if (!enter(false))
		return real.malloc(size);
	void *p = real.malloc(size);
	if (p)
		record_alloc(AP_API_MALLOC, p, size);
	leave();
	return p;
}

/*
 * On x86-64 the fast paths set no guard: everything they change is changed by one instruction
 * that a signal handler on this thread cannot split (the handler runs before or after it, and
 * takes its own path through the same words). The countdown is taken by one subq and the sign
 * of the result decides (jle: the allocation reaches the countdown, so it is sampled, or the
 * countdown was not armed; jb: a weight of 2^63 or more, negative as a signed word, borrowed);
 * the take is then given back and the general path decides afresh
 * under the guard. The counters are one addq each. The guard is not tested: setting it parks
 * the countdown (ap_guard_enter), so a shim-internal call finds it not armed and takes the
 * general path, and the shim's own allocations are never counted as the program's.
 *
 * Each fast path reads the TLS block's offset from the GOT once, counts, and then tail-calls the
 * real function: no frame, no register saved, nothing after the call. The price is that a
 * fast-path allocation is counted before it is known to succeed. Only one smaller than the
 * thread's countdown takes the fast path (at most about 37 times the mean interval, 19 MiB at
 * 512 KiB: see draw() in sampler.c), so the
 * totals count a failed call only when the process is out of memory; larger requests, the ones
 * that fail for their size, take the general path, which counts successes only. Elsewhere the
 * exported functions take the general path, which is exact, only slower.
 */
#if defined(__x86_64__)
#define AP_FAST_PATHS 1

/* Gives w back to the countdown (the take crossed it). */
static inline __attribute__((always_inline)) void give_back(uint64_t w)
{
	__asm__ volatile("movq ap_hot@gottpoff(%%rip), %%rax\n\taddq %0, %%fs:%c1(%%rax)"
	                 : : "r"(w), "i"(offsetof(struct ap_hot, sample_left)) : "rax", "memory", "cc");
}

/* An allocation of weight w and size bytes, on the fast path: true when it is counted (and not
 * sampled), false (nothing changed) when the general path must take it: the take reached the
 * countdown, or the countdown is not armed (which includes the guard being set). */
static inline __attribute__((always_inline)) bool alloc_take(uint64_t w, uint64_t bytes)
{
	__asm__ goto("movq ap_hot@gottpoff(%%rip), %%rax\n\t"
	             "subq %0, %%fs:%c2(%%rax)\n\t"
	             "jle %l[crossed]\n\t"
	             "jb %l[crossed]\n\t"
	             "addq $1, %%fs:%c3(%%rax)\n\t"
	             "addq %1, %%fs:%c4(%%rax)"
	             : : "r"(w), "r"(bytes), "i"(offsetof(struct ap_hot, sample_left)),
	                 "i"(offsetof(struct ap_hot, allocs)), "i"(offsetof(struct ap_hot, bytes))
	             : "rax", "memory", "cc"
	             : crossed);
	return true;
crossed:
	give_back(w);
	return false;
}

/* A free on the fast path: true when it is counted, false when the general path must take it
 * (not armed, or the block's filter bucket is not 0: it may have been sampled). */
static inline __attribute__((always_inline)) bool free_take(const void *p)
{
	const _Atomic uint8_t *bucket = &ap_sampled_filter[ap_filter_slot(p)];
	__asm__ goto("movq ap_hot@gottpoff(%%rip), %%rax\n\t"
	             "cmpq $0, %%fs:%c1(%%rax)\n\t"
	             "jle %l[slow]\n\t"
	             "cmpb $0, (%0)\n\t"
	             "jne %l[slow]\n\t"
	             "addq $1, %%fs:%c2(%%rax)"
	             : : "r"(bucket), "i"(offsetof(struct ap_hot, sample_left)),
	                 "i"(offsetof(struct ap_hot, frees))
	             : "rax", "memory", "cc"
	             : slow);
	return true;
slow:
	return false;
}

/* realloc(old, size), old != NULL and size != 0, on the fast path: a free of an unsampled block
 * and an unsampled allocation, counted as both; false (nothing changed) otherwise. */
static inline __attribute__((always_inline)) bool realloc_take(const void *old, uint64_t size)
{
	const _Atomic uint8_t *bucket = &ap_sampled_filter[ap_filter_slot(old)];
	__asm__ goto("movq ap_hot@gottpoff(%%rip), %%rax\n\t"
	             "cmpb $0, (%0)\n\t"
	             "jne %l[busy]\n\t"
	             "subq %1, %%fs:%c2(%%rax)\n\t"
	             "jle %l[crossed]\n\t"
	             "jb %l[crossed]\n\t"
	             "addq $1, %%fs:%c3(%%rax)\n\t"
	             "addq %1, %%fs:%c4(%%rax)\n\t"
	             "addq $1, %%fs:%c5(%%rax)"
	             : : "r"(bucket), "r"(size), "i"(offsetof(struct ap_hot, sample_left)),
	                 "i"(offsetof(struct ap_hot, allocs)), "i"(offsetof(struct ap_hot, bytes)),
	                 "i"(offsetof(struct ap_hot, frees))
	             : "rax", "memory", "cc"
	             : busy, crossed);
	return true;
crossed:
	give_back(size);
busy:
	return false;
}
#else
#define AP_FAST_PATHS 0
#endif

/* Only the tests here, and both ways a tail call. */
AP_EXPORT void *malloc(size_t size)
{
#if AP_FAST_PATHS
	if (AP_LIKELY(alloc_take(ap_sample_weight(size), size)))
		return real.malloc(size);
#endif
	return malloc_slow(size);
}

static __attribute__((noinline)) void *calloc_slow(size_t n, size_t size)
{
	if (AP_UNLIKELY(!ready())) {
		size_t total;
		if (__builtin_mul_overflow(n, size, &total))
			return NULL;
		return boot_alloc(total, 16); /* static memory is zeroed */
	}
	if (!enter(false))
		return real.calloc(n, size);
	void *p = real.calloc(n, size);
	if (p)
		record_alloc(AP_API_CALLOC, p, n * size);
	leave();
	return p;
}

AP_EXPORT void *calloc(size_t n, size_t size)
{
#if AP_FAST_PATHS
	/* n * size is what is recorded; an overflow fails in the real calloc: the general path. */
	size_t total;
	if (AP_LIKELY(!__builtin_mul_overflow(n, size, &total) &&
	              alloc_take(ap_sample_weight(total), total)))
		return real.calloc(n, size);
#endif
	return calloc_slow(n, size);
}

static __attribute__((noinline)) void free_slow(void *p)
{
	if (in_boot_pool(p))
		return;
	if (AP_UNLIKELY(!ready()))
		return; /* only inside dlsym while resolving, and only for pool blocks */
	if (!enter(true)) {
		real.free(p);
		return;
	}
	ap_count_free();
	record_free(AP_API_FREE, p);
	real.free(p);
	leave();
}

AP_EXPORT void free(void *p)
{
	if (!p)
		return;
#if AP_FAST_PATHS
	/* An armed countdown means sampled mode with a record to count into; a block whose filter
	 * bucket is 0 was not sampled (bootstrap-pool blocks are pinned, so they go the general
	 * way). Counted first, so that the real free is a tail call: a free cannot fail. */
	if (AP_LIKELY(free_take(p))) {
		real.free(p);
		return;
	}
#endif
	free_slow(p);
}

static void *do_realloc(int api, void *old, size_t n, size_t size)
{
	size_t total;
	bool overflow = __builtin_mul_overflow(n, size, &total);
	if (AP_UNLIKELY(in_boot_pool(old))) {
		/* A block from the bootstrap pool moves to the real allocator. */
		if (overflow)
			return errno = ENOMEM, NULL;
		void *p = malloc(total);
		if (p)
			memcpy(p, old, boot_size(old) < total ? boot_size(old) : total);
		return p;
	}
	bool rec = enter(old != NULL);
	bool freed = rec && old && record_free(api, old);
	/* reallocarray is done here rather than by libc's, which calls realloc through the PLT,
	 * that is, us again. */
	void *p = overflow ? (errno = ENOMEM, NULL) : real.realloc(old, total);
	if (rec) {
		if (p) {
			if (old)
				ap_count_free();
			record_alloc(api, p, total);
		} else if (old && (overflow || total != 0)) {
			/* Failed: the old block is untouched, as if nothing had happened. */
			if (freed) {
				if (ap_cfg.sample_bytes)
					ap_sampled_add(old);
				ap_event_unfree(old);
			}
		} else if (old) {
			ap_count_free(); /* realloc(p, 0) freed p */
		}
		leave();
	}
	return p;
}

static __attribute__((noinline)) void *realloc_slow(void *old, size_t size)
{
	if (AP_UNLIKELY(!ready())) { /* only the resolving thread, inside dlsym */
		void *p = boot_alloc(size, 16);
		if (p && old)
			memcpy(p, old, boot_size(old) < size ? boot_size(old) : size);
		return p;
	}
	return do_realloc(AP_API_REALLOC, old, 1, size);
}

AP_EXPORT void *realloc(void *old, size_t size)
{
#if AP_FAST_PATHS
	/* An armed countdown implies the real functions are resolved. realloc(p, 0), which frees,
	 * takes the general path. */
	if (AP_LIKELY(size != 0 && (old ? realloc_take(old, size) : alloc_take(size, size))))
		return real.realloc(old, size);
#endif
	return realloc_slow(old, size);
}

AP_EXPORT void *reallocarray(void *old, size_t n, size_t size)
{
	if (AP_UNLIKELY(!ready()))
		return NULL;
	return do_realloc(AP_API_REALLOCARRAY, old, n, size);
}

AP_EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
	if (AP_UNLIKELY(!ready())) {
		void *p = boot_alloc(size, align);
		if (!p)
			return ENOMEM;
		*out = p;
		return 0;
	}
	if (!enter(false))
		return real.posix_memalign(out, align, size);
	int err = real.posix_memalign(out, align, size);
	if (!err)
		record_alloc(AP_API_POSIX_MEMALIGN, *out, size);
	leave();
	return err;
}

#define AP_ALIGNED_HOOK(name, API, params, args, size_expr)                                        \
	AP_EXPORT void *name params                                                                \
	{                                                                                          \
		if (AP_UNLIKELY(!ready()))                                                         \
			return NULL;                                                               \
		if (!enter(false))                                                                 \
			return real.name args;                                                     \
		void *p = real.name args;                                                          \
		if (p)                                                                             \
			record_alloc(API, p, size_expr);                                           \
		leave();                                                                           \
		return p;                                                                          \
	}
AP_ALIGNED_HOOK(aligned_alloc, AP_API_ALIGNED_ALLOC, (size_t align, size_t size), (align, size), size)
AP_ALIGNED_HOOK(memalign, AP_API_MEMALIGN, (size_t align, size_t size), (align, size), size)
AP_ALIGNED_HOOK(valloc, AP_API_VALLOC, (size_t size), (size), size)
AP_ALIGNED_HOOK(pvalloc, AP_API_PVALLOC, (size_t size), (size), size)
#undef AP_ALIGNED_HOOK

AP_EXPORT size_t malloc_usable_size(void *p)
{
	if (!p)
		return 0;
	if (in_boot_pool(p))
		return boot_size(p);
	if (AP_UNLIKELY(!ready()) || !real.malloc_usable_size)
		return 0;
	return real.malloc_usable_size(p);
}

/* dlclose: a library that goes away must not lend its name to the next one loaded at its
 * addresses, so a new generation starts here (stacks.c records new modules itself, when a stack
 * runs through one). dlopen is deliberately not interposed: glibc resolves a dlopen'ed name with
 * the caller's RUNPATH and $ORIGIN, and the caller would become the shim. */
AP_EXPORT int dlclose(void *h)
{
	if (!ready() || !real.dlclose)
		return -1;
	int r = real.dlclose(h);
	if (!ap_hot.guard && atomic_load(&ap_state) != AP_STATE_OFF) {
		ap_guard_enter(2);
		ap_modules_scan(false);
		ap_guard_leave(0);
	}
	return r;
}

/* pipe2: libunwind opens a pipe when it starts (it writes to it to test whether an address is
 * readable). Created from inside the shim, it would take the program's lowest free descriptors
 * (the program's next open() would return 5 instead of 3), and a program that closed and reused
 * them would get libunwind's bytes in its own files. So a pipe made while this thread is inside
 * the shim goes to high close-on-exec descriptors; the program's own calls pass straight through. */
AP_EXPORT int pipe2(int fds[2], int flags)
{
	if (!ready() || !real.pipe2)
		return errno = ENOSYS, -1;
	int r = real.pipe2(fds, flags);
	if (r == 0 && ap_hot.guard) {
		fds[0] = ap_sys_move_high(fds[0]);
		fds[1] = ap_sys_move_high(fds[1]);
	}
	return r;
}

/* ---- jemalloc's extended API ------------------------------------------------------------------ */

/* Exported so that a program using jemalloc (linked with -ljemalloc, or preloaded after the shim)
 * is traced through them too; they forward to the next definition. Without one (glibc), nobody
 * should call them: they fail as jemalloc does when out of memory (NULL, or "not resized") rather
 * than crash. nallocx allocates nothing and is left alone. realloc-like calls are written as
 * realloc events (api REALLOC: FREE before, ALLOC after), frees as free events. */

/* jemalloc's declarations (jemalloc/jemalloc.h); the shim does not build against jemalloc. */
void *mallocx(size_t size, int flags);
void *rallocx(void *old, size_t size, int flags);
size_t xallocx(void *p, size_t size, size_t extra, int flags);
void dallocx(void *p, int flags);
void sdallocx(void *p, size_t size, int flags);

AP_EXPORT void *mallocx(size_t size, int flags)
{
	if (!ready() || !real.mallocx)
		return errno = ENOMEM, NULL;
	if (!enter(false))
		return real.mallocx(size, flags);
	void *p = real.mallocx(size, flags);
	if (p)
		record_alloc(AP_API_MALLOCX, p, size);
	leave();
	return p;
}

AP_EXPORT void *rallocx(void *old, size_t size, int flags)
{
	if (!ready() || !real.rallocx)
		return errno = ENOMEM, NULL;
	bool rec = enter(true);
	bool freed = rec && record_free(AP_API_REALLOC, old);
	void *p = real.rallocx(old, size, flags);
	if (rec) {
		if (p) {
			ap_count_free();
			record_alloc(AP_API_REALLOC, p, size);
		} else if (freed) {
			if (ap_cfg.sample_bytes)
				ap_sampled_add(old);
			ap_event_unfree(old);
		}
		leave();
	}
	return p;
}

/* Resizes in place or not at all, so no other thread can receive the block meanwhile: both
 * events are written after the call, and only when it succeeded (result >= size). */
AP_EXPORT size_t xallocx(void *p, size_t size, size_t extra, int flags)
{
	if (!ready() || !real.xallocx)
		return 0;
	size_t r = real.xallocx(p, size, extra, flags);
	if (r >= size && enter(true)) {
		ap_count_free();
		record_free(AP_API_REALLOC, p);
		record_alloc(AP_API_REALLOC, p, size);
		leave();
	} else if (r >= size && ap_hot.guard == 1) {
		ap_event_lost(false); /* enter() counted the free */
	}
	return r;
}

static void x_free(void *p, void (*fn)(void *, size_t, int), size_t size, int flags)
{
	if (!p)
		return;
	if (!enter(true)) {
		if (fn)
			fn(p, size, flags);
		else
			real.dallocx(p, flags);
		return;
	}
	ap_count_free();
	record_free(AP_API_FREE, p);
	if (fn)
		fn(p, size, flags);
	else
		real.dallocx(p, flags);
	leave();
}

AP_EXPORT void dallocx(void *p, int flags)
{
	if (ready() && real.dallocx)
		x_free(p, NULL, 0, flags);
}

AP_EXPORT void sdallocx(void *p, size_t size, int flags)
{
	if (ready() && real.sdallocx)
		x_free(p, real.sdallocx, size, flags);
}
