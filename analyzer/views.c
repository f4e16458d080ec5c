/*
 * views.c: pprof's `list`, `peek` and `traces` views and folded stacks for flame graphs, over the
 * stacks and nodes report.c's shared filter and aggregation produce.
 */
#include "views.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* pprof's separators, byte for byte, so scripts that split pprof output split ours. */
static const char peek_separator[] =
	"----------------------------------------------------------+-------------";
static const char traces_separator[] =
	"-----------+-------------------------------------------------------";

/* pprof's valueOrDot: list leaves zero cells as "." so the hot lines stand out. */
static void value_or_dot(char *buf, size_t size, double v, int metric)
{
	if (v == 0)
		snprintf(buf, size, ".");
	else
		ap_format_value(buf, size, v, metric);
}

static bool row_present(const ap_row *row, int m)
{
	return row->flat[m] != 0 || row->cum[m] != 0;
}

/* ---- list -------------------------------------------------------------------------------------------- */

/* qsort has no context argument: the comparators below read their parameters from file statics
 * (the analyzer is single-threaded). */
static const ap_rows *list_rows;

static int str_cmp_null(const char *a, const char *b)
{
	return a == b ? 0 : !a ? 1 : !b ? -1 : strcmp(a, b);
}

/* Function, then source file (rows without one last, by module), then line or address. */
static int cmp_list(const void *a, const void *b)
{
	const ap_row *x = &list_rows->rows.v[*(const size_t *)a];
	const ap_row *y = &list_rows->rows.v[*(const size_t *)b];
	int c = strcmp(x->function, y->function);
	if (!c)
		c = str_cmp_null(x->file, y->file);
	if (!c)
		c = str_cmp_null(x->module, y->module);
	if (!c)
		c = x->line < y->line ? -1 : x->line > y->line;
	if (!c)
		c = x->offset < y->offset ? -1 : x->offset > y->offset;
	return c;
}

static bool same_file(const ap_row *x, const ap_row *y)
{
	return !str_cmp_null(x->function, y->function) && !str_cmp_null(x->file, y->file) &&
	       !str_cmp_null(x->module, y->module);
}

static FILE *try_open(const char *dir, size_t dirlen, const char *rel)
{
	char path[4096];
	if ((size_t)snprintf(path, sizeof(path), "%.*s/%s", (int)dirlen, dir, rel) >= sizeof(path))
		return NULL;
	return fopen(path, "r");
}

/* Debug info often names a source relative to the compiler's working directory (meson: the build
 * directory), which `list` does not know. As pprof does with its source_path, try the name as it
 * is, then under each --source-path directory and the current one, dropping leading directories
 * one by one ("../src/a/b.c", "src/a/b.c", "a/b.c", "b.c") until a file opens. */
/* dir/file, then dir/ + file without its first directory, and so on. */
static FILE *open_under(const char *dir, size_t dirlen, const char *file)
{
	for (const char *rel = file; rel; rel = strchr(rel, '/')) {
		while (*rel == '/')
			rel++;
		FILE *f;
		if (*rel && (f = try_open(dir, dirlen, rel)))
			return f;
	}
	return NULL;
}

static FILE *open_source(const char *file, const char *source_path)
{
	FILE *f = fopen(file, "r");
	for (const char *d = source_path; !f && d && *d; d += strcspn(d, ":"), d += *d == ':') {
		size_t len = strcspn(d, ":");
		if (len)
			f = open_under(d, len, file);
	}
	return f ? f : open_under(".", 1, file);
}

/* Source lines from the first sampled line - 5 to the last + 5, each with the figures of its
 * line; rows[] are the function's rows in this file, sorted by line. */
