/*
 * sig.c: for tests/e2e/test_transparent.py. Allocates a little, prints a line, then dies the way
 * argv[1] says: term (raise SIGTERM), int (raise SIGINT), kill (raise SIGKILL), segv (a real
 * invalid write), abort (abort()), thread-term (SIGTERM raised from a second thread while the
 * main thread waits), exit7 (_exit(7) from a second thread).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *mode;

static void *thread_main(void *arg)
{
	(void)arg;
	void *p = malloc(100);
	__asm__ volatile("" : : "r"(p) : "memory");
	if (!strcmp(mode, "thread-term"))
		raise(SIGTERM);
	else
		_exit(7);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	mode = argv[1];
	for (int i = 0; i < 10; i++) {
		void *p = malloc(32 + (size_t)i);
		__asm__ volatile("" : : "r"(p) : "memory");
		if (i % 2)
			free(p);
	}
	printf("sig: %s\n", mode);
	fflush(stdout);
	if (!strcmp(mode, "term"))
		raise(SIGTERM);
	else if (!strcmp(mode, "int"))
		raise(SIGINT);
	else if (!strcmp(mode, "kill"))
		raise(SIGKILL);
	else if (!strcmp(mode, "segv"))
		*(volatile int *)(__builtin_frame_address(0) ? (void *)16 : (void *)0) = 1;
	else if (!strcmp(mode, "abort"))
		abort();
	else if (!strcmp(mode, "thread-term") || !strcmp(mode, "exit7")) {
		pthread_t t;
		pthread_create(&t, NULL, thread_main, NULL);
		pthread_join(t, NULL);
		pause();
	}
	return 1; /* not reached */
}
