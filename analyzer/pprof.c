/*
 * pprof.c: `allocprof pprof`: writes a replayed profile as gzip'd profile.proto (Go heap-profile conventions).
 *
 * The layout follows Go's runtime/pprof heap profile (see docs REFERENCE-pprof.md §1, §2):
 * sample types alloc_objects/count, alloc_space/bytes, inuse_objects/count, inuse_space/bytes;
 * period_type space/bytes; one Sample per stack with all four values; one Location per distinct
 * physical frame, address = return address - 1, its Lines the inline chain innermost first; one
 * Mapping per executable PT_LOAD segment of every recorded module, the main executable first.
 *
 * The encoder is hand-written (a dozen field numbers do not justify a protobuf dependency). Every
 * piece is encoded into memory as it is discovered (samples, then the locations and functions
 * they create), then the whole goes through zlib in order: header, samples, locations, functions,
 * mappings, string table. Field order inside a message is free in protobuf, and mappings and
 * strings can only be written once every location is known.
 */
#include "pprof.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "util.h"

/* ---- field numbers of profile.proto (package perftools.profiles) ---------------------------- */

enum {
	/* Profile */
	AP_PPROF_PROFILE_SAMPLE_TYPE = 1,
	AP_PPROF_PROFILE_SAMPLE = 2,
	AP_PPROF_PROFILE_MAPPING = 3,
	AP_PPROF_PROFILE_LOCATION = 4,
	AP_PPROF_PROFILE_FUNCTION = 5,
	AP_PPROF_PROFILE_STRING_TABLE = 6,
	AP_PPROF_PROFILE_TIME_NANOS = 9,
	AP_PPROF_PROFILE_DURATION_NANOS = 10,
	AP_PPROF_PROFILE_PERIOD_TYPE = 11,
	AP_PPROF_PROFILE_PERIOD = 12,
	AP_PPROF_PROFILE_COMMENT = 13,
	AP_PPROF_PROFILE_DEFAULT_SAMPLE_TYPE = 14,
	/* ValueType */
	AP_PPROF_VALUETYPE_TYPE = 1,
	AP_PPROF_VALUETYPE_UNIT = 2,
	/* Sample */
	AP_PPROF_SAMPLE_LOCATION_ID = 1,
	AP_PPROF_SAMPLE_VALUE = 2,
	AP_PPROF_SAMPLE_LABEL = 3,
	/* Label */
	AP_PPROF_LABEL_KEY = 1,
	AP_PPROF_LABEL_NUM = 3,
	/* Mapping */
	AP_PPROF_MAPPING_ID = 1,
	AP_PPROF_MAPPING_MEMORY_START = 2,
	AP_PPROF_MAPPING_MEMORY_LIMIT = 3,
	AP_PPROF_MAPPING_FILE_OFFSET = 4,
	AP_PPROF_MAPPING_FILENAME = 5,
	AP_PPROF_MAPPING_BUILD_ID = 6,
	AP_PPROF_MAPPING_HAS_FUNCTIONS = 7,
	AP_PPROF_MAPPING_HAS_FILENAMES = 8,
	AP_PPROF_MAPPING_HAS_LINE_NUMBERS = 9,
	AP_PPROF_MAPPING_HAS_INLINE_FRAMES = 10,
	/* Location */
	AP_PPROF_LOCATION_ID = 1,
	AP_PPROF_LOCATION_MAPPING_ID = 2,
	AP_PPROF_LOCATION_ADDRESS = 3,
	AP_PPROF_LOCATION_LINE = 4,
	/* Line */
	AP_PPROF_LINE_FUNCTION_ID = 1,
	AP_PPROF_LINE_LINE = 2,
	/* Function */
	AP_PPROF_FUNCTION_ID = 1,
	AP_PPROF_FUNCTION_NAME = 2,
	AP_PPROF_FUNCTION_FILENAME = 4,
};

enum { AP_PPROF_WT_VARINT = 0, AP_PPROF_WT_LEN = 2 };

/* ---- protobuf encoder ------------------------------------------------------------------------- */

typedef struct ap_pprof_buf {
	uint8_t *v;
	size_t n, cap;
} ap_pprof_buf;

static inline void ap_pprof_reserve(ap_pprof_buf *b, size_t extra)
{
	if (b->cap - b->n >= extra)
		return;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap - b->n < extra)
		cap *= 2;
	b->v = ap_xrealloc(b->v, cap);
	b->cap = cap;
}

