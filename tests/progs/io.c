/*
 * io.c: for tests/e2e/test_transparent.py. Echoes its arguments, reads all of stdin into a
 * growing malloc/realloc buffer, prints its size, a checksum and the text reversed line by line to
 * stdout (through stdio, flushed by exit), writes two lines to stderr and exits with status 3.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	printf("argc=%d\n", argc);
	for (int i = 1; i < argc; i++)
		printf("argv[%d]=[%s]\n", i, argv[i]);
	fputs("io: first line on stderr\n", stderr);

	size_t cap = 16, len = 0;
	char *buf = malloc(cap);
	if (!buf)
		return 99;
	for (;;) {
		if (len == cap) {
			cap *= 2;
			char *nb = realloc(buf, cap);
			if (!nb)
				return 99;
			buf = nb;
		}
		ssize_t n = read(0, buf + len, cap - len);
		if (n < 0)
			return 98;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	unsigned long sum = 0;
	for (size_t i = 0; i < len; i++)
		sum = sum * 31 + (unsigned char)buf[i];
	printf("stdin: %zu bytes, checksum %lu\n", len, sum);

	/* The lines of stdin, last first, each copied into its own allocation. */
	size_t end = len;
	while (end > 0) {
		size_t start = end - 1;
		while (start > 0 && buf[start - 1] != '\n')
			start--;
		char *line = strndup(buf + start, end - start);
		if (!line)
			return 99;
		fputs(line, stdout);
		if (line[strlen(line) - 1] != '\n')
			putchar('\n');
		free(line);
		end = start;
	}
	free(buf);
	fprintf(stderr, "io: exiting with status 3\n");
	exit(3);
}
