/*
 * decode.c: the trace reader. Every length, count and varint is checked against what is left of
 * the input; a malformed record ends the read with an error naming the file, a cut-off file ends
 * it with the events up to the cut and `truncated` set.
 *
 * Input comes from one of three sources behind fill(): a file (read and decompressed in pieces),
 * a compressed buffer in memory, or an already decompressed stream in memory (the fuzz harness,
 * so that it explores records rather than zstd). Whatever the source, memory is bounded by the
 * largest record and by the events held between two SYNC records, and the latter is capped so a
 * trace without SYNC records (corrupt, or adversarial) cannot make the reader hold all of it.
 */
#include "decode.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

/* No record the shim writes comes near this (its buffers are 32 KiB); a larger length means
 * corruption, and refusing it keeps a flipped bit from making us buffer gigabytes. */
#define AP_MAX_RECORD (64u << 20)
/* The shim keeps at most 1024 frames (ALLOCPROF_DEPTH) and a PT_LOAD table has a handful of
 * entries; anything far beyond is corruption, refused before it turns a small record into a large
 * allocation (a frame costs one byte in the record but 8 in memory). */
#define AP_MAX_FRAMES 65536u
#define AP_MAX_SEGMENTS 65536u
/* A command line is metadata to display: past these, the rest of it is summarised in one last
 * argument, so that a header of a million one-byte arguments costs nothing to whoever prints it. */
#define AP_MAX_ARGS 4096u
#define AP_MAX_ARGV_BYTES (256u << 10)
/* Events held while waiting for a SYNC record. A round of the shim (100 ms) holds fewer: 0.24
 * million in a trace of a single thread doing nothing but malloc/free, 0.21 million with four
 * threads. Past this the oldest half is delivered without waiting (with res->unordered set), which
 * keeps memory bounded on a trace that lacks SYNC records: 40 bytes per event, twice while
 * sorting, 80 MiB at most. */
#define AP_MAX_PENDING (1u << 20)

/* The compressed input and its decompression: the file (or the caller's buffer) and the zstd
 * stream. fill() uses it directly, or it belongs to the thread that decompresses ahead. */
struct inflater {
	int fd;             /* -1: the input is in memory */
	ZSTD_DStream *ds;
	const uint8_t *in;  /* compressed input: a read buffer (owned when fd >= 0) or the caller's */
	uint8_t *in_owned;
	size_t in_len, in_pos;
	bool in_eof;
	size_t last_ret;    /* ZSTD_decompressStream's last hint: 0 at a frame boundary */
	uint64_t bytes_in, bytes_out;
	int err;            /* what ended it (enum ap_error), and the message for fail() */
	char msg[384];
};

struct ahead;

struct reader {
	const char *path;
	const ap_reader_ops *ops;
	ap_read_result *res;
	bool raw;           /* the input is the decompressed stream itself (no zstd) */
	struct inflater src;
	struct ahead *ahead; /* the thread decompressing src, if any */
	size_t last_ret;    /* src's, as of the bytes taken so far (at the end: its last) */
	const uint8_t *data; /* decompressed bytes: buf, or the caller's stream when raw */
	uint8_t *buf;
	size_t len, pos, cap;
	uint64_t offset;    /* decompressed bytes consumed before data[0] */
	AP_VEC(ap_event_rec) pending;
	ap_event_rec *scratch; /* room for pending.cap events, for the merge sort */
	size_t scratch_cap;
	bool pending_sorted;     /* pending is in stamp order (so far every event came in order) */
	uint64_t sync;
	uint32_t nstacks, max_stack; /* STACK records seen, largest id defined */
	AP_VEC(uint64_t) frames;
	AP_VEC(ap_segment) segs;
	AP_VEC(const char *) argv;
	uint64_t version;        /* of the trace's format */
	AP_VEC(uint64_t) locals; /* this chunk's ALLOC_LOCAL blocks' keys, 0 once freed */
	uint64_t next_local;     /* the next key for a block whose address the trace omits */
	/* Folding (ops->pairs): per stack id, the blocks allocated and freed within a chunk that
	 * were left out of the events, and their bytes; the chunk's marks (fold_scan). */
	bool fold, fold_asked;
	struct pairsum { uint64_t count, bytes; } *sums;
	size_t nsums;
	AP_VEC(uint8_t) marks;
};

/* Keys for blocks whose address the trace omits (ALLOC_LOCAL): from 2^63 up, above any user-space
 * address, so they never meet a real one in the live set. */
#define AP_LOCAL_KEY_BASE (1ull << 63)
/* Ordinals (format 3) are below 2^62: keys stay below 2^63 + 2^62, first_ord + n cannot wrap. */
#define AP_ORD_MAX (1ull << 62)

/* last += delta, false when the result leaves [0, AP_ORD_MAX). */
static inline bool ord_step(uint64_t *last, int64_t delta)
{
	uint64_t v = *last + (uint64_t)delta;
	if (v >= AP_ORD_MAX)
		return false;
	*last = v;
	return true;
}
/* In locals: a block folded into the sums, never delivered (keys are >= 2^63, 0 is "freed"). */
#define AP_LOCAL_FOLDED 1u

static int fail(struct reader *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct reader *r, int code, const char *fmt, ...)
{
	int n = snprintf(r->res->error, sizeof(r->res->error), "%s: ", r->path);
	va_list ap;
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < sizeof(r->res->error))
		vsnprintf(r->res->error + n, sizeof(r->res->error) - (size_t)n, fmt, ap);
	va_end(ap);
	return -code;
}

/* ---- decompression ------------------------------------------------------------------------------ */

static long inflate_fail(struct inflater *f, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static long inflate_fail(struct inflater *f, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->msg, sizeof(f->msg), fmt, ap);
	va_end(ap);
	f->err = code;
	return -code;
}

/* Decompresses into out (room > 0 bytes): the number of bytes written (> 0), 0 at the end of the
 * input, or a negated error with f->err and f->msg set. */
