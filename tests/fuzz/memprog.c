/*
 * memprog.c: workloads for test_memory.py, which measures the analyzer's memory on their traces.
 *
 *   memprog churn PAIRS LIVE   PAIRS malloc/free pairs with LIVE blocks live at any time (a ring:
 *                              each new block replaces the oldest), from one call site: a long
 *                              trace whose live heap stays small.
 *   memprog live N             N blocks allocated from one call site and kept to the end.
 *   memprog stacks LEVELS      one block from each of 2^LEVELS distinct stacks (a chain of
 *                              LEVELS calls, each to one of two functions), kept to the end.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

static void *volatile sink;

NOINLINE static void churn(uint64_t pairs, size_t live)
{
	void **ring = calloc(live, sizeof(*ring));
	if (!ring)
		abort();
	for (uint64_t i = 0; i < pairs; i++) {
		size_t slot = (size_t)(i % live);
		free(ring[slot]);
		ring[slot] = malloc(16 + (i & 63));
		if (!ring[slot])
			abort();
	}
	for (size_t i = 0; i < live; i++)
		free(ring[i]);
	free(ring);
}

NOINLINE static void keep(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		sink = malloc(32);
		if (!sink)
			abort();
	}
}

static void step(unsigned bits, unsigned level);

NOINLINE static void via_a(unsigned bits, unsigned level)
{
	step(bits, level);
	__asm__ volatile("" ::: "memory"); /* no sibling call: the frame stays on the stack */
}

NOINLINE static void via_b(unsigned bits, unsigned level)
{
	step(bits, level);
	__asm__ volatile("" ::: "memory");
}

NOINLINE static void step(unsigned bits, unsigned level)
{
	if (level == 0) {
		sink = malloc(48);
		if (!sink)
			abort();
	} else if (bits & 1) {
		via_a(bits >> 1, level - 1);
	} else {
		via_b(bits >> 1, level - 1);
	}
	__asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "churn"))
		churn(strtoull(argv[2], NULL, 0), (size_t)strtoull(argv[3], NULL, 0));
	else if (argc == 3 && !strcmp(argv[1], "live"))
		keep(strtoull(argv[2], NULL, 0));
	else if (argc == 3 && !strcmp(argv[1], "stacks")) {
		unsigned levels = (unsigned)atoi(argv[2]);
		for (unsigned b = 0; b < (1u << levels); b++)
			step(b, levels);
	} else {
		fprintf(stderr, "usage: memprog churn PAIRS LIVE | live N | stacks LEVELS\n");
		return 2;
	}
	return 0;
}
