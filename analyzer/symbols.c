/*
 * symbols: offline symbolization of recorded return addresses (see symbols.h).
 *
 * This file keeps the books: which module maps an address in which generation; one opened file
 * (symfile.c, which does the libdwfl work) per path and build-id, shared by every module record
 * that maps it, so a plugin dlopen'ed again after a dlclose is parsed once; the result cache; and
 * the arena that keeps returned strings alive.
 */
#include "symbols.h"

#include "demangle.h"
#include "symfile.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GEN_FOREVER UINT32_MAX
#define NO_MODULE UINT32_MAX
/* Deeper inline chains exist only in pathological code; past it the outer inlined frames are
 * dropped (the physical frame is always kept). */
#define MAX_FRAMES 64
#define ARENA_CHUNK (64 * 1024)
/* Ranges find_module examines for one address at most. Real traces overlap only across
 * generations (a library loaded again after a dlclose), a few ranges deep; a crafted trace can
 * nest thousands, and without this bound each lookup would walk all of them. */
#define MAX_WALK 1024

/* One ELF file on disk, shared by every module record that maps it. */
struct elf_file {
	const char *path;
	const uint8_t *build_id;
	size_t build_id_len;
	enum { FILE_UNOPENED, FILE_OK, FILE_BAD } state;
	ap_symfile *sf;
	/* Opened ahead by the prewarm thread (below): queued is the reading thread's, problem (what
	 * file_of warns about on first use, malloc'ed) and warned the prewarm's until it ends. */
	bool queued, warned;
	char *problem;
};

/* Opening a module's file and reading its DWARF is most of a report's own time on a big binary
 * with compressed debug info (python3: 40 ms of zlib out of ~60 ms), all of it after the trace
 * is read. While the trace is read (ap_symbols_prewarm_begin .. the first resolve), a thread of
 * its own opens the files that stacks point into, in the order they are first seen. Nothing else
 * touches libdwfl meanwhile (the reader's thread only keeps the books of modules), and the first
 * resolve joins the thread, so libdwfl is never used from two threads at once. Only files with a
 * build-id are opened ahead: file_of checks the others against the segments of the first module
 * that needs them, which depends on what is resolved first. */
struct prewarm {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct elf_file **q;
	size_t qn, qhead, qcap;
	bool stop;
};

struct module {
	uint32_t id, gen_from, gen_to;
	uint32_t prev_live; /* the next older module with this id still loaded, or NO_MODULE */
	uint64_t base;
	const char *path, *name; /* name: basename, for the "name+0xoffset" fallback */
	const ap_segment *segs;
	size_t nsegs;
	struct elf_file *file;
};

/* One PT_LOAD segment at its runtime addresses, [start, end). */
struct range {
	uint64_t start, end;
	uint64_t maxend; /* once sorted: the largest end of this range and every one before it */
	uint32_t mod;
	bool alone;      /* once sorted: no other range overlaps it */
};

struct cache_ent {
	uint64_t pc;
	uint32_t mod, n;
	const ap_symframe *frames; /* NULL: empty slot */
};

struct chunk {
	struct chunk *next;
	size_t used, cap;
	max_align_t data[];
};

struct ap_symbols {
	ap_symbols_warn_fn warn;
	void *warn_ctx;
	/* libdwfl keeps a pointer to the callbacks and reads debuginfo_path through it. */
	Dwfl_Callbacks callbacks;
	char *debuginfo_path;

	struct module *mods;
	size_t nmods, capmods;
	struct elf_file **files;
	size_t nfiles, capfiles;
	/* Lookups a trace of many modules would otherwise make linear: files by path and build-id
	 * (open addressing, NULL = empty), and per module id the newest module still loaded. */
	struct elf_file **file_index;
	size_t file_index_cap;
	ap_map live_by_id; /* id + 1 -> module index + 1 */
	bool no_files;

	struct range *ranges;
	size_t nranges, capranges;
	uint64_t max_range;
	bool ranges_sorted;
	size_t last_range; /* find_module: the range the last address fell in, if alone (+1) */

	struct cache_ent *cache;
	size_t cache_n, cache_cap;
	const char **strs; /* interned strings, open addressing */
	size_t strs_n, strs_cap;
	struct chunk *arena;
	struct prewarm *pw;
	/* ap_symbols_note_stack: the last range a frame fell in, to skip find_module. */
	uint64_t note_start, note_end;
};

