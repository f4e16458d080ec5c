/*
 * lifetimes.c: temporary allocations (`allocprof temps`, --sample-index=temp_objects|temp_space)
 * and the size and lifetime histograms per function (`allocprof sizes`), gathered by observing
 * the replay event by event.
 *
 * A temporary allocation is heaptrack's: a block freed by the thread that allocated it with no
 * other allocation or free by that thread in between (malloc, use, free: heaptrack resets its
 * "last allocation" on every free). The free half of a realloc is not one: the content lives on
 * in the new block. A lifetime is the time from the allocation to
 * the free, read from the trace's clock (exact with --clock tsc; with the counter clock, times
 * between two CLOCK records are interpolated, so short lifetimes are estimates).
 */
#include "analyses.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { LT_SIZES = 50, LT_LIFES = 10, LT_NEVER = LT_LIFES - 1 };

static const char *const life_labels[LT_LIFES] = {"<1us", "1-10us", "10-100us", "0.1-1ms", "1-10ms",
                                                  "10-100ms", "0.1-1s", "1-10s", ">=10s", "not freed"};

typedef struct lt_block {
	double t;      /* when it was allocated (seconds; lifetimes only) */
	uint64_t seq;  /* the allocation's event index + 1 */
	uint32_t tid;
} lt_block;

typedef struct lt_site {
	double temp_n, temp_b;
	double size[LT_SIZES];
	double life[LT_LIFES];
} lt_site;

struct ap_lt {
	bool lifetimes;
	AP_VEC(struct ap_clockpt) pts;
	uint64_t start_ns;
	bool have_header;
	ap_clock_cursor clk;
	AP_VEC(lt_block) blocks; /* parallel to the profile's blocks */
	AP_VEC(lt_site) sites;   /* by stack id */
	ap_map last_alloc;       /* tid + 1 -> seq of its last allocation */
};

/* ---- the clock records, read before the replay so that lifetimes convert as they end ---------- */

static void clk_header(void *ctx, const ap_header *h)
{
	ap_lt *lt = ctx;
	if (lt->have_header)
		return;
	lt->have_header = true;
	lt->start_ns = h->start_monotonic_ns;
	struct ap_clockpt c = {h->start_stamp, h->start_monotonic_ns};
	AP_VEC_PUSH(lt->pts, c);
}

static void clk_clock(void *ctx, uint64_t stamp, uint64_t ns)
{
	ap_lt *lt = ctx;
	if (lt->pts.n && stamp <= lt->pts.v[lt->pts.n - 1].stamp)
		return;
	struct ap_clockpt c = {stamp, ns};
	AP_VEC_PUSH(lt->pts, c);
}

ap_lt *ap_lt_new(const char *path, bool with_lifetimes)
{
	ap_lt *lt = ap_xcalloc(1, sizeof(*lt));
	lt->lifetimes = with_lifetimes;
	if (with_lifetimes) {
		ap_reader_ops ops = {.ctx = lt, .header = clk_header, .clock = clk_clock};
		ap_read_result rr;
		memset(&rr, 0, sizeof(rr));
		if (ap_read_trace(path, &ops, &rr) < 0) {
			fprintf(stderr, "allocprof: %s\n", rr.error);
			ap_lt_free(lt);
			return NULL;
		}
		lt->clk = (ap_clock_cursor){.pts = lt->pts.v, .n = lt->pts.n, .i = 1, .start_ns = lt->start_ns};
	}
	return lt;
}

void ap_lt_free(ap_lt *lt)
{
	if (!lt)
		return;
	AP_VEC_FREE(lt->pts);
	AP_VEC_FREE(lt->blocks);
	AP_VEC_FREE(lt->sites);
	ap_map_free(&lt->last_alloc);
	free(lt);
}

static lt_site *lt_site_at(ap_lt *lt, uint32_t id)
{
	while (lt->sites.n <= id) {
		lt_site s;
		memset(&s, 0, sizeof(s));
		AP_VEC_PUSH(lt->sites, s);
	}
	return &lt->sites.v[id];
}

/* Powers of two: 0 -> bucket 0; s in (2^(k-2), 2^(k-1)] -> bucket k (1 -> 1, 2 -> 2, 3..4 -> 3). */
static int size_bucket(uint64_t s)
{
	if (!s)
		return 0;
	int k = s == 1 ? 1 : 2 + (63 - __builtin_clzll(s - 1));
	return k < LT_SIZES ? k : LT_SIZES - 1;
}

