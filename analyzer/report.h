/*
 * report: the views over a replayed profile, shaped like pprof's so users' habits carry over.
 */
#ifndef AP_REPORT_H
#define AP_REPORT_H

#include <stdio.h>

#include "profile.h"

typedef struct ap_view_opts {
	int sample_index;     /* enum ap_metric */
	long nrows;           /* rows to print; < 0: the default (10 for text, all for JSON) */
	bool cum_sort;        /* sort by cum instead of flat */
	bool json;
	bool show_allocator;  /* keep the allocator's own frames */
} ap_view_opts;

/* One function: flat and cum figures of every metric. */
typedef struct ap_row {
	const char *name;
	double flat[AP_M__COUNT], cum[AP_M__COUNT];
	uint32_t last_site; /* while aggregating: the last site that added to cum */
} ap_row;

typedef struct ap_rows {
	AP_VEC(ap_row) rows;
	ap_map index; /* name hash -> row index + 1 */
	double total[AP_M__COUNT];
} ap_rows;

/* Aggregates the profile by function: flat to the innermost frame, cum once per stack to every
 * function on it (so recursion is not counted twice). */
void ap_rows_build(ap_profile *p, bool show_allocator, ap_rows *out);
void ap_rows_free(ap_rows *r);
/* Sorts rows as pprof does: by |flat| (or |cum|) of the metric, then by name. */
void ap_rows_sort(ap_rows *r, int metric, bool by_cum);

/* `allocprof top`. Returns 0. */
int ap_report_top(ap_profile *p, const ap_view_opts *o, FILE *out);

/* Formats a value of a metric the way pprof does (bytes scaled to B/kB/MB/..., counts plain). */
void ap_format_value(char *buf, size_t size, double v, int metric);
/* pprof's percentage format. */
void ap_format_pct(char *buf, size_t size, double v, double total);

#endif
