/* bump.so: an async-signal-safe allocator (an atomic bump pointer over one big mapping; free does
 * nothing), preloaded after the shim as the "real" allocator of the signal test. glibc's malloc is
 * not async-signal-safe, so with it a handler that allocates could deadlock in glibc itself; with
 * this one, any trouble is the shim's. */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define ARENA (1ul << 32)
static _Atomic(uintptr_t) cur, base;

static void *bump(size_t size, size_t align)
{
	if (!atomic_load(&base)) {
		void *m = mmap(NULL, ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		uintptr_t expect = 0;
		if (m == MAP_FAILED)
			return NULL;
		if (atomic_compare_exchange_strong(&base, &expect, (uintptr_t)m))
			atomic_store(&cur, (uintptr_t)m);
		else
			munmap(m, ARENA);
		while (!atomic_load(&cur))
			;
	}
	if (align < 16)
		align = 16;
	size_t need = size + align + 16;
	uintptr_t p = atomic_fetch_add(&cur, need);
	if (p + need > atomic_load(&base) + ARENA)
		return errno = ENOMEM, NULL;
	uintptr_t r = (p + 16 + align - 1) & ~(uintptr_t)(align - 1);
	((size_t *)r)[-1] = size;
	return (void *)r;
}

void *malloc(size_t s) { return bump(s, 16); }
void free(void *p) { (void)p; }
void *calloc(size_t n, size_t s) { return bump(n * s, 16); } /* fresh mmap memory is zero */
size_t malloc_usable_size(void *p) { return p ? ((size_t *)p)[-1] : 0; }
void *realloc(void *p, size_t s)
{
	void *q = bump(s, 16);
	if (q && p)
		memcpy(q, p, malloc_usable_size(p) < s ? malloc_usable_size(p) : s);
	return q;
}
int posix_memalign(void **out, size_t a, size_t s)
{
	void *p = bump(s, a);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}
void *aligned_alloc(size_t a, size_t s) { return bump(s, a); }
void *memalign(size_t a, size_t s) { return bump(s, a); }
void *valloc(size_t s) { return bump(s, 4096); }
void *pvalloc(size_t s) { return bump((s + 4095) & ~4095ul, 4096); }
