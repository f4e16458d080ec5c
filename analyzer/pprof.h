/*
 * pprof: exports a replayed profile as a gzip-compressed profile.proto (the format of Go's heap
 * profiles), for `go tool pprof`, speedscope, Perfetto and other readers of that format.
 */
#ifndef AP_PPROF_H
#define AP_PPROF_H

#include <stdbool.h>
#include <stddef.h>

#include "profile.h"

typedef struct ap_pprof_opts {
	int default_index;    /* enum ap_metric written as default_sample_type; < 0: inuse_space */
	bool show_allocator;  /* keep the allocator's own frames at the innermost end of stacks */
	bool uncompressed;    /* raw protobuf instead of gzip (pprof reads both; for debugging) */
	/* Extra Profile.comment lines (pprof prints them in report headers), after allocprof's own. */
	const char *const *comments;
	size_t ncomments;
} ap_pprof_opts;

/* What ap_pprof_write wrote, for messages and tests. */
typedef struct ap_pprof_stats {
	size_t samples, locations, functions, mappings, strings;
	size_t bytes; /* size of the file */
} ap_pprof_stats;

/* Writes p (already loaded) as a profile.proto to path ("-" = stdout), truncating the file.
 * Values are the sites' figures rounded to integers; negative figures (a diff) are written as
 * they are. opts and stats may be NULL. Returns 0, or a negated enum ap_error after printing one
 * line on stderr. */
int ap_pprof_write(ap_profile *p, const ap_pprof_opts *opts, const char *path, ap_pprof_stats *stats);

/* `allocprof pprof [-o FILE] [--sample-index=INDEX] [...] TRACE`; argv[0] is "pprof". Returns
 * the exit status: 0, or 2 for bad usage, an unreadable trace or an unwritable output. */
int ap_pprof_main(int argc, char **argv);

#endif