static long inflate_some(struct inflater *f, uint8_t *out, size_t room)
{
	for (;;) {
		if (f->in_pos == f->in_len && !f->in_eof) {
			ssize_t n;
			do
				n = read(f->fd, f->in_owned, ZSTD_DStreamInSize());
			while (n < 0 && errno == EINTR);
			if (n < 0)
				return inflate_fail(f, AP_E_IO, "read error: %s", strerror(errno));
			if (n == 0)
				f->in_eof = true;
			f->in_len = (size_t)n;
			f->in_pos = 0;
			f->bytes_in += (uint64_t)n;
		}
		if (f->in_pos == f->in_len && f->in_eof)
			return 0;
		ZSTD_inBuffer in = {f->in, f->in_len, f->in_pos};
		ZSTD_outBuffer o = {out, room, 0};
		size_t ret = ZSTD_decompressStream(f->ds, &o, &in);
		if (ZSTD_isError(ret)) {
			if (f->bytes_in <= f->in_len && f->bytes_out == 0)
				return inflate_fail(f, AP_E_BADMAGIC, "not an allocprof trace (not zstd-compressed)");
			return inflate_fail(f, AP_E_CORRUPT, "corrupt compressed data near file offset %llu (%s)",
			                    (unsigned long long)(f->bytes_in - f->in_len + f->in_pos),
			                    ZSTD_getErrorName(ret));
		}
		f->in_pos = in.pos;
		f->last_ret = ret;
		f->bytes_out += o.pos;
		if (o.pos)
			return (long)o.pos;
	}
}

/* Decompressing ahead: a thread of its own runs inflate_some into AHEAD_NBLK blocks in turn, so
 * that zstd (a fifth to a third of the reading) runs beside the parsing. The blocks are copied
 * into the parser's buffer (records straddle them): far cheaper than decompressing. */
#define AHEAD_NBLK 4
#define AHEAD_BLK (256u << 10)

struct ahead {
	struct inflater *src; /* the producer's alone until done is seen */
	uint8_t *blk[AHEAD_NBLK];
	size_t blen[AHEAD_NBLK];
	unsigned wi, ri;      /* blocks handed over and taken */
	bool done, stop;      /* the producer ended (src says how); the parser wants it to */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thread;
};

static void *ahead_main(void *arg)
{
	struct ahead *a = arg;
	for (;;) {
		pthread_mutex_lock(&a->mu);
		while (a->wi - a->ri == AHEAD_NBLK && !a->stop)
			pthread_cond_wait(&a->cv, &a->mu);
		bool stop = a->stop;
		pthread_mutex_unlock(&a->mu);
		if (stop)
			return NULL;
		uint8_t *b = a->blk[a->wi % AHEAD_NBLK];
		size_t n = 0;
		long got = 1;
		while (n < AHEAD_BLK && (got = inflate_some(a->src, b + n, AHEAD_BLK - n)) > 0)
			n += (size_t)got;
		pthread_mutex_lock(&a->mu);
		a->blen[a->wi % AHEAD_NBLK] = n;
		a->wi++;
		a->done = got <= 0;
		pthread_cond_broadcast(&a->cv);
		pthread_mutex_unlock(&a->mu);
		if (got <= 0)
			return NULL;
	}
}

static void ahead_free(struct ahead *a)
{
	pthread_mutex_destroy(&a->mu);
	pthread_cond_destroy(&a->cv);
	for (int i = 0; i < AHEAD_NBLK; i++)
		free(a->blk[i]);
	free(a);
}

/* Starts decompressing r->src ahead (r->ahead); if the thread cannot be made, fill() does it. */
static void ahead_start(struct reader *r)
{
	struct ahead *a = ap_xcalloc(1, sizeof(*a));
	a->src = &r->src;
	for (int i = 0; i < AHEAD_NBLK; i++)
		a->blk[i] = ap_xmalloc(AHEAD_BLK);
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	if (pthread_create(&a->thread, NULL, ahead_main, a) == 0)
		r->ahead = a;
	else
		ahead_free(a);
}

static void ahead_end(struct reader *r)
{
	struct ahead *a = r->ahead;
	pthread_mutex_lock(&a->mu);
	a->stop = true;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->thread, NULL);
	ahead_free(a);
	r->ahead = NULL;
}

/* Room for n more bytes after the buffered ones. */
static void buf_room(struct reader *r, size_t n)
{
	if (r->cap - r->len < n) {
		r->cap = r->len + n > r->cap * 2 ? r->len + n : r->cap * 2;
		r->buf = ap_xrealloc(r->buf, r->cap);
		r->data = r->buf;
	}
}

/* fill() from the thread decompressing ahead. */
static int fill_ahead(struct reader *r)
{
	struct ahead *a = r->ahead;
	for (;;) {
		pthread_mutex_lock(&a->mu);
		while (a->wi == a->ri && !a->done)
			pthread_cond_wait(&a->cv, &a->mu);
		bool have = a->wi != a->ri;
		pthread_mutex_unlock(&a->mu);
		if (!have) {
			/* Every block taken and the producer done: its state is final, and ours. */
			r->res->bytes_in = r->src.bytes_in;
			r->last_ret = r->src.last_ret;
			if (r->src.err)
				return fail(r, r->src.err, "%s", r->src.msg);
			return 0;
		}
		unsigned i = a->ri % AHEAD_NBLK;
		size_t n = a->blen[i];
		buf_room(r, n);
		memcpy(r->buf + r->len, a->blk[i], n);
		r->len += n;
		r->res->bytes_out += n;
		pthread_mutex_lock(&a->mu);
		a->ri++;
		pthread_cond_broadcast(&a->cv);
		pthread_mutex_unlock(&a->mu);
		if (n)
			return 1;
	}
}

/* Makes more decompressed bytes available: 1 if some were added, 0 at the end of the input, or a
 * negated error. */
