/*
 * report.c: aggregation by function and the `top` view (text, as pprof prints it, and JSON).
 */
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static ap_row *row_for(ap_rows *r, const char *name)
{
	uint64_t key = ap_hash_str(name) | 1;
	for (;; key += 2) {
		bool added;
		uint64_t *slot = ap_map_put(&r->index, key, &added);
		if (added) {
			ap_row row = {.name = name, .last_site = UINT32_MAX};
			AP_VEC_PUSH(r->rows, row);
			*slot = r->rows.n;
			return &r->rows.v[r->rows.n - 1];
		}
		ap_row *row = &r->rows.v[*slot - 1];
		if (row->name == name || !strcmp(row->name, name))
			return row;
	}
}

void ap_rows_build(ap_profile *p, bool show_allocator, ap_rows *out)
{
	memset(out, 0, sizeof(*out));
	ap_frame_vec frames = {0};
	for (uint32_t id = 0; id < p->sites.n; id++) {
		const ap_site *s = &p->sites.v[id];
		bool any = false;
		for (int m = 0; m < AP_M__COUNT; m++)
			any |= s->v[m] != 0;
		if (!any)
			continue;
		for (int m = 0; m < AP_M__COUNT; m++)
			out->total[m] += fabs(s->v[m]);
		size_t n = ap_profile_site_frames(p, id, show_allocator, &frames);
		for (size_t i = 0; i < n; i++) {
			ap_row *row = row_for(out, frames.v[i]->function);
			if (i == 0)
				for (int m = 0; m < AP_M__COUNT; m++)
					row->flat[m] += s->v[m];
			if (row->last_site == id)
				continue;
			row->last_site = id;
			for (int m = 0; m < AP_M__COUNT; m++)
				row->cum[m] += s->v[m];
		}
	}
	AP_VEC_FREE(frames);
}

void ap_rows_free(ap_rows *r)
{
	AP_VEC_FREE(r->rows);
	ap_map_free(&r->index);
}

static int sort_metric;
static bool sort_cum;

static int cmp_rows(const void *a, const void *b)
{
	const ap_row *x = a, *y = b;
	double fx = fabs(sort_cum ? x->cum[sort_metric] : x->flat[sort_metric]);
	double fy = fabs(sort_cum ? y->cum[sort_metric] : y->flat[sort_metric]);
	if (fx != fy)
		return fx > fy ? -1 : 1;
	int c = strcmp(x->name, y->name);
	if (c)
		return c;
	double cx = fabs(x->cum[sort_metric]), cy = fabs(y->cum[sort_metric]);
	return cx > cy ? -1 : cx < cy;
}

void ap_rows_sort(ap_rows *r, int metric, bool by_cum)
{
	sort_metric = metric;
	sort_cum = by_cum;
	qsort(r->rows.v, r->rows.n, sizeof(*r->rows.v), cmp_rows);
	/* The index now points at the wrong rows: rebuild it for later lookups. */
	ap_map_free(&r->index);
	for (size_t i = 0; i < r->rows.n; i++) {
		uint64_t key = ap_hash_str(r->rows.v[i].name) | 1;
		bool added;
		uint64_t *slot;
		while (slot = ap_map_put(&r->index, key, &added), !added)
			key += 2;
		*slot = i + 1;
	}
}

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

static void json_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

static void json_four(FILE *out, const double *v)
{
	fputc('{', out);
	for (int m = 0; m < AP_M__COUNT; m++)
		fprintf(out, "%s\"%s\": %.0f", m ? ", " : "", ap_metric_names[m], round(v[m]));
	fputc('}', out);
}

static void print_header(ap_profile *p, const ap_view_opts *o, FILE *out)
{
	const char *base = p->exe ? strrchr(p->exe, '/') : NULL;
	fprintf(out, "File: %s\n", base ? base + 1 : p->exe ? p->exe : "?");
	fprintf(out, "Type: %s\n", ap_metric_names[o->sample_index]);
	if (p->start_realtime_ns) {
		time_t t = (time_t)(p->start_realtime_ns / 1000000000u);
		char when[64];
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", localtime(&t));
		fprintf(out, "Time: %s\n", when);
	}
	if (p->events)
		fprintf(out, "Duration: %.3gs\n", ap_profile_seconds(p, p->last_stamp));
}