/* What resolve returns when it cannot allocate: better a visible gap than a crash. */
static const ap_symframe oom_frame = {.function = "<out of memory>"};

static void *arena_alloc(ap_symbols *s, size_t n)
{
	n = (n + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
	struct chunk *c = s->arena;
	if (c == NULL || c->cap - c->used < n) {
		size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
		c = malloc(sizeof(*c) + cap);
		if (c == NULL)
			return NULL;
		c->cap = cap;
		c->used = 0;
		/* A chunk made for one large object goes behind the current one, which may still have
		 * room for small ones. */
		if (s->arena != NULL && cap > ARENA_CHUNK) {
			c->next = s->arena->next;
			s->arena->next = c;
		} else {
			c->next = s->arena;
			s->arena = c;
		}
	}
	void *p = (char *)c->data + c->used;
	c->used += n;
	return p;
}

static void *arena_dup(ap_symbols *s, const void *p, size_t n)
{
	void *q = arena_alloc(s, n ? n : 1);
	if (q != NULL && n)
		memcpy(q, p, n);
	return q;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 0x100000001b3u;
	return h;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdu;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53u;
	return x ^ (x >> 33);
}

/* File names and function names repeat across thousands of frames: each is stored once. */
static const char *intern(ap_symbols *s, const char *str)
{
	if (str == NULL)
		return NULL;
	if (2 * (s->strs_n + 1) > s->strs_cap) {
		size_t cap = s->strs_cap ? 2 * s->strs_cap : 1024;
		const char **t = calloc(cap, sizeof(*t));
		if (t == NULL)
			return NULL;
		for (size_t i = 0; i < s->strs_cap; i++) {
			if (s->strs[i] == NULL)
				continue;
			size_t j = hash_bytes(s->strs[i], strlen(s->strs[i])) & (cap - 1);
			while (t[j] != NULL)
				j = (j + 1) & (cap - 1);
			t[j] = s->strs[i];
		}
		free(s->strs);
		s->strs = t;
		s->strs_cap = cap;
	}
	size_t len = strlen(str);
	size_t j = hash_bytes(str, len) & (s->strs_cap - 1);
	for (; s->strs[j] != NULL; j = (j + 1) & (s->strs_cap - 1))
		if (strcmp(s->strs[j], str) == 0)
			return s->strs[j];
	char *copy = arena_dup(s, str, len + 1);
	if (copy == NULL)
		return NULL;
	s->strs[j] = copy;
	s->strs_n++;
	return copy;
}

static void warnf(ap_symbols *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warnf(ap_symbols *s, const char *fmt, ...)
{
	if (s->warn == NULL)
		return;
	char buf[8192];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	s->warn(s->warn_ctx, buf);
}

ap_symbols *ap_symbols_new(ap_symbols_warn_fn warn, void *warn_ctx)
{
	ap_symbols *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->warn = warn;
	s->warn_ctx = warn_ctx;
	s->callbacks.find_elf = dwfl_build_id_find_elf;
	/* Looks in the file itself, then by build-id and by .gnu_debuglink along debuginfo_path. */
	s->callbacks.find_debuginfo = dwfl_standard_find_debuginfo;
	s->callbacks.section_address = dwfl_offline_section_address;
	s->callbacks.debuginfo_path = &s->debuginfo_path;
	s->ranges_sorted = true;
	return s;
}

static void prewarm_end(ap_symbols *s);

void ap_symbols_free(ap_symbols *s)
{
	if (s == NULL)
		return;
	prewarm_end(s);
	for (size_t i = 0; i < s->nfiles; i++)
		free(s->files[i]->problem);
	for (size_t i = 0; i < s->nfiles; i++)
		ap_symfile_close(s->files[i]->sf);
	free(s->files);
	free(s->file_index);
	ap_map_free(&s->live_by_id);
	free(s->mods);
	free(s->ranges);
	free(s->cache);
	free(s->strs);
	for (struct chunk *c = s->arena, *next; c != NULL; c = next) {
		next = c->next;
		free(c);
	}
	free(s);
}

int ap_symbols_set_debuginfo_path(ap_symbols *s, const char *path)
{
	/* Dwfls already made read the path through the callbacks, so the old string must outlive
	 * them: it stays in the arena. */
	char *copy = NULL;
	if (path != NULL && (copy = arena_dup(s, path, strlen(path) + 1)) == NULL)
		return -ENOMEM;
	s->debuginfo_path = copy;
	return 0;
}

static uint64_t file_hash(const char *path, const uint8_t *bid, size_t bid_len)
{
	return mix64(hash_bytes(path, strlen(path)) ^ hash_bytes((const char *)bid, bid_len));
}

static bool file_index_put(ap_symbols *s, struct elf_file *f)
{
	if (2 * (s->nfiles + 1) > s->file_index_cap) {
		size_t cap = s->file_index_cap ? 2 * s->file_index_cap : 64;
		struct elf_file **t = calloc(cap, sizeof(*t));
		if (t == NULL)
			return false;
		free(s->file_index);
		s->file_index = t;
		s->file_index_cap = cap;
		for (size_t i = 0; i < s->nfiles; i++)
			if (s->files[i] != f)
				file_index_put(s, s->files[i]);
	}
	size_t j = file_hash(f->path, f->build_id, f->build_id_len) & (s->file_index_cap - 1);
	while (s->file_index[j] != NULL)
		j = (j + 1) & (s->file_index_cap - 1);
	s->file_index[j] = f;
	return true;
}

static struct elf_file *file_for(ap_symbols *s, const char *path, const uint8_t *bid, size_t bid_len)
{
	if (s->file_index_cap > 0) {
		size_t mask = s->file_index_cap - 1;
		for (size_t j = file_hash(path, bid, bid_len) & mask; s->file_index[j] != NULL; j = (j + 1) & mask) {
			struct elf_file *f = s->file_index[j];
			if (f->build_id_len == bid_len && strcmp(f->path, path) == 0 &&
			    (bid_len == 0 || memcmp(f->build_id, bid, bid_len) == 0))
				return f;
		}
	}
	if (!ap_grow(&s->files, &s->capfiles, s->nfiles + 1, sizeof(*s->files)))
		return NULL;
	struct elf_file *f = arena_alloc(s, sizeof(*f));
	if (f == NULL)
		return NULL;
	*f = (struct elf_file){.path = path, .build_id = bid, .build_id_len = bid_len};
	s->files[s->nfiles] = f;
	if (!file_index_put(s, f))
		return NULL;
	s->nfiles++;
	return f;
}

void ap_symbols_no_files(ap_symbols *s)
{
	s->no_files = true;
}

int ap_symbols_add_module(ap_symbols *s, const ap_module_desc *m)
{
	const char *path = intern(s, m->path != NULL ? m->path : "");
	const uint8_t *bid = arena_dup(s, m->build_id, m->build_id_len);
	const ap_segment *segs = arena_dup(s, m->segs, m->nsegs * sizeof(*m->segs));
	if (path == NULL || bid == NULL || segs == NULL ||
	    !ap_grow(&s->mods, &s->capmods, s->nmods + 1, sizeof(*s->mods)) ||
	    !ap_grow(&s->ranges, &s->capranges, s->nranges + m->nsegs, sizeof(*s->ranges)))
		return -ENOMEM;
	struct elf_file *file = file_for(s, path, bid, m->build_id_len);
	if (file == NULL)
		return -ENOMEM;
	const char *slash = strrchr(path, '/');
	uint32_t idx = (uint32_t)s->nmods++;
	uint64_t *live = ap_map_put(&s->live_by_id, (uint64_t)m->id + 1, NULL);
	s->mods[idx] = (struct module){
		.id = m->id, .gen_from = m->generation, .gen_to = GEN_FOREVER, .base = m->base,
		.prev_live = *live ? (uint32_t)(*live - 1) : NO_MODULE,
		.path = path, .name = slash != NULL ? slash + 1 : path,
		.segs = segs, .nsegs = m->nsegs, .file = file,
	};
	*live = idx + 1;
	for (size_t i = 0; i < m->nsegs; i++) {
		if (m->segs[i].memsz == 0)
			continue;
		/* Wrapping sums (only a corrupt trace has them) end at the top of the address space. */
		uint64_t start = m->base + m->segs[i].vaddr;
		uint64_t end = start + m->segs[i].memsz < start ? UINT64_MAX : start + m->segs[i].memsz;
		s->ranges[s->nranges++] = (struct range){.start = start, .end = end, .mod = idx};
		if (m->segs[i].memsz > s->max_range)
			s->max_range = m->segs[i].memsz;
	}
	s->ranges_sorted = false;
	return 0;
}

void ap_symbols_unload(ap_symbols *s, uint32_t module_id, uint32_t new_generation)
{
	/* The newest module of this id still loaded: an id is unique, but if a trace repeated one,
	 * the live record is meant. */
	uint64_t *live = ap_map_get(&s->live_by_id, (uint64_t)module_id + 1);
	if (live == NULL || *live == 0)
		return;
	struct module *m = &s->mods[*live - 1];
	m->gen_to = new_generation;
	*live = m->prev_live == NO_MODULE ? 0 : (uint64_t)m->prev_live + 1;
}

static int range_cmp(const void *a, const void *b)
{
	const struct range *x = a, *y = b;
	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return x->mod < y->mod ? -1 : x->mod > y->mod;
}

/* Returns the index of the module that maps pc in generation gen, or NO_MODULE. */
static uint32_t find_module(ap_symbols *s, uint32_t gen, uint64_t pc)
{
	if (!s->ranges_sorted && s->nranges > 0) {
		qsort(s->ranges, s->nranges, sizeof(*s->ranges), range_cmp);
		uint64_t maxend = 0;
		for (size_t i = 0; i < s->nranges; i++) {
			s->ranges[i].alone = s->ranges[i].start >= maxend &&
			                     (i + 1 == s->nranges || s->ranges[i + 1].start >= s->ranges[i].end);
			if (s->ranges[i].end > maxend)
				maxend = s->ranges[i].end;
			s->ranges[i].maxend = maxend;
		}
		s->ranges_sorted = true;
		s->last_range = 0;
	}
	/* Consecutive addresses (a stack's frames) mostly fall in one module: when the last one's
	 * range overlaps no other, an address inside it has no other candidate. */
	if (s->last_range != 0) {
		const struct range *r = &s->ranges[s->last_range - 1];
		if (pc - r->start < r->end - r->start) {
			const struct module *m = &s->mods[r->mod];
			return m->gen_from <= gen && gen < m->gen_to ? r->mod : NO_MODULE;
		}
	}
	size_t lo = 0, hi = s->nranges;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->ranges[mid].start <= pc)
			lo = mid + 1;
		else
			hi = mid;
	}
	uint32_t best = NO_MODULE;
	/* Ranges of other generations may overlap, so walk back over every range that could still
	 * reach pc: none starting more than the longest range length before it can. */
	for (size_t i = lo, walked = 0; i-- > 0 && walked++ < MAX_WALK;) {
		const struct range *r = &s->ranges[i];
		if (pc - r->start >= s->max_range || r->maxend <= pc)
			break;
		const struct module *m = &s->mods[r->mod];
		if (pc < r->end && m->gen_from <= gen && gen < m->gen_to &&
		    (best == NO_MODULE || r->mod > best))
			best = r->mod; /* several alive at once cannot happen; the latest recorded wins */
	}
	if (lo > 0 && s->ranges[lo - 1].alone && pc - s->ranges[lo - 1].start <
	                                             s->ranges[lo - 1].end - s->ranges[lo - 1].start)
		s->last_range = lo;
	return best;
}

