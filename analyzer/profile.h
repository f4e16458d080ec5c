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

struct ap_profile;

/* Options of ap_profile_load_ex (all zero: what ap_profile_load does). Added for the timeline,
 * --at, leaks, temporaries and lifetimes analyses, which need either a moment other than the
 * end or to watch every event as the replay applies it. */
enum ap_at_kind {
	AP_AT_END = 0, /* inuse_* = live at the end of the trace */
	AP_AT_EVENT,   /* live just after the event of index at_event (0-based, in stamp order) */
	AP_AT_STAMP,   /* live just before the first event with a stamp above at_stamp */
};
/* Called after each event has been applied. block is the index in p->blocks of the block the
 * event allocated, freed (still readable: freed entries are only relinked) or brought back by an
 * UNFREE; 0 for events without a known block (LOST, a free of an unknown address). */
typedef void (*ap_observe_fn)(void *ctx, const struct ap_profile *p, const ap_event *e, uint32_t block);
typedef struct ap_load_opts {
	enum ap_at_kind at;
	uint64_t at_event, at_stamp;
	ap_observe_fn observe;
	void *observe_ctx;
} ap_load_opts;

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
	ap_map live;           /* address -> the block (an index in blocks, or packed: profile.c) */
	AP_VEC(struct ap_live) blocks;
	uint32_t free_block;   /* head of the free list in blocks, 0 = none (index 0 unused) */
	ap_map last_free;      /* tid -> block held back for a possible UNFREE (as in live) */
	uint64_t unknown_frees, realloc_of_unknown, double_allocs, lost_allocs, lost_frees;
	uint64_t events, first_stamp, last_stamp;
	AP_VEC(struct ap_clockpt) clock_pts;
	ap_symbols *syms;
	ap_read_result rr;
	/* Running totals of every site's inuse figures, for the timeline (kept by the replay). */
	double inuse_objects, inuse_space;
	/* Set while the replay leaves the inuse figures (the sites' and the totals above) to be
	 * summed from the live set once it ends (profile.c: inuse_later); later_bytes: the bytes
	 * allocated meanwhile. */
	bool inuse_later;
	uint64_t later_bytes;
	/* ap_profile_load_ex: its options; with at != AP_AT_END, the moment the inuse figures
	 * describe: at_taken says whether the replay reached it (else they are those at the end),
	 * at_event_index the last event applied before it (UINT64_MAX: none), at_stamp_taken its
	 * stamp. at_snap holds the sites' inuse figures at that moment during the load. */
	ap_load_opts opts;
	bool at_taken;
	uint64_t at_event_index, at_stamp_taken;
	double *at_snap;
	size_t at_nsnap;
} ap_profile;

/* Reads and replays the trace at path. Returns 0 (warnings, such as a truncated file, are printed
 * on stderr) or a negated enum ap_error after printing one line that names the file. */
int ap_profile_load(ap_profile *p, const char *path);
/* As ap_profile_load, with options (NULL: the defaults set by ap_profile_set_default_opts). */
int ap_profile_load_ex(ap_profile *p, const char *path, const ap_load_opts *o);
/* The options ap_profile_load uses: lets the command line's --at reach commands that load their
 * profile themselves (pprof). o = NULL restores plain loading. */
void ap_profile_set_default_opts(const ap_load_opts *o);
/* The same from memory (see ap_read_trace_mem): data is the file's content when compressed, else
 * the decompressed stream; name stands for the file in messages. Unless open_files, the module
 * files the trace names are never opened (frames resolve to module+offset): the fuzz harness's
 * traces name arbitrary paths. */
int ap_profile_load_mem(ap_profile *p, const char *name, const void *data, size_t len,
                        bool compressed, bool open_files);
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
