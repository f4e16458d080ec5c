/*
 * life: one program, many ways to live and die, for tests/lifecycle/test_*.py. `life MODE [N]`.
 * Every allocation is made by a function whose name says who made it (parent_work, child_work,
 * leaf_work, ...), so the test can count them in `allocprof top --json` exactly. Results the test
 * needs are printed on stdout as "key=value" lines, with write(2) (stdio allocates).
 */

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static const char *self;

static void say(const char *key, long v)
{
	char buf[128];
	int n = snprintf(buf, sizeof(buf), "%s=%ld\n", key, v); /* snprintf does not allocate */
	if (write(1, buf, (size_t)n) < 0)
		_exit(99);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* n blocks, the first half freed again: alloc_objects n, inuse_objects n - n/2. */
#define WORKER(name)                                                                               \
	static NOINLINE void name(long n)                                                          \
	{                                                                                          \
		void **keep = calloc((size_t)n + 1, sizeof(void *));                               \
		for (long i = 0; i < n; i++)                                                       \
			keep[i] = malloc(24 + (size_t)(i % 8));                                    \
		for (long i = 0; i < n / 2; i++)                                                   \
			free(keep[i]);                                                             \
		__asm__ volatile("" ::"r"(keep) : "memory");                                       \
	}
/* calloc'ed index array: one more allocation per call, also attributed to the worker. */
WORKER(parent_work)
WORKER(child_work)
WORKER(leaf_work)
WORKER(after_work)

/* ---- processes ---------------------------------------------------------------------------------- */

static atomic_bool stop;

static void *busy_thread(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		void *p = malloc(100);
		__asm__ volatile("" ::"r"(p) : "memory");
		free(p);
	}
	return NULL;
}

static int run_fork(long n, bool threaded, int nchildren)
{
	pthread_t th;
	if (threaded)
		pthread_create(&th, NULL, busy_thread, NULL);
	parent_work(n);
	for (int c = 0; c < nchildren; c++) {
		pid_t pid = fork();
		if (pid == 0) {
			child_work(n / 2);
			if (c % 2)
				_exit(0);
			exit(0);
		}
		int st;
		waitpid(pid, &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			return 3;
	}
	after_work(n / 4);
	if (threaded) {
		atomic_store(&stop, true);
		pthread_join(th, NULL);
	}
	return 0;
}

/* The child calls only async-signal-safe functions, then execs `life leaf N`. */
static int run_fork_exec(long n, int how)
{
	pthread_t th;
	pthread_create(&th, NULL, busy_thread, NULL);
	parent_work(n);
	char num[32];
	snprintf(num, sizeof(num), "%ld", n);
	char *argv[] = {(char *)self, "leaf", num, NULL};
	pid_t pid;
	if (how == 0) {
		pid = fork();
		if (pid == 0) {
			static const char msg[] = "child: exec\n";
			if (write(2, msg, sizeof(msg) - 1) < 0)
				_exit(98);
			execv(self, argv);
			_exit(127);
		}
	} else if (how == 1) {
		pid = vfork();
		if (pid == 0) {
			execv(self, argv);
			_exit(127);
		}
	} else {
		extern char **environ;
		if (posix_spawn(&pid, self, NULL, NULL, argv, environ))
			return 4;
	}
	int st;
	waitpid(pid, &st, 0);
	atomic_store(&stop, true);
	pthread_join(th, NULL);
	after_work(n / 4);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 3;
}

/* ---- exits ----------------------------------------------------------------------------------------- */

static void *exit_from_thread(void *arg)
{
	sleep_ms(50);
	exit((int)(long)arg);
}

static NOINLINE void crash(void)
{
	volatile int *p = (volatile int *)(uintptr_t)8;
	*p = 1;
}

static int run_exit(const char *how, long n)
{
	parent_work(n);
	if (!strcmp(how, "ret"))
		return 4;
	if (!strcmp(how, "exit"))
		exit(5);
	if (!strcmp(how, "_exit"))
		_exit(6);
	if (!strcmp(how, "_Exit"))
		_Exit(7);
	if (!strcmp(how, "abort"))
		abort();
	if (!strcmp(how, "thread")) { /* exit(8) from a thread while main allocates */
		pthread_t th;
		pthread_create(&th, NULL, exit_from_thread, (void *)8L);
		for (;;)
			busy_thread(NULL);
	}
	sleep_ms(350); /* more than three rounds of the writer */
	if (!strcmp(how, "segv"))
		crash();
	if (!strcmp(how, "kill"))
		kill(getpid(), SIGKILL);
	return 9;
}

/* ---- descriptors ------------------------------------------------------------------------------------ */

static long count_fds(void)
{
	/* Counted with the raw syscall: opendir would allocate. */
	int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY);
	char buf[4096];
	long n = 0;
	for (;;) {
		long got = syscall(SYS_getdents64, dfd, buf, sizeof(buf));
		if (got <= 0)
			break;
		for (long off = 0; off < got;) {
			struct {
				unsigned long long ino;
				long long off;
				unsigned short reclen;
				unsigned char type;
				char name[];
			} *d = (void *)(buf + off);
			int fd = atoi(d->name);
			if (d->name[0] != '.' && fd > 2 && fd != dfd)
				n++;
			off += d->reclen;
		}
	}
	close(dfd);
	return n;
}

