/*
 * analyses: what allocprof derives from a trace beyond the four figures at the end: the heap over
 * time (timeline.c), the moment --at selects (peak, a time, an event; timeline.c), blocks not
 * freed by exit (leaks.c), temporary allocations and lifetimes/sizes (lifetimes.c), the
 * difference of two profiles (diff.c) and an interactive HTML flame graph (flame.c).
 *
 * Every command's entry point takes argv starting at the command's name and returns the exit
 * status: 0 ok, 1 a check failed (leaks --fail-on-leaks), 2 bad usage or unreadable input.
 */
#ifndef AP_ANALYSES_H
#define AP_ANALYSES_H

#include <stdio.h>

#include "profile.h"
#include "report.h"

/* ---- shared helpers (timeline.c) ------------------------------------------------------------- */

/* Stamp -> seconds since the start, as ap_profile_seconds, but O(1) amortised for stamps that
 * mostly increase (events in stamp order): it keeps a cursor into the clock points. */
typedef struct ap_clock_cursor {
	const struct ap_clockpt *pts;
	size_t n, i;
	uint64_t start_ns;
} ap_clock_cursor;
void ap_clock_cursor_init(ap_clock_cursor *c, const ap_profile *p);
double ap_clock_cursor_seconds(ap_clock_cursor *c, uint64_t stamp);

/* Loads with stderr silenced: the extra passes some analyses need would otherwise repeat the
 * trace's warnings; the final pass (ap_profile_load_ex) prints them once. */
int ap_load_quiet(ap_profile *p, const char *path, const ap_load_opts *o);

/* Parses --at SPEC ("end", "peak", "event:N", "1.5s", "1500ms", "1.5") and fills lo with the
 * moment, running the passes needed to find it (peak: a replay; a time: the clock records).
 * Returns 0, or 2 after printing a message (bad SPEC, unreadable trace). */
int ap_at_prepare(const char *spec, const char *trace, ap_load_opts *lo);
/* Checks SPEC's syntax only (for option parsing). */
bool ap_at_valid(const char *spec);
/* One line describing the moment a profile loaded with --at shows, e.g.
 * "peak: 1.02MB in 1000 objects at 0.104s (event 2001)". */
void ap_at_describe(const ap_profile *p, const char *spec, char *buf, size_t size);

/* Parses a byte count with an optional K, M, G suffix (powers of 1024); false if malformed. */
bool ap_parse_bytes(const char *s, uint64_t *out);

/* ---- temporaries and lifetimes (lifetimes.c) --------------------------------------------------- */

typedef struct ap_lt ap_lt;
/* Per-site temporaries and (with_lifetimes) size and lifetime histograms, gathered by observing
 * a replay: pass ap_lt_observe and the returned context in ap_load_opts. with_lifetimes needs
 * the trace's clock records first (one extra read of path); NULL after printing an error. */
ap_lt *ap_lt_new(const char *path, bool with_lifetimes);
void ap_lt_observe(void *ctx, const ap_profile *p, const ap_event *e, uint32_t block);
void ap_lt_free(ap_lt *lt);
/* --sample-index=temp_objects|temp_space: replaces every site's alloc_objects and alloc_space
 * by its temporary allocations (count, bytes), so every view shows them through the usual path. */
void ap_lt_substitute_temps(ap_profile *p, const ap_lt *lt);

/* ---- commands (options parsed by cli.c into o; each returns the exit status) ------------------ */

int ap_timeline_run(const char *trace, ap_view_opts *o);
int ap_leaks_run(const char *trace, ap_view_opts *o);
int ap_temps_run(const char *trace, ap_view_opts *o);
int ap_sizes_run(const char *trace, ap_view_opts *o);
int ap_flame_run(const char *trace, ap_view_opts *o);
int ap_diff_run(const char *base, const char *new_, ap_view_opts *o);

/* Loads trace for a view: --at and temp_* applied, at_label set. Returns 0 or 2 (message
 * printed); p can be freed either way. */
int ap_view_load(ap_profile *p, const char *trace, ap_view_opts *o);

#endif