static int fill(struct reader *r)
{
	if (r->raw)
		return 0; /* the whole stream is in data already */
	if (r->pos) {
		memmove(r->buf, r->buf + r->pos, r->len - r->pos);
		r->len -= r->pos;
		r->offset += r->pos;
		r->pos = 0;
	}
	if (r->ahead)
		return fill_ahead(r);
	buf_room(r, ZSTD_DStreamOutSize());
	long got = inflate_some(&r->src, r->buf + r->len, r->cap - r->len);
	r->res->bytes_in = r->src.bytes_in;
	r->last_ret = r->src.last_ret;
	if (got < 0)
		return fail(r, r->src.err, "%s", r->src.msg);
	r->len += (size_t)got;
	r->res->bytes_out += (uint64_t)got;
	return got > 0;
}

/* Ensures n bytes are buffered at r->pos: 1 yes, 0 the input ended first, or a negated error. */
static int need(struct reader *r, size_t n)
{
	while (r->len - r->pos < n) {
		int got = fill(r);
		if (got <= 0)
			return got;
	}
	return 1;
}

/* ---- parsing helpers ------------------------------------------------------------------------------ */

struct cur {
	const uint8_t *p, *end;
	bool bad;
};

static __attribute__((noinline)) uint64_t cu_slow(struct cur *c)
{
	uint64_t v;
	if (c->bad || ap_get_varint(&c->p, c->end, &v)) {
		c->bad = true;
		return 0;
	}
	return v;
}

/* A varint from c (0 and c->bad once the cursor went wrong). Inline for the common cases of one
 * and two bytes: most fields of a chunk are that short (stamp deltas, sizes, stack ids, back
 * references), and the chunks are most of a trace. */
static inline __attribute__((always_inline)) uint64_t cu(struct cur *c)
{
	const uint8_t *p = c->p;
	if (__builtin_expect(c->end - p >= 2 && !c->bad, 1)) {
		uint64_t b0 = p[0];
		if (b0 < 0x80) {
			c->p = p + 1;
			return b0;
		}
		uint64_t b1 = p[1];
		if (b1 < 0x80) {
			c->p = p + 2;
			return (b0 & 0x7f) | b1 << 7;
		}
		if (c->end - p >= 8) {
			uint64_t w;
			memcpy(&w, p, 8); /* little-endian: byte i in bits 8i.. */
			uint64_t stops = ~w & 0x8080808080808080ull;
			if (stops) {
				unsigned bits = (unsigned)__builtin_ctzll(stops) + 1; /* 8 x the length */
				if (bits < 64)
					w &= (1ull << bits) - 1;
				w &= 0x7f7f7f7f7f7f7f7full;
				w = (w & 0x007f007f007f007full) | (w & 0x7f007f007f007f00ull) >> 1;
				w = (w & 0x00003fff00003fffull) | (w & 0x3fff00003fff0000ull) >> 2;
				w = (w & 0x000000000fffffffull) | (w & 0x0fffffff00000000ull) >> 4;
				c->p = p + bits / 8;
				return w;
			}
		}
	}
	return cu_slow(c);
}

static inline __attribute__((always_inline)) uint32_t cu32(struct cur *c)
{
	uint64_t v = cu(c);
	if (v > UINT32_MAX)
		c->bad = true;
	return (uint32_t)v;
}

/* A string, copied NUL-terminated into *store (freed by the caller). */
static const uint8_t *cbytes(struct cur *c, size_t *len)
{
	uint64_t n = cu(c);
	if (c->bad || n > (uint64_t)(c->end - c->p)) {
		c->bad = true;
		*len = 0;
		return NULL;
	}
	const uint8_t *s = c->p;
	c->p += n;
	*len = (size_t)n;
	return s;
}

static char *cstr(struct cur *c)
{
	size_t n;
	const uint8_t *s = cbytes(c, &n);
	char *out = ap_xmalloc(n + 1);
	if (s)
		memcpy(out, s, n);
	out[n] = 0;
	return out;
}

/* ---- records --------------------------------------------------------------------------------------- */

/* Sorts the held events by stamp, stably (equal stamps keep their arrival order). They arrive as
 * runs already in order -- a chunk holds one thread's events, whose stamps increase -- so a
 * natural merge sort does O(n log runs) work, and nothing when a single thread wrote them all. */
static void sort_pending(struct reader *r)
{
	size_t n = r->pending.n;
	if (r->pending_sorted || n < 2) {
		r->pending_sorted = true;
		return;
	}
	if (r->scratch_cap < n) {
		free(r->scratch);
		r->scratch_cap = r->pending.cap;
		r->scratch = ap_xmalloc(r->scratch_cap * sizeof(*r->scratch));
	}
	ap_event_rec *a = r->pending.v, *b = r->scratch;
	for (;;) {
		/* One pass: merge neighbouring runs pairwise from a into b. */
		size_t runs = 0, i = 0;
		while (i < n) {
			size_t mid = i + 1;
			while (mid < n && a[mid - 1].stamp <= a[mid].stamp)
				mid++;
			size_t hi = mid;
			if (mid < n) {
				hi = mid + 1;
				while (hi < n && a[hi - 1].stamp <= a[hi].stamp)
					hi++;
			}
			size_t x = i, y = mid, k = i;
			while (x < mid && y < hi)
				b[k++] = a[y].stamp < a[x].stamp ? a[y++] : a[x++];
			memcpy(b + k, a + x, (mid - x) * sizeof(*a));
			k += mid - x;
			memcpy(b + k, a + y, (hi - y) * sizeof(*a));
			i = hi;
			runs++;
		}
		ap_event_rec *t = a;
		a = b;
		b = t;
		if (runs == 1)
			break;
	}
	if (a != r->pending.v) {
		/* The sorted result is in the scratch array: swap the arrays rather than copy. */
		r->scratch = r->pending.v;
		r->pending.v = a;
		size_t cap = r->pending.cap;
		r->pending.cap = r->scratch_cap;
		r->scratch_cap = cap;
	}
	r->pending_sorted = true;
}