static int run_fds(const char *how, long n, const char *file)
{
	parent_work(n);
	sleep_ms(150); /* the writer has written: its descriptor is open */
	if (!strcmp(how, "closeall")) {
		for (int fd = 3; fd < 4096; fd++)
			close(fd);
	} else if (!strcmp(how, "closerange")) {
		syscall(SYS_close_range, 3, ~0u, 0);
	} else { /* dup2 the program's own file over every descriptor: none may be written */
		int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		for (int i = 3; i < 4096; i++)
			if (i != fd)
				dup2(fd, i);
	}
	say("fds_after_close", count_fds());
	child_work(n);
	sleep_ms(250);
	leaf_work(n);
	if (strcmp(how, "dup2"))
		say("fds_at_end", count_fds());
	return 0;
}

/* ---- threads ---------------------------------------------------------------------------------------- */

static NOINLINE void thread_work(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = malloc(32);
		__asm__ volatile("" ::"r"(p) : "memory");
		free(p);
	}
}

static void *worker(void *arg)
{
	thread_work((long)arg);
	return NULL;
}

static pthread_key_t late_key;

static NOINLINE void dtor_work(void *arg)
{
	/* Runs after the shim's own key destructor (its key was created first). */
	for (int i = 0; i < 3; i++) {
		void *p = malloc(48);
		__asm__ volatile("" ::"r"(p) : "memory");
		free(p);
	}
	free(arg);
}

static NOINLINE void *dtor_thread(void *arg)
{
	(void)arg;
	pthread_setspecific(late_key, malloc(16)); /* alloc attributed to dtor_thread */
	return NULL;
}

static int run_threads(long nthreads)
{
	pthread_key_create(&late_key, dtor_work);
	pthread_t th[64];
	long done = 0;
	while (done < nthreads) {
		int batch = nthreads - done < 64 ? (int)(nthreads - done) : 64;
		for (int i = 0; i < batch; i++) {
			long k = done + i;
			/* every third thread allocates nothing */
			if (k % 3 == 2)
				pthread_create(&th[i], NULL, worker, (void *)0L);
			else if (k % 3 == 1)
				pthread_create(&th[i], NULL, dtor_thread, NULL);
			else
				pthread_create(&th[i], NULL, worker, (void *)10L);
		}
		for (int i = 0; i < batch; i++)
			pthread_join(th[i], NULL);
		done += batch;
	}
	return 0;
}

/* ---- signals ------------------------------------------------------------------------------------------ */