/* ---- prewarm ------------------------------------------------------------------------------------ */

static void *prewarm_main(void *arg)
{
	ap_symbols *s = arg;
	struct prewarm *pw = s->pw;
	pthread_mutex_lock(&pw->mu);
	for (;;) {
		while (pw->qhead == pw->qn && !pw->stop)
			pthread_cond_wait(&pw->cv, &pw->mu);
		if (pw->stop)
			break;
		struct elf_file *f = pw->q[pw->qhead++];
		pthread_mutex_unlock(&pw->mu);
		char problem[512];
		/* Files with a build-id only: the segments are then not looked at. */
		ap_symfile *sf = ap_symfile_open(&s->callbacks, f->path, f->build_id, f->build_id_len, NULL,
		                                 0, problem, sizeof(problem));
		if (sf != NULL)
			ap_symfile_prewarm(sf);
		char *msg = problem[0] != 0 ? strdup(problem) : NULL;
		pthread_mutex_lock(&pw->mu);
		f->sf = sf;
		f->state = sf != NULL ? FILE_OK : FILE_BAD;
		f->problem = msg;
		f->warned = problem[0] != 0 && msg == NULL; /* strdup failed: nothing to say */
	}
	pthread_mutex_unlock(&pw->mu);
	return NULL;
}

