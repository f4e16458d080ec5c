/*
 * report.c: the path every view shares (stack filter, aggregation into nodes and edges, value
 * formats, JSON pieces) and the `top` view, in pprof's text shape or as JSON.
 */
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- filter ------------------------------------------------------------------------------------------ */

/* pprof's Location.matchesName: a regex selects a frame by its function, its file or its module,
 * so `--focus libpython` and `--ignore /usr/include/` work as well as function names. */
static bool frame_matches(const regex_t *re, const ap_symframe *f)
{
	return regexec(re, f->function, 0, NULL, 0) == 0 ||
	       (f->file && regexec(re, f->file, 0, NULL, 0) == 0) ||
	       (f->module && regexec(re, f->module, 0, NULL, 0) == 0);
}

void ap_walk_stacks(ap_profile *p, const ap_view_opts *o, double total[AP_M__COUNT], ap_stack_fn fn,
                    void *ctx)
{
	ap_frame_vec frames = {0};
	for (uint32_t id = 0; id < p->sites.n; id++) {
		const ap_site *s = &p->sites.v[id];
		bool any = false;
		for (int m = 0; m < AP_M__COUNT; m++)
			any |= s->v[m] != 0;
		if (!any)
			continue;
		for (int m = 0; m < AP_M__COUNT; m++)
			total[m] += fabs(s->v[m]);
		size_t n = ap_profile_site_frames(p, id, o->show_allocator, &frames);
		bool focused = !o->has_focus, ignored = false;
		for (size_t i = 0; i < n && !ignored; i++) {
			if (o->has_ignore && frame_matches(&o->ignore, frames.v[i]))
				ignored = true;
			if (!focused && frame_matches(&o->focus, frames.v[i]))
				focused = true;
		}
		if (!focused || ignored)
			continue;
		ap_stack_view sv = {.site = id, .v = s->v, .frames = frames.v, .n = n};
		fn(ctx, &sv);
	}
	AP_VEC_FREE(frames);
}

/* ---- aggregation ------------------------------------------------------------------------------------- */

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

/* The identity of the node a frame belongs to at granularity g. */
typedef struct node_key {
	const char *function, *file, *module;
	uint32_t line;
	uint64_t offset;
} node_key;

static node_key key_of(const ap_symframe *f, enum ap_granularity g)
{
	node_key k = {.function = f->function};
	if (g == AP_G_FUNCTION)
		return k;
	if (f->file) {
		k.file = f->file;
		k.line = f->line;
	} else if (g == AP_G_LIST) {
		k.module = f->module;
		k.offset = f->module_offset;
	}
	return k;
}

static uint64_t key_hash(const node_key *k)
{
	uint64_t h = ap_hash_str(k->function);
	if (k->file)
		h ^= ap_hash64(ap_hash_str(k->file) + k->line);
	if (k->module)
		h ^= ap_hash64(ap_hash_str(k->module) ^ k->offset);
	else
		h ^= ap_hash64(k->offset + 1);
	return h | 1; /* map keys must be non-zero; probing steps by 2 keeps them odd */
}

const char *ap_frame_name(const ap_symframe *f, enum ap_granularity g, char **buf, size_t *cap)
{
	if (g == AP_G_FUNCTION || !f->file)
		return f->function;
	size_t need = strlen(f->function) + strlen(f->file) + 16;
	if (need > *cap) {
		*buf = ap_xrealloc(*buf, need);
		*cap = need;
	}
	if (f->line)
		snprintf(*buf, *cap, "%s %s:%u", f->function, f->file, f->line);
	else
		snprintf(*buf, *cap, "%s %s", f->function, f->file);
	return *buf;
}

typedef struct build_ctx {
	ap_rows *r;
	enum ap_granularity g;
	bool with_edges;
	char *buf;
	size_t cap;
	/* row_for's answers by frame: the symbolizer hands out one ap_symframe per address, shared
	 * by every stack through it, so most frames come again and again (python3's trace: some
	 * 250k frames in 6900 stacks, 2500 distinct), and their row is then found without hashing
	 * names. */
	ap_map by_frame;
} build_ctx;