static void list_source(const ap_rows *r, const size_t *rows, size_t n, const ap_view_opts *o, FILE *out)
{
	const ap_row *first = &r->rows.v[rows[0]];
	uint32_t lo = 0, hi = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t line = r->rows.v[rows[i]].line;
		if (line && (!lo || line < lo))
			lo = line;
		if (line > hi)
			hi = line;
	}
	lo = lo > 5 ? lo - 5 : 1;
	hi += 5;
	int m = o->sample_index;
	FILE *src = open_source(first->file, o->source_path);
	char f[32], c[32];
	if (!src) {
		fprintf(out, " Error: could not find file %s\n", first->file);
		/* The figures are still worth having: one line per sampled line, without text. */
		for (size_t i = 0; i < n; i++) {
			const ap_row *row = &r->rows.v[rows[i]];
			value_or_dot(f, sizeof(f), row->flat[m], m);
			value_or_dot(c, sizeof(c), row->cum[m], m);
			fprintf(out, "%10s %10s %6u:\n", f, c, row->line);
		}
		return;
	}
	char *text = NULL;
	size_t cap = 0, next = 0;
	ssize_t len;
	for (uint32_t lineno = 1; lineno <= hi && (len = getline(&text, &cap, src)) >= 0; lineno++) {
		if (lineno < lo)
			continue;
		while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
			text[--len] = 0;
		while (next < n && r->rows.v[rows[next]].line < lineno)
			next++;
		double fv = 0, cv = 0;
		if (next < n && r->rows.v[rows[next]].line == lineno) {
			fv = r->rows.v[rows[next]].flat[m];
			cv = r->rows.v[rows[next]].cum[m];
		}
		value_or_dot(f, sizeof(f), fv, m);
		value_or_dot(c, sizeof(c), cv, m);
		fprintf(out, "%10s %10s %6u:%s\n", f, c, lineno, text);
	}
	free(text);
	fclose(src);
}

/* Without a source file (no debug info), the figures go by address inside the module. */
static void list_addresses(const ap_rows *r, const size_t *rows, size_t n, int m, FILE *out)
{
	const char *module = r->rows.v[rows[0]].module;
	const char *base = module && strrchr(module, '/') ? strrchr(module, '/') + 1 : module;
	fprintf(out, " Error: no source information; figures by address\n");
	for (size_t i = 0; i < n; i++) {
		const ap_row *row = &r->rows.v[rows[i]];
		char f[32], c[32];
		value_or_dot(f, sizeof(f), row->flat[m], m);
		value_or_dot(c, sizeof(c), row->cum[m], m);
		fprintf(out, "%10s %10s %s+0x%llx\n", f, c, base ? base : "?",
		        (unsigned long long)row->offset);
	}
}

int ap_report_list(ap_profile *p, const ap_view_opts *o, const regex_t *re, FILE *out)
{
	/* pprof lists at "lines" granularity: every line's cum is de-duplicated per stack. */
	ap_rows r;
	ap_rows_build(p, o, AP_G_LIST, false, &r);
	int m = o->sample_index;
	size_t *sel = ap_xcalloc(r.rows.n + 1, sizeof(*sel)), nsel = 0;
	for (size_t i = 0; i < r.rows.n; i++)
		if (row_present(&r.rows.v[i], m) && regexec(re, r.rows.v[i].function, 0, NULL, 0) == 0)
			sel[nsel++] = i;
	if (!nsel) {
		free(sel);
		ap_rows_free(&r);
		return 1;
	}
	list_rows = &r;
	qsort(sel, nsel, sizeof(*sel), cmp_list);

	char t[32];
	ap_format_value(t, sizeof(t), r.total[m], m);
	fprintf(out, "Total: %s\n", t);
	for (size_t i = 0, j; i < nsel; i = j) {
		const ap_row *first = &r.rows.v[sel[i]];
		double flat = 0, cum = 0;
		for (j = i; j < nsel && same_file(first, &r.rows.v[sel[j]]); j++) {
			flat += r.rows.v[sel[j]].flat[m];
			cum += r.rows.v[sel[j]].cum[m];
		}
		char f[32], c[32], pct[32];
		ap_format_value(f, sizeof(f), flat, m);
		ap_format_value(c, sizeof(c), cum, m);
		ap_format_pct(pct, sizeof(pct), cum, r.total[m]);
		fprintf(out, "ROUTINE ======================== %s in %s\n", first->function,
		        first->file ? first->file : first->module ? first->module : "?");
		fprintf(out, "%10s %10s (flat, cum) %6s of Total\n", f, c, pct);
		if (first->file)
			list_source(&r, sel + i, j - i, o, out);
		else
			list_addresses(&r, sel + i, j - i, m, out);
	}
	free(sel);
	ap_rows_free(&r);
	return 0;
}

/* ---- peek -------------------------------------------------------------------------------------------- */

static const ap_rows *edge_rows;
static int edge_metric;
static bool edge_by_to; /* sorting the in-edges (grouped by callee) or the out-edges (by caller) */