/* Delivers the first n held events (sorted) and keeps the rest, still sorted. */
static void deliver_n(struct reader *r, size_t n)
{
	if (r->pending.n > r->res->max_pending)
		r->res->max_pending = r->pending.n;
	if (r->ops->events && n)
		r->ops->events(r->ops->ctx, r->pending.v, n);
	size_t rest = r->pending.n - n;
	memmove(r->pending.v, r->pending.v + n, rest * sizeof(*r->pending.v));
	r->pending.n = rest;
}

/* Delivers, in stamp order, every held event with a stamp below limit. */
static void deliver(struct reader *r, uint64_t limit)
{
	if (!r->pending.n)
		return;
	sort_pending(r);
	size_t i = 0;
	while (i < r->pending.n && r->pending.v[i].stamp < limit)
		i++;
	deliver_n(r, i);
}

/* hold's rare cases: the array is full, or has reached the cap. */
static __attribute__((noinline)) void hold_room(struct reader *r)
{
	if (r->pending.n >= AP_MAX_PENDING) {
		/* No SYNC for far longer than a round: deliver the older half now rather than hold
		 * the whole trace. Order across that cut is no longer guaranteed, hence the flag. */
		r->res->unordered = true;
		sort_pending(r);
		deliver_n(r, r->pending.n / 2);
	}
	if (r->pending.n == r->pending.cap) {
		/* Grown by steps of 64 Ki events (2.5 MiB) rather than doubled: the array lasts the
		 * whole read, so its size should follow the largest round, not the next power of 2. */
		r->pending.cap += r->pending.cap < 65536 ? (r->pending.cap ? r->pending.cap : 1024) : 65536;
		r->pending.v = ap_xrealloc(r->pending.v, r->pending.cap * sizeof(*r->pending.v));
	}
}

/* Inline: every event of a trace passes here. (max_pending is kept by deliver_n, the only place
 * where the count goes down.) */
static inline __attribute__((always_inline)) void hold(struct reader *r, const ap_event *ev)
{
	if (ev->stamp < r->sync)
		r->res->late_events++;
	if (__builtin_expect(r->pending.n >= AP_MAX_PENDING || r->pending.n == r->pending.cap, 0))
		hold_room(r);
	if (!r->pending.n)
		r->pending_sorted = true;
	else if (ev->stamp < r->pending.v[r->pending.n - 1].stamp)
		r->pending_sorted = false;
	bool lost = ev->kind == AP_EV_LOST;
	r->pending.v[r->pending.n++] = (ap_event_rec){
		.stamp = ev->stamp, .addr = lost ? ev->lost_frees : ev->addr,
		.size = lost ? ev->lost_allocs : ev->size, .stack = ev->stack, .tid = ev->tid,
		.kind = ev->kind, .api = ev->api,
	};
	r->res->events++;
}

static int check_stack(struct reader *r, const ap_event *ev)
{
	/* The writer puts a STACK record before any event naming it. */
	if (ev->stack > r->max_stack)
		return fail(r, AP_E_CORRUPT, "corrupt trace: an event of thread %u refers to stack %u, "
		            "which was never defined", ev->tid, ev->stack);
	return 0;
}

/* Hands the folded blocks of one stack to the consumer and clears them. */
static void pairs_flush(struct reader *r, uint32_t stack)
{
	struct pairsum *s = &r->sums[stack];
	r->res->events += 2 * s->count;
	r->ops->pairs(r->ops->ctx, stack, s->count, s->bytes);
	s->count = s->bytes = 0;
}

static void pairs_flush_all(struct reader *r)
{
	for (size_t i = 0; i < r->nsums; i++)
		if (r->sums[i].count)
			pairs_flush(r, (uint32_t)i);
}

/* Room in sums for every stack id defined so far (events name no other: check_stack). */
static void pairs_grow(struct reader *r)
{
	if (r->max_stack < r->nsums)
		return;
	size_t n = r->nsums;
	while (n <= r->max_stack)
		n *= 2;
	r->sums = ap_xrealloc(r->sums, n * sizeof(*r->sums));
	memset(r->sums + r->nsums, 0, (n - r->nsums) * sizeof(*r->sums));
	r->nsums = n;
}

static inline void pairs_add(struct reader *r, uint32_t stack, uint64_t size)
{
	struct pairsum *s = &r->sums[stack];
	if (__builtin_expect(s->bytes + size < s->bytes, 0))
		pairs_flush(r, stack); /* the total would wrap: hand over what it holds first */
	s->count++;
	s->bytes += size;
}

/* Decides which of a chunk's ALLOC_LOCAL blocks to fold, from its tags and its stamps and backs
 * sections (copies of the cursors: the main pass reads them again). r->marks gets one entry per
 * ALLOC_LOCAL, in order: MARK_FOLD if the block is to be folded, which leaves out both its events
 * and changes nothing but the alloc figures of its stack. So that nothing else changes:
 *  - the last event of every chunk stays, and the chunk's stamps must increase strictly, so the
 *    last event delivered (whose stamp is the trace's duration) is always one that stays;
 *  - a realloc's free keeps its block for an UNFREE (a failed realloc) until the thread's next
 *    realloc frees something: it is folded only if another realloc's FREE_BACK (whose block is
 *    surely live) follows in the chunk before any UNFREE. A chain of reallocs growing a buffer
 *    keeps only its last free of each chunk.
 * false: fold nothing in this chunk (stamps that do not increase, or malformed backs, which the
 * main pass then reports). */
