/*
 * pprof_prog.c: allocations of known sizes from known functions, for tests/pprof/test_pprof.py.
 *
 * Every function that allocates is noipa (keeps its name and its own frame) except inl_alloc,
 * which is always inlined so that one physical frame carries an inline chain. Pointers escape
 * through an empty asm so GCC keeps every malloc. No stdio (it would allocate inside libc).
 * Expected figures are in the test; change both together.
 */
#include <stdlib.h>

#define NOIPA __attribute__((noipa))
#define ESCAPE(p) __asm__ volatile("" : : "r"(p) : "memory")

void alloc_small(void);
void alloc_big(void);
void via_inline(void);
void recurse(int n);
void deep(int n);

/* Leaked blocks stay reachable here. */
void *keep[256];
int nkeep;

static void hold(void *p)
{
	ESCAPE(p);
	keep[nkeep++] = p;
}

/* 20 x 48 B, 5 freed: alloc 20 / 960 B, inuse 15 / 720 B. */
NOIPA void alloc_small(void)
{
	void *p[20];
	for (int i = 0; i < 20; i++) {
		p[i] = malloc(48);
		ESCAPE(p[i]);
	}
	for (int i = 0; i < 5; i++)
		free(p[i]);
	for (int i = 5; i < 20; i++)
		hold(p[i]);
}

/* 3 x 100000 B, 1 freed: alloc 3 / 300000 B, inuse 2 / 200000 B. */
NOIPA void alloc_big(void)
{
	void *a = malloc(100000), *b = malloc(100000), *c = malloc(100000);
	ESCAPE(a);
	ESCAPE(b);
	ESCAPE(c);
	free(b);
	hold(a);
	hold(c);
}

static inline __attribute__((always_inline)) void *inl_alloc(size_t n)
{
	void *p = malloc(n);
	ESCAPE(p);
	return p;
}

/* 7 x 200 B through the inlined helper, all kept: flat goes to inl_alloc (inline). */
NOIPA void via_inline(void)
{
	for (int i = 0; i < 7; i++)
		hold(inl_alloc(200));
}

/* At the bottom of 5 levels: 4 x calloc(8, 16) = 128 B each, 1 freed: alloc 4 / 512 B,
 * inuse 3 / 384 B; recurse's cum counts them once. */
NOIPA void recurse(int n)
{
	if (n > 0) {
		recurse(n - 1);
		ESCAPE(n);
		return;
	}
	void *q[4];
	for (int i = 0; i < 4; i++) {
		q[i] = calloc(8, 16);
		ESCAPE(q[i]);
	}
	free(q[0]);
	for (int i = 1; i < 4; i++)
		hold(q[i]);
}

/* 40 nested calls then one malloc(64), kept: deeper than a small --depth, so the stack is
 * truncated in that run. */
NOIPA void deep(int n)
{
	if (n > 0) {
		deep(n - 1);
		ESCAPE(n);
		return;
	}
	hold(malloc(64));
}

int main(void)
{
	alloc_small();
	alloc_big();
	via_inline();
	recurse(5);
	deep(40);
	/* main itself: 2 x 1000 B, 1 freed. */
	void *m1 = malloc(1000), *m2 = malloc(1000);
	ESCAPE(m1);
	ESCAPE(m2);
	free(m1);
	hold(m2);
	return 0;
}
