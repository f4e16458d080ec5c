/*
 * report: what every view over a replayed profile shares, shaped like pprof so users' habits carry
 * over: the stack filter (--focus, --ignore, hidden allocator frames), aggregation of stacks into
 * nodes (functions, or function+line with --lines) with flat, cum and caller->callee edges, the
 * value and percentage formats, and the `top` view. The other views live in views.c.
 */
#ifndef AP_REPORT_H
#define AP_REPORT_H

#include <regex.h>
#include <stdio.h>

#include "profile.h"

typedef struct ap_view_opts {
	int sample_index;     /* enum ap_metric */
	long nrows;           /* rows to print; < 0: the default (10 for text top, all otherwise) */
	bool cum_sort;        /* sort by cum instead of flat */
	bool json;
	bool show_allocator;  /* keep the allocator's own frames */
	bool lines;           /* nodes are function+file:line instead of functions */
	const char *source_path; /* list: colon-separated directories to look for sources in */
	bool has_focus, has_ignore;
	regex_t focus, ignore; /* POSIX extended, unanchored; matched against function, file, module */
	/* --at SPEC: inuse_* describe that moment instead of the end (analyses.h); at_label is the
	 * line ap_report_header prints about it, set once the profile is loaded. */
	const char *at;
	char at_label[192];
	/* --sample-index=temp_objects|temp_space: 1 or 2 (sample_index is then alloc_objects or
	 * alloc_space, whose figures ap_lt_substitute_temps replaced); the name to print. */
	int temp_index;
	const char *index_name;
	/* The analyses' options (analyses.h): -o FILE; timeline's chart size and characters;
	 * leaks' --all and --fail-on-leaks[=BYTES]; diff's --pprof. */
	const char *output;
	long width, height;
	bool ascii, unicode;
	bool all, fail_on_leaks, pprof_out;
	uint64_t fail_bytes;
} ap_view_opts;

/* The name of the sample index the views print: temp_* or one of ap_metric_names. */
const char *ap_view_index_name(const ap_view_opts *o);

/* How frames become nodes. */
enum ap_granularity {
	AP_G_FUNCTION, /* one node per function name */
	AP_G_LINE,     /* one node per function + file:line (the function alone without line info) */
	AP_G_LIST,     /* as AP_G_LINE, but frames without a file become one node per address */
};

/* One node: flat and cum figures of every metric. */
typedef struct ap_row {
	const char *name;        /* what the views print */
	const char *function;
	const char *file;        /* NULL if unknown */
	const char *module;      /* AP_G_LIST without a file: the module and offset of the address */
	uint64_t offset;
	uint32_t line;
	bool inline_in, plain_in; /* reached through an inlined / a physical call (pprof's "(inline)") */
	double flat[AP_M__COUNT], cum[AP_M__COUNT];
	uint32_t last_stack; /* while aggregating: the last stack that added to cum */
} ap_row;

/* A caller -> callee edge between two rows, weighted once per stack, never a self edge. */
typedef struct ap_edge {
	uint32_t from, to;
	bool inlined; /* the callee was inlined into the caller */
	double w[AP_M__COUNT];
	uint32_t last_stack;
} ap_edge;

typedef struct ap_rows {
	AP_VEC(ap_row) rows;   /* in order of first appearance; edges refer to these indices */
	AP_VEC(ap_edge) edges;
	AP_VEC(char *) names;  /* the names this aggregation allocated */
	ap_map index, edge_index;
	size_t *order;         /* after ap_rows_sort: row indices in display order */
	double total[AP_M__COUNT];
	uint32_t nstacks;
} ap_rows;

/* One stack as the views see it: allocator frames hidden, --focus and --ignore applied. */
typedef struct ap_stack_view {
	uint32_t site;
	const double *v;                  /* its four figures */
	const ap_symframe *const *frames; /* innermost first */
	size_t n;
} ap_stack_view;
typedef void (*ap_stack_fn)(void *ctx, const ap_stack_view *s);

/* The one filter every view goes through: calls fn for each stack with a non-zero figure that
 * --focus keeps and --ignore does not drop, and adds |v| of every such stack before filtering
 * to total (as pprof does by default, percentages stay relative to the whole profile). */
void ap_walk_stacks(ap_profile *p, const ap_view_opts *o, double total[AP_M__COUNT], ap_stack_fn fn,
                    void *ctx);

/* Aggregates the filtered stacks into rows: flat to the innermost node, cum and edges once per
 * stack (so recursion is not counted twice). Edges only when with_edges. */
void ap_rows_build(ap_profile *p, const ap_view_opts *o, enum ap_granularity g, bool with_edges,
                   ap_rows *out);
void ap_rows_free(ap_rows *r);
/* Sets r->order as pprof sorts nodes: by |flat| (or |cum|) of the metric, then by name. */
void ap_rows_sort(ap_rows *r, int metric, bool by_cum);

/* The name of a frame as a node of granularity g would print it; valid until the next call
 * with the same buf, which it may grow (*buf is malloc'ed, NULL at first). */
const char *ap_frame_name(const ap_symframe *f, enum ap_granularity g, char **buf, size_t *cap);

/* `allocprof top`. Returns 0. */
int ap_report_top(ap_profile *p, const ap_view_opts *o, FILE *out);

/* File:, Type:, Time:, Duration: lines, as pprof starts its reports. */
void ap_report_header(ap_profile *p, const ap_view_opts *o, FILE *out);

/* Formats a value of a metric the way pprof does (bytes scaled to B/kB/MB/..., counts plain). */
void ap_format_value(char *buf, size_t size, double v, int metric);
/* pprof's percentage format. */
void ap_format_pct(char *buf, size_t size, double v, double total);

/* JSON output pieces: a string literal, and {"alloc_objects": .., ...} of four figures. */
void ap_json_str(FILE *out, const char *s);
void ap_json_four(FILE *out, const double *v);
/* The "trace": {...} member every JSON report carries (without a leading comma). */
void ap_json_trace_info(ap_profile *p, FILE *out);

#endif