void ap_symbols_prewarm_begin(ap_symbols *s)
{
	if (s->no_files || s->pw != NULL)
		return;
	struct prewarm *pw = calloc(1, sizeof(*pw));
	if (pw == NULL)
		return;
	pthread_mutex_init(&pw->mu, NULL);
	pthread_cond_init(&pw->cv, NULL);
	s->pw = pw;
	if (pthread_create(&pw->thread, NULL, prewarm_main, s) != 0) {
		pthread_mutex_destroy(&pw->mu);
		pthread_cond_destroy(&pw->cv);
		free(pw);
		s->pw = NULL;
	}
}

/* Stops the prewarm thread after the file it is opening; the files still queued are opened on
 * demand as without it. */
static void prewarm_end(ap_symbols *s)
{
	struct prewarm *pw = s->pw;
	if (pw == NULL)
		return;
	pthread_mutex_lock(&pw->mu);
	pw->stop = true;
	pthread_cond_signal(&pw->cv);
	pthread_mutex_unlock(&pw->mu);
	pthread_join(pw->thread, NULL);
	pthread_mutex_destroy(&pw->mu);
	pthread_cond_destroy(&pw->cv);
	free(pw->q);
	free(pw);
	s->pw = NULL;
}

static void prewarm_queue(ap_symbols *s, struct elf_file *f)
{
	struct prewarm *pw = s->pw;
	f->queued = true;
	pthread_mutex_lock(&pw->mu);
	if (ap_grow(&pw->q, &pw->qcap, pw->qn + 1, sizeof(*pw->q))) {
		pw->q[pw->qn++] = f;
		pthread_cond_signal(&pw->cv);
	}
	pthread_mutex_unlock(&pw->mu);
}