enum { MARK_OPEN = 0, MARK_FOLD = 1, MARK_KEEP = 2 };
static bool fold_scan(struct reader *r, const uint8_t *tags, uint64_t n, uint64_t stamp,
                      struct cur st, struct cur bk)
{
	/* Room for a mark per event up front: this loop then pushes without checks. n is bounded by
	 * the record's length. */
	if (!ap_grow(&r->marks.v, &r->marks.cap, n, 1))
		return false;
	uint8_t *marks = r->marks.v;
	size_t nm = 0;
	size_t held = SIZE_MAX; /* the ALLOC_LOCAL whose block the latest realloc's free holds */
	for (uint64_t i = 0; i < n; i++) {
		uint8_t tag = tags[i];
		if (tag & AP_TAG_STEP1) {
			if (++stamp == 0)
				return false;
		} else {
			uint64_t d = cu(&st); /* 0 once st is bad, which ends the scan below or after */
			if ((d == 0 && i) || stamp + d < stamp)
				return false;
			stamp += d;
		}
		uint8_t kind = tag & AP_TAG_KIND_MASK;
		if (kind == AP_EV_ALLOC_LOCAL) {
			marks[nm++] = MARK_OPEN;
		} else if (kind == AP_EV_FREE_BACK) {
			/* k counts the chunk's ALLOC_LOCAL blocks, freed ones included */
			uint64_t k = cu(&bk);
			if (k == 0 || k > nm || marks[nm - k] != MARK_OPEN)
				return false;
			uint8_t api = tag >> 4;
			bool realloc = api == AP_API_REALLOC || api == AP_API_REALLOCARRAY;
			if (realloc) {
				if (held != SIZE_MAX)
					marks[held] = MARK_FOLD; /* its hold ends here */
				held = nm - k;
			}
			marks[nm - k] = i + 1 < n && !realloc ? MARK_FOLD : MARK_KEEP;
		} else if (kind == AP_EV_UNFREE) {
			held = SIZE_MAX; /* may bring the block back: it stays */
			if (r->version >= 3)
				cu(&bk); /* its form (address or ordinal) */
		} else if (kind == AP_EV_FREE_ORD && r->version >= 3) {
			cu(&bk);
		}
	}
	r->marks.n = nm;
	return !st.bad;
}

/* Version 2: sections of fields (see trace.h). Each section is a cursor of its own; all must end
 * exactly where the next begins. */
static int rec_chunk_v2(struct reader *r, struct cur *c)
{
	ap_event ev = {0};
	ev.tid = cu32(c);
	cu(c); /* chunk_seq: order within a thread comes from the stamps */
	uint64_t stamp = cu(c), addr = 0;
	/* Format 3: the ordinal of the chunk's first event; an allocation's is first_ord plus its
	 * index, and a block written without its address has the key AP_LOCAL_KEY_BASE + ordinal. */
	uint64_t first_ord = r->version >= 3 ? cu(c) : 0, last_ord = first_ord;
	uint64_t n = cu(c), len[5];
	for (int i = 0; i < 5; i++)
		len[i] = cu(c);
	if (c->bad)
		return fail(r, AP_E_CORRUPT, "corrupt trace: malformed chunk header");
	if (first_ord > AP_ORD_MAX || n > AP_ORD_MAX - first_ord)
		return fail(r, AP_E_CORRUPT, "corrupt trace: a chunk of thread %u has ordinals out of range", ev.tid);
	uint64_t left = (uint64_t)(c->end - c->p), sum = n;
	for (int i = 0; i < 5; i++) {
		if (len[i] > left)
			sum = UINT64_MAX;
		else if (sum != UINT64_MAX)
			sum += len[i];
	}
	if (sum != left)
		return fail(r, AP_E_CORRUPT, "corrupt trace: the sections of a chunk of thread %u do not "
		            "add up to its length", ev.tid);
	const uint8_t *tags = c->p;
	struct cur sec[5];
	const uint8_t *p = tags + n;
	for (int i = 0; i < 5; i++) {
		sec[i] = (struct cur){.p = p, .end = p + len[i]};
		p += len[i];
	}
	struct cur *st = &sec[0], *ad = &sec[1], *bk = &sec[2], *in = &sec[3], *ot = &sec[4];
	r->locals.n = 0;
	bool fold = r->fold && fold_scan(r, tags, n, stamp, *st, *bk);
	for (uint64_t i = 0; i < n; i++) {
		uint8_t tag = tags[i];
		ev.kind = tag & AP_TAG_KIND_MASK;
		ev.api = tag >> 4;
		stamp += (tag & AP_TAG_STEP1) ? 1 : cu(st);
		ev.stamp = stamp;
		ev.size = 0;
		ev.stack = 0;
		bool folded = false; /* an ALLOC_LOCAL summed into its stack's pairs, not delivered */
		switch (ev.kind) {
		case AP_EV_ALLOC_ORD:
			if (r->version < 3)
				goto unknown;
			/* fall through */
		case AP_EV_ALLOC:
		case AP_EV_ALLOC_LOCAL:
			if (ev.kind == AP_EV_ALLOC) {
				addr += (uint64_t)ap_unzigzag(cu(ad));
				ev.addr = addr;
			} else if (ev.kind == AP_EV_ALLOC_ORD) {
				ev.addr = AP_LOCAL_KEY_BASE + first_ord + i;
				ev.kind = AP_EV_ALLOC;
			} else {
				ev.addr = r->version >= 3 ? AP_LOCAL_KEY_BASE + first_ord + i : r->next_local++;
				ev.kind = AP_EV_ALLOC;
				folded = fold && r->marks.v[r->locals.n] == MARK_FOLD;
				AP_VEC_PUSH(r->locals, folded ? AP_LOCAL_FOLDED : ev.addr);
			}
			ev.size = cu(in);
			ev.stack = cu32(in);
			if (!in->bad && ev.stack > r->max_stack)
				return check_stack(r, &ev);
			if (folded && !in->bad) {
				pairs_add(r, ev.stack, ev.size);
				continue;
			}
			break;
		case AP_EV_FREE:
			addr += (uint64_t)ap_unzigzag(cu(ad));
			ev.addr = addr;
			break;
		case AP_EV_UNFREE: {
			/* Format 3: a varint m in backs first; m > 0 names the block by ordinal. */
			uint64_t m = r->version >= 3 ? cu(bk) : 0;
			if (m == 0) {
				addr += (uint64_t)ap_unzigzag(cu(ad));
				ev.addr = addr;
			} else {
				if (!ord_step(&last_ord, ap_unzigzag(m - 1)))
					return fail(r, AP_E_CORRUPT, "corrupt trace: an ordinal out of range in a chunk "
					            "of thread %u", ev.tid);
				ev.addr = AP_LOCAL_KEY_BASE + last_ord;
			}
			break;
		}
		case AP_EV_FREE_ORD:
			if (r->version < 3)
				goto unknown;
			if (!ord_step(&last_ord, ap_unzigzag(cu(bk))))
				return fail(r, AP_E_CORRUPT, "corrupt trace: an ordinal out of range in a chunk of "
				            "thread %u", ev.tid);
			ev.addr = AP_LOCAL_KEY_BASE + last_ord;
			ev.kind = AP_EV_FREE;
			break;
		case AP_EV_FREE_BACK: {
			uint64_t k = cu(bk);
			if (bk->bad)
				break;
			if (k == 0 || k > r->locals.n || !r->locals.v[r->locals.n - k])
				return fail(r, AP_E_CORRUPT, "corrupt trace: a free in a chunk of thread %u refers "
				            "to an allocation the chunk does not hold", ev.tid);
			ev.addr = r->locals.v[r->locals.n - k];
			r->locals.v[r->locals.n - k] = 0;
			if (ev.addr == AP_LOCAL_FOLDED)
				continue; /* counted with its allocation */
			ev.kind = AP_EV_FREE;
			break;
		}
		case AP_EV_LOST:
			ev.lost_allocs = cu(ot);
			ev.lost_frees = cu(ot);
			break;
		default:
		unknown:
			return fail(r, AP_E_CORRUPT, "corrupt trace: unknown event kind %u in a chunk of thread %u",
			            ev.kind, ev.tid);
		}
		if (st->bad || ad->bad || bk->bad || in->bad || ot->bad)
			return fail(r, AP_E_CORRUPT, "corrupt trace: malformed event in a chunk of thread %u", ev.tid);
		hold(r, &ev);
		ev.lost_allocs = ev.lost_frees = 0;
	}
	for (int i = 0; i < 5; i++)
		if (sec[i].p != sec[i].end)
			return fail(r, AP_E_CORRUPT, "corrupt trace: a chunk of thread %u has bytes left over in "
			            "a section", ev.tid);
	c->p = c->end;
	return 0;
}