static uint32_t row_lookup(build_ctx *b, const ap_symframe *f)
{
	ap_rows *r = b->r;
	node_key k = key_of(f, b->g);
	for (uint64_t key = key_hash(&k);; key += 2) {
		bool added;
		uint64_t *slot = ap_map_put(&r->index, key, &added);
		if (added) {
			ap_row row = {.function = k.function, .file = k.file, .line = k.line,
			              .module = k.module, .offset = k.offset, .last_stack = UINT32_MAX};
			row.name = ap_frame_name(f, b->g, &b->buf, &b->cap);
			if (row.name == b->buf) {
				row.name = ap_xstrdup(b->buf);
				AP_VEC_PUSH(r->names, (char *)row.name);
			}
			AP_VEC_PUSH(r->rows, row);
			*slot = r->rows.n;
			return (uint32_t)(r->rows.n - 1);
		}
		ap_row *row = &r->rows.v[*slot - 1];
		if (str_eq(row->function, k.function) && str_eq(row->file, k.file) && row->line == k.line &&
		    str_eq(row->module, k.module) && row->offset == k.offset)
			return (uint32_t)(*slot - 1);
	}
}

static uint32_t row_for(build_ctx *b, const ap_symframe *f)
{
	bool added;
	uint64_t *slot = ap_map_put(&b->by_frame, (uint64_t)(uintptr_t)f, &added);
	if (added)
		*slot = row_lookup(b, f);
	return (uint32_t)*slot;
}

static void add_edge(ap_rows *r, uint32_t from, uint32_t to, bool inlined, const double *v)
{
	for (uint64_t key = (ap_hash64(((uint64_t)from << 32) | to) | 1);; key += 2) {
		bool added;
		uint64_t *slot = ap_map_put(&r->edge_index, key, &added);
		if (added) {
			ap_edge e = {.from = from, .to = to, .last_stack = UINT32_MAX};
			AP_VEC_PUSH(r->edges, e);
			*slot = r->edges.n;
		}
		ap_edge *e = &r->edges.v[*slot - 1];
		if (e->from != from || e->to != to)
			continue;
		e->inlined |= inlined;
		if (e->last_stack != r->nstacks) {
			e->last_stack = r->nstacks;
			for (int m = 0; m < AP_M__COUNT; m++)
				e->w[m] += v[m];
		}
		return;
	}
}

/* pprof's graph construction: walk from the root to the leaf; every distinct node of the stack
 * gets v in cum once, every distinct caller->callee pair once, the leaf gets v in flat. */
static void build_one(void *ctx, const ap_stack_view *s)
{
	build_ctx *b = ctx;
	ap_rows *r = b->r;
	uint32_t parent = UINT32_MAX;
	for (size_t i = s->n; i-- > 0;) {
		const ap_symframe *f = s->frames[i];
		uint32_t node = row_for(b, f);
		ap_row *row = &r->rows.v[node];
		if (row->last_stack != r->nstacks) {
			row->last_stack = r->nstacks;
			for (int m = 0; m < AP_M__COUNT; m++)
				row->cum[m] += s->v[m];
		}
		if (parent != UINT32_MAX && parent != node) {
			if (f->inlined)
				row->inline_in = true;
			else
				row->plain_in = true;
			if (b->with_edges)
				add_edge(r, parent, node, f->inlined, s->v);
		}
		if (i == 0)
			for (int m = 0; m < AP_M__COUNT; m++)
				row->flat[m] += s->v[m];
		parent = node;
	}
	r->nstacks++;
}

void ap_rows_build(ap_profile *p, const ap_view_opts *o, enum ap_granularity g, bool with_edges,
                   ap_rows *out)
{
	memset(out, 0, sizeof(*out));
	build_ctx b = {.r = out, .g = g, .with_edges = with_edges};
	ap_walk_stacks(p, o, out->total, build_one, &b);
	free(b.buf);
	ap_map_free(&b.by_frame);
}