/* Grouped by node, then pprof's edge order: |weight| descending, then the other end's name. */
static int cmp_edges(const void *a, const void *b)
{
	const ap_edge *x = &edge_rows->edges.v[*(const size_t *)a];
	const ap_edge *y = &edge_rows->edges.v[*(const size_t *)b];
	uint32_t gx = edge_by_to ? x->to : x->from, gy = edge_by_to ? y->to : y->from;
	if (gx != gy)
		return gx < gy ? -1 : 1;
	double wx = fabs(x->w[edge_metric]), wy = fabs(y->w[edge_metric]);
	if (wx != wy)
		return wx > wy ? -1 : 1;
	uint32_t ox = edge_by_to ? x->from : x->to, oy = edge_by_to ? y->from : y->to;
	return strcmp(edge_rows->rows.v[ox].name, edge_rows->rows.v[oy].name);
}

/* Edge indices grouped by callee (by_to) or caller, and start[node] .. start[node + 1] of each. */
static size_t *edges_by_node(const ap_rows *r, int m, bool by_to, size_t **start)
{
	size_t *idx = ap_xcalloc(r->edges.n + 1, sizeof(*idx));
	*start = ap_xcalloc(r->rows.n + 1, sizeof(**start));
	for (size_t i = 0; i < r->edges.n; i++) {
		idx[i] = i;
		(*start)[(by_to ? r->edges.v[i].to : r->edges.v[i].from) + 1]++;
	}
	for (size_t i = 0; i < r->rows.n; i++)
		(*start)[i + 1] += (*start)[i];
	edge_rows = r;
	edge_metric = m;
	edge_by_to = by_to;
	qsort(idx, r->edges.n, sizeof(*idx), cmp_edges);
	return idx;
}

static void peek_edges(const ap_rows *r, const size_t *idx, const size_t *start, size_t node,
                       bool callers, int m, FILE *out)
{
	double cum = r->rows.v[node].cum[m];
	for (size_t k = start[node]; k < start[node + 1]; k++) {
		const ap_edge *e = &r->edges.v[idx[k]];
		if (e->w[m] == 0)
			continue;
		char w[32], pct[32];
		ap_format_value(w, sizeof(w), e->w[m], m);
		ap_format_pct(pct, sizeof(pct), e->w[m], cum);
		fprintf(out, "%50s %6s |   %s%s\n", w, pct, r->rows.v[callers ? e->from : e->to].name,
		        e->inlined ? " (inline)" : "");
	}
}

int ap_report_peek(ap_profile *p, const ap_view_opts *o, const regex_t *re, FILE *out)
{
	ap_rows r;
	ap_rows_build(p, o, o->lines ? AP_G_LINE : AP_G_FUNCTION, true, &r);
	int m = o->sample_index;
	ap_rows_sort(&r, m, o->cum_sort);
	size_t *in_start, *out_start;
	size_t *in = edges_by_node(&r, m, true, &in_start);
	size_t *outs = edges_by_node(&r, m, false, &out_start);

	/* As pprof, print nothing at all when nothing matches: the caller reports it. */
	bool any = false;
	double shown = 0;
	for (size_t i = 0; i < r.rows.n; i++) {
		shown += r.rows.v[i].flat[m];
		any |= row_present(&r.rows.v[i], m) && regexec(re, r.rows.v[i].name, 0, NULL, 0) == 0;
	}
	if (!any) {
		free(in);
		free(in_start);
		free(outs);
		free(out_start);
		ap_rows_free(&r);
		return 1;
	}
	char a[32], b[32], c[32];
	ap_format_value(a, sizeof(a), shown, m);
	ap_format_pct(b, sizeof(b), shown, r.total[m]);
	ap_format_value(c, sizeof(c), r.total[m], m);
	ap_report_header(p, o, out);
	fprintf(out, "Showing nodes accounting for %s, %s of %s total\n", a, b, c);
	fprintf(out, "%s\n      flat  flat%%   sum%%        cum   cum%%   calls calls%% + context\n",
	        peek_separator);

	double flat_sum = 0;
	long matched = 0;
	for (size_t i = 0; i < r.rows.n && (o->nrows < 0 || matched < o->nrows); i++) {
		size_t node = r.order[i];
		const ap_row *row = &r.rows.v[node];
		if (!row_present(row, m) || regexec(re, row->name, 0, NULL, 0) != 0)
			continue;
		matched++;
		fprintf(out, "%s\n", peek_separator);
		peek_edges(&r, in, in_start, node, true, m, out);
		flat_sum += row->flat[m];
		char f[32], fp[32], sp[32], cu[32], cp[32];
		ap_format_value(f, sizeof(f), row->flat[m], m);
		ap_format_pct(fp, sizeof(fp), row->flat[m], r.total[m]);
		ap_format_pct(sp, sizeof(sp), flat_sum, r.total[m]);
		ap_format_value(cu, sizeof(cu), row->cum[m], m);
		ap_format_pct(cp, sizeof(cp), row->cum[m], r.total[m]);
		fprintf(out, "%10s %6s %6s %10s %6s                | %s\n", f, fp, sp, cu, cp, row->name);
		peek_edges(&r, outs, out_start, node, false, m, out);
	}
	if (matched)
		fprintf(out, "%s\n", peek_separator);
	free(in);
	free(in_start);
	free(outs);
	free(out_start);
	ap_rows_free(&r);
	return matched ? 0 : 1;
}

