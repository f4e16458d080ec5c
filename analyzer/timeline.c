/*
 * timeline.c: the heap over time (`allocprof timeline`: a text chart, an SVG chart, or JSON) and
 * the moment `--at` selects for every view (the peak, a time, an event), plus the helpers the
 * other analyses share (a stamp->seconds cursor, quiet extra passes, --at loading).
 *
 * Memory stays bounded whatever the trace's length: the series is a fixed number of time buckets,
 * each keeping its maximum (so the peak is never averaged away) and its last value (carried into
 * buckets without events). Finding what was live at the peak takes three replays: one finds the
 * peak, one stops there to rank the call sites by their share of it, one draws their series.
 */
#include "analyses.h"

#include <ctype.h>
#include <fcntl.h>
#include <langinfo.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- shared helpers -------------------------------------------------------------------------- */

void ap_clock_cursor_init(ap_clock_cursor *c, const ap_profile *p)
{
	c->pts = p->clock_pts.v;
	c->n = p->clock_pts.n;
	c->i = 1;
	c->start_ns = p->start_monotonic_ns;
}

/* The same interpolation as ap_profile_seconds: between the two clock points around the stamp,
 * extrapolated from the last two beyond them. */
double ap_clock_cursor_seconds(ap_clock_cursor *c, uint64_t stamp)
{
	size_t n = c->n;
	if (!n)
		return 0;
	const struct ap_clockpt *pt = c->pts;
	if (c->i > 1 && pt[c->i - 1].stamp >= stamp)
		c->i = 1; /* moved back (an allocation's stamp): start over */
	while (c->i < n - 1 && pt[c->i].stamp < stamp)
		c->i++;
	size_t i = c->i;
	double ns;
	if (n == 1 || pt[i].stamp == pt[i - 1].stamp)
		ns = (double)pt[0].ns;
	else
		ns = (double)pt[i - 1].ns + ((double)stamp - (double)pt[i - 1].stamp) *
		                                ((double)pt[i].ns - (double)pt[i - 1].ns) /
		                                ((double)pt[i].stamp - (double)pt[i - 1].stamp);
	return (ns - (double)c->start_ns) / 1e9;
}

int ap_load_quiet(ap_profile *p, const char *path, const ap_load_opts *o)
{
	fflush(stderr);
	int saved = dup(STDERR_FILENO), null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (saved >= 0 && null >= 0)
		dup2(null, STDERR_FILENO);
	int err = ap_profile_load_ex(p, path, o);
	fflush(stderr);
	if (saved >= 0) {
		dup2(saved, STDERR_FILENO);
		close(saved);
	}
	if (null >= 0)
		close(null);
	return err;
}

bool ap_parse_bytes(const char *s, uint64_t *out)
{
	char *end;
	if (!*s || !isdigit((unsigned char)*s))
		return false;
	unsigned long long v = strtoull(s, &end, 10);
	int shift = 0;
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	if (shift)
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v > (UINT64_MAX >> shift))
		return false;
	*out = (uint64_t)v << shift;
	return true;
}

/* ---- --at ------------------------------------------------------------------------------------ */

/* "1.5s", "1500ms", "200us", "1.5" (seconds) -> seconds; false if not a time. */
static bool parse_seconds(const char *s, double *out)
{
	char *end;
	if (!*s || (!isdigit((unsigned char)*s) && *s != '.'))
		return false;
	double v = strtod(s, &end);
	double scale = 1;
	if (!strcmp(end, "ms"))
		scale = 1e-3;
	else if (!strcmp(end, "us") || !strcmp(end, "\u00b5s"))
		scale = 1e-6;
	else if (!strcmp(end, "ns"))
		scale = 1e-9;
	else if (*end && strcmp(end, "s"))
		return false;
	if (!isfinite(v) || v < 0)
		return false;
	*out = v * scale;
	return true;
}

static bool parse_event(const char *s, uint64_t *out)
{
	if (strncmp(s, "event:", 6) || !isdigit((unsigned char)s[6]))
		return false;
	char *end;
	unsigned long long v = strtoull(s + 6, &end, 10);
	*out = v;
	return !*end;
}