static void size_range(int k, uint64_t *lo, uint64_t *hi)
{
	*lo = k <= 1 ? (uint64_t)k : (1ull << (k - 2)) + 1;
	*hi = k <= 1 ? (uint64_t)k : 1ull << (k - 1);
}

/* Decades of seconds: < 1 us, 1-10 us, ... 1-10 s, >= 10 s. */
static int life_bucket(double dt)
{
	double lim = 1e-6;
	for (int k = 0; k < LT_NEVER - 1; k++, lim *= 10)
		if (dt < lim)
			return k;
	return LT_NEVER - 1;
}

void ap_lt_observe(void *ctx, const ap_profile *p, const ap_event *e, uint32_t block)
{
	ap_lt *lt = ctx;
	if (!block || e->kind == AP_EV_UNFREE)
		return;
	const struct ap_live *b = &p->blocks.v[block];
	double w = ap_profile_weight(p, b->size);
	lt_site *s = lt_site_at(lt, b->site);
	if (e->kind == AP_EV_ALLOC) {
		while (lt->blocks.n <= block) {
			lt_block z = {0};
			AP_VEC_PUSH(lt->blocks, z);
		}
		lt_block *lb = &lt->blocks.v[block];
		lb->seq = p->events;
		lb->tid = e->tid;
		if (lt->lifetimes)
			lb->t = ap_clock_cursor_seconds(&lt->clk, e->stamp);
		bool added;
		*ap_map_put(&lt->last_alloc, (uint64_t)e->tid + 1, &added) = lb->seq;
		s->size[size_bucket(b->size)] += w;
		return;
	}
	if (e->kind != AP_EV_FREE || block >= lt->blocks.n)
		return;
	lt_block *lb = &lt->blocks.v[block];
	uint64_t *last = ap_map_get(&lt->last_alloc, (uint64_t)e->tid + 1);
	bool temp = e->tid == lb->tid && last && *last == lb->seq && e->api != AP_API_REALLOC &&
	            e->api != AP_API_REALLOCARRAY;
	if (last) /* heaptrack's rule: any free between an allocation and its free disqualifies it */
		*last = 0;
	if (lt->lifetimes) {
		double dt = ap_clock_cursor_seconds(&lt->clk, e->stamp) - lb->t;
		s->life[life_bucket(dt)] += w;
	}
	if (temp) {
		s->temp_n += w;
		s->temp_b += w * (double)b->size;
	}
}

void ap_lt_substitute_temps(ap_profile *p, const ap_lt *lt)
{
	for (size_t i = 0; i < p->sites.n; i++) {
		const lt_site *s = i < lt->sites.n ? &lt->sites.v[i] : NULL;
		p->sites.v[i].v[AP_M_ALLOC_OBJECTS] = s ? s->temp_n : 0;
		p->sites.v[i].v[AP_M_ALLOC_SPACE] = s ? s->temp_b : 0;
	}
}

/* Loads trace with the observer; warns once for sampled traces. Returns 0 or 2. */
static int lt_load(ap_profile *p, const char *trace, ap_view_opts *o, ap_lt **out, bool lifetimes)
{
	memset(p, 0, sizeof(*p));
	*out = ap_lt_new(trace, lifetimes);
	if (!*out)
		return 2;
	ap_load_opts lo = {0};
	if (o->at && ap_at_prepare(o->at, trace, &lo))
		return 2;
	lo.observe = ap_lt_observe;
	lo.observe_ctx = *out;
	if (ap_profile_load_ex(p, trace, &lo))
		return 2;
	if (p->sample_bytes)
		ap_warn("%s: warning: a sampled trace: figures are estimated from the sampled allocations; "
		        "a temporary allocation is only recognised when no sampled allocation came between",
		        trace);
	if (o->at)
		ap_at_describe(p, o->at, o->at_label, sizeof(o->at_label));
	return 0;
}

int ap_view_load(ap_profile *p, const char *trace, ap_view_opts *o)
{
	if (o->temp_index) {
		ap_lt *lt;
		int rc = lt_load(p, trace, o, &lt, false);
		if (!rc)
			ap_lt_substitute_temps(p, lt);
		ap_lt_free(lt);
		return rc;
	}
	ap_load_opts lo = {0};
	memset(p, 0, sizeof(*p));
	if (o->at && ap_at_prepare(o->at, trace, &lo))
		return 2;
	if (ap_profile_load_ex(p, trace, &lo))
		return 2;
	if (o->at)
		ap_at_describe(p, o->at, o->at_label, sizeof(o->at_label));
	return 0;
}