void ap_rows_free(ap_rows *r)
{
	for (size_t i = 0; i < r->names.n; i++)
		free(r->names.v[i]);
	AP_VEC_FREE(r->names);
	AP_VEC_FREE(r->rows);
	AP_VEC_FREE(r->edges);
	ap_map_free(&r->index);
	ap_map_free(&r->edge_index);
	free(r->order);
	r->order = NULL;
}

/* qsort has no context argument; the sort parameters pass through these (single-threaded). */
static const ap_rows *sort_rows;
static int sort_metric;
static bool sort_cum;

static int cmp_rows(const void *a, const void *b)
{
	const ap_row *x = &sort_rows->rows.v[*(const size_t *)a];
	const ap_row *y = &sort_rows->rows.v[*(const size_t *)b];
	double fx = fabs(sort_cum ? x->cum[sort_metric] : x->flat[sort_metric]);
	double fy = fabs(sort_cum ? y->cum[sort_metric] : y->flat[sort_metric]);
	if (fx != fy)
		return fx > fy ? -1 : 1;
	int c = strcmp(x->name, y->name);
	if (c)
		return c;
	double cx = fabs(x->cum[sort_metric]), cy = fabs(y->cum[sort_metric]);
	if (cx != cy)
		return cx > cy ? -1 : 1;
	/* Same name (AP_G_LIST addresses): keep the order stable between runs. */
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

void ap_rows_sort(ap_rows *r, int metric, bool by_cum)
{
	free(r->order);
	r->order = ap_xcalloc(r->rows.n + 1, sizeof(*r->order));
	for (size_t i = 0; i < r->rows.n; i++)
		r->order[i] = i;
	sort_rows = r;
	sort_metric = metric;
	sort_cum = by_cum;
	qsort(r->order, r->rows.n, sizeof(*r->order), cmp_rows);
}

const char *ap_view_index_name(const ap_view_opts *o)
{
	return o->index_name ? o->index_name : ap_metric_names[o->sample_index];
}

/* ---- formats ----------------------------------------------------------------------------------------- */

void ap_format_value(char *buf, size_t size, double v, int metric)
{
	v = round(v);
	if (metric == AP_M_ALLOC_OBJECTS || metric == AP_M_INUSE_OBJECTS || v == 0) {
		snprintf(buf, size, "%.0f", v);
		return;
	}
	static const char *const units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
	int u = 0;
	double a = fabs(v);
	while (u < 5 && a >= 1024) {
		a /= 1024;
		v /= 1024;
		u++;
	}
	snprintf(buf, size, "%.2f", v);
	size_t n = strlen(buf);
	if (n > 3 && !strcmp(buf + n - 3, ".00"))
		buf[n - 3] = 0;
	else if (n > 1 && buf[n - 1] == '0' && strchr(buf, '.'))
		buf[n - 1] = 0;
	strncat(buf, units[u], size - strlen(buf) - 1);
}

void ap_format_pct(char *buf, size_t size, double v, double total)
{
	if (total == 0) {
		snprintf(buf, size, "0%%");
		return;
	}
	double pct = 100 * v / total;
	if (fabs(pct) >= 99.95 && fabs(pct) <= 100.05)
		snprintf(buf, size, "100%%");
	else if (fabs(pct) >= 1)
		snprintf(buf, size, "%.2f%%", pct);
	else if (pct == 0)
		snprintf(buf, size, "0%%");
	else
		snprintf(buf, size, "%.2g%%", pct);
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if the bytes there are not one. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned c = s[0];
	size_t n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	/* Overlong forms, UTF-16 surrogates and code points above U+10FFFF. */
	if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
	    (c == 0xf4 && s[1] > 0x8f))
		return 0;
	return n;
}

