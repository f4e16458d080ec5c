/*
 * demo.c: the quick start's demo program (build/tests/demo). A log analyser: it generates a day
 * of web-server log lines, splits each line into tokens and counts the requested paths and
 * status codes.
 *
 * Its allocation profile has one obvious hot spot, in the spirit of the pprof articles:
 * copy_token() mallocs a fresh buffer for every token of every line, only for the caller to
 * free it a moment later (alloc_objects: by far the most). Lighter: intern_word() allocates one
 * entry per distinct word (these stay live until the end, then are freed), read_line() grows one
 * line buffer with realloc, and load_config() leaks a few small blocks on purpose (inuse at exit).
 *
 *   allocprof record -o demo.trace -- build/tests/demo
 *   allocprof top --sample-index=alloc_objects demo.trace     -> copy_token on top
 *   allocprof top --sample-index=inuse_space demo.trace       -> load_config's leak
 *
 * usage: demo [LINES]   (default 20000)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	struct entry *next;
	unsigned long count;
	char word[];
};

#define NBUCKETS 1024
static struct entry *table[NBUCKETS];
static unsigned long ndistinct;
static uint64_t rng = 88172645463325252ull;

static uint64_t next_random(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

struct config {
	char *name;
	char *log_format;
	char *timezone;
};

struct config *load_config(void);
size_t read_line(char **buf, size_t *cap, unsigned long i);
char *copy_token(const char *start, size_t len);
void intern_word(const char *w);
void parse_line(const char *line);
void report(unsigned long lines);

/* The intentional leak: the configuration strings are never freed. */
__attribute__((noinline)) struct config *load_config(void)
{
	struct config *c = malloc(sizeof *c);
	if (!c)
		exit(1);
#define COPY(field, text)                                                                          \
	do {                                                                                       \
		c->field = malloc(sizeof(text));                                                   \
		if (!c->field)                                                                     \
			exit(1);                                                                   \
		memcpy(c->field, text, sizeof(text));                                              \
	} while (0)
	COPY(name, "demo web server");
	COPY(log_format, "%h %l %u %t \"%r\" %>s %b");
	COPY(timezone, "UTC");
#undef COPY
	return c;
}

/* One line of a fake access log into *buf, grown with realloc as needed. */
__attribute__((noinline)) size_t read_line(char **buf, size_t *cap, unsigned long i)
{
	static const char *paths[] = {"/", "/index.html", "/api/v1/users", "/api/v1/orders",
				      "/static/app.js", "/static/style.css", "/login", "/search",
				      "/api/v1/items", "/favicon.ico"};
	static const char *methods[] = {"GET", "GET", "GET", "POST", "PUT", "DELETE"};
	static const int statuses[] = {200, 200, 200, 200, 304, 404, 500, 302};
	uint64_t r = next_random();
	for (;;) {
		int n = snprintf(*buf, *cap, "10.0.%u.%u - - [12/Mar/2024:10:%02lu:%02lu +0000] \"%s %s%s HTTP/1.1\" %d %u",
				 (unsigned)(r & 255), (unsigned)((r >> 8) & 255), (i / 60) % 60, i % 60,
				 methods[(r >> 16) % 6], paths[(r >> 24) % 10],
				 (r >> 32) % 4 == 0 ? "?page=2" : "", statuses[(r >> 40) % 8],
				 (unsigned)((r >> 44) % 50000));
		if (n >= 0 && (size_t)n < *cap)
			return (size_t)n;
		*cap = *cap ? *cap * 2 : 16;
		char *nb = realloc(*buf, *cap);
		if (!nb)
			exit(1);
		*buf = nb;
	}
}

/* The hot spot: a fresh heap copy of every token. */
__attribute__((noinline)) char *copy_token(const char *start, size_t len)
{
	char *t = malloc(len + 1);
	if (!t)
		exit(1);
	memcpy(t, start, len);
	t[len] = 0;
	return t;
}

__attribute__((noinline)) void intern_word(const char *w)
{
	unsigned long h = 5381;
	for (const char *p = w; *p; p++)
		h = h * 33 + (unsigned char)*p;
	struct entry **b = &table[h % NBUCKETS];
	for (struct entry *e = *b; e; e = e->next)
		if (!strcmp(e->word, w)) {
			e->count++;
			return;
		}
	size_t len = strlen(w);
	struct entry *e = malloc(sizeof *e + len + 1);
	if (!e)
		exit(1);
	memcpy(e->word, w, len + 1);
	e->count = 1;
	e->next = *b;
	*b = e;
	ndistinct++;
}

/* Splits a line at spaces; counts the request path (token 6) and the status (token 8). */
__attribute__((noinline)) void parse_line(const char *line)
{
	int field = 0;
	const char *p = line;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *start = p;
		while (*p && *p != ' ')
			p++;
		if (p == start)
			break;
		char *tok = copy_token(start, (size_t)(p - start));
		if (field == 6 || field == 8) {
			char *q = strchr(tok, '?');
			if (q)
				*q = 0;
			intern_word(tok);
		}
		free(tok);
		field++;
	}
}

static int by_count(const void *a, const void *b)
{
	const struct entry *x = *(const struct entry *const *)a, *y = *(const struct entry *const *)b;
	if (x->count != y->count)
		return x->count < y->count ? 1 : -1;
	return strcmp(x->word, y->word);
}

__attribute__((noinline)) void report(unsigned long lines)
{
	struct entry **all = malloc(ndistinct * sizeof *all);
	if (!all)
		exit(1);
	size_t n = 0;
	for (int i = 0; i < NBUCKETS; i++)
		for (struct entry *e = table[i]; e; e = e->next)
			all[n++] = e;
	qsort(all, n, sizeof *all, by_count);
	printf("%lu log lines, %lu distinct paths and statuses; the top 5:\n", lines, ndistinct);
	for (size_t i = 0; i < n && i < 5; i++)
		printf("  %7lu  %s\n", all[i]->count, all[i]->word);
	free(all);
}

static void free_table(void)
{
	for (int i = 0; i < NBUCKETS; i++)
		while (table[i]) {
			struct entry *e = table[i];
			table[i] = e->next;
			free(e);
		}
}

int main(int argc, char **argv)
{
	unsigned long lines = argc > 1 ? strtoul(argv[1], NULL, 10) : 20000;
	struct config *cfg = load_config();
	printf("%s: analysing %lu lines (format %s, %s)\n", cfg->name, lines, cfg->log_format, cfg->timezone);
	char *buf = NULL;
	size_t cap = 0;
	for (unsigned long i = 0; i < lines; i++) {
		read_line(&buf, &cap, i);
		parse_line(buf);
	}
	free(buf);
	report(lines);
	free_table();
	return 0;
}
