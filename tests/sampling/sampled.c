/*
 * sampled.c: a deterministic program whose allocations the sampling test knows exactly, call by
 * call (test_sampling.py repeats the same arithmetic). Each function is one call site with its
 * own size pattern, chosen to cover sizes far below, near and far above the sampling interval
 * the test uses (R = 4096), and each API: malloc, calloc, realloc, aligned allocations.
 */
#include <malloc.h>
#include <stdlib.h>

#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

/* 400000 x 64 B: far below R. */
__attribute__((noinline)) static void small_objects(void)
{
	for (int i = 0; i < 400000; i++) {
		void *p = malloc(64);
		KEEP(p);
		free(p);
	}
}

/* 20000 x 4096 B: sizes at R, where the weight 1/(1 - 1/e) = 1.58 differs most from naive ones. */
__attribute__((noinline)) static void page_objects(void)
{
	for (int i = 0; i < 20000; i++) {
		void *p = malloc(4096);
		KEEP(p);
		free(p);
	}
}

/* 300 x 1 MiB: far above R, sampled with probability ~1. */
__attribute__((noinline)) static void big_objects(void)
{
	for (int i = 0; i < 300; i++) {
		void *p = malloc(1 << 20);
		KEEP(p);
		free(p);
	}
}

/* 100000 calloc(n, 24) with n = 1 + i % 16: mixed sizes 24..384 at one site. */
__attribute__((noinline)) static void calloc_mixed(void)
{
	for (int i = 0; i < 100000; i++) {
		void *p = calloc(1 + i % 16, 24);
		KEEP(p);
		free(p);
	}
}

/* 50000 buffers grown by realloc 32 -> 256 -> 2048 bytes: 3 allocations of the realloc site
 * each (realloc(NULL, 32) included). */
__attribute__((noinline)) static void realloc_growth(void)
{
	for (int i = 0; i < 50000; i++) {
		void *p = realloc(NULL, 32);
		p = realloc(p, 256);
		p = realloc(p, 2048);
		KEEP(p);
		free(p);
	}
}

/* 60000 aligned allocations of 512 B (posix_memalign, aligned_alloc, memalign in turn), of which
 * the last 6000 are kept live (leaked): the inuse figures are estimated too. */
__attribute__((noinline)) static void aligned_kept(void)
{
	static void *keep[6000];
	for (int i = 0; i < 60000; i++) {
		void *p = NULL;
		if (i % 3 == 0) {
			if (posix_memalign(&p, 64, 512))
				abort();
		}
		else if (i % 3 == 1) {
			p = aligned_alloc(64, 512);
		}
		else {
			p = memalign(64, 512);
		}
		KEEP(p);
		if (i >= 54000)
			keep[i - 54000] = p;
		else
			free(p);
	}
	KEEP(keep);
}

int main(void)
{
	small_objects();
	page_objects();
	big_objects();
	calloc_mixed();
	realloc_growth();
	aligned_kept();
	return 0;
}
