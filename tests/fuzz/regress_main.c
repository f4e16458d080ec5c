/*
 * regress_main.c: replays saved fuzz inputs through LLVMFuzzerTestOneInput without libFuzzer, so
 * the inputs that once crashed the reader (tests/fuzz/regress/) are checked on every test run,
 * with whatever compiler builds the project.
 *
 * usage: fuzz_regress [-z] FILE|DIR...   (-z: the inputs are compressed trace files, as the
 * compressed harness takes them; a file named *.trace or *.zst is taken as compressed anyway)
 *
 * Exit 0 when every input was replayed (a crash or a sanitizer report ends the process first),
 * 1 when an input could not be read or none was found.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int fuzz_stream_one(const uint8_t *data, size_t size);
int fuzz_compressed_one(const uint8_t *data, size_t size);

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int replay(const char *path, bool compressed, size_t *count)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		perror(path);
		return 1;
	}
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 65536;
			uint8_t *nb = realloc(buf, cap);
			if (!nb) {
				fprintf(stderr, "%s: out of memory\n", path);
				free(buf);
				fclose(f);
				return 1;
			}
			buf = nb;
		}
		size_t n = fread(buf + len, 1, cap - len, f);
		if (n == 0)
			break;
		len += n;
	}
	bool err = ferror(f);
	fclose(f);
	if (err) {
		perror(path);
		free(buf);
		return 1;
	}
	compressed = compressed || ends_with(path, ".trace") || ends_with(path, ".zst");
	printf("replay %s (%zu bytes, %s)\n", path, len, compressed ? "compressed" : "stream");
	fflush(stdout);
	if (compressed)
		fuzz_compressed_one(buf, len);
	else
		fuzz_stream_one(buf, len);
	free(buf);
	++*count;
	return 0;
}

static int compare(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int walk(const char *path, bool compressed, size_t *count)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		perror(path);
		return 1;
	}
	if (!S_ISDIR(st.st_mode))
		return replay(path, compressed, count);
	DIR *d = opendir(path);
	if (!d) {
		perror(path);
		return 1;
	}
	/* In name order, so a run's log reads the same every time. */
	char **names = NULL;
	size_t n = 0, cap = 0;
	int ret = 0;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.' || ends_with(e->d_name, ".md"))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			char **nn = realloc(names, cap * sizeof(*names));
			if (!nn)
				abort();
			names = nn;
		}
		size_t len = strlen(path) + strlen(e->d_name) + 2;
		names[n] = malloc(len);
		if (!names[n])
			abort();
		snprintf(names[n++], len, "%s/%s", path, e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), compare);
	for (size_t i = 0; i < n; i++) {
		ret |= walk(names[i], compressed, count);
		free(names[i]);
	}
	free(names);
	return ret;
}

int main(int argc, char **argv)
{
	bool compressed = false;
	size_t count = 0;
	int ret = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-z"))
			compressed = true;
		else
			ret |= walk(argv[i], compressed, &count);
	}
	printf("%zu inputs replayed\n", count);
	if (!count) {
		fprintf(stderr, "fuzz_regress: no inputs\n");
		return 1;
	}
	return ret;
}
