/*
 * views_prog.c: allocations with known figures per function and per source line, for
 * test_views.py (list, peek, traces, folded, --focus, --ignore, --lines).
 *
 * The test finds the line of every allocating call by its marker comment (ALLOC-x, CALL-x), so
 * editing this file only needs the expected figures in test_views.py to follow. Built with -O1 -g
 * and noipa functions: each function keeps its own frame and name; add_two is always_inline so
 * that its frame is an inline one. Pointers escape through an empty asm so no call is elided.
 * No stdio: printf would allocate from inside libc.
 *
 *   main -> alpha -> malloc(100) x3 (ALLOC-A1, freed) and malloc(1000) x1 (ALLOC-A2, kept)
 *   main -> beta  -> alpha (as above) and calloc(1, 50) x2 (ALLOC-B, kept)
 *   main -> gamma -> add_two (inlined) -> malloc(7) x4 (ALLOC-G, freed)
 *   main -> rec(3) -> rec(2) -> rec(1) -> rec(0): malloc(64) x1 in rec(0) (ALLOC-R, kept)
 */
#include <stdlib.h>

#define NOIPA __attribute__((noipa))
#define ESCAPE(p) __asm__ volatile("" : : "r"(p) : "memory")

void *keep[16];
int nkeep;

NOIPA void alpha(void);
NOIPA void beta(void);
NOIPA void gamma_(void);
NOIPA void rec(int n);

NOIPA void alpha(void)
{
	for (int i = 0; i < 3; i++) {
		void *p = malloc(100); /* ALLOC-A1 */
		ESCAPE(p);
		free(p);
	}
	void *q = malloc(1000); /* ALLOC-A2 */
	ESCAPE(q);
	keep[nkeep++] = q;
}

NOIPA void beta(void)
{
	alpha(); /* CALL-BA */
	for (int i = 0; i < 2; i++) {
		void *p = calloc(1, 50); /* ALLOC-B */
		ESCAPE(p);
		keep[nkeep++] = p;
	}
}

static inline __attribute__((always_inline)) void *add_two(void)
{
	void *p = malloc(7); /* ALLOC-G */
	ESCAPE(p);
	return p;
}

NOIPA void gamma_(void)
{
	for (int i = 0; i < 4; i++)
		free(add_two()); /* CALL-G */
}

NOIPA void rec(int n)
{
	if (n > 0) {
		rec(n - 1); /* CALL-R */
		ESCAPE(n); /* keeps the recursive call from being a tail call */
		return;
	}
	void *p = malloc(64); /* ALLOC-R */
	ESCAPE(p);
	keep[nkeep++] = p;
}

int main(void)
{
	alpha(); /* CALL-MA */
	beta();  /* CALL-MB */
	gamma_(); /* CALL-MG */
	rec(3);  /* CALL-MR */
	return 0;
}
