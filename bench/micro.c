/*
 * micro.c: the hot paths one at a time, for bench/micro.py. Prints one line, "ns_per_pair: X",
 * the mean cost of a malloc+free pair in a tight loop.
 *
 *   micro same DEPTH N     every pair from the same call chain (the stack cache hits)
 *   micro varied DEPTH N   pairs cycling through 1024 distinct call chains (more than the
 *                          stack cache holds: it misses, and each pair is unwound)
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NOINLINE __attribute__((noinline))
#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

static long pairs;

NOINLINE static void leaf(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = malloc(32);
		KEEP(p);
		free(p);
	}
}

/* Recursing through two functions by the bits of path gives 2^depth distinct chains. */
NOINLINE static void left(int depth, unsigned path, long n);
NOINLINE static void right(int depth, unsigned path, long n);

NOINLINE static void left(int depth, unsigned path, long n)
{
	if (depth == 0)
		leaf(n);
	else if (path & 1)
		right(depth - 1, path >> 1, n);
	else
		left(depth - 1, path >> 1, n);
	KEEP(&depth);
}

NOINLINE static void right(int depth, unsigned path, long n)
{
	if (depth == 0)
		leaf(n);
	else if (path & 1)
		right(depth - 1, path >> 1, n);
	else
		left(depth - 1, path >> 1, n);
	KEEP(&depth);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: micro same|varied DEPTH PAIRS\n");
		return 2;
	}
	int depth = atoi(argv[2]);
	pairs = atol(argv[3]);
	bool varied = !strcmp(argv[1], "varied");
	leaf(1000); /* warm up: the shim's first allocation sets things up */
	double t0 = now();
	if (varied)
		for (long i = 0; i < pairs; i++)
			left(depth, (unsigned)(i * 2654435761u) & 1023, 1);
	else
		left(depth, 0, pairs);
	double t = now() - t0;
	printf("ns_per_pair: %.1f\n", t / (double)pairs * 1e9);
	return 0;
}