void ap_json_str(FILE *out, const char *s)
{
	fputc('"', out);
	/* Paths and names come from traces and binaries, which may hold any bytes: what is not
	 * UTF-8 becomes U+FFFD, so that the output stays valid JSON. */
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		unsigned char c = *p;
		size_t n = utf8_len(p);
		if (n == 0) {
			fputs("\\ufffd", out);
			p++;
		} else if (c == '"' || c == '\\') {
			fprintf(out, "\\%c", c);
			p++;
		} else if (c < 0x20 || c == 0x7f) {
			fprintf(out, "\\u%04x", c);
			p++;
		} else {
			fwrite(p, 1, n, out);
			p += n;
		}
	}
	fputc('"', out);
}

void ap_json_four(FILE *out, const double *v)
{
	fputc('{', out);
	for (int m = 0; m < AP_M__COUNT; m++)
		fprintf(out, "%s\"%s\": %.0f", m ? ", " : "", ap_metric_names[m], round(v[m]));
	fputc('}', out);
}

void ap_json_trace_info(ap_profile *p, FILE *out)
{
	fprintf(out, "\"trace\": {\"file\": ");
	ap_json_str(out, p->path);
	fprintf(out, ", \"pid\": %llu, \"events\": %llu, \"unknown_frees\": %llu, \"lost_allocs\": %llu, "
	             "\"lost_frees\": %llu, \"truncated\": %s, \"max_pending\": %llu, \"sample_bytes\": %llu",
	        (unsigned long long)p->pid, (unsigned long long)p->events,
	        (unsigned long long)p->unknown_frees, (unsigned long long)p->lost_allocs,
	        (unsigned long long)p->lost_frees, p->rr.truncated ? "true" : "false",
	        (unsigned long long)p->rr.max_pending, (unsigned long long)p->sample_bytes);
	if (p->rr.end.has_totals)
		fprintf(out, ", \"exact_totals\": {\"alloc_calls\": %llu, \"alloc_bytes\": %llu, \"free_calls\": %llu}",
		        (unsigned long long)p->rr.end.total_allocs, (unsigned long long)p->rr.end.total_bytes,
		        (unsigned long long)p->rr.end.total_frees);
	fputc('}', out);
}

void ap_report_header(ap_profile *p, const ap_view_opts *o, FILE *out)
{
	const char *base = p->exe ? strrchr(p->exe, '/') : NULL;
	fprintf(out, "File: %s\n", base ? base + 1 : p->exe ? p->exe : "?");
	fprintf(out, "Type: %s\n", ap_view_index_name(o));
	if (o->at && o->at_label[0])
		fprintf(out, "Inuse at: %s\n", o->at_label);
	if (p->start_realtime_ns) {
		time_t t = (time_t)(p->start_realtime_ns / 1000000000u);
		char when[64];
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", localtime(&t));
		fprintf(out, "Time: %s\n", when);
	}
	if (p->events)
		fprintf(out, "Duration: %.3gs\n", ap_profile_seconds(p, p->last_stamp));
	if (p->sample_bytes) {
		/* Say so whenever figures are estimates, with the rate and the exact totals beside them. */
		char rate[32];
		ap_format_value(rate, sizeof(rate), (double)p->sample_bytes, AP_M_ALLOC_SPACE);
		fprintf(out, "Sampled: one allocation per %s on average; figures are unbiased estimates", rate);
		if (p->rr.end.has_totals) {
			char bytes[32];
			ap_format_value(bytes, sizeof(bytes), (double)p->rr.end.total_bytes, AP_M_ALLOC_SPACE);
			fprintf(out, " (exact: %llu allocations, %s)", (unsigned long long)p->rr.end.total_allocs, bytes);
		}
		fputc('\n', out);
	}
}

/* ---- top --------------------------------------------------------------------------------------------- */

