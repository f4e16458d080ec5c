/*
 * totals.c: for test_totals.py. Exact call totals must survive every way a thread's counters
 * can come and go: threads that exit one after another (their records are reused), a thread
 * that only frees (it never allocates, so nothing else would arm its fast paths), blocks freed
 * after the thread that allocated them exited, a fork child, whose totals are its own, and
 * allocations that fail for their size, which count for nothing.
 *
 * Prints "parent: A allocations, B bytes, F frees" for what the program itself called, and the
 * child prints the same for its part, which is all the child does (it ends with _exit).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")

static unsigned long n_allocs, n_bytes, n_frees; /* this process's own calls */
static pthread_mutex_t count_mu = PTHREAD_MUTEX_INITIALIZER;

static void count(unsigned long allocs, unsigned long bytes, unsigned long frees)
{
	pthread_mutex_lock(&count_mu);
	n_allocs += allocs;
	n_bytes += bytes;
	n_frees += frees;
	pthread_mutex_unlock(&count_mu);
}

#define NKEPT 5000
static void *kept[NKEPT]; /* allocated by a thread that exits, freed later by main */

/* Sizes from 1 to 3000 bytes, so that some allocations are sampled at any interval tested. */
static size_t size_of(unsigned i)
{
	return 1 + (i * 2654435761u) % 3000;
}

static void *worker(void *arg)
{
	unsigned id = (unsigned)(unsigned long)arg;
	unsigned long bytes = 0;
	for (unsigned i = 0; i < 20000; i++) {
		size_t s = size_of(i + id);
		void *p = (i % 3) ? malloc(s) : calloc(1, s);
		KEEP(p);
		bytes += s;
		free(p);
	}
	/* realloc counts as a free of the old block (if any) and an allocation of the new size;
	 * realloc(p, 0) frees p and allocates nothing (glibc returns NULL). */
	for (unsigned i = 0; i < 6000; i++) {
		size_t s = size_of(i * 7 + id);
		void *q = realloc(NULL, s);
		q = realloc(q, s + 100);
		q = realloc(q, s / 2 + 1);
		KEEP(q);
		bytes += s + (s + 100) + (s / 2 + 1);
		if (i % 5 == 0) {
			if (realloc(q, 0))
				exit(6);
		} else {
			free(q);
		}
	}
	count(20000 + 3 * 6000, bytes, 20000 + 3 * 6000);
	return NULL;
}

static void *keeper(void *arg)
{
	(void)arg;
	unsigned long bytes = 0;
	for (unsigned i = 0; i < NKEPT; i++) {
		kept[i] = malloc(size_of(i));
		bytes += size_of(i);
	}
	count(NKEPT, bytes, 0);
	return NULL;
}

static void *freer(void *arg)
{
	void **v = arg;
	for (unsigned i = 0; i < NKEPT; i++)
		free(v[i]);
	count(0, 0, NKEPT);
	return NULL;
}

static void run(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	if (pthread_create(&t, NULL, fn, arg) || pthread_join(t, NULL))
		exit(3);
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0); /* no stdio buffer allocation to account for */
	for (unsigned long id = 0; id < 8; id++)
		run(worker, (void *)id);
	run(keeper, NULL);
	run(freer, kept); /* a thread that only frees, blocks of a thread that exited */
	run(keeper, NULL);
	for (unsigned i = 0; i < NKEPT; i++) /* main frees what an exited thread allocated */
		free(kept[i]);
	count(0, 0, NKEPT);

	/* Requests that fail for their size count for nothing, whichever path they take: at 2^63
	 * bytes or more a weight is negative as a signed word, and the fast path's countdown test
	 * must not take it for a small one. volatile: GCC knows these fail and would fold them. */
	volatile size_t huge = SIZE_MAX, big = (size_t)1 << 62;
	if (malloc(huge) || malloc(huge - 4095) || malloc(big) || calloc(1, huge) || calloc(huge / 2, 4))
		return 5;
	void *q = malloc(10);
	if (!q || realloc(q, huge) || realloc(q, big))
		return 5;
	free(q);
	count(1, 10, 1);

	pid_t pid = fork();
	if (pid < 0)
		return 3;
	if (pid == 0) {
		unsigned long bytes = 0;
		void *v[3000];
		for (unsigned i = 0; i < 3000; i++) {
			v[i] = malloc(size_of(i) + 7);
			bytes += size_of(i) + 7;
		}
		for (unsigned i = 0; i < 3000; i += 2)
			free(v[i]);
		printf("child: 3000 allocations, %lu bytes, 1500 frees\n", bytes);
		_exit(0);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		return 4;
	printf("parent: %lu allocations, %lu bytes, %lu frees\n", n_allocs, n_bytes, n_frees);
	return 0;
}