static int rec_chunk(struct reader *r, struct cur *c)
{
	if (r->version >= 2)
		return rec_chunk_v2(r, c);
	ap_event ev = {0};
	ev.tid = cu32(c);
	cu(c); /* chunk_seq: order within a thread comes from the stamps */
	uint64_t stamp = cu(c), addr = 0;
	while (!c->bad && c->p < c->end) {
		uint8_t tag = *c->p++;
		ev.kind = tag & 15;
		ev.api = tag >> 4;
		stamp += cu(c);
		ev.stamp = stamp;
		switch (ev.kind) {
		case AP_EV_ALLOC:
			addr += (uint64_t)ap_unzigzag(cu(c));
			ev.addr = addr;
			ev.size = cu(c);
			ev.stack = cu32(c);
			if (!c->bad && ev.stack > r->max_stack)
				return check_stack(r, &ev);
			break;
		case AP_EV_FREE:
		case AP_EV_UNFREE:
			addr += (uint64_t)ap_unzigzag(cu(c));
			ev.addr = addr;
			ev.size = 0;
			ev.stack = 0;
			break;
		case AP_EV_LOST:
			ev.lost_allocs = cu(c);
			ev.lost_frees = cu(c);
			break;
		default:
			return fail(r, AP_E_CORRUPT, "corrupt trace: unknown event kind %u in a chunk of thread %u",
			            ev.kind, ev.tid);
		}
		if (c->bad)
			break;
		hold(r, &ev);
		ev.lost_allocs = ev.lost_frees = 0;
	}
	if (c->bad)
		return fail(r, AP_E_CORRUPT, "corrupt trace: malformed event in a chunk of thread %u", ev.tid);
	return 0;
}

static int rec_header(struct reader *r, struct cur *c)
{
	ap_header h = {0};
	h.pid = cu(c);
	h.ppid = cu(c);
	h.start_realtime_ns = cu(c);
	h.clock = cu32(c);
	h.start_stamp = cu(c);
	h.start_monotonic_ns = cu(c);
	h.sample_bytes = cu(c);
	h.max_depth = cu32(c);
	h.seed = cu(c);
	h.page_size = cu(c);
	char *exe = cstr(c);
	uint64_t argc = cu(c);
	if (argc > (uint64_t)(c->end - c->p))
		c->bad = true;
	r->argv.n = 0;
	uint64_t kept_bytes = 0, dropped = 0;
	for (uint64_t i = 0; i < argc && !c->bad; i++) {
		size_t n;
		const uint8_t *arg = cbytes(c, &n);
		if (r->argv.n >= AP_MAX_ARGS || kept_bytes + n > AP_MAX_ARGV_BYTES) {
			dropped++;
			continue;
		}
		kept_bytes += n;
		char *copy = ap_xmalloc(n + 1);
		if (arg)
			memcpy(copy, arg, n);
		copy[n] = 0;
		AP_VEC_PUSH(r->argv, copy);
	}
	if (dropped && !c->bad) {
		char *more = ap_xmalloc(64);
		snprintf(more, 64, "[... %llu more arguments]", (unsigned long long)dropped);
		AP_VEC_PUSH(r->argv, more);
	}
	h.flags = cu32(c);
	char *host = cstr(c);
	int ret = 0;
	if (c->bad) {
		ret = fail(r, AP_E_CORRUPT, "corrupt trace: malformed header");
	} else {
		h.exe = exe;
		h.hostname = host;
		h.argv = r->argv.v;
		h.argc = r->argv.n;
		if (r->ops->header)
			r->ops->header(r->ops->ctx, &h);
		if (!r->fold_asked && r->ops->pairs && r->ops->want_pairs && r->ops->want_pairs(r->ops->ctx)) {
			r->fold = true;
			r->nsums = 64;
			r->sums = ap_xcalloc(r->nsums, sizeof(*r->sums));
			pairs_grow(r);
		}
		r->fold_asked = true;
	}
	for (size_t i = 0; i < r->argv.n; i++)
		free((void *)r->argv.v[i]);
	r->argv.n = 0;
	free(exe);
	free(host);
	return ret;
}

