/*
 * stackcache.c: call chains built to fool a stack cache that validated too little (see
 * preload/stackcache.c). Each pair of paths below reaches the same allocation call with the same
 * return address and the same stack pointer, so only a check of every frame tells them apart:
 *  - twin_a / twin_b: two callers with identical frames, called through the same function
 *    pointer call site, alternating;
 *  - depth: the same recursion reached from two different outer functions;
 *  - vla: a caller whose frame size changes from call to call (a variable-length array);
 *  - in_coroutine: allocations on a stack of the program's own (makecontext), where the cache
 *    must stand aside.
 * test_stackcache.py asserts the exact count under every function.
 */
#include <stdlib.h>
#include <ucontext.h>

#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")
#define N 20000

__attribute__((noinline)) static void alloc_here(void)
{
	void *p = malloc(16);
	KEEP(p);
	free(p);
}

__attribute__((noinline)) static void twin_a(void)
{
	alloc_here();
	__asm__ volatile("");
}

__attribute__((noinline)) static void twin_b(void)
{
	alloc_here();
	__asm__ volatile("");
}

__attribute__((noinline)) static void recurse(int d)
{
	if (d == 0)
		alloc_here();
	else
		recurse(d - 1);
	__asm__ volatile("");
}

__attribute__((noinline)) static void outer_x(void)
{
	recurse(3);
	__asm__ volatile("");
}

__attribute__((noinline)) static void outer_y(void)
{
	recurse(3);
	__asm__ volatile("");
}

__attribute__((noinline)) static void vla_caller(int n)
{
	volatile char buf[n];
	buf[0] = 1;
	alloc_here();
	KEEP(buf);
}

__attribute__((noinline)) static void vla_x(int n)
{
	vla_caller(n);
	__asm__ volatile("");
}

__attribute__((noinline)) static void vla_y(int n)
{
	vla_caller(n);
	__asm__ volatile("");
}

static ucontext_t main_ctx, co_ctx;

__attribute__((noinline)) static void in_coroutine(void)
{
	for (;;) {
		alloc_here();
		swapcontext(&co_ctx, &main_ctx);
	}
}

int main(void)
{
	static char co_stack[256 * 1024];
	getcontext(&co_ctx);
	co_ctx.uc_stack.ss_sp = co_stack;
	co_ctx.uc_stack.ss_size = sizeof(co_stack);
	co_ctx.uc_link = NULL;
	makecontext(&co_ctx, in_coroutine, 0);
	for (int i = 0; i < N; i++)
		swapcontext(&main_ctx, &co_ctx); /* N allocations on the coroutine's stack */
	void (*volatile fns[2])(void) = {twin_a, twin_b};
	void (*volatile outers[2])(void) = {outer_x, outer_y};
	for (int i = 0; i < 2 * N; i++) {
		fns[i & 1]();             /* N each */
		outers[(i >> 3) & 1]();   /* N each, in runs of 8 */
		if (i & 1)                /* N each; the array size cycles so frames shift */
			vla_y(16 + (i % 7) * 16);
		else
			vla_x(16 + (i % 5) * 32);
	}
	return 0;
}