static volatile sig_atomic_t handler_count;

static NOINLINE void handler_alloc(void)
{
	void *p = malloc(40);
	__asm__ volatile("" ::"r"(p) : "memory");
	free(p);
}

static void on_alarm(int sig)
{
	(void)sig;
	int saved = errno;
	handler_alloc();
	handler_count++;
	errno = saved;
}

static NOINLINE void main_alloc(void)
{
	void *p = malloc(24);
	__asm__ volatile("" ::"r"(p) : "memory");
	free(p);
}

static int run_signals(long n)
{
	struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = {{0, 20}, {0, 20}};
	setitimer(ITIMER_REAL, &it, NULL);
	long i;
	for (i = 0; i < n; i++)
		main_alloc();
	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &off, NULL);
	say("main_count", i);
	say("handler_count", handler_count);
	return 0;
}

/* ---- stacks, libraries --------------------------------------------------------------------------------- */

static NOINLINE void deep_leaf(void)
{
	void *p = malloc(64);
	__asm__ volatile("" ::"r"(p) : "memory");
}

static NOINLINE int deep(int d)
{
	if (d == 0) {
		deep_leaf();
		return 0;
	}
	return deep(d - 1) + 1;
}

static int run_dlopen(const char *liba, const char *libb)
{
	const char *libs[] = {liba, libb}, *fns[] = {"liba_many", "libb_many"};
	long counts[] = {7, 11};
	for (int i = 0; i < 2; i++) {
		void *h = dlopen(libs[i], RTLD_NOW);
		if (!h)
			return 5;
		void (*fn)(long) = (void (*)(long))dlsym(h, fns[i]);
		if (!fn)
			return 6;
		say(i ? "libb_at" : "liba_at", (long)(uintptr_t)fn);
		fn(counts[i]);
		if (i == 0)
			dlclose(h);
	}
	return 0;
}

/* Without jemalloc, the shim's mallocx must not crash: NULL (ENOMEM). */
static int run_nojemalloc(void)
{
	void *(*mx)(size_t, int) = (void *(*)(size_t, int))dlsym(RTLD_DEFAULT, "mallocx");
	say("mallocx_found", mx != NULL);
	if (mx) {
		errno = 0;
		void *p = mx(100, 0);
		say("mallocx_null", p == NULL);
		say("mallocx_enomem", errno == ENOMEM);
	}
	leaf_work(5);
	return 0;
}

int main(int argc, char **argv)
{
	self = argv[0];
	const char *mode = argc > 1 ? argv[1] : "leaf";
	long n = argc > 2 ? atol(argv[2]) : 100;
	if (!strcmp(mode, "leaf")) {
		leaf_work(n);
		return 0;
	}
	if (!strcmp(mode, "fork"))
		return run_fork(n, false, 1);
	if (!strcmp(mode, "forkmt"))
		return run_fork(n, true, 20);
	if (!strcmp(mode, "forkexec"))
		return run_fork_exec(n, 0);
	if (!strcmp(mode, "vfork"))
		return run_fork_exec(n, 1);
	if (!strcmp(mode, "spawn"))
		return run_fork_exec(n, 2);
	if (!strncmp(mode, "exit-", 5))
		return run_exit(mode + 5, n);
	if (!strncmp(mode, "fds-", 4))
		return run_fds(mode + 4, n, argc > 3 ? argv[3] : "/dev/null");
	if (!strcmp(mode, "threads"))
		return run_threads(n);
	if (!strcmp(mode, "signals"))
		return run_signals(n);
	if (!strcmp(mode, "deep"))
		return deep((int)n) == (int)n ? 0 : 1;
	if (!strcmp(mode, "dlopen"))
		return argc > 4 ? run_dlopen(argv[3], argv[4]) : 2;
	if (!strcmp(mode, "nojemalloc"))
		return run_nojemalloc();
	return 2;
}
