/*
 * profile: replays a trace into per-stack figures (the four pprof heap metrics) and knows the
 * symbolized frames of every stack.
 *
 * Replay keeps only the live blocks (address -> stack, size) and one record per distinct stack,
 * so memory follows the live set and the stack table, not the length of the trace.
 */
#ifndef AP_PROFILE_H
#define AP_PROFILE_H

#include "decode.h"
#include "symbols.h"
#include "util.h"

enum ap_metric {
	AP_M_ALLOC_OBJECTS = 0,
	AP_M_ALLOC_SPACE = 1,
	AP_M_INUSE_OBJECTS = 2,
	AP_M_INUSE_SPACE = 3,
	AP_M__COUNT = 4,
};
extern const char *const ap_metric_names[AP_M__COUNT];
/* Parses a --sample-index name; -1 if unknown. */
int ap_metric_parse(const char *name);

/* One distinct stack and what was allocated through it. */
typedef struct ap_site {
	uint32_t generation, flags, nframes;
	uint64_t *frames;      /* return addresses, innermost first; NULL: never defined */
	double v[AP_M__COUNT]; /* alloc_objects, alloc_space, inuse_objects, inuse_space */
} ap_site;

/* A live block: its size and the site that allocated it; next_free links unused entries. */
struct ap_live {
	uint64_t size;
	uint32_t site, next_free;
};

/* A (stamp, CLOCK_MONOTONIC ns) pair from the trace, to turn stamps into seconds. */
struct ap_clockpt {
	uint64_t stamp, ns;
};

typedef struct ap_profile {
	const char *path;
	char *exe;
	char **argv;
	size_t argc;
	uint64_t pid, start_realtime_ns, start_monotonic_ns, sample_bytes;
	uint32_t clock;
	bool have_header;
	AP_VEC(ap_site) sites; /* indexed by stack id; [0] = "no stack" */
	ap_map live;           /* address -> index in live_blocks */
	AP_VEC(struct ap_live) blocks;
	uint32_t free_block;   /* head of the free list in blocks, 0 = none (index 0 unused) */
	ap_map last_free;      /* tid -> block index held back for a possible UNFREE */
	uint64_t unknown_frees, realloc_of_unknown, double_allocs, lost_allocs, lost_frees;
	uint64_t events, first_stamp, last_stamp;
	AP_VEC(struct ap_clockpt) clock_pts;
	ap_symbols *syms;
	ap_read_result rr;
} ap_profile;

/* Reads and replays the trace at path. Returns 0 (warnings, such as a truncated file, are printed
 * on stderr) or a negated enum ap_error after printing one line that names the file. */
int ap_profile_load(ap_profile *p, const char *path);
void ap_profile_free(ap_profile *p);

/* The number of allocations a recorded allocation of size bytes stands for (1 in full mode). */
double ap_profile_weight(const ap_profile *p, uint64_t size);

/* Seconds since the start of the trace for a stamp (interpolated from CLOCK records). */
double ap_profile_seconds(const ap_profile *p, uint64_t stamp);

/* Symbolized frames of a site, outermost call last, inline frames expanded (innermost first),
 * with leading allocator frames removed unless show_allocator. Fills out (growing it) and
 * returns the number of frames. */
typedef AP_VEC(const ap_symframe *) ap_frame_vec;
size_t ap_profile_site_frames(ap_profile *p, uint32_t site, bool show_allocator, ap_frame_vec *out);

/* Adds a regular expression (POSIX extended, matched against the whole function name) to the
 * frames hidden at the innermost end of stacks. */
void ap_profile_hide_add(const char *regex);

#endif