/* ---- temps ------------------------------------------------------------------------------------- */

int ap_temps_run(const char *trace, ap_view_opts *o)
{
	ap_profile p;
	ap_lt *lt;
	int rc = lt_load(&p, trace, o, &lt, false);
	if (rc) {
		ap_lt_free(lt);
		ap_profile_free(&p);
		return rc;
	}
	/* The four slots carry: temporary objects, temporary bytes, all allocations, all bytes. */
	for (size_t i = 0; i < p.sites.n; i++) {
		ap_site *s = &p.sites.v[i];
		const lt_site *t = i < lt->sites.n ? &lt->sites.v[i] : NULL;
		s->v[AP_M_INUSE_OBJECTS] = s->v[AP_M_ALLOC_OBJECTS];
		s->v[AP_M_INUSE_SPACE] = s->v[AP_M_ALLOC_SPACE];
		s->v[AP_M_ALLOC_OBJECTS] = t ? t->temp_n : 0;
		s->v[AP_M_ALLOC_SPACE] = t ? t->temp_b : 0;
	}
	ap_lt_free(lt);
	ap_rows r;
	ap_rows_build(&p, o, o->lines ? AP_G_LINE : AP_G_FUNCTION, false, &r);
	int m = o->temp_index == 2 ? AP_M_ALLOC_SPACE : AP_M_ALLOC_OBJECTS;
	ap_rows_sort(&r, m, false);
	size_t keep = 0;
	for (size_t i = 0; i < r.rows.n; i++)
		if (r.rows.v[r.order[i]].flat[AP_M_ALLOC_OBJECTS] > 0)
			r.order[keep++] = r.order[i];
	size_t shown = o->nrows >= 0 && (size_t)o->nrows < keep ? (size_t)o->nrows : keep;
	if (o->nrows < 0 && !o->json && shown > 10)
		shown = 10;
	double *tot = r.total;
	if (o->json) {
		printf("{\"temporary\": {\"objects\": %.0f, \"space\": %.0f}, \"allocations\": {\"objects\": %.0f, "
		       "\"space\": %.0f}, ",
		       tot[0], tot[1], tot[2], tot[3]);
		ap_json_trace_info(&p, stdout);
		printf(", \"rows\": [");
		for (size_t i = 0; i < shown; i++) {
			const ap_row *row = &r.rows.v[r.order[i]];
			printf("%s\n  {\"function\": ", i ? "," : "");
			ap_json_str(stdout, o->lines ? row->name : row->function);
			printf(", \"temp_objects\": %.0f, \"temp_space\": %.0f, \"alloc_objects\": %.0f, "
			       "\"alloc_space\": %.0f}",
			       row->flat[0], row->flat[1], row->flat[2], row->flat[3]);
		}
		printf("]}\n");
	} else {
		ap_view_opts h = *o;
		h.sample_index = m;
		ap_report_header(&p, &h, stdout);
		char a[32], b[32], c[32];
		ap_format_pct(a, sizeof(a), tot[0], tot[2]);
		ap_format_value(b, sizeof(b), tot[1], AP_M_ALLOC_SPACE);
		printf("Temporary allocations: %.0f of %.0f (%s), %s\n", tot[0], tot[2], a, b);
		if (shown < keep)
			printf("Showing top %zu functions out of %zu\n", shown, keep);
		printf("%10s %7s %10s %10s  %s\n", "temporary", "temp%", "of allocs", "temp space", "function");
		for (size_t i = 0; i < shown; i++) {
			const ap_row *row = &r.rows.v[r.order[i]];
			ap_format_pct(a, sizeof(a), row->flat[0], tot[0]);
			ap_format_pct(b, sizeof(b), row->flat[0], row->flat[2]);
			ap_format_value(c, sizeof(c), row->flat[1], AP_M_ALLOC_SPACE);
			printf("%10.0f %7s %10s %10s  %s\n", row->flat[0], a, b, c, row->name);
		}
	}
	ap_rows_free(&r);
	ap_profile_free(&p);
	return 0;
}