bool ap_at_valid(const char *spec)
{
	double t;
	uint64_t e;
	return !strcmp(spec, "end") || !strcmp(spec, "peak") || parse_event(spec, &e) ||
	       parse_seconds(spec, &t);
}

/* The peak: the first event after which inuse_space is at its maximum. */
typedef struct peak_finder {
	double space, objects;
	uint64_t index, stamp;
	bool any;
} peak_finder;

static void peak_observe(void *ctx, const ap_profile *p, const ap_event *e, uint32_t block)
{
	(void)block;
	peak_finder *f = ctx;
	if (!f->any || p->inuse_space > f->space) {
		f->any = true;
		f->space = p->inuse_space;
		f->objects = p->inuse_objects;
		f->index = p->events - 1;
		f->stamp = e->stamp;
	}
}

/* The stamp at which the trace's clock reads t seconds (the inverse of the interpolation). */
static uint64_t stamp_at_seconds(const ap_profile *p, double t)
{
	const struct ap_clockpt *c = p->clock_pts.v;
	size_t n = p->clock_pts.n;
	double ns = (double)p->start_monotonic_ns + t * 1e9;
	if (n < 2)
		return n ? (ns < (double)c[0].ns ? 0 : UINT64_MAX) : UINT64_MAX;
	size_t i = 1;
	while (i < n - 1 && (double)c[i].ns < ns)
		i++;
	if (c[i].ns == c[i - 1].ns)
		return c[i].stamp;
	double s = (double)c[i - 1].stamp + (ns - (double)c[i - 1].ns) * ((double)c[i].stamp - (double)c[i - 1].stamp) /
	                                        ((double)c[i].ns - (double)c[i - 1].ns);
	if (s < 0)
		return 0;
	if (s >= 1.8e19)
		return UINT64_MAX;
	return (uint64_t)s;
}

int ap_at_prepare(const char *spec, const char *trace, ap_load_opts *lo)
{
	double t;
	lo->at = AP_AT_END;
	if (!spec || !strcmp(spec, "end"))
		return 0;
	if (parse_event(spec, &lo->at_event)) {
		lo->at = AP_AT_EVENT;
		return 0;
	}
	bool peak = !strcmp(spec, "peak");
	if (!peak && !parse_seconds(spec, &t)) {
		fprintf(stderr, "allocprof: --at takes peak, end, event:N or a time (1.5s, 200ms, 1.5), "
		                "not '%s'\n", spec);
		return 2;
	}
	peak_finder f = {0};
	ap_load_opts first = {.observe = peak ? peak_observe : NULL, .observe_ctx = &f};
	ap_profile p;
	int err = ap_load_quiet(&p, trace, &first);
	if (!err && peak) {
		lo->at = AP_AT_EVENT;
		lo->at_event = f.any ? f.index : 0;
	} else if (!err) {
		lo->at = AP_AT_STAMP;
		lo->at_stamp = stamp_at_seconds(&p, t);
	}
	ap_profile_free(&p);
	if (err) /* the final load prints the reason */
		lo->at = AP_AT_END;
	return 0;
}

void ap_at_describe(const ap_profile *p, const char *spec, char *buf, size_t size)
{
	if (!spec || !strcmp(spec, "end") || p->opts.at == AP_AT_END) {
		snprintf(buf, size, "end of the trace");
		return;
	}
	double objects = 0, space = 0;
	for (size_t i = 0; i < p->sites.n; i++) {
		objects += p->sites.v[i].v[AP_M_INUSE_OBJECTS];
		space += p->sites.v[i].v[AP_M_INUSE_SPACE];
	}
	char v[32];
	ap_format_value(v, sizeof(v), space, AP_M_INUSE_SPACE);
	const char *what = !strcmp(spec, "peak") ? "peak" : spec;
	if (!p->at_taken)
		snprintf(buf, size, "%s: after the end of the trace (%llu events): %s in %.0f objects", what,
		         (unsigned long long)p->events, v, objects);
	else if (p->at_event_index == UINT64_MAX)
		snprintf(buf, size, "%s: before the first event: nothing in use", what);
	else
		snprintf(buf, size, "%s: %s in %.0f objects at %.6gs (event %llu)", what, v, objects,
		         ap_profile_seconds(p, p->at_stamp_taken), (unsigned long long)p->at_event_index);
}

