/*
 * known.c: a program whose allocations are known exactly, for tests/e2e/test_known.py.
 *
 * Every function below is noipa (no inlining, cloning or other interprocedural changes, so each
 * keeps its symbol name and its own frame) and makes an exact number of calls of each allocation
 * function. Every pointer escapes through an empty asm (GCC deletes malloc/free pairs whose
 * memory is unused), sizes and NULLs pass through OPAQUE so GCC cannot fold one API into another,
 * and the file is compiled with -fno-optimize-sibling-calls so no allocator call is a tail call.
 * No stdio: printf would allocate its buffer from inside libc.
 *
 * If you change a count here, change the expected figures in tests/e2e/test_known.py.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))
#define ESCAPE(p) __asm__ volatile("" : : "r"(p) : "memory")
#define OPAQUE(x)                                                                                  \
	({                                                                                         \
		__typeof__(x) opaque_ = (x);                                                       \
		__asm__ volatile("" : "+r"(opaque_));                                              \
		opaque_;                                                                           \
	})

/* Leaked pointers live here, so that they are reachable and no tool calls them "lost". */
void *keep[64];
int nkeep;

static void hold(void *p)
{
	ESCAPE(p);
	keep[nkeep++] = p;
}

static void die(const char *msg)
{
	(void)!write(2, msg, strlen(msg));
	_exit(99);
}

void early_init(void);
void do_malloc(void);
void do_calloc(void);
void do_realloc(void);
void do_posix_memalign(void);
void do_aligned_alloc(void);
void do_memalign(void);
void do_valloc(void);
void do_pvalloc(void);
void do_reallocarray(void);
void child_a(void);
void child_b(void);
void parent(void);
void recurse(int n);
void *thread_a(void *arg);
void *thread_b(void *arg);
void spawn_threads(void);

/* Before main: 3 x malloc(100); frees 1, leaks 2. */
__attribute__((constructor)) NOIPA void early_init(void)
{
	void *p[3];
	for (int i = 0; i < 3; i++) {
		p[i] = malloc(OPAQUE((size_t)100));
		if (!p[i])
			die("malloc\n");
		ESCAPE(p[i]);
	}
	free(p[1]);
	hold(p[0]);
	hold(p[2]);
}

/* 10 x malloc(64); frees 6, leaks 4. */
NOIPA void do_malloc(void)
{
	void *p[10];
	for (int i = 0; i < 10; i++) {
		p[i] = malloc(OPAQUE((size_t)64));
		if (!p[i])
			die("malloc\n");
		ESCAPE(p[i]);
	}
	for (int i = 0; i < 6; i++)
		free(p[i]);
	for (int i = 6; i < 10; i++)
		hold(p[i]);
}

/* 5 x calloc(4, 25) (100 bytes each); frees 2, leaks 3. */
NOIPA void do_calloc(void)
{
	void *p[5];
	for (int i = 0; i < 5; i++) {
		p[i] = calloc(OPAQUE((size_t)4), OPAQUE((size_t)25));
		if (!p[i])
			die("calloc\n");
		ESCAPE(p[i]);
	}
	free(p[0]);
	free(p[3]);
	hold(p[1]);
	hold(p[2]);
	hold(p[4]);
}

/*
 * realloc(NULL, 10)        an allocation of 10
 * realloc(p, 1000)         growing: a free of the 10, an allocation of 1000
 * realloc(p, 50)           shrinking: a free of the 1000, an allocation of 50  (leaked)
 * malloc(30)               an allocation of 30
 * realloc(q, 0) -> NULL    a free of the 30 (glibc frees and returns NULL)
 */
NOIPA void do_realloc(void)
{
	void *p = realloc(OPAQUE((void *)NULL), OPAQUE((size_t)10));
	if (!p)
		die("realloc\n");
	memset(p, 1, 10);
	ESCAPE(p);
	p = realloc(p, OPAQUE((size_t)1000));
	if (!p)
		die("realloc\n");
	memset(p, 2, 1000);
	ESCAPE(p);
	p = realloc(p, OPAQUE((size_t)50));
	if (!p)
		die("realloc\n");
	ESCAPE(p);
	hold(p);

	void *q = malloc(OPAQUE((size_t)30));
	if (!q)
		die("malloc\n");
	ESCAPE(q);
	q = realloc(q, OPAQUE((size_t)0));
	if (q) /* not glibc behaviour; keep the figures right anyway */
		die("realloc(p, 0) returned non-NULL\n");
}

/* 2 x posix_memalign(64, 200); frees 1, leaks 1. */
NOIPA void do_posix_memalign(void)
{
	void *p[2];
	for (int i = 0; i < 2; i++) {
		if (posix_memalign(&p[i], OPAQUE((size_t)64), OPAQUE((size_t)200)) != 0)
			die("posix_memalign\n");
		ESCAPE(p[i]);
	}
	free(p[0]);
	hold(p[1]);
}

/* 2 x aligned_alloc(128, 256); frees 1, leaks 1. */
NOIPA void do_aligned_alloc(void)
{
	void *p[2];
	for (int i = 0; i < 2; i++) {
		p[i] = aligned_alloc(OPAQUE((size_t)128), OPAQUE((size_t)256));
		if (!p[i])
			die("aligned_alloc\n");
		ESCAPE(p[i]);
	}
	free(p[1]);
	hold(p[0]);
}