static inline size_t ap_pprof_varint_len(uint64_t x)
{
	size_t n = 1;
	while (x >= 0x80) {
		x >>= 7;
		n++;
	}
	return n;
}

static inline void ap_pprof_varint(ap_pprof_buf *b, uint64_t x)
{
	ap_pprof_reserve(b, 10);
	while (x >= 0x80) {
		b->v[b->n++] = (uint8_t)(x | 0x80);
		x >>= 7;
	}
	b->v[b->n++] = (uint8_t)x;
}

static inline void ap_pprof_tag(ap_pprof_buf *b, int field, int wire_type)
{
	ap_pprof_varint(b, ((uint64_t)field << 3) | (uint64_t)wire_type);
}

/* An optional scalar (uint64, int64 as two's complement, bool, string index): proto3 omits 0. */
static void ap_pprof_uint(ap_pprof_buf *b, int field, uint64_t x)
{
	if (x == 0)
		return;
	ap_pprof_tag(b, field, AP_PPROF_WT_VARINT);
	ap_pprof_varint(b, x);
}

static void ap_pprof_int(ap_pprof_buf *b, int field, int64_t x)
{
	ap_pprof_uint(b, field, (uint64_t)x);
}

/* Starts a length-delimited field whose length is not known yet: one byte is reserved for the
 * length, which fits messages under 128 bytes (almost all of ours); ap_pprof_end makes room for
 * longer ones. Returns what ap_pprof_end needs. */
static size_t ap_pprof_begin(ap_pprof_buf *b, int field)
{
	ap_pprof_tag(b, field, AP_PPROF_WT_LEN);
	ap_pprof_reserve(b, 1);
	b->n++;
	return b->n;
}

static void ap_pprof_end(ap_pprof_buf *b, size_t start)
{
	size_t len = b->n - start, ll = ap_pprof_varint_len(len);
	if (ll > 1) {
		ap_pprof_reserve(b, ll - 1);
		memmove(b->v + start + ll - 1, b->v + start, len);
		b->n += ll - 1;
	}
	uint8_t *q = b->v + start - 1;
	uint64_t x = len;
	while (x >= 0x80) {
		*q++ = (uint8_t)(x | 0x80);
		x >>= 7;
	}
	*q = (uint8_t)x;
}

/* Repeated scalars, packed (pprof's and Go's choice); zeros are elements too and stay. */
static void ap_pprof_packed(ap_pprof_buf *b, int field, const uint64_t *v, size_t n)
{
	if (n == 0)
		return;
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += ap_pprof_varint_len(v[i]);
	ap_pprof_tag(b, field, AP_PPROF_WT_LEN);
	ap_pprof_varint(b, len);
	for (size_t i = 0; i < n; i++)
		ap_pprof_varint(b, v[i]);
}

/* A string, always written: string_table[0] is "" and must not be skipped. */
static void ap_pprof_bytes(ap_pprof_buf *b, int field, const char *s, size_t n)
{
	ap_pprof_tag(b, field, AP_PPROF_WT_LEN);
	ap_pprof_varint(b, n);
	ap_pprof_reserve(b, n);
	memcpy(b->v + b->n, s, n);
	b->n += n;
}

/* ---- the writer's tables ---------------------------------------------------------------------- */

/* One executable segment of a recorded module. */
typedef struct ap_pprof_mapping {
	uint64_t start, limit, offset;
	const char *path;
	char *build_id; /* lowercase hex, owned; NULL if none */
	size_t nlocs;
	/* Whether every location in this mapping has what the flag names: pprof re-symbolizes a
	 * mapping (and overwrites its lines) only if has_functions, has_filenames and
	 * has_line_numbers are all false. */
	bool functions, filenames, line_numbers;
} ap_pprof_mapping;

typedef struct ap_pprof_func {
	const char *name, *file;
} ap_pprof_func;

typedef struct ap_pprof_writer {
	ap_profile *p;
	ap_pprof_buf samples, locations, functions;
	AP_VEC(const char *) strs; /* the string table; [0] = "" */
	ap_map str_index;          /* content hash (probed, see ap_pprof_str) -> index */
	AP_VEC(char *) owned;      /* strings made here, freed at the end */
	AP_VEC(ap_pprof_func) funcs; /* [id - 1] */
	ap_map func_index;         /* hash of (name, file), probed -> function id */
	ap_map loc_index;          /* first ap_symframe of the location -> location id */
	uint64_t nlocs, nsamples;
	AP_VEC(ap_pprof_mapping) maps; /* [id - 1] */
	size_t *mod_first, *mod_count; /* per module index: its mappings in maps */
} ap_pprof_writer;