/* ---- the series -------------------------------------------------------------------------------- */

enum { TL_BUCKETS = 400, TL_GROUPS = 5 };

typedef struct tl_bucket {
	bool set;
	double t;                        /* when the maximum was reached (or the bucket's start) */
	double space, objects;           /* the maximum of inuse_space, and inuse_objects then */
	double grp[TL_GROUPS];           /* the top sites' inuse_space at that moment */
	double last_space, last_objects; /* the values at the bucket's last event */
	double last_grp[TL_GROUPS];
} tl_bucket;

typedef struct tl_ctx {
	ap_clock_cursor clk;
	double duration;
	uint8_t *site_group; /* site -> 0..TL_GROUPS-1, or TL_GROUPS: not a top site */
	size_t nsites;
	double grp[TL_GROUPS];
	tl_bucket b[TL_BUCKETS];
} tl_ctx;

static void tl_observe(void *ctx, const ap_profile *p, const ap_event *e, uint32_t block)
{
	tl_ctx *c = ctx;
	if (block) {
		const struct ap_live *b = &p->blocks.v[block];
		int g = b->site < c->nsites ? c->site_group[b->site] : TL_GROUPS;
		if (g < TL_GROUPS) {
			double w = ap_profile_weight(p, b->size) * (double)b->size;
			c->grp[g] += e->kind == AP_EV_FREE ? -w : w;
		}
	}
	double t = ap_clock_cursor_seconds(&c->clk, e->stamp);
	double x = c->duration > 0 ? t / c->duration * TL_BUCKETS : 0;
	size_t k = x <= 0 ? 0 : x >= TL_BUCKETS ? TL_BUCKETS - 1 : (size_t)x;
	tl_bucket *b = &c->b[k];
	if (!b->set || p->inuse_space > b->space) {
		b->set = true;
		b->t = t;
		b->space = p->inuse_space;
		b->objects = p->inuse_objects;
		memcpy(b->grp, c->grp, sizeof(b->grp));
	}
	b->last_space = p->inuse_space;
	b->last_objects = p->inuse_objects;
	memcpy(b->last_grp, c->grp, sizeof(b->grp));
}

typedef struct tl_group {
	char *function;
	double peak; /* inuse_space at the peak */
} tl_group;

typedef struct timeline {
	double duration;
	peak_finder peak;
	double peak_t, end_space, end_objects;
	tl_group groups[TL_GROUPS];
	size_t ngroups;
	tl_bucket *b; /* TL_BUCKETS, empty buckets filled */
	ap_profile p; /* the last pass's profile, for the header */
} timeline;

static int cmp_group(const void *a, const void *b)
{
	const tl_group *x = a, *y = b;
	if (x->peak != y->peak)
		return x->peak > y->peak ? -1 : 1;
	return strcmp(x->function, y->function);
}

/* Pass 2's result: the functions (innermost shown frame) with the most inuse_space at the peak,
 * and which sites belong to them. */
