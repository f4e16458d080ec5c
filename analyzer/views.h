/*
 * views: pprof's other text views over a replayed profile (list, peek, traces) and folded stacks
 * for flame graphs. They all go through report.h's stack filter and aggregation.
 */
#ifndef AP_VIEWS_H
#define AP_VIEWS_H

#include "report.h"

/* `allocprof list REGEX`: annotated source of the functions whose name REGEX matches.
 * Returns 0, or 1 when no function matched. */
int ap_report_list(ap_profile *p, const ap_view_opts *o, const regex_t *re, FILE *out);

/* `allocprof peek REGEX`: callers and callees of the matching nodes. Returns 0, or 1 when no
 * node matched. */
int ap_report_peek(ap_profile *p, const ap_view_opts *o, const regex_t *re, FILE *out);

/* `allocprof traces`: the distinct stacks, heaviest first, leaf first. Returns 0. */
int ap_report_traces(ap_profile *p, const ap_view_opts *o, FILE *out);

/* `allocprof folded`: "root;...;leaf weight" lines, sorted, zero weights skipped. Returns 0. */
int ap_report_folded(ap_profile *p, const ap_view_opts *o, FILE *out);

#endif
