/*
 * fds.c: for tests/e2e/test_transparent.py. Lists its open file descriptors (number, target with
 * pipe/socket inode numbers kept, close-on-exec flag), then the descriptors it gets from open()
 * and pipe(), which must be the same numbers with and without the profiler: a shim that takes a
 * low descriptor of its own, or a launcher that leaks one into the program, changes them.
 * Lines:  fd N TARGET cloexec=0|1    open N    pipe N M
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
	int fds[1024], n = 0;
	/* Collect the numbers first, without opendir (whose own descriptor would show up). */
	for (int fd = 0; fd < 1024 && n < 1024; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			fds[n++] = fd;
	for (int i = 0; i < n; i++) {
		char path[64], target[4096];
		snprintf(path, sizeof path, "/proc/self/fd/%d", fds[i]);
		ssize_t len = readlink(path, target, sizeof target - 1);
		if (len < 0)
			len = 0;
		target[len] = 0;
		int fl = fcntl(fds[i], F_GETFD);
		printf("fd %d %s cloexec=%d\n", fds[i], target, (fl & FD_CLOEXEC) ? 1 : 0);
	}
	int fd = open("/dev/null", O_RDONLY);
	printf("open %d\n", fd);
	int p[2];
	if (pipe(p) == 0)
		printf("pipe %d %d\n", p[0], p[1]);
	/* Also the count of descriptors at or above 1024, if any (beyond the scan above). */
	int high = 0;
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		struct dirent *e;
		while ((e = readdir(d)))
			if (e->d_name[0] != '.' && atoi(e->d_name) >= 1024 && atoi(e->d_name) != dirfd(d))
				high++;
		closedir(d);
	}
	printf("high %d\n", high);
	return 0;
}
