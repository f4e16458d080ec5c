/* liba.so and libb.so: the same code under two names (FN), so that libb, loaded after liba was
 * closed, is likely mapped at liba's old addresses with its function at the same offset. */
#include <stdlib.h>

void FN(long n);

__attribute__((noinline)) void FN(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = malloc(80);
		__asm__ volatile("" ::"r"(p) : "memory");
	}
}