void ap_symbols_note_stack(ap_symbols *s, uint32_t generation, const uint64_t *frames, size_t n)
{
	if (s->pw == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		uint64_t pc = frames[i] != 0 ? frames[i] - 1 : 0;
		if (pc - s->note_start < s->note_end - s->note_start)
			continue; /* in the same range as the last frame: its file is queued already */
		uint32_t mi = find_module(s, generation, pc);
		if (mi == NO_MODULE)
			continue;
		const struct module *m = &s->mods[mi];
		for (size_t j = 0; j < m->nsegs; j++) {
			uint64_t start = m->base + m->segs[j].vaddr;
			if (pc - start < m->segs[j].memsz) {
				s->note_start = start;
				s->note_end = start + m->segs[j].memsz;
				break;
			}
		}
		struct elf_file *f = m->file;
		if (!f->queued && f->build_id_len > 0) /* no file is opened otherwise meanwhile */
			prewarm_queue(s, f);
	}
}

/* ---- resolving ---------------------------------------------------------------------------------- */

/* The file of module m, opened on first use; warns at most once per file. */
static ap_symfile *file_of(ap_symbols *s, const struct module *m)
{
	struct elf_file *f = m->file;
	if (s->no_files)
		return NULL;
	prewarm_end(s);
	if (f->queued && !f->warned) {
		/* Opened ahead: warn now, where opening it would have. */
		f->warned = true;
		if (f->problem != NULL)
			warnf(s, "warning: %s: %s; its frames are shown as module+offset", f->path, f->problem);
	}
	if (f->state == FILE_UNOPENED) {
		char problem[512];
		f->sf = ap_symfile_open(&s->callbacks, f->path, f->build_id, f->build_id_len, m->segs,
		                        m->nsegs, problem, sizeof(problem));
		f->state = f->sf != NULL ? FILE_OK : FILE_BAD;
		if (problem[0] != 0)
			warnf(s, "warning: %s: %s; its frames are shown as module+offset", f->path, problem);
	}
	return f->sf;
}