static void rank_sites(ap_profile *p, const ap_view_opts *o, tl_ctx *c, timeline *tl)
{
	AP_VEC(tl_group) all = {0};
	ap_map by_name = {0};
	uint32_t *site_fn = ap_xcalloc(p->sites.n + 1, sizeof(*site_fn)); /* 1-based index in all */
	ap_frame_vec frames = {0};
	for (uint32_t id = 0; id < p->sites.n; id++) {
		double v = p->sites.v[id].v[AP_M_INUSE_SPACE];
		if (v <= 0)
			continue;
		ap_profile_site_frames(p, id, o->show_allocator, &frames);
		const char *fn = frames.v[0]->function;
		for (uint64_t h = ap_hash_str(fn) | 1;; h += 2) {
			bool added;
			uint64_t *slot = ap_map_put(&by_name, h, &added);
			if (added) {
				tl_group g = {.function = ap_xstrdup(fn)};
				AP_VEC_PUSH(all, g);
				*slot = all.n;
			} else if (strcmp(all.v[*slot - 1].function, fn)) {
				continue;
			}
			all.v[*slot - 1].peak += v;
			site_fn[id] = (uint32_t)*slot;
			break;
		}
	}
	/* Sort a copy of the indices: site_fn refers to positions in all. */
	size_t *order = ap_xcalloc(all.n + 1, sizeof(*order));
	tl_group *sorted = ap_xcalloc(all.n + 1, sizeof(*sorted));
	if (all.n) /* NULL with nothing to copy or sort: memcpy and qsort must not see it */
		memcpy(sorted, all.v, all.n * sizeof(*sorted));
	if (all.n > 1)
		qsort(sorted, all.n, sizeof(*sorted), cmp_group);
	tl->ngroups = all.n < TL_GROUPS ? all.n : TL_GROUPS;
	for (size_t i = 0; i < tl->ngroups; i++)
		tl->groups[i] = (tl_group){ap_xstrdup(sorted[i].function), sorted[i].peak};
	for (size_t i = 0; i < all.n; i++) {
		order[i] = TL_GROUPS;
		for (size_t g = 0; g < tl->ngroups; g++)
			if (!strcmp(all.v[i].function, tl->groups[g].function))
				order[i] = g;
	}
	c->nsites = p->sites.n;
	c->site_group = ap_xcalloc(c->nsites + 1, 1);
	for (uint32_t id = 0; id < p->sites.n; id++)
		c->site_group[id] = (uint8_t)(site_fn[id] ? order[site_fn[id] - 1] : TL_GROUPS);
	for (size_t i = 0; i < all.n; i++)
		free(all.v[i].function);
	AP_VEC_FREE(all);
	AP_VEC_FREE(frames);
	ap_map_free(&by_name);
	free(site_fn);
	free(order);
	free(sorted);
}

/* The three passes. Returns 0 or 2. */
static int timeline_build(const char *trace, const ap_view_opts *o, timeline *tl)
{
	memset(tl, 0, sizeof(*tl));
	ap_profile p1, p2;
	ap_load_opts l1 = {.observe = peak_observe, .observe_ctx = &tl->peak};
	if (ap_load_quiet(&p1, trace, &l1)) {
		ap_profile_free(&p1);
		ap_profile_load(&tl->p, trace); /* again, to print why */
		return 2;
	}
	tl->duration = p1.events ? ap_profile_seconds(&p1, p1.last_stamp) : 0;
	tl->peak_t = tl->peak.any ? ap_profile_seconds(&p1, tl->peak.stamp) : 0;
	tl_ctx *c = ap_xcalloc(1, sizeof(*c));
	ap_clock_cursor_init(&c->clk, &p1);
	c->duration = tl->duration;

	ap_load_opts l2 = {.at = AP_AT_EVENT, .at_event = tl->peak.index};
	int err = ap_load_quiet(&p2, trace, &l2);
	if (!err)
		rank_sites(&p2, o, c, tl);
	ap_profile_free(&p2);

	ap_load_opts l3 = {.observe = tl_observe, .observe_ctx = c};
	if (!err)
		err = ap_profile_load_ex(&tl->p, trace, &l3);
	ap_profile_free(&p1); /* after pass 3: the cursor reads its clock points */
	tl->end_space = tl->p.inuse_space;
	tl->end_objects = tl->p.inuse_objects;
	tl->b = ap_xcalloc(TL_BUCKETS, sizeof(*tl->b));
	memcpy(tl->b, c->b, sizeof(c->b));
	free(c->site_group);
	free(c);
	/* Buckets without events hold what the previous one ended with. */
	tl_bucket prev = {0};
	for (size_t k = 0; k < TL_BUCKETS; k++) {
		tl_bucket *b = &tl->b[k];
		if (!b->set) {
			b->t = tl->duration * (double)k / TL_BUCKETS;
			b->space = b->last_space = prev.last_space;
			b->objects = b->last_objects = prev.last_objects;
			memcpy(b->grp, prev.last_grp, sizeof(b->grp));
			memcpy(b->last_grp, prev.last_grp, sizeof(b->grp));
		}
		prev = *b;
	}
	return err ? 2 : 0;
}

