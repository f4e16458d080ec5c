// cxx: every form of new/delete, attributed to the function that wrote the new-expression, plus
// exceptions thrown through allocating frames, and one thrown while malloc fails (libstdc++'s
// emergency pool serves it). Prints "key=value" lines for the test.
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>
#include <sys/resource.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

struct alignas(64) Wide {
	char b[64];
};

static void *volatile sink;

NOINLINE static void cxx_new() // 4 objects
{
	int *a = new int(1);
	sink = a;
	delete a;
	long *b = new long[10];
	sink = b;
	delete[] b;
	Wide *w = new Wide; // aligned new -> aligned_alloc
	sink = w;
	delete w;            // aligned (sized) delete -> free
	Wide *ws = new Wide[3];
	sink = ws;
	delete[] ws;
}

NOINLINE static void cxx_nothrow() // 2 objects
{
	int *a = new (std::nothrow) int(2);
	sink = a;
	::operator delete(a, sizeof(int)); // sized delete
	char *c = new (std::nothrow) char[100];
	sink = c;
	delete[] c;
}

NOINLINE static void thrower(int depth) // 1 object per level, freed while unwinding
{
	std::vector<int> v(50);
	sink = v.data();
	if (depth == 0)
		throw std::runtime_error("a message long enough not to fit in a small string buffer");
	thrower(depth - 1);
}

NOINLINE static long cxx_exhaust(void **blocks, long max)
{
	long n = 0;
	while (n < max && (blocks[n] = malloc(1024)) != nullptr)
		n++;
	return n;
}

int main()
{
	cxx_new();
	cxx_nothrow();
	int caught = 0;
	for (int i = 0; i < 5; i++) {
		try {
			thrower(4);
		} catch (const std::exception &e) {
			caught++;
		}
	}
	std::printf("caught=%d\n", caught);
	std::fflush(stdout);

	// The emergency pool: with the address space capped, malloc fails, and an exception can still
	// be thrown and caught (libstdc++ takes it from the pool it reserved at start).
	static void *blocks[1 << 20];
	struct rlimit old, lim;
	getrlimit(RLIMIT_AS, &old);
	char statm[256] = {0};
	FILE *f = std::fopen("/proc/self/statm", "r");
	long pages = 0;
	if (f && std::fgets(statm, sizeof(statm), f))
		pages = std::atol(statm);
	if (f)
		std::fclose(f);
	lim = old;
	lim.rlim_cur = (rlim_t)pages * 4096 + (64u << 20);
	setrlimit(RLIMIT_AS, &lim);
	long n = cxx_exhaust(blocks, 1 << 20);
	int pool = 0;
	try {
		throw 42;
	} catch (int v) {
		pool = v == 42;
	}
	for (long i = 0; i < n; i++)
		free(blocks[i]);
	setrlimit(RLIMIT_AS, &old);
	std::printf("exhausted=%d exhaust_blocks=%ld pool_caught=%d\n", n > 0 && n < (1 << 20), n, pool);
	return 0;
}
