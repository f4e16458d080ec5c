/* jemalloc_prog: linked with -ljemalloc; uses jemalloc's extended API from functions named after
 * it, so the test can count each exactly. Prints how many xallocx calls resized in place. */
#include <jemalloc/jemalloc.h>
#include <stdio.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
static void *blocks[8];
static void *volatile sink;

static NOINLINE void j_malloc(void)
{
	for (int i = 0; i < 10; i++)
		free(sink = malloc(100));
}
static NOINLINE void j_mallocx(void)
{
	for (int i = 0; i < 8; i++)
		blocks[i] = mallocx(64, 0);
}
static NOINLINE void j_rallocx(void)
{
	for (int i = 0; i < 8; i++)
		blocks[i] = rallocx(blocks[i], 4000, 0);
}
static NOINLINE int j_xallocx(void)
{
	int ok = 0;
	for (int i = 0; i < 8; i++)
		ok += xallocx(blocks[i], 4096, 0, 0) >= 4096;
	return ok;
}
static NOINLINE void j_free(void)
{
	for (int i = 0; i < 8; i++) {
		if (i % 2)
			dallocx(blocks[i], 0);
		else
			sdallocx(blocks[i], 4096, 0);
	}
}

int main(void)
{
	j_malloc();
	j_mallocx();
	j_rallocx();
	int ok = j_xallocx();
	j_free();
	char buf[64];
	int n = snprintf(buf, sizeof(buf), "xallocx_ok=%d nallocx=%zu\n", ok, nallocx(100, 0));
	return write(1, buf, (size_t)n) == n ? 0 : 1;
}