static void timeline_free(timeline *tl)
{
	for (size_t i = 0; i < tl->ngroups; i++)
		free(tl->groups[i].function);
	free(tl->b);
	ap_profile_free(&tl->p);
}

/* ---- text chart -------------------------------------------------------------------------------- */

static void fmt_bytes(char *buf, size_t size, double v)
{
	ap_format_value(buf, size, v, AP_M_INUSE_SPACE);
}

static bool use_unicode(const ap_view_opts *o)
{
	if (o->ascii)
		return false;
	if (o->unicode)
		return true;
	setlocale(LC_CTYPE, "");
	const char *cs = nl_langinfo(CODESET);
	return cs && (!strcmp(cs, "UTF-8") || !strcmp(cs, "utf8"));
}

static void timeline_text(timeline *tl, const ap_view_opts *o, FILE *out)
{
	long w = o->width > 0 ? o->width : 72, h = o->height > 0 ? o->height : 10;
	if (w > TL_BUCKETS)
		w = TL_BUCKETS;
	bool uni = use_unicode(o);
	static const char *const ublocks[9] = {" ", "\u2581", "\u2582", "\u2583", "\u2584",
	                                       "\u2585", "\u2586", "\u2587", "\u2588"};
	static const char *const ablocks[9] = {" ", ".", ".", ".", ":", ":", ":", ":", "#"};
	const char *const *blocks = uni ? ublocks : ablocks;

	double *col = ap_xcalloc((size_t)w, sizeof(*col));
	long peak_col = 0;
	for (long x = 0; x < w; x++) {
		size_t lo = (size_t)(x * TL_BUCKETS / w), hi = (size_t)((x + 1) * TL_BUCKETS / w);
		for (size_t k = lo; k < hi; k++)
			if (tl->b[k].space > col[x])
				col[x] = tl->b[k].space;
	}
	double top = tl->peak.space > 0 ? tl->peak.space : 1;
	if (tl->duration > 0)
		peak_col = (long)(tl->peak_t / tl->duration * (double)w);
	if (peak_col >= w)
		peak_col = w - 1;
	if (peak_col < 0)
		peak_col = 0;

	const char *base = tl->p.exe ? strrchr(tl->p.exe, '/') : NULL;
	char a[32], b[32];
	fprintf(out, "File: %s\n", base ? base + 1 : tl->p.exe ? tl->p.exe : "?");
	fprintf(out, "Duration: %.6gs, %llu events\n", tl->duration, (unsigned long long)tl->p.events);
	fmt_bytes(a, sizeof(a), tl->peak.space);
	fprintf(out, "Peak: %s in %.0f objects at %.6gs (event %llu)\n", a, tl->peak.objects, tl->peak_t,
	        (unsigned long long)tl->peak.index);
	fmt_bytes(a, sizeof(a), tl->end_space);
	fprintf(out, "End: %s in %.0f objects still in use\n", a, tl->end_objects);
	fprintf(out, "\nheap in use (inuse_space), maximum per column of %.3gs\n",
	        tl->duration / (double)w);
	for (long r = h - 1; r >= 0; r--) {
		char label[32] = "";
		if (r == h - 1)
			fmt_bytes(label, sizeof(label), top);
		else if (r == h / 2 - (h % 2 == 0) && h > 2)
			fmt_bytes(label, sizeof(label), top * (double)(r + 1) / (double)h);
		fprintf(out, "%9s %s", label, uni ? "\u2502" : "|");
		for (long x = 0; x < w; x++) {
			long eighths = lround(col[x] / top * (double)h * 8);
			if (col[x] > 0 && eighths == 0 && r == 0)
				eighths = 1; /* something in use stays visible */
			long cell = eighths - r * 8;
			fputs(blocks[cell < 0 ? 0 : cell > 8 ? 8 : cell], out);
		}
		fputc('\n', out);
	}
	fprintf(out, "%9s %s", "0", uni ? "\u2514" : "+");
	for (long x = 0; x < w; x++)
		fputs(x == peak_col ? (uni ? "\u253c" : "+") : (uni ? "\u2500" : "-"), out);
	fputc('\n', out);
	/* Time axis: 0 at the left, the duration at the right, the middle between. */
	snprintf(a, sizeof(a), "%.3gs", tl->duration);
	snprintf(b, sizeof(b), "%.3gs", tl->duration / 2);
	int mid = (int)(w / 2) - (int)strlen(b) / 2, right = (int)w - mid - (int)strlen(b) - (int)strlen(a);
	fprintf(out, "%9s  0s%*s%s%*s%s\n", "", mid - 2, "", b, right > 0 ? right : 1, "", a);
	/* The peak, marked under its column. */
	char label[96];
	fmt_bytes(a, sizeof(a), tl->peak.space);
	snprintf(label, sizeof(label), "peak %s at %.3gs", a, tl->peak_t);
	const char *caret = uni ? "\u25b2" : "^";
	if (peak_col + 2 + (long)strlen(label) <= w)
		fprintf(out, "%9s  %*s%s %s\n", "", (int)peak_col, "", caret, label);
	else
		fprintf(out, "%9s  %*s%s %s\n", "", (int)(peak_col - (long)strlen(label) - 1 > 0 ?
		        peak_col - (long)strlen(label) - 1 : 0), "", label, caret);
	if (tl->ngroups) {
		fprintf(out, "\nAt the peak, by function (innermost frame):\n");
		for (size_t i = 0; i < tl->ngroups; i++) {
			char pct[32];
			fmt_bytes(a, sizeof(a), tl->groups[i].peak);
			ap_format_pct(pct, sizeof(pct), tl->groups[i].peak, tl->peak.space);
			fprintf(out, "%10s %7s  %s\n", a, pct, tl->groups[i].function);
		}
	}
	free(col);
}

