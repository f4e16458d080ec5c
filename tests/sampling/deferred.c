/*
 * deferred.c: for test_deferred.py. Sampled mode writes without a writer thread while the process
 * has one thread (preload/writer.c), and starts one at the program's first pthread_create.
 *
 *   deferred threads   prints tasks_alone=N (threads of this process after some allocations)
 *                      and tasks_with_thread=N (while a thread of its own is alive)
 *   deferred kill      10 blocks of 1 MiB in before_work, 150 ms later one in trigger_work (the
 *                      round it triggers writes them all), 150 ms later SIGKILL
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEEP(p) __asm__ volatile("" : : "r"(p) : "memory")
#define NOINLINE __attribute__((noinline))

static int tasks(void)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts))
		;
}

static int go[2];

static void *waiter(void *arg)
{
	char c;
	(void)arg;
	if (read(go[0], &c, 1) != 1)
		abort();
	return NULL;
}

static void *kept[16];

NOINLINE static void before_work(void)
{
	for (int i = 0; i < 10; i++) {
		kept[i] = malloc(1 << 20);
		KEEP(kept[i]);
	}
}

NOINLINE static void trigger_work(void)
{
	kept[10] = malloc(1 << 20);
	KEEP(kept[10]);
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc == 2 && !strcmp(argv[1], "threads")) {
		for (int i = 0; i < 1000; i++) {
			void *p = malloc(100 + i);
			KEEP(p);
			free(p);
		}
		printf("tasks_alone=%d\n", tasks());
		pthread_t t;
		if (pipe(go) || pthread_create(&t, NULL, waiter, NULL))
			return 3;
		printf("tasks_with_thread=%d\n", tasks());
		if (write(go[1], "x", 1) != 1 || pthread_join(t, NULL))
			return 3;
		return 0;
	}
	if (argc == 2 && !strcmp(argv[1], "kill")) {
		before_work();
		sleep_ms(150);
		trigger_work();
		sleep_ms(150);
		raise(SIGKILL);
	}
	fprintf(stderr, "usage: deferred threads|kill\n");
	return 2;
}