/* ---- stacks keyed by their printed form (traces, folded) --------------------------------------------- */

/* Sites that print the same (hidden allocator frames, or --lines off) become one entry. */
typedef struct keyed {
	char *key;
	double v[AP_M__COUNT];
	const ap_symframe **frames; /* traces: the first site's frames, innermost first */
	size_t n;
} keyed;

typedef struct keyed_set {
	AP_VEC(keyed) e;
	ap_map index;
	const ap_view_opts *o;
	enum ap_granularity g;
	AP_VEC(char) buf; /* the key being built */
	char *name;       /* ap_frame_name's buffer */
	size_t name_cap;
} keyed_set;

static void buf_add(keyed_set *k, const char *s, bool sanitise)
{
	for (; *s; s++) {
		char c = *s;
		/* Folded lines are split at ';' and at the end of the line: names must contain neither. */
		if (sanitise && c == ';')
			c = ':';
		else if (sanitise && (c == '\n' || c == '\r'))
			c = ' ';
		AP_VEC_PUSH(k->buf, c);
	}
}

static keyed *keyed_get(keyed_set *k, const char *key)
{
	for (uint64_t h = ap_hash_str(key) | 1;; h += 2) {
		bool added;
		uint64_t *slot = ap_map_put(&k->index, h, &added);
		if (added) {
			keyed e = {.key = ap_xstrdup(key)};
			AP_VEC_PUSH(k->e, e);
			*slot = k->e.n;
			return &k->e.v[k->e.n - 1];
		}
		if (!strcmp(k->e.v[*slot - 1].key, key))
			return &k->e.v[*slot - 1];
	}
}

static void keyed_add(keyed *e, const double *v)
{
	for (int m = 0; m < AP_M__COUNT; m++)
		e->v[m] += v[m];
}

static void keyed_free(keyed_set *k)
{
	for (size_t i = 0; i < k->e.n; i++) {
		free(k->e.v[i].key);
		free(k->e.v[i].frames);
	}
	AP_VEC_FREE(k->e);
	AP_VEC_FREE(k->buf);
	ap_map_free(&k->index);
	free(k->name);
}

/* traces key: one frame per line, leaf first, as the text view prints them. */
static void traces_one(void *ctx, const ap_stack_view *s)
{
	keyed_set *k = ctx;
	k->buf.n = 0;
	for (size_t i = 0; i < s->n; i++) {
		buf_add(k, ap_frame_name(s->frames[i], k->g, &k->name, &k->name_cap), false);
		buf_add(k, s->frames[i]->inlined ? " (inline)\n" : "\n", false);
	}
	AP_VEC_PUSH(k->buf, '\0');
	keyed *e = keyed_get(k, k->buf.v);
	if (!e->frames) {
		e->n = s->n;
		e->frames = ap_xcalloc(s->n + 1, sizeof(*e->frames));
		memcpy(e->frames, s->frames, s->n * sizeof(*e->frames));
	}
	keyed_add(e, s->v);
}

/* folded key: root first, ';' between frames, names sanitised. */
static void folded_one(void *ctx, const ap_stack_view *s)
{
	keyed_set *k = ctx;
	if (llround(s->v[k->o->sample_index]) == 0)
		return;
	k->buf.n = 0;
	for (size_t i = s->n; i-- > 0;) {
		buf_add(k, ap_frame_name(s->frames[i], k->g, &k->name, &k->name_cap), true);
		if (i)
			AP_VEC_PUSH(k->buf, ';');
	}
	AP_VEC_PUSH(k->buf, '\0');
	keyed_add(keyed_get(k, k->buf.v), s->v);
}

static int keyed_metric;

static int cmp_keyed_weight(const void *a, const void *b)
{
	const keyed *x = a, *y = b;
	double wx = fabs(x->v[keyed_metric]), wy = fabs(y->v[keyed_metric]);
	if (wx != wy)
		return wx > wy ? -1 : 1;
	return strcmp(x->key, y->key);
}