/* ---- sizes and lifetimes ----------------------------------------------------------------------- */

typedef struct sz_group {
	const char *name; /* owned by names */
	double allocs, bytes, temps;
	double size[LT_SIZES], life[LT_LIFES];
} sz_group;

typedef struct sz_ctx {
	ap_lt *lt;
	ap_profile *p;
	const ap_view_opts *o;
	AP_VEC(sz_group) g;
	AP_VEC(char *) names;
	ap_map index;
	char *buf;
	size_t cap;
} sz_ctx;

static void sz_one(void *ctx, const ap_stack_view *s)
{
	sz_ctx *c = ctx;
	const char *name = ap_frame_name(s->frames[0], c->o->lines ? AP_G_LINE : AP_G_FUNCTION, &c->buf, &c->cap);
	sz_group *g = NULL;
	for (uint64_t h = ap_hash_str(name) | 1; !g; h += 2) {
		bool added;
		uint64_t *slot = ap_map_put(&c->index, h, &added);
		if (added) {
			char *own = ap_xstrdup(name);
			AP_VEC_PUSH(c->names, own);
			sz_group z;
			memset(&z, 0, sizeof(z));
			z.name = own;
			AP_VEC_PUSH(c->g, z);
			*slot = c->g.n;
		}
		if (!strcmp(c->g.v[*slot - 1].name, name))
			g = &c->g.v[*slot - 1];
	}
	const ap_site *site = &c->p->sites.v[s->site];
	g->allocs += site->v[AP_M_ALLOC_OBJECTS];
	g->bytes += site->v[AP_M_ALLOC_SPACE];
	g->life[LT_NEVER] += site->v[AP_M_INUSE_OBJECTS];
	if (s->site < c->lt->sites.n) {
		const lt_site *t = &c->lt->sites.v[s->site];
		g->temps += t->temp_n;
		for (int k = 0; k < LT_SIZES; k++)
			g->size[k] += t->size[k];
		for (int k = 0; k < LT_NEVER; k++)
			g->life[k] += t->life[k];
	}
}