/* The frames of pc in module mi, uncached; the fallback "name+0xoffset" when nothing is known. */
static size_t resolve_in_module(ap_symbols *s, uint32_t mi, uint64_t pc, ap_symframe *out)
{
	const struct module *m = &s->mods[mi];
	uint64_t addr = pc - m->base;
	ap_rawframe raw[MAX_FRAMES];
	ap_symfile *sf = file_of(s, m);
	size_t n = sf != NULL ? ap_symfile_lookup(sf, addr, raw, MAX_FRAMES) : 0;
	for (size_t i = 0; i < n; i++) {
		char *d = ap_demangle(raw[i].function);
		out[i] = (ap_symframe){
			.function = intern(s, d != NULL ? d : raw[i].function), .file = intern(s, raw[i].file),
			.line = raw[i].line, .inlined = raw[i].inlined, .resolved = true,
		};
		free(d);
	}
	if (n == 0) {
		char buf[4096];
		snprintf(buf, sizeof(buf), "%s+0x%" PRIx64, m->name, addr);
		out[n++] = (ap_symframe){.function = intern(s, buf)};
	}
	for (size_t i = 0; i < n; i++) {
		out[i].module = m->path;
		out[i].module_offset = addr;
		out[i].pc = pc;
	}
	return n;
}

static struct cache_ent *cache_slot(ap_symbols *s, uint32_t mod, uint64_t pc)
{
	size_t j = mix64(pc ^ ((uint64_t)mod << 40)) & (s->cache_cap - 1);
	while (s->cache[j].frames != NULL && (s->cache[j].pc != pc || s->cache[j].mod != mod))
		j = (j + 1) & (s->cache_cap - 1);
	return &s->cache[j];
}

static bool cache_reserve(ap_symbols *s)
{
	if (2 * (s->cache_n + 1) <= s->cache_cap)
		return true;
	size_t cap = s->cache_cap ? 2 * s->cache_cap : 4096;
	struct cache_ent *old = s->cache;
	size_t oldcap = s->cache_cap;
	s->cache = calloc(cap, sizeof(*s->cache));
	if (s->cache == NULL) {
		s->cache = old;
		return false;
	}
	s->cache_cap = cap;
	for (size_t i = 0; i < oldcap; i++)
		if (old[i].frames != NULL)
			*cache_slot(s, old[i].mod, old[i].pc) = old[i];
	free(old);
	return true;
}

size_t ap_symbols_resolve(ap_symbols *s, uint32_t generation, uint64_t ret_addr,
                          const ap_symframe **out)
{
	/* The return address is the instruction after the call, which may belong to the next line
	 * or even the next function (a call to a noreturn function ends its caller). */
	uint64_t pc = ret_addr != 0 ? ret_addr - 1 : 0;
	uint32_t mi = find_module(s, generation, pc);
	*out = &oom_frame;
	if (!cache_reserve(s))
		return 1;
	struct cache_ent *e = cache_slot(s, mi, pc);
	if (e->frames != NULL) {
		*out = e->frames;
		return e->n;
	}

	ap_symframe fr[MAX_FRAMES];
	size_t n = 1;
	if (mi != NO_MODULE) {
		n = resolve_in_module(s, mi, pc, fr);
	} else {
		char buf[32];
		snprintf(buf, sizeof(buf), "0x%" PRIx64, ret_addr);
		fr[0] = (ap_symframe){.function = intern(s, buf), .pc = pc};
	}
	for (size_t i = 0; i < n; i++)
		if (fr[i].function == NULL)
			return 1; /* interning failed: out of memory */
	ap_symframe *frames = arena_dup(s, fr, n * sizeof(fr[0]));
	if (frames == NULL)
		return 1;
	/* The slot found above still holds: nothing since has touched the cache. */
	*e = (struct cache_ent){.pc = pc, .mod = mi, .n = (uint32_t)n, .frames = frames};
	s->cache_n++;
	*out = frames;
	return n;
}

/* ---- module list ---------------------------------------------------------------------------- */

size_t ap_symbols_module_count(const ap_symbols *s)
{
	return s->nmods;
}

bool ap_symbols_module_get(const ap_symbols *s, size_t i, ap_module_desc *out)
{
	if (i >= s->nmods)
		return false;
	const struct module *m = &s->mods[i];
	*out = (ap_module_desc){
		.id = m->id, .generation = m->gen_from, .base = m->base, .path = m->path,
		.build_id = m->file->build_id, .build_id_len = m->file->build_id_len,
		.segs = m->segs, .nsegs = m->nsegs,
	};
	return true;
}

long ap_symbols_module_index(ap_symbols *s, uint32_t generation, uint64_t pc)
{
	uint32_t mi = find_module(s, generation, pc);
	return mi == NO_MODULE ? -1 : (long)mi;
}