int ap_report_top(ap_profile *p, const ap_view_opts *o, FILE *out)
{
	ap_rows r;
	ap_rows_build(p, o->show_allocator, &r);
	ap_rows_sort(&r, o->sample_index, o->cum_sort);
	int m = o->sample_index;
	size_t shown = r.rows.n;
	if (o->nrows >= 0 && (size_t)o->nrows < shown)
		shown = (size_t)o->nrows;

	if (o->json) {
		fprintf(out, "{\"sample_index\": \"%s\", \"total\": ", ap_metric_names[m]);
		json_four(out, r.total);
		fprintf(out, ", \"trace\": {\"file\": ");
		json_str(out, p->path);
		fprintf(out, ", \"pid\": %llu, \"events\": %llu, \"unknown_frees\": %llu, \"lost_allocs\": %llu, "
		             "\"lost_frees\": %llu, \"truncated\": %s}",
		        (unsigned long long)p->pid, (unsigned long long)p->events,
		        (unsigned long long)p->unknown_frees, (unsigned long long)p->lost_allocs,
		        (unsigned long long)p->lost_frees, p->rr.truncated ? "true" : "false");
		fprintf(out, ", \"rows\": [");
		for (size_t i = 0; i < shown; i++) {
			ap_row *row = &r.rows.v[i];
			fprintf(out, "%s\n  {\"function\": ", i ? "," : "");
			json_str(out, row->name);
			fprintf(out, ", \"flat\": ");
			json_four(out, row->flat);
			fprintf(out, ", \"cum\": ");
			json_four(out, row->cum);
			fputc('}', out);
		}
		fprintf(out, "]}\n");
		ap_rows_free(&r);
		return 0;
	}

	/* As in pprof, a function with nothing under this sample index is not a node. */
	size_t keep = 0;
	for (size_t i = 0; i < r.rows.n; i++)
		if (r.rows.v[i].cum[m] != 0 || r.rows.v[i].flat[m] != 0)
			r.rows.v[keep++] = r.rows.v[i];
	r.rows.n = keep;
	shown = o->nrows >= 0 && (size_t)o->nrows < keep ? (size_t)o->nrows : keep;
	if (o->nrows < 0 && shown > 10)
		shown = 10;
	print_header(p, o, out);
	double shown_flat = 0;
	for (size_t i = 0; i < shown; i++)
		shown_flat += r.rows.v[i].flat[m];
	char a[32], b[32], c[32];
	ap_format_value(a, sizeof(a), shown_flat, m);
	ap_format_pct(b, sizeof(b), shown_flat, r.total[m]);
	ap_format_value(c, sizeof(c), r.total[m], m);
	fprintf(out, "Showing nodes accounting for %s, %s of %s total\n", a, b, c);
	if (shown < r.rows.n)
		fprintf(out, "Showing top %zu nodes out of %zu\n", shown, r.rows.n);
	fprintf(out, "%10s %6s %6s %10s %6s\n", "flat", "flat%", "sum%", "cum", "cum%");
	double sum = 0;
	for (size_t i = 0; i < shown; i++) {
		ap_row *row = &r.rows.v[i];
		char flat[32], flatp[32], sump[32], cum[32], cump[32];
		sum += row->flat[m];
		ap_format_value(flat, sizeof(flat), row->flat[m], m);
		ap_format_pct(flatp, sizeof(flatp), row->flat[m], r.total[m]);
		ap_format_pct(sump, sizeof(sump), sum, r.total[m]);
		ap_format_value(cum, sizeof(cum), row->cum[m], m);
		ap_format_pct(cump, sizeof(cump), row->cum[m], r.total[m]);
		fprintf(out, "%10s %6s %6s %10s %6s  %s\n", flat, flatp, sump, cum, cump, row->name);
	}
	ap_rows_free(&r);
	return 0;
}