static int rec_module(struct reader *r, struct cur *c)
{
	ap_module_desc m = {0};
	m.id = cu32(c);
	m.generation = cu32(c);
	cu(c); /* stamp */
	m.base = cu(c);
	char *path = cstr(c);
	m.build_id = cbytes(c, &m.build_id_len);
	uint64_t nseg = cu(c);
	if (nseg > (uint64_t)(c->end - c->p) || nseg > AP_MAX_SEGMENTS)
		c->bad = true;
	r->segs.n = 0;
	for (uint64_t i = 0; i < nseg && !c->bad; i++) {
		ap_segment s;
		s.vaddr = cu(c);
		s.memsz = cu(c);
		s.file_offset = cu(c);
		s.flags = cu32(c);
		AP_VEC_PUSH(r->segs, s);
	}
	int ret = 0;
	if (c->bad || !m.id) {
		ret = fail(r, AP_E_CORRUPT, "corrupt trace: malformed module record");
	} else if (r->ops->module) {
		m.path = path;
		m.segs = r->segs.v;
		m.nsegs = r->segs.n;
		r->ops->module(r->ops->ctx, &m);
	}
	free(path);
	return ret;
}

static int rec_stack(struct reader *r, struct cur *c)
{
	ap_stack_rec s = {0};
	s.id = cu32(c);
	s.generation = cu32(c);
	s.flags = cu32(c);
	uint64_t n = cu(c);
	if (!c->bad && n > AP_MAX_FRAMES)
		return fail(r, AP_E_CORRUPT, "corrupt trace: a stack record of %llu frames",
		            (unsigned long long)n);
	if (n > (uint64_t)(c->end - c->p) || !s.id)
		c->bad = true;
	r->frames.n = 0;
	uint64_t prev = 0;
	for (uint64_t i = 0; i < n && !c->bad; i++) {
		prev = i ? prev + (uint64_t)ap_unzigzag(cu(c)) : cu(c);
		AP_VEC_PUSH(r->frames, prev);
	}
	if (c->bad)
		return fail(r, AP_E_CORRUPT, "corrupt trace: malformed stack record");
	/* Ids are handed out in sequence (a lost insertion race wastes one now and then), so an id
	 * far beyond the number of stacks seen is corruption, not a reason to allocate gigabytes. */
	if (s.id > 2 * (uint64_t)r->nstacks + 4096)
		return fail(r, AP_E_CORRUPT, "corrupt trace: stack id %u out of range", s.id);
	r->nstacks++;
	if (s.id > r->max_stack)
		r->max_stack = s.id;
	if (r->fold)
		pairs_grow(r);
	s.nframes = (uint32_t)n;
	s.frames = r->frames.v;
	if (r->ops->stack)
		r->ops->stack(r->ops->ctx, &s);
	return 0;
}

static int rec_end(struct reader *r, struct cur *c, bool is_exit)
{
	ap_trace_end *e = &r->res->end;
	if (is_exit) {
		e->exit_how = cu32(c);
		e->exit_status = cu32(c);
		e->has_exit = !c->bad;
	} else {
		e->end_stamp = cu(c);
		e->end_monotonic_ns = cu(c);
		e->end_how = cu32(c);
		e->end_status = cu32(c);
		uint64_t n = cu(c);
		for (uint64_t i = 0; i < n && !c->bad; i++) {
			uint64_t v = cu(c);
			if (i < AP_CNT__COUNT)
				e->counters[i] = v;
		}
		e->ncounters = n < AP_CNT__COUNT ? (size_t)n : AP_CNT__COUNT;
		e->has_end = !c->bad;
	}
	if (c->bad)
		return fail(r, AP_E_CORRUPT, "corrupt trace: malformed %s record", is_exit ? "exit" : "end");
	return 0;
}

static int record(struct reader *r, uint8_t kind, const uint8_t *p, size_t len)
{
	struct cur c = {p, p + len, false};
	r->res->records++;
	switch (kind) {
	case AP_REC_HEADER:
		return rec_header(r, &c);
	case AP_REC_MODULE:
		return rec_module(r, &c);
	case AP_REC_UNLOAD: {
		uint32_t id = cu32(&c);
		cu(&c);
		uint32_t gen = cu32(&c);
		if (c.bad)
			return fail(r, AP_E_CORRUPT, "corrupt trace: malformed unload record");
		if (r->ops->unload)
			r->ops->unload(r->ops->ctx, id, gen);
		return 0;
	}
	case AP_REC_STACK:
		return rec_stack(r, &c);
	case AP_REC_CHUNK:
		return rec_chunk(r, &c);
	case AP_REC_SYNC: {
		uint64_t w = cu(&c);
		if (c.bad)
			return fail(r, AP_E_CORRUPT, "corrupt trace: malformed sync record");
		if (w > r->sync) {
			r->sync = w;
			deliver(r, w);
		}
		return 0;
	}
	case AP_REC_CLOCK: {
		uint64_t stamp = cu(&c), mono = cu(&c);
		if (c.bad)
			return fail(r, AP_E_CORRUPT, "corrupt trace: malformed clock record");
		if (r->ops->clock)
			r->ops->clock(r->ops->ctx, stamp, mono);
		return 0;
	}
	case AP_REC_TOTALS: {
		cu(&c);
		uint64_t a = cu(&c), b = cu(&c), f = cu(&c);
		if (c.bad)
			return fail(r, AP_E_CORRUPT, "corrupt trace: malformed totals record");
		r->res->end.has_totals = true;
		r->res->end.total_allocs = a;
		r->res->end.total_bytes = b;
		r->res->end.total_frees = f;
		return 0;
	}
	case AP_REC_END:
		return rec_end(r, &c, false);
	case AP_REC_EXIT:
		return rec_end(r, &c, true);
	default:
		return 0; /* a kind added later: the length lets us skip it */
	}
}