/* ---- JSON -------------------------------------------------------------------------------------- */

static void timeline_json(timeline *tl, FILE *out)
{
	fprintf(out, "{\"duration\": %.9g, \"events\": %llu, ", tl->duration, (unsigned long long)tl->p.events);
	ap_json_trace_info(&tl->p, out);
	fprintf(out, ",\n \"peak\": {\"seconds\": %.9g, \"event\": %llu, \"inuse_space\": %.0f, "
	             "\"inuse_objects\": %.0f},\n",
	        tl->peak_t, (unsigned long long)tl->peak.index, tl->peak.space, tl->peak.objects);
	fprintf(out, " \"end\": {\"inuse_space\": %.0f, \"inuse_objects\": %.0f},\n", tl->end_space,
	        tl->end_objects);
	fprintf(out, " \"points\": [");
	for (size_t k = 0; k < TL_BUCKETS; k++)
		fprintf(out, "%s\n  {\"seconds\": %.9g, \"inuse_space\": %.0f, \"inuse_objects\": %.0f}", k ? "," : "",
		        tl->b[k].t, tl->b[k].space, tl->b[k].objects);
	fprintf(out, "],\n \"sites\": [");
	for (size_t g = 0; g < tl->ngroups; g++) {
		fprintf(out, "%s\n  {\"function\": ", g ? "," : "");
		ap_json_str(out, tl->groups[g].function);
		fprintf(out, ", \"peak_inuse_space\": %.0f, \"inuse_space\": [", tl->groups[g].peak);
		for (size_t k = 0; k < TL_BUCKETS; k++)
			fprintf(out, "%s%.0f", k ? ", " : "", tl->b[k].grp[g]);
		fprintf(out, "]}");
	}
	fprintf(out, "]}\n");
}

