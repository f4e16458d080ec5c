/*
 * writerprog.c: allocates enough, with enough variety, that its trace is several hundred KB, and
 * prints what it did: the writer tests check that the program's output and exit status do not
 * change when the trace cannot be written.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 300000;
	static void *pool[256];
	uint64_t x = 88172645463325252ull, bytes = 0;
	for (long i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		size_t slot = x % 256, size = 1 + (x >> 20) % 4000;
		free(pool[slot]);
		pool[slot] = malloc(size);
		__asm__ volatile("" : : "r"(pool[slot]) : "memory");
		bytes += size;
	}
	printf("allocated %ld blocks, %llu bytes\n", n, (unsigned long long)bytes);
	return 0;
}