static int cmp_sz(const void *a, const void *b)
{
	const sz_group *x = a, *y = b;
	if (x->allocs != y->allocs)
		return x->allocs > y->allocs ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* The bucket holding the median of a histogram. */
static int median_bucket(const double *h, int n)
{
	double tot = 0, run = 0;
	for (int k = 0; k < n; k++)
		tot += h[k];
	for (int k = 0; k < n; k++)
		if ((run += h[k]) >= tot / 2 && h[k] > 0)
			return k;
	return 0;
}

static void size_label(char *buf, size_t size, int k)
{
	uint64_t lo, hi;
	size_range(k, &lo, &hi);
	char a[24], b[24];
	ap_format_value(a, sizeof(a), (double)lo, AP_M_ALLOC_SPACE);
	ap_format_value(b, sizeof(b), (double)hi, AP_M_ALLOC_SPACE);
	if (k == LT_SIZES - 1)
		snprintf(buf, size, ">%s", a);
	else if (lo == hi)
		snprintf(buf, size, "%s", a);
	else
		snprintf(buf, size, "%s..%s", a, b);
}

static void sizes_json(ap_profile *p, sz_ctx *c, size_t shown)
{
	printf("{");
	ap_json_trace_info(p, stdout);
	printf(", \"functions\": [");
	for (size_t i = 0; i < shown; i++) {
		const sz_group *g = &c->g.v[i];
		printf("%s\n  {\"function\": ", i ? "," : "");
		ap_json_str(stdout, g->name);
		printf(", \"alloc_objects\": %.0f, \"alloc_space\": %.0f, \"temp_objects\": %.0f, \"sizes\": [",
		       g->allocs, g->bytes, g->temps);
		bool first = true;
		for (int k = 0; k < LT_SIZES; k++) {
			if (!(g->size[k] > 0))
				continue;
			uint64_t lo, hi;
			size_range(k, &lo, &hi);
			printf("%s{\"min\": %llu, \"max\": %llu, \"count\": %.0f}", first ? "" : ", ",
			       (unsigned long long)lo, (unsigned long long)hi, g->size[k]);
			first = false;
		}
		printf("], \"lifetimes\": [");
		first = true;
		for (int k = 0; k < LT_LIFES; k++) {
			if (!(g->life[k] > 0))
				continue;
			printf("%s{\"bucket\": \"%s\", ", first ? "" : ", ", life_labels[k]);
			double lo = k ? 1e-6 * pow(10, k - 1) : 0, hi = 1e-6 * pow(10, k);
			if (k == LT_NEVER)
				printf("\"min_seconds\": null, \"max_seconds\": null");
			else if (k == LT_NEVER - 1)
				printf("\"min_seconds\": %g, \"max_seconds\": null", lo);
			else
				printf("\"min_seconds\": %g, \"max_seconds\": %g", lo, hi);
			printf(", \"count\": %.0f}", g->life[k]);
			first = false;
		}
		printf("], \"median_size_bucket\": %d, \"median_lifetime\": \"%s\"}",
		       median_bucket(g->size, LT_SIZES), life_labels[median_bucket(g->life, LT_LIFES)]);
	}
	printf("]}\n");
}

int ap_sizes_run(const char *trace, ap_view_opts *o)
{
	ap_profile p;
	ap_lt *lt;
	int rc = lt_load(&p, trace, o, &lt, true);
	if (rc) {
		ap_lt_free(lt);
		ap_profile_free(&p);
		return rc;
	}
	sz_ctx c = {.lt = lt, .p = &p, .o = o};
	double total[AP_M__COUNT] = {0};
	ap_walk_stacks(&p, o, total, sz_one, &c);
	if (c.g.n > 1) /* c.g.v is NULL when empty */
		qsort(c.g.v, c.g.n, sizeof(*c.g.v), cmp_sz);
	size_t shown = o->nrows >= 0 && (size_t)o->nrows < c.g.n ? (size_t)o->nrows : c.g.n;
	if (o->nrows < 0 && !o->json && shown > 10)
		shown = 10;
	if (o->json) {
		sizes_json(&p, &c, shown);
	} else {
		ap_report_header(&p, o, stdout);
		if (p.clock != AP_CLOCK_TSC)
			printf("Lifetimes: interpolated between the trace's clock records (record with --clock tsc "
			       "for exact short lifetimes)\n");
		if (shown < c.g.n)
			printf("Showing top %zu functions out of %zu (by allocations)\n", shown, c.g.n);
		for (size_t i = 0; i < shown; i++) {
			const sz_group *g = &c.g.v[i];
			char bytes[32], med[64];
			ap_format_value(bytes, sizeof(bytes), g->bytes, AP_M_ALLOC_SPACE);
			size_label(med, sizeof(med), median_bucket(g->size, LT_SIZES));
			printf("\n%s: %.0f allocations, %s; median size %s, median lifetime %s; %.0f temporary, "
			       "%.0f not freed\n",
			       g->name, g->allocs, bytes, med, life_labels[median_bucket(g->life, LT_LIFES)], g->temps,
			       g->life[LT_NEVER]);
			printf("  %14s %10s %7s | %10s %10s %7s\n", "size", "allocs", "%", "lifetime", "allocs", "%");
			int sk = 0, lk = 0;
			for (;;) {
				while (sk < LT_SIZES && !(g->size[sk] > 0))
					sk++;
				while (lk < LT_LIFES && !(g->life[lk] > 0))
					lk++;
				if (sk >= LT_SIZES && lk >= LT_LIFES)
					break;
				char l[64] = "", n1[32] = "", p1[32] = "", n2[32] = "", p2[32] = "";
				if (sk < LT_SIZES) {
					size_label(l, sizeof(l), sk);
					snprintf(n1, sizeof(n1), "%.0f", g->size[sk]);
					ap_format_pct(p1, sizeof(p1), g->size[sk], g->allocs);
				}
				if (lk < LT_LIFES) {
					snprintf(n2, sizeof(n2), "%.0f", g->life[lk]);
					ap_format_pct(p2, sizeof(p2), g->life[lk], g->allocs);
				}
				printf("  %14s %10s %7s | %10s %10s %7s\n", l, n1, p1, lk < LT_LIFES ? life_labels[lk] : "",
				       n2, p2);
				sk++;
				lk++;
			}
		}
	}
	for (size_t i = 0; i < c.names.n; i++)
		free(c.names.v[i]);
	AP_VEC_FREE(c.names);
	AP_VEC_FREE(c.g);
	ap_map_free(&c.index);
	free(c.buf);
	ap_lt_free(lt);
	ap_profile_free(&p);
	return 0;
}
