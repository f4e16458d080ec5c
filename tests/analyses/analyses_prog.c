/*
 * analyses_prog: a program whose heap over time, not-freed blocks, temporary allocations and
 * lifetimes are known exactly, for tests/analyses/test_analyses.py. `analyses_prog base` and
 * `analyses_prog new` differ in two functions only, for `allocprof diff`.
 *
 * Phases (every figure is the requested size; nothing is printed, so stdio allocates nothing):
 *  1. leak_early:  1 x 777 B, never freed
 *  2. make_temps:  N x (malloc 64, free)        N = 1000 (base) or 2000 (new): all temporary
 *  3. pairs:       500 x (a = pair_first 48, b = pair_second 16, free a, free b): neither is
 *                  temporary (b came between a and its free; the free of a between b and its)
 *  4. ramp:        100 x 1000 B (ramp_alloc) and 50 x 200 B (ramp_small), held 60 ms, freed:
 *                  the peak, 777 + 100000 + 10000 = 110777 B in 151 objects
 *  5. hill:        20 x 1000 B (hill_alloc), freed at once: a lower hill (20777 B)
 *  6. long_lived:  10 x 4096 B, held 30 ms, freed: lifetimes of 10-100 ms
 *  7. leak_many:   M x 100 B, never freed     M = 3 (base) or 5 (new)
 * Not freed at exit: 777 + 100 M bytes in 1 + M blocks.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The compiler must not elide the allocations: pointers escape through this. */
void *volatile ap_sink;

static void pause_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

__attribute__((noinline)) static void *leak_early(void)
{
	return malloc(777);
}

__attribute__((noinline)) static void make_temps(int n)
{
	for (int i = 0; i < n; i++) {
		char *p = malloc(64);
		ap_sink = p;
		free(p);
	}
}

__attribute__((noinline)) static void *pair_first(void)
{
	return malloc(48);
}

__attribute__((noinline)) static void *pair_second(void)
{
	return malloc(16);
}

__attribute__((noinline)) static void pairs(void)
{
	for (int i = 0; i < 500; i++) {
		void *a = pair_first();
		void *b = pair_second();
		ap_sink = a;
		ap_sink = b;
		free(a);
		free(b);
	}
}

__attribute__((noinline)) static void *ramp_alloc(void)
{
	return malloc(1000);
}

__attribute__((noinline)) static void *ramp_small(void)
{
	return malloc(200);
}

__attribute__((noinline)) static void ramp(void)
{
	void *big[100], *small[50];
	for (int i = 0; i < 100; i++) {
		big[i] = ramp_alloc();
		if (i % 2 == 0)
			small[i / 2] = ramp_small();
	}
	pause_ms(60);
	for (int i = 0; i < 100; i++)
		free(big[i]);
	for (int i = 0; i < 50; i++)
		free(small[i]);
}

__attribute__((noinline)) static void *hill_alloc(void)
{
	return malloc(1000);
}

__attribute__((noinline)) static void hill(void)
{
	void *b[20];
	for (int i = 0; i < 20; i++)
		b[i] = hill_alloc();
	for (int i = 0; i < 20; i++)
		free(b[i]);
}

__attribute__((noinline)) static void long_lived(void)
{
	void *b[10];
	for (int i = 0; i < 10; i++)
		b[i] = malloc(4096);
	pause_ms(30);
	for (int i = 0; i < 10; i++)
		free(b[i]);
}

__attribute__((noinline)) static void leak_many(int m)
{
	for (int i = 0; i < m; i++)
		ap_sink = malloc(100);
}

int main(int argc, char **argv)
{
	int new_mode = argc > 1 && !strcmp(argv[1], "new");
	ap_sink = leak_early();
	make_temps(new_mode ? 2000 : 1000);
	pairs();
	ramp();
	hill();
	long_lived();
	leak_many(new_mode ? 5 : 3);
	return 0;
}