/* 3 x memalign(32, 100); frees 2, leaks 1. */
NOIPA void do_memalign(void)
{
	void *p[3];
	for (int i = 0; i < 3; i++) {
		p[i] = memalign(OPAQUE((size_t)32), OPAQUE((size_t)100));
		if (!p[i])
			die("memalign\n");
		ESCAPE(p[i]);
	}
	free(p[0]);
	free(p[2]);
	hold(p[1]);
}

/* 2 x valloc(300); frees both. */
NOIPA void do_valloc(void)
{
	void *p[2];
	for (int i = 0; i < 2; i++) {
		p[i] = valloc(OPAQUE((size_t)300));
		if (!p[i])
			die("valloc\n");
		ESCAPE(p[i]);
	}
	free(p[0]);
	free(p[1]);
}

/* 1 x pvalloc(5000) (counted as 5000, not the rounded 8192); leaked. */
NOIPA void do_pvalloc(void)
{
	void *p = pvalloc(OPAQUE((size_t)5000));
	if (!p)
		die("pvalloc\n");
	hold(p);
}

/*
 * reallocarray(NULL, 10, 20)   an allocation of 200
 * reallocarray(p, 30, 20)      a free of the 200, an allocation of 600 (leaked)
 */
NOIPA void do_reallocarray(void)
{
	void *p = reallocarray(OPAQUE((void *)NULL), OPAQUE((size_t)10), OPAQUE((size_t)20));
	if (!p)
		die("reallocarray\n");
	memset(p, 3, 200);
	ESCAPE(p);
	p = reallocarray(p, OPAQUE((size_t)30), OPAQUE((size_t)20));
	if (!p)
		die("reallocarray\n");
	hold(p);
}

/* 4 x malloc(128) per call; frees 3, leaks 1. parent calls it twice. */
NOIPA void child_a(void)
{
	void *p[4];
	for (int i = 0; i < 4; i++) {
		p[i] = malloc(OPAQUE((size_t)128));
		if (!p[i])
			die("malloc\n");
		ESCAPE(p[i]);
	}
	for (int i = 0; i < 3; i++)
		free(p[i]);
	hold(p[3]);
}

/* 2 x calloc(10, 10) (100 bytes each); leaks both. */
NOIPA void child_b(void)
{
	for (int i = 0; i < 2; i++) {
		void *p = calloc(OPAQUE((size_t)10), OPAQUE((size_t)10));
		if (!p)
			die("calloc\n");
		hold(p);
	}
}

/* 1 x malloc(1000), freed after calling child_a twice and child_b once. */
NOIPA void parent(void)
{
	void *p = malloc(OPAQUE((size_t)1000));
	if (!p)
		die("malloc\n");
	ESCAPE(p);
	child_a();
	child_b();
	child_a();
	free(p);
}

/* recurse(5): one malloc(16) per level, 5 levels; levels n = 4 and n = 2 free theirs. */
NOIPA void recurse(int n)
{
	void *p = malloc(OPAQUE((size_t)16));
	if (!p)
		die("malloc\n");
	ESCAPE(p);
	if (n > 1)
		recurse(n - 1);
	if (n % 2 == 0)
		free(p);
	else
		hold(p);
}

/* Thread A: 7 x malloc(48); frees 5, leaks 2 (into its own array, read by nobody). */
void *thread_a_keep[2];
NOIPA void *thread_a(void *arg)
{
	void *p[7];
	for (int i = 0; i < 7; i++) {
		p[i] = malloc(OPAQUE((size_t)48));
		if (!p[i])
			die("malloc\n");
		ESCAPE(p[i]);
	}
	for (int i = 0; i < 5; i++)
		free(p[i]);
	thread_a_keep[0] = p[5];
	thread_a_keep[1] = p[6];
	ESCAPE(thread_a_keep);
	return arg;
}

/* Thread B: 3 x calloc(1, 333); leaks 2, returns the third, which spawn_threads frees in the
 * main thread (a free in another thread than the allocation). */
void *thread_b_keep[2];
NOIPA void *thread_b(void *arg)
{
	void *p[3];
	for (int i = 0; i < 3; i++) {
		p[i] = calloc(OPAQUE((size_t)1), OPAQUE((size_t)333));
		if (!p[i])
			die("calloc\n");
		ESCAPE(p[i]);
	}
	thread_b_keep[0] = p[0];
	thread_b_keep[1] = p[1];
	ESCAPE(thread_b_keep);
	(void)arg;
	return p[2];
}

/* Makes no allocation itself (pthread_create's own, inside libc/ld.so, may appear in its cum). */
NOIPA void spawn_threads(void)
{
	pthread_t a, b;
	void *ra, *rb;
	if (pthread_create(&a, NULL, thread_a, NULL) != 0)
		die("pthread_create\n");
	if (pthread_join(a, &ra) != 0)
		die("pthread_join\n");
	if (pthread_create(&b, NULL, thread_b, NULL) != 0)
		die("pthread_create\n");
	if (pthread_join(b, &rb) != 0)
		die("pthread_join\n");
	free(rb);
	ESCAPE(ra);
}

/* main: 2 x malloc(77) of its own, leaked; everything else through its callees. */
int main(void)
{
	for (int i = 0; i < 2; i++) {
		void *p = malloc(OPAQUE((size_t)77));
		if (!p)
			die("malloc\n");
		hold(p);
	}
	do_malloc();
	do_calloc();
	do_realloc();
	do_posix_memalign();
	do_aligned_alloc();
	do_memalign();
	do_valloc();
	do_pvalloc();
	do_reallocarray();
	parent();
	recurse(5);
	spawn_threads();
	static const char msg[] = "known: done\n";
	(void)!write(1, msg, sizeof msg - 1);
	return 0;
}