static int cmp_keyed_key(const void *a, const void *b)
{
	return strcmp(((const keyed *)a)->key, ((const keyed *)b)->key);
}

/* ---- traces ------------------------------------------------------------------------------------------ */

static void traces_json(ap_profile *p, const ap_view_opts *o, keyed_set *k, size_t shown,
                        const double *total, FILE *out)
{
	fprintf(out, "{\"sample_index\": \"%s\", \"total\": ", ap_view_index_name(o));
	ap_json_four(out, total);
	fprintf(out, ", ");
	ap_json_trace_info(p, out);
	fprintf(out, ", \"traces\": [");
	for (size_t i = 0; i < shown; i++) {
		const keyed *e = &k->e.v[i];
		fprintf(out, "%s\n  {\"values\": ", i ? "," : "");
		ap_json_four(out, e->v);
		fprintf(out, ", \"frames\": [");
		for (size_t j = 0; j < e->n; j++) {
			const ap_symframe *f = e->frames[j];
			fprintf(out, "%s{\"function\": ", j ? ", " : "");
			ap_json_str(out, f->function);
			fprintf(out, ", \"inlined\": %s", f->inlined ? "true" : "false");
			/* Sites merge by what the text prints, so a line is only meaningful with --lines. */
			if (o->lines) {
				fprintf(out, ", \"file\": ");
				if (f->file)
					ap_json_str(out, f->file);
				else
					fputs("null", out);
				fprintf(out, ", \"line\": %u", f->line);
			}
			fputc('}', out);
		}
		fprintf(out, "]}");
	}
	fprintf(out, "]}\n");
}

int ap_report_traces(ap_profile *p, const ap_view_opts *o, FILE *out)
{
	keyed_set k = {.o = o, .g = o->lines ? AP_G_LINE : AP_G_FUNCTION};
	double total[AP_M__COUNT] = {0};
	ap_walk_stacks(p, o, total, traces_one, &k);
	int m = o->sample_index;
	keyed_metric = m;
	qsort(k.e.v, k.e.n, sizeof(*k.e.v), cmp_keyed_weight);
	size_t shown = o->nrows >= 0 && (size_t)o->nrows < k.e.n ? (size_t)o->nrows : k.e.n;
	if (o->json) {
		traces_json(p, o, &k, shown, total, out);
		keyed_free(&k);
		return 0;
	}
	ap_report_header(p, o, out);
	for (size_t i = 0; i < shown; i++) {
		const keyed *e = &k.e.v[i];
		fprintf(out, "%s\n", traces_separator);
		/* pprof prints a Go heap sample's labels here ("bytes: 100B"); ours are the figures. */
		for (int mm = 0; mm < AP_M__COUNT; mm++) {
			char v[32];
			ap_format_value(v, sizeof(v), e->v[mm], mm);
			fprintf(out, "%14s:  %s\n", ap_metric_names[mm], v);
		}
		char v[32];
		ap_format_value(v, sizeof(v), e->v[m], m);
		const char *line = e->key;
		for (bool first = true; *line; first = false) {
			const char *nl = strchr(line, '\n');
			fprintf(out, "%10s   %.*s\n", first ? v : "", (int)(nl - line), line);
			line = nl + 1;
		}
	}
	fprintf(out, "%s\n", traces_separator);
	if (shown < k.e.n)
		fprintf(out, "Showing %zu of %zu stacks (-n)\n", shown, k.e.n);
	keyed_free(&k);
	return 0;
}

/* ---- folded ------------------------------------------------------------------------------------------ */

int ap_report_folded(ap_profile *p, const ap_view_opts *o, FILE *out)
{
	keyed_set k = {.o = o, .g = o->lines ? AP_G_LINE : AP_G_FUNCTION};
	double total[AP_M__COUNT] = {0};
	ap_walk_stacks(p, o, total, folded_one, &k);
	/* flamegraph.pl sorts by itself, but a stable order makes outputs diffable. */
	qsort(k.e.v, k.e.n, sizeof(*k.e.v), cmp_keyed_key);
	int m = o->sample_index;
	for (size_t i = 0; i < k.e.n; i++) {
		long long w = llround(k.e.v[i].v[m]);
		if (w)
			fprintf(out, "%s %lld\n", k.e.v[i].key, w);
	}
	keyed_free(&k);
	return 0;
}