static void top_json(ap_profile *p, const ap_view_opts *o, ap_rows *r, FILE *out)
{
	size_t shown = r->rows.n;
	if (o->nrows >= 0 && (size_t)o->nrows < shown)
		shown = (size_t)o->nrows;
	fprintf(out, "{\"sample_index\": \"%s\", \"total\": ", ap_view_index_name(o));
	ap_json_four(out, r->total);
	fprintf(out, ", ");
	ap_json_trace_info(p, out);
	if (o->at) {
		/* --at: the moment the inuse figures describe. */
		fprintf(out, ", \"at\": {\"spec\": ");
		ap_json_str(out, o->at);
		if (p->at_taken && p->at_event_index != UINT64_MAX)
			fprintf(out, ", \"event\": %llu, \"seconds\": %.9g}", (unsigned long long)p->at_event_index,
			        ap_profile_seconds(p, p->at_stamp_taken));
		else
			fprintf(out, ", \"event\": null, \"seconds\": null}");
	}
	fprintf(out, ", \"rows\": [");
	for (size_t i = 0; i < shown; i++) {
		ap_row *row = &r->rows.v[r->order[i]];
		fprintf(out, "%s\n  {\"function\": ", i ? "," : "");
		ap_json_str(out, row->function);
		fprintf(out, ", \"flat\": ");
		ap_json_four(out, row->flat);
		fprintf(out, ", \"cum\": ");
		ap_json_four(out, row->cum);
		if (o->lines) {
			/* --lines: several rows per function; these say which line each one is. */
			fprintf(out, ", \"name\": ");
			ap_json_str(out, row->name);
			fprintf(out, ", \"file\": ");
			if (row->file)
				ap_json_str(out, row->file);
			else
				fputs("null", out);
			fprintf(out, ", \"line\": %u", row->line);
		}
		fputc('}', out);
	}
	fprintf(out, "]}\n");
}

int ap_report_top(ap_profile *p, const ap_view_opts *o, FILE *out)
{
	ap_rows r;
	ap_rows_build(p, o, o->lines ? AP_G_LINE : AP_G_FUNCTION, false, &r);
	int m = o->sample_index;
	ap_rows_sort(&r, m, o->cum_sort);
	if (o->json) {
		top_json(p, o, &r, out);
		ap_rows_free(&r);
		return 0;
	}

	/* As in pprof, a node with nothing under this sample index is not a node. */
	size_t keep = 0;
	for (size_t i = 0; i < r.rows.n; i++) {
		ap_row *row = &r.rows.v[r.order[i]];
		if (row->cum[m] != 0 || row->flat[m] != 0)
			r.order[keep++] = r.order[i];
	}
	size_t shown = o->nrows >= 0 && (size_t)o->nrows < keep ? (size_t)o->nrows : keep;
	if (o->nrows < 0 && shown > 10)
		shown = 10;
	ap_report_header(p, o, out);
	double shown_flat = 0;
	for (size_t i = 0; i < shown; i++)
		shown_flat += r.rows.v[r.order[i]].flat[m];
	char a[32], b[32], c[32];
	ap_format_value(a, sizeof(a), shown_flat, m);
	ap_format_pct(b, sizeof(b), shown_flat, r.total[m]);
	ap_format_value(c, sizeof(c), r.total[m], m);
	fprintf(out, "Showing nodes accounting for %s, %s of %s total\n", a, b, c);
	if (shown < keep)
		fprintf(out, "Showing top %zu nodes out of %zu\n", shown, keep);
	fprintf(out, "%10s %6s %6s %10s %6s\n", "flat", "flat%", "sum%", "cum", "cum%");
	double sum = 0;
	for (size_t i = 0; i < shown; i++) {
		ap_row *row = &r.rows.v[r.order[i]];
		char flat[32], flatp[32], sump[32], cum[32], cump[32];
		sum += row->flat[m];
		ap_format_value(flat, sizeof(flat), row->flat[m], m);
		ap_format_pct(flatp, sizeof(flatp), row->flat[m], r.total[m]);
		ap_format_pct(sump, sizeof(sump), sum, r.total[m]);
		ap_format_value(cum, sizeof(cum), row->cum[m], m);
		ap_format_pct(cump, sizeof(cump), row->cum[m], r.total[m]);
		const char *inl = !row->inline_in ? "" : row->plain_in ? " (partial-inline)" : " (inline)";
		fprintf(out, "%10s %6s %6s %10s %6s  %s%s\n", flat, flatp, sump, cum, cump, row->name, inl);
	}
	ap_rows_free(&r);
	return 0;
}