/* Index of s in the string table, adding it. Keys are the content hash, moved on by 2 on a
 * collision (kept odd, so never the map's reserved 0), so equal strings from different places
 * share one entry. */
static int64_t ap_pprof_str(ap_pprof_writer *w, const char *s)
{
	if (s == NULL || *s == 0)
		return 0;
	for (uint64_t key = ap_hash_str(s) | 1;; key += 2) {
		bool added;
		uint64_t *slot = ap_map_put(&w->str_index, key, &added);
		if (added) {
			AP_VEC_PUSH(w->strs, s);
			*slot = w->strs.n - 1;
			return (int64_t)*slot;
		}
		if (strcmp(w->strs.v[*slot], s) == 0)
			return (int64_t)*slot;
	}
}

static char *ap_pprof_own(ap_pprof_writer *w, char *s)
{
	AP_VEC_PUSH(w->owned, s);
	return s;
}

static bool ap_pprof_streq(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Function id for (name, file): pprof merges functions by name, system_name, filename and
 * start_line, so one per (name, file) keeps two static functions of the same name apart. */
static uint64_t ap_pprof_function(ap_pprof_writer *w, const char *name, const char *file)
{
	uint64_t h = ap_hash64(ap_hash_str(name) ^ (file != NULL ? ap_hash_str(file) * 31 : 0));
	for (uint64_t key = h | 1;; key += 2) {
		bool added;
		uint64_t *slot = ap_map_put(&w->func_index, key, &added);
		if (!added) {
			ap_pprof_func *f = &w->funcs.v[*slot - 1];
			if (ap_pprof_streq(f->name, name) && ap_pprof_streq(f->file, file))
				return *slot;
			continue;
		}
		ap_pprof_func f = {name, file};
		AP_VEC_PUSH(w->funcs, f);
		uint64_t id = w->funcs.n;
		*slot = id;
		/* No system_name: pprof "simplifies" a name equal to its system_name that looks like
		 * demangled C++ (drops parameters and templates), and our names should read in pprof as
		 * they do in `allocprof top`. */
		ap_pprof_buf *b = &w->functions;
		size_t m = ap_pprof_begin(b, AP_PPROF_PROFILE_FUNCTION);
		ap_pprof_uint(b, AP_PPROF_FUNCTION_ID, id);
		ap_pprof_int(b, AP_PPROF_FUNCTION_NAME, ap_pprof_str(w, name));
		ap_pprof_int(b, AP_PPROF_FUNCTION_FILENAME, ap_pprof_str(w, file));
		ap_pprof_end(b, m);
		return id;
	}
}

/* The "[truncated]", "[no stack]" and "[unknown stack]" frames profile.c makes up: unresolved,
 * in no module, named in brackets (address fallbacks are "0x..." or "module+0x..."). */
static bool ap_pprof_pseudo(const ap_symframe *f)
{
	return !f->resolved && f->module == NULL && f->function[0] == '[';
}

/* The mapping (index in w->maps) holding pc of a stack of this generation, or -1. */
static long ap_pprof_mapping_of(ap_pprof_writer *w, uint32_t generation, uint64_t pc)
{
	long mi = ap_symbols_module_index(w->p->syms, generation, pc);
	if (mi < 0)
		return -1;
	for (size_t i = w->mod_first[mi], e = i + w->mod_count[mi]; i < e; i++)
		if (w->maps.v[i].start <= pc && pc < w->maps.v[i].limit)
			return (long)i;
	return -1; /* in a non-executable segment: not a code address */
}

/* Location id of the physical frame f[0..n-1] (its inline chain, innermost first). */
static uint64_t ap_pprof_location(ap_pprof_writer *w, uint32_t generation, const ap_symframe *const *f,
                                  size_t n)
{
	/* ap_symbols_resolve caches one frame array per (module, pc), so the address of the first
	 * frame identifies the physical frame and how much of its inline chain is shown (hiding
	 * allocator frames can cut into the chain of the innermost one). */
	bool added;
	uint64_t *slot = ap_map_put(&w->loc_index, (uint64_t)(uintptr_t)f[0], &added);
	if (!added)
		return *slot;
	uint64_t id = ++w->nlocs;
	*slot = id;

	bool pseudo = ap_pprof_pseudo(f[0]);
	long mi = pseudo || f[0]->module == NULL ? -1 : ap_pprof_mapping_of(w, generation, f[0]->pc);
	ap_pprof_buf *b = &w->locations;
	size_t m = ap_pprof_begin(b, AP_PPROF_PROFILE_LOCATION);
	ap_pprof_uint(b, AP_PPROF_LOCATION_ID, id);
	ap_pprof_uint(b, AP_PPROF_LOCATION_MAPPING_ID, mi >= 0 ? (uint64_t)mi + 1 : 0);
	/* A pseudo frame has no address; pprof then shows only its function name. */
	ap_pprof_uint(b, AP_PPROF_LOCATION_ADDRESS, pseudo ? 0 : f[0]->pc);
	/* An address we could not resolve gets no lines: pprof shows the address and may resolve
	 * it itself, which a made-up "module+0x..." function would prevent. */
	bool lines = pseudo || f[0]->resolved, files = lines, linenos = lines;
	for (size_t i = 0; lines && i < n; i++) {
		size_t l = ap_pprof_begin(b, AP_PPROF_LOCATION_LINE);
		ap_pprof_uint(b, AP_PPROF_LINE_FUNCTION_ID, ap_pprof_function(w, f[i]->function, f[i]->file));
		ap_pprof_int(b, AP_PPROF_LINE_LINE, f[i]->line);
		ap_pprof_end(b, l);
		files &= f[i]->file != NULL;
		linenos &= f[i]->line != 0;
	}
	ap_pprof_end(b, m);
	if (mi >= 0) {
		ap_pprof_mapping *mp = &w->maps.v[mi];
		mp->nlocs++;
		mp->functions &= lines;
		mp->filenames &= files;
		mp->line_numbers &= linenos;
	}
	return id;
}

/* ---- the profile ------------------------------------------------------------------------------ */

static char *ap_pprof_hex(const uint8_t *v, size_t n)
{
	char *s = ap_xmalloc(2 * n + 1);
	for (size_t i = 0; i < n; i++)
		sprintf(s + 2 * i, "%02x", v[i]);
	s[2 * n] = 0;
	return s;
}

/* One mapping per executable PT_LOAD segment of every module record (each dlopen generation has
 * its own), the main executable first: pprof takes mapping[0] as the main binary. */
static void ap_pprof_build_mappings(ap_pprof_writer *w)
{
	ap_symbols *syms = w->p->syms;
	size_t nmods = ap_symbols_module_count(syms);
	w->mod_first = ap_xcalloc(nmods + 1, sizeof(*w->mod_first));
	w->mod_count = ap_xcalloc(nmods + 1, sizeof(*w->mod_count));
	size_t main_mod = 0;
	ap_module_desc d;
	for (size_t i = 0; i < nmods; i++)
		if (ap_symbols_module_get(syms, i, &d) && w->p->exe != NULL && ap_pprof_streq(d.path, w->p->exe)) {
			main_mod = i;
			break;
		}
	for (size_t k = 0; k < nmods; k++) {
		/* main_mod, then the others in recording order */
		size_t i = k == 0 ? main_mod : (k <= main_mod ? k - 1 : k);
		if (!ap_symbols_module_get(syms, i, &d))
			continue;
		w->mod_first[i] = w->maps.n;
		for (size_t s = 0; s < d.nsegs; s++) {
			const ap_segment *g = &d.segs[s];
			if (!(g->flags & 1) || g->memsz == 0) /* PF_X */
				continue;
			ap_pprof_mapping mp = {
				.start = d.base + g->vaddr, .limit = d.base + g->vaddr + g->memsz,
				.offset = g->file_offset, .path = d.path,
				.build_id = d.build_id_len ? ap_pprof_hex(d.build_id, d.build_id_len) : NULL,
				.functions = true, .filenames = true, .line_numbers = true,
			};
			AP_VEC_PUSH(w->maps, mp);
			w->mod_count[i]++;
		}
	}
}

static void ap_pprof_encode_mappings(ap_pprof_writer *w, ap_pprof_buf *b)
{
	for (size_t i = 0; i < w->maps.n; i++) {
		ap_pprof_mapping *mp = &w->maps.v[i];
		/* A mapping without locations claims nothing; with some, the flags say whether all of
		 * them were resolved. Inline frames come with line information (both from DWARF). */
		bool fn = mp->nlocs && mp->functions, fl = fn && mp->filenames, ln = fn && mp->line_numbers;
		size_t m = ap_pprof_begin(b, AP_PPROF_PROFILE_MAPPING);
		ap_pprof_uint(b, AP_PPROF_MAPPING_ID, i + 1);
		ap_pprof_uint(b, AP_PPROF_MAPPING_MEMORY_START, mp->start);
		ap_pprof_uint(b, AP_PPROF_MAPPING_MEMORY_LIMIT, mp->limit);
		ap_pprof_uint(b, AP_PPROF_MAPPING_FILE_OFFSET, mp->offset);
		ap_pprof_int(b, AP_PPROF_MAPPING_FILENAME, ap_pprof_str(w, mp->path));
		ap_pprof_int(b, AP_PPROF_MAPPING_BUILD_ID, ap_pprof_str(w, mp->build_id));
		ap_pprof_uint(b, AP_PPROF_MAPPING_HAS_FUNCTIONS, fn);
		ap_pprof_uint(b, AP_PPROF_MAPPING_HAS_FILENAMES, fl);
		ap_pprof_uint(b, AP_PPROF_MAPPING_HAS_LINE_NUMBERS, ln);
		ap_pprof_uint(b, AP_PPROF_MAPPING_HAS_INLINE_FRAMES, ln);
		ap_pprof_end(b, m);
	}
}

static void ap_pprof_value_type(ap_pprof_writer *w, ap_pprof_buf *b, int field, const char *type,
                                const char *unit)
{
	size_t m = ap_pprof_begin(b, field);
	ap_pprof_int(b, AP_PPROF_VALUETYPE_TYPE, ap_pprof_str(w, type));
	ap_pprof_int(b, AP_PPROF_VALUETYPE_UNIT, ap_pprof_str(w, unit));
	ap_pprof_end(b, m);
}

/* Rounds a figure (a double: sampled traces give fractional estimates) to the int64 written. */
static int64_t ap_pprof_round(double v)
{
	if (!(fabs(v) < 9.2e18))
		return v > 0 ? INT64_MAX : v < 0 ? INT64_MIN : 0;
	return llround(v);
}

/* One Sample per site with a non-zero figure; creates the locations and functions it needs. */
static void ap_pprof_encode_samples(ap_pprof_writer *w, bool show_allocator)
{
	ap_profile *p = w->p;
	ap_frame_vec frames = {0};
	AP_VEC(uint64_t) ids = {0};
	int64_t bytes_key = ap_pprof_str(w, "bytes");
	ap_pprof_buf *b = &w->samples;
	for (uint32_t id = 0; id < p->sites.n; id++) {
		const ap_site *s = &p->sites.v[id];
		uint64_t vals[AP_M__COUNT];
		bool any = false;
		for (int m = 0; m < AP_M__COUNT; m++) {
			vals[m] = (uint64_t)ap_pprof_round(s->v[m]);
			any |= vals[m] != 0;
		}
		if (!any)
			continue; /* pprof drops all-zero samples anyway */
		size_t n = ap_profile_site_frames(p, id, show_allocator, &frames);
		ids.n = 0;
		for (size_t i = 0; i < n;) {
			/* A physical frame: its inline chain is one contiguous array from the symbolizer,
			 * inlined frames first, the physical one (inlined == false) last. */
			size_t j = i;
			while (frames.v[j]->inlined && j + 1 < n && frames.v[j + 1] == frames.v[j] + 1)
				j++;
			AP_VEC_PUSH(ids, ap_pprof_location(w, s->generation, frames.v + i, j - i + 1));
			i = j + 1;
		}
		size_t m = ap_pprof_begin(b, AP_PPROF_PROFILE_SAMPLE);
		ap_pprof_packed(b, AP_PPROF_SAMPLE_LOCATION_ID, ids.v, ids.n);
		ap_pprof_packed(b, AP_PPROF_SAMPLE_VALUE, vals, AP_M__COUNT);
		/* As Go: a numeric "bytes" label with the average object size (pprof's -tags, -tagfocus
		 * and the flame graph's tooltips use it). A zero one would be dropped by pprof. */
		if (s->v[AP_M_ALLOC_OBJECTS] > 0) {
			int64_t avg = ap_pprof_round(s->v[AP_M_ALLOC_SPACE] / s->v[AP_M_ALLOC_OBJECTS]);
			if (avg != 0) {
				size_t l = ap_pprof_begin(b, AP_PPROF_SAMPLE_LABEL);
				ap_pprof_int(b, AP_PPROF_LABEL_KEY, bytes_key);
				ap_pprof_int(b, AP_PPROF_LABEL_NUM, avg);
				ap_pprof_end(b, l);
			}
		}
		ap_pprof_end(b, m);
		w->nsamples++;
	}
	AP_VEC_FREE(frames);
	AP_VEC_FREE(ids);
}

static void ap_pprof_encode_header(ap_pprof_writer *w, const ap_pprof_opts *o, ap_pprof_buf *b)
{
	ap_profile *p = w->p;
	static const char *const units[AP_M__COUNT] = {"count", "bytes", "count", "bytes"};
	for (int m = 0; m < AP_M__COUNT; m++)
		ap_pprof_value_type(w, b, AP_PPROF_PROFILE_SAMPLE_TYPE, ap_metric_names[m], units[m]);
	ap_pprof_value_type(w, b, AP_PPROF_PROFILE_PERIOD_TYPE, "space", "bytes");
	/* Informational for pprof (it never rescales proto values): the mean sampling interval, or
	 * 1 when every allocation was recorded, as Go writes MemProfileRate. */
	ap_pprof_int(b, AP_PPROF_PROFILE_PERIOD, p->sample_bytes ? (int64_t)p->sample_bytes : 1);
	ap_pprof_int(b, AP_PPROF_PROFILE_TIME_NANOS, (int64_t)p->start_realtime_ns);
	int64_t dur = 0;
	if (p->rr.end.has_end && p->rr.end.end_monotonic_ns > p->start_monotonic_ns)
		dur = (int64_t)(p->rr.end.end_monotonic_ns - p->start_monotonic_ns);
	else if (p->events)
		dur = (int64_t)llround(ap_profile_seconds(p, p->last_stamp) * 1e9);
	if (dur > 0)
		ap_pprof_int(b, AP_PPROF_PROFILE_DURATION_NANOS, dur);

	AP_VEC(uint64_t) comments = {0};
	if (p->argc > 0) {
		size_t len = 16;
		for (size_t i = 0; i < p->argc; i++)
			len += strlen(p->argv[i]) + 1;
		char *c = ap_pprof_own(w, ap_xmalloc(len));
		strcpy(c, "Command:");
		for (size_t i = 0; i < p->argc; i++)
			strcat(strcat(c, " "), p->argv[i]);
		AP_VEC_PUSH(comments, (uint64_t)ap_pprof_str(w, c));
	}
	char line[160];
	if (p->sample_bytes) {
		snprintf(line, sizeof(line), "Sampled: one allocation per %" PRIu64 " bytes on average; figures are unbiased estimates",
		         p->sample_bytes);
		AP_VEC_PUSH(comments, (uint64_t)ap_pprof_str(w, ap_pprof_own(w, ap_xstrdup(line))));
	}
	if (p->rr.truncated || !p->rr.end.has_end)
		AP_VEC_PUSH(comments, (uint64_t)ap_pprof_str(w, p->rr.truncated
		                                                      ? "Warning: the trace is truncated; figures are those up to the cut"
		                                                      : "Warning: the trace has no end record; figures are those up to its last write"));
	for (size_t i = 0; o != NULL && i < o->ncomments; i++)
		AP_VEC_PUSH(comments, (uint64_t)ap_pprof_str(w, o->comments[i]));
	ap_pprof_packed(b, AP_PPROF_PROFILE_COMMENT, comments.v, comments.n);
	AP_VEC_FREE(comments);

	int def = o != NULL && o->default_index >= 0 && o->default_index < AP_M__COUNT ? o->default_index
	                                                                              : AP_M_INUSE_SPACE;
	ap_pprof_int(b, AP_PPROF_PROFILE_DEFAULT_SAMPLE_TYPE, ap_pprof_str(w, ap_metric_names[def]));
}

/* ---- output ----------------------------------------------------------------------------------- */

typedef struct ap_pprof_out {
	FILE *f;
	const char *path;
	bool gzip;
	z_stream z;
	uint8_t buf[1 << 16];
	size_t bytes;
	int err; /* errno of the first failure, or -1 for a zlib error */
} ap_pprof_out;

static void ap_pprof_put(ap_pprof_out *o, const void *data, size_t n, bool finish)
{
	if (o->err || (n == 0 && !finish))
		return;
	if (!o->gzip) {
		if (fwrite(data, 1, n, o->f) != n)
			o->err = errno ? errno : EIO;
		o->bytes += n;
		return;
	}
	const uint8_t *d = data;
	do {
		size_t piece = n > (1u << 30) ? (1u << 30) : n; /* avail_in is 32 bits */
		o->z.next_in = (Bytef *)(uintptr_t)d;
		o->z.avail_in = (uInt)piece;
		int flush = finish && piece == n ? Z_FINISH : Z_NO_FLUSH;
		/* Until deflate leaves room in the output: all input taken (and, with Z_FINISH, the
		 * stream ended). */
		do {
			o->z.next_out = o->buf;
			o->z.avail_out = sizeof(o->buf);
			if (deflate(&o->z, flush) == Z_STREAM_ERROR) {
				o->err = -1;
				return;
			}
			size_t have = sizeof(o->buf) - o->z.avail_out;
			if (have && fwrite(o->buf, 1, have, o->f) != have) {
				o->err = errno ? errno : EIO;
				return;
			}
			o->bytes += have;
		} while (o->z.avail_out == 0);
		d += piece;
		n -= piece;
	} while (n > 0);
}

static void ap_pprof_put_buf(ap_pprof_out *o, const ap_pprof_buf *b)
{
	ap_pprof_put(o, b->v, b->n, false);
}

int ap_pprof_write(ap_profile *p, const ap_pprof_opts *opts, const char *path, ap_pprof_stats *stats)
{
	ap_pprof_writer w = {.p = p};
	AP_VEC_PUSH(w.strs, ""); /* string_table[0] must be "" */
	ap_pprof_build_mappings(&w);
	ap_pprof_encode_samples(&w, opts != NULL && opts->show_allocator);
	ap_pprof_buf head = {0}, tail = {0};
	ap_pprof_encode_header(&w, opts, &head);
	ap_pprof_encode_mappings(&w, &tail);
	/* Every string is known now: the table goes last. */
	for (size_t i = 0; i < w.strs.n; i++)
		ap_pprof_bytes(&tail, AP_PPROF_PROFILE_STRING_TABLE, w.strs.v[i], strlen(w.strs.v[i]));

	int ret = 0;
	ap_pprof_out *o = ap_xcalloc(1, sizeof(*o));
	o->path = path;
	o->gzip = opts == NULL || !opts->uncompressed;
	bool to_stdout = strcmp(path, "-") == 0;
	o->f = to_stdout ? stdout : fopen(path, "wb"); /* "w": truncate, never append (§7.7) */
	if (o->f == NULL) {
		ap_warn("%s: cannot create: %s", path, strerror(errno));
		ret = -AP_E_IO;
		goto out;
	}
	/* windowBits 31 = 15 + 16: a gzip wrapper. Level 1 as Go's writer: the profile is written
	 * once and read a few times, and big ones would otherwise take seconds. */
	if (o->gzip && deflateInit2(&o->z, 1, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
		ap_warn("%s: cannot initialise zlib", path);
		if (!to_stdout)
			fclose(o->f);
		ret = -AP_E_NOMEM;
		goto out;
	}
	struct stat st;
	bool regular = !to_stdout && fstat(fileno(o->f), &st) == 0 && S_ISREG(st.st_mode);
	errno = 0;
	ap_pprof_put_buf(o, &head);
	ap_pprof_put_buf(o, &w.samples);
	ap_pprof_put_buf(o, &w.locations);
	ap_pprof_put_buf(o, &w.functions);
	ap_pprof_put_buf(o, &tail);
	if (o->gzip) {
		ap_pprof_put(o, NULL, 0, true);
		deflateEnd(&o->z);
	}
	if (to_stdout) {
		if (fflush(o->f) != 0 && !o->err)
			o->err = errno ? errno : EIO;
	} else if (fclose(o->f) != 0 && !o->err) {
		o->err = errno ? errno : EIO;
	}
	if (o->err) {
		ap_warn("%s: write failed: %s", path, o->err > 0 ? strerror(o->err) : "zlib error");
		/* A cut profile would only fail later, in pprof, less clearly; but only a regular file
		 * is ours to remove (never a device or a pipe given as -o). */
		if (regular)
			unlink(path);
		ret = -AP_E_IO;
	}
	if (stats != NULL)
		*stats = (ap_pprof_stats){
			.samples = w.nsamples, .locations = w.nlocs, .functions = w.funcs.n, .mappings = w.maps.n,
			.strings = w.strs.n, .bytes = o->bytes,
		};

out:
	free(o);
	free(head.v);
	free(tail.v);
	free(w.samples.v);
	free(w.locations.v);
	free(w.functions.v);
	for (size_t i = 0; i < w.owned.n; i++)
		free(w.owned.v[i]);
	AP_VEC_FREE(w.owned);
	AP_VEC_FREE(w.strs);
	AP_VEC_FREE(w.funcs);
	for (size_t i = 0; i < w.maps.n; i++)
		free(w.maps.v[i].build_id);
	AP_VEC_FREE(w.maps);
	free(w.mod_first);
	free(w.mod_count);
	ap_map_free(&w.str_index);
	ap_map_free(&w.func_index);
	ap_map_free(&w.loc_index);
	return ret;
}

/* ---- command ---------------------------------------------------------------------------------- */

static const char ap_pprof_usage[] =
	"usage: allocprof pprof [-o FILE] [--sample-index=INDEX] [--show-allocator-frames]\n"
	"                       [--hide REGEX] [--uncompressed] TRACE\n"
	"  Writes TRACE as a gzip-compressed profile.proto for `go tool pprof` (and speedscope,\n"
	"  Perfetto, ...). FILE defaults to TRACE without its .trace suffix, plus .pb.gz; '-' is\n"
	"  stdout. INDEX (alloc_objects, alloc_space, inuse_objects, inuse_space; default\n"
	"  inuse_space) is the view pprof opens with; all four are in the file.\n"
	"  --uncompressed writes raw protobuf (pprof reads it too).\n"
	"  Example: go tool pprof -http=localhost:8080 FILE\n";

int ap_pprof_main(int argc, char **argv)
{
	enum { OPT_SAMPLE_INDEX = 256, OPT_SHOW_ALLOC, OPT_HIDE, OPT_RAW };
	static const struct option options[] = {
		{"output", required_argument, NULL, 'o'},
		{"sample-index", required_argument, NULL, OPT_SAMPLE_INDEX},
		{"sample_index", required_argument, NULL, OPT_SAMPLE_INDEX},
		{"show-allocator-frames", no_argument, NULL, OPT_SHOW_ALLOC},
		{"hide", required_argument, NULL, OPT_HIDE},
		{"uncompressed", no_argument, NULL, OPT_RAW},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	ap_pprof_opts o = {.default_index = -1};
	const char *out = NULL;
	optind = 1;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":o:h", options, NULL)) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case OPT_SAMPLE_INDEX:
			o.default_index = ap_metric_parse(optarg);
			if (o.default_index < 0) {
				fprintf(stderr, "allocprof: unknown sample index '%s' (alloc_objects, alloc_space, "
				                "inuse_objects, inuse_space)\n", optarg);
				return 2;
			}
			break;
		case OPT_SHOW_ALLOC:
			o.show_allocator = true;
			break;
		case OPT_HIDE:
			ap_profile_hide_add(optarg);
			break;
		case OPT_RAW:
			o.uncompressed = true;
			break;
		case 'h':
			fputs(ap_pprof_usage, stdout);
			return 0;
		case ':':
			fprintf(stderr, "allocprof: option %s needs a value\n", argv[optind - 1]);
			return 2;
		default:
			fprintf(stderr, "allocprof: unknown option %s\n%s", argv[optind - 1], ap_pprof_usage);
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "allocprof: %s\n%s",
		        optind >= argc ? "which trace? (give one TRACE file)" : "give exactly one TRACE file",
		        ap_pprof_usage);
		return 2;
	}
	const char *trace = argv[optind];
	char *def = NULL;
	if (out == NULL) {
		size_t n = strlen(trace);
		if (n > 6 && strcmp(trace + n - 6, ".trace") == 0)
			n -= 6;
		def = ap_xmalloc(n + 7);
		memcpy(def, trace, n);
		strcpy(def + n, ".pb.gz");
		out = def;
	}
	struct stat st_in, st_out;
	if (stat(trace, &st_in) == 0 && stat(out, &st_out) == 0 && st_in.st_dev == st_out.st_dev &&
	    st_in.st_ino == st_out.st_ino) {
		fprintf(stderr, "allocprof: %s: the output would overwrite the trace; give another -o FILE\n", out);
		free(def);
		return 2;
	}
	if (strcmp(out, "-") == 0 && isatty(STDOUT_FILENO)) {
		fprintf(stderr, "allocprof: not writing a binary profile to a terminal; use -o FILE\n");
		free(def);
		return 2;
	}
	ap_profile p;
	int rc = 0;
	if (ap_profile_load(&p, trace) != 0) {
		rc = 2;
	} else {
		ap_pprof_stats st;
		if (ap_pprof_write(&p, &o, out, &st) != 0)
			rc = 2;
		else if (strcmp(out, "-") != 0 && isatty(STDERR_FILENO))
			fprintf(stderr, "allocprof: wrote %s; view it with: go tool pprof -http=localhost:8080 %s\n",
			        out, out);
	}
	ap_profile_free(&p);
	free(def);
	return rc;
}