static int read_magic(struct reader *r)
{
	int got = need(r, AP_MAGIC_LEN);
	if (got < 0)
		return got;
	if (got == 0) {
		if (r->res->bytes_in == 0)
			return fail(r, AP_E_EMPTY, "empty file");
		if (r->len == 0 && r->last_ret == 0)
			return fail(r, AP_E_BADMAGIC, "not an allocprof trace (no data)");
		r->res->truncated = true;
		return fail(r, AP_E_CORRUPT, "truncated before the trace header");
	}
	if (memcmp(r->data + r->pos, AP_MAGIC, AP_MAGIC_LEN))
		return fail(r, AP_E_BADMAGIC, "not an allocprof trace (bad magic)");
	r->pos += AP_MAGIC_LEN;
	got = need(r, AP_VARINT_MAX);
	if (got < 0)
		return got;
	const uint8_t *p = r->data + r->pos;
	uint64_t version;
	if (ap_get_varint(&p, r->data + r->len, &version))
		return fail(r, AP_E_CORRUPT, "truncated or corrupt format version");
	if (version > AP_FORMAT_VERSION)
		return fail(r, AP_E_VERSION,
		            "written by a newer allocprof (trace format %llu; this allocprof reads up to %d)",
		            (unsigned long long)version, AP_FORMAT_VERSION);
	if (version == 0)
		return fail(r, AP_E_CORRUPT, "corrupt trace: format version 0");
	r->pos = (size_t)(p - r->data);
	r->version = version;
	return 0;
}

static int read_records(struct reader *r)
{
	bool first = true;
	for (;;) {
		int got = need(r, 1);
		if (got <= 0)
			return got;
		/* kind + length varint */
		got = need(r, 1 + AP_VARINT_MAX);
		if (got < 0)
			return got;
		uint8_t kind = r->data[r->pos];
		const uint8_t *p = r->data + r->pos + 1;
		uint64_t len;
		if (ap_get_varint(&p, r->data + r->len, &len)) {
			if (r->len - r->pos < 1 + AP_VARINT_MAX) {
				r->res->truncated = true;
				return 0;
			}
			return fail(r, AP_E_CORRUPT, "corrupt trace: bad record length at stream offset %llu",
			            (unsigned long long)(r->offset + r->pos));
		}
		if (kind == 0 || len > AP_MAX_RECORD)
			return fail(r, AP_E_CORRUPT, "corrupt trace: bad record (kind %u, length %llu) at stream offset %llu",
			            kind, (unsigned long long)len, (unsigned long long)(r->offset + r->pos));
		if (first && kind != AP_REC_HEADER)
			return fail(r, AP_E_CORRUPT, "corrupt trace: the first record is not the header");
		first = false;
		size_t head = (size_t)(p - (r->data + r->pos));
		got = need(r, head + len);
		if (got < 0)
			return got;
		if (got == 0) {
			r->res->truncated = true;
			return 0;
		}
		const uint8_t *payload = r->data + r->pos + head;
		r->pos += head + len;
		int err = record(r, kind, payload, (size_t)len);
		if (err)
			return err;
	}
}

/* Reads everything from the source set up in r, then releases what r holds. */
static int run(struct reader *r, bool ahead)
{
	int ret = 0;
	if (!r->raw) {
		r->src.ds = ZSTD_createDStream();
		if (!r->src.ds)
			ret = fail(r, AP_E_NOMEM, "out of memory");
		else if (ahead)
			ahead_start(r);
	}
	if (!ret)
		ret = read_magic(r);
	if (!ret)
		ret = read_records(r);
	if (!ret) {
		deliver(r, UINT64_MAX);
		if (r->fold)
			pairs_flush_all(r);
		if (r->last_ret != 0 || r->len != r->pos)
			r->res->truncated = true;
	}
	if (r->ahead)
		ahead_end(r);
	if (r->src.fd >= 0)
		close(r->src.fd);
	ZSTD_freeDStream(r->src.ds);
	free(r->src.in_owned);
	free(r->buf);
	AP_VEC_FREE(r->pending);
	free(r->scratch);
	AP_VEC_FREE(r->frames);
	AP_VEC_FREE(r->segs);
	AP_VEC_FREE(r->argv);
	AP_VEC_FREE(r->locals);
	free(r->sums);
	AP_VEC_FREE(r->marks);
	return ret;
}

int ap_read_trace(const char *path, const ap_reader_ops *ops, ap_read_result *res)
{
	memset(res, 0, sizeof(*res));
	struct reader r = {.path = path, .ops = ops, .res = res, .src.fd = -1, .next_local = AP_LOCAL_KEY_BASE};
	r.src.fd = open(path, O_RDONLY | O_CLOEXEC);
	if (r.src.fd < 0)
		return fail(&r, AP_E_IO, "%s", strerror(errno));
	r.src.in_owned = ap_xmalloc(ZSTD_DStreamInSize());
	r.src.in = r.src.in_owned;
	return run(&r, ops->decompress_ahead);
}

int ap_read_trace_mem(const char *name, const void *data, size_t len, bool compressed,
                      const ap_reader_ops *ops, ap_read_result *res)
{
	memset(res, 0, sizeof(*res));
	struct reader r = {.path = name, .ops = ops, .res = res, .src.fd = -1, .raw = !compressed,
	                   .next_local = AP_LOCAL_KEY_BASE};
	res->bytes_in = len;
	if (compressed) {
		r.src.in = data;
		r.src.in_len = len;
		r.src.in_eof = true;
		r.src.bytes_in = len;
	} else {
		/* The stream is read in place: data, len and pos describe it as fill() would. */
		r.data = data;
		r.len = len;
		res->bytes_out = len;
	}
	return run(&r, false);
}