/* ---- SVG --------------------------------------------------------------------------------------- */

static void xml_str(FILE *out, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<': fputs("&lt;", out); break;
		case '>': fputs("&gt;", out); break;
		case '&': fputs("&amp;", out); break;
		case '"': fputs("&quot;", out); break;
		default:
			if ((unsigned char)*s >= 0x20 || *s == '\t')
				fputc(*s, out);
		}
	}
}

/* 1, 2 or 5 times a power of ten, at least x. */
static double nice_step(double x)
{
	if (x <= 0)
		return 1;
	double p = pow(10, floor(log10(x)));
	double m = x / p;
	return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

static const char *const svg_colors[TL_GROUPS + 1] = {"#d62728", "#ff7f0e", "#2ca02c", "#1f77b4",
                                                      "#9467bd", "#b0b0b0"};

static int timeline_svg(timeline *tl, const char *path)
{
	FILE *out = fopen(path, "w");
	if (!out) {
		fprintf(stderr, "allocprof: %s: cannot write: %m\n", path);
		return 2;
	}
	const double W = 960, H = 540, X0 = 90, X1 = 930, Y0 = 50, Y1 = 360;
	double dur = tl->duration > 0 ? tl->duration : 1e-9;
	/* Heap axis in the unit of the peak (B, kB, MB...), with round steps in that unit. */
	double unit = 1;
	while (tl->peak.space / unit >= 1024 && unit < 1e15)
		unit *= 1024;
	double ystep = nice_step(tl->peak.space / unit / 5) * unit;
	double ymax = ceil(tl->peak.space * 1.12 / ystep) * ystep;
	if (ymax <= 0)
		ymax = 1, ystep = 1;
	double xstep = nice_step(dur / 8);
#define SX(t) (X0 + (t) / dur * (X1 - X0))
#define SY(v) (Y1 - (v) / ymax * (Y1 - Y0))
	const char *base = tl->p.exe ? strrchr(tl->p.exe, '/') : NULL;
	fprintf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	             "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
	             "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
	        W, H, W, H);
	fprintf(out, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%.0f\" y=\"28\" "
	             "font-size=\"16\" font-weight=\"bold\">Heap in use: ", X0);
	xml_str(out, base ? base + 1 : tl->p.exe ? tl->p.exe : "?");
	fprintf(out, "</text>\n");
	/* Grid and axes. */
	fprintf(out, "<g id=\"y-axis\" stroke=\"#ddd\">\n");
	for (double v = 0; v <= ymax * 1.0001; v += ystep) {
		char lab[32];
		fmt_bytes(lab, sizeof(lab), v);
		fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
		             "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" stroke=\"none\" fill=\"#333\">%s</text>\n",
		        X0, SY(v), X1, SY(v), X0 - 6, SY(v) + 4, lab);
	}
	fprintf(out, "</g>\n<g id=\"x-axis\" stroke=\"#ddd\">\n");
	for (double t = 0; t <= dur * 1.0001; t += xstep)
		fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
		             "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" stroke=\"none\" fill=\"#333\">%gs</text>\n",
		        SX(t), Y0, SX(t), Y1, SX(t), Y1 + 18, t);
	fprintf(out, "</g>\n<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">time (seconds)</text>\n",
	        (X0 + X1) / 2, Y1 + 38);
	fprintf(out, "<text transform=\"translate(20 %.0f) rotate(-90)\" text-anchor=\"middle\">heap in use"
	             "</text>\n", (Y0 + Y1) / 2);
	/* Stacked areas: the top functions from the bottom up, then everything else. */
	double *lower = ap_xcalloc(TL_BUCKETS, sizeof(double)), *upper = ap_xcalloc(TL_BUCKETS, sizeof(double));
	for (size_t g = 0; g <= tl->ngroups; g++) {
		for (size_t k = 0; k < TL_BUCKETS; k++) {
			double v = g < tl->ngroups ? tl->b[k].grp[g] : tl->b[k].space - lower[k];
			upper[k] = lower[k] + (v > 0 ? v : 0);
		}
		fprintf(out, "<path class=\"area\" data-series=\"%s\" fill=\"%s\" fill-opacity=\"0.75\" d=\"M%.1f %.1f",
		        g < tl->ngroups ? "site" : "other", svg_colors[g < tl->ngroups ? g : TL_GROUPS],
		        SX(tl->b[0].t), SY(lower[0]));
		for (size_t k = 0; k < TL_BUCKETS; k++)
			fprintf(out, " L%.1f %.1f", SX(tl->b[k].t), SY(upper[k]));
		for (size_t k = TL_BUCKETS; k-- > 0;)
			fprintf(out, " L%.1f %.1f", SX(tl->b[k].t), SY(lower[k]));
		fprintf(out, " Z\"/>\n");
		memcpy(lower, upper, TL_BUCKETS * sizeof(double));
	}
	fprintf(out, "<polyline id=\"total\" fill=\"none\" stroke=\"black\" stroke-width=\"1.2\" points=\"");
	for (size_t k = 0; k < TL_BUCKETS; k++)
		fprintf(out, "%s%.1f,%.1f", k ? " " : "", SX(tl->b[k].t), SY(tl->b[k].space));
	fprintf(out, "\"/>\n<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>"
	             "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n",
	        X0, Y1, X1, Y1, X0, Y0, X0, Y1);
	/* The peak. */
	char pv[32];
	fmt_bytes(pv, sizeof(pv), tl->peak.space);
	double px = SX(tl->peak_t), py = SY(tl->peak.space);
	fprintf(out, "<g id=\"peak\" data-bytes=\"%.0f\" data-seconds=\"%.9g\"><circle cx=\"%.1f\" cy=\"%.1f\" "
	             "r=\"4\" fill=\"black\"/><text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" font-weight=\"bold\">"
	             "peak %s at %.4gs</text></g>\n",
	        tl->peak.space, tl->peak_t, px, py, px + (px > (X0 + X1) / 2 ? -8 : 8), py - 8,
	        px > (X0 + X1) / 2 ? "end" : "start", pv, tl->peak_t);
	/* Legend. */
	fprintf(out, "<g id=\"legend\">\n");
	for (size_t g = 0; g <= tl->ngroups; g++) {
		double y = Y1 + 60 + (double)g * 18;
		double v = g < tl->ngroups ? tl->groups[g].peak : tl->peak.space;
		if (g == tl->ngroups) {
			for (size_t i = 0; i < tl->ngroups; i++)
				v -= tl->groups[i].peak;
		}
		char lab[32];
		fmt_bytes(lab, sizeof(lab), v);
		fprintf(out, "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%.0f\" "
		             "y=\"%.0f\">",
		        X0, y - 10, svg_colors[g < tl->ngroups ? g : TL_GROUPS], X0 + 18, y);
		if (g < tl->ngroups)
			xml_str(out, tl->groups[g].function);
		else
			fputs("everything else", out);
		fprintf(out, " \u2014 %s at the peak</text>\n", lab);
	}
	fprintf(out, "</g>\n</svg>\n");
#undef SX
#undef SY
	free(lower);
	free(upper);
	if (fclose(out)) {
		fprintf(stderr, "allocprof: %s: write error: %m\n", path);
		return 2;
	}
	return 0;
}

int ap_timeline_run(const char *trace, ap_view_opts *o)
{
	timeline tl;
	int rc = timeline_build(trace, o, &tl);
	if (!rc) {
		if (o->output)
			rc = timeline_svg(&tl, o->output);
		if (!rc && o->json)
			timeline_json(&tl, stdout);
		else if (!rc && !o->output)
			timeline_text(&tl, o, stdout);
		if (!rc && o->output && !o->json)
			fprintf(stderr, "allocprof: wrote %s\n", o->output);
	}
	timeline_free(&tl);
	return rc;
}
