/*
 * chunkenc.c: the writer's encoder of CHUNK records (format version 3: see allocprof/trace.h).
 *
 * Why columns: zstd models literals per block, and a row of (tag, stamp delta, address delta,
 * size, stack) mixes five alphabets; one column per field compresses a churn trace to less than
 * half.
 *
 * Why ordinals: an allocator's choice of address is close to random, and addresses were most of
 * what was left (two-thread churn: 1.2 of 2.0 bytes per event; python3: 13.7 of 14.8 MB). So an
 * allocation is written without its address, and its free names the block by its ordinal (the
 * chunk's first ordinal plus the allocation's index in the chunk), as a difference from the
 * previous ordinal named in the chunk: a program that frees in allocation order, or in reverse,
 * writes runs of +1 or -1. A block freed in the chunk that allocated it is named more shortly
 * still, by its distance among the chunk's such allocations (ALLOC_LOCAL, FREE_BACK).
 *
 * The writer finds a free's ordinal in livemap by address. That is exact only if it sees the
 * events in stamp order across threads: a free must meet the block that was at its address when
 * it ran, not one another thread allocated there since. So a round's buffers are first resolved
 * together, their events merged in stamp order (resolve), then encoded one by one (encode); and
 * a round takes only the events stamped below its promise (the stamp its SYNC record promises:
 * every event below it is in this round or an earlier one). The rest, a thread's events after
 * the round began, wait for the next round, so no round ever meets an event older than one an
 * earlier round has resolved.
 */
#include "chunkenc.h"
#include "livemap.h"

#include <string.h>

/* The smallest event is 3 bytes (tag, stamp delta, address delta). */
#define MAX_EVENTS (AP_BUF_DATA / 3 + 1)
/* Ordinals per chunk: a chunk's first ordinal is a multiple, so that an ordinal tells its chunk
 * without counting its allocations first. */
#define ORD_SPAN (1ull << 14)
_Static_assert(MAX_EVENTS <= ORD_SPAN, "an event index must fit in a chunk's ordinals");

/* What resolve decides for each event (res[i]), for encode: the low 2 bits, and an ordinal
 * above them for frees and UNFREEs. */
enum {
	R_ORD = 0,   /* ALLOC: without address. FREE, UNFREE: names ordinal res >> 2 */
	R_ADDR = 1,  /* with its address */
	R_LOCAL = 2, /* ALLOC: freed in the same chunk (ALLOC_LOCAL). FREE: that free (FREE_BACK) */
	R_HELD = 3,  /* ALLOC, for now: in the chunk's own table, live (see local) */
};

/* One decoded event: 32 bytes. LOST keeps its counts in size and addr. */
struct ev {
	uint64_t dstamp, size;
	uintptr_t addr;
	uint32_t stack;
	uint16_t local; /* ALLOC_LOCAL: its number among the chunk's */
	uint8_t tag;
};

/* Static: only the writer encodes, under the writer lock; pages never touched cost nothing. */
static struct ev evs[MAX_EVENTS];
/* Column buffers. A column holds at most what the row layout held for its fields, except the
 * backs, up to 10 bytes where the address delta might have been 1. */
static uint8_t col_tags[MAX_EVENTS];
static uint8_t col_ds[AP_BUF_DATA], col_addr[AP_BUF_DATA], col_info[AP_BUF_DATA];
static uint8_t col_back[AP_VARINT_MAX * MAX_EVENTS], col_other[AP_BUF_DATA];
static uint8_t col_head[10 * AP_VARINT_MAX];

static uint64_t next_ord; /* the next chunk's first ordinal */

static uint64_t promise; /* this round's: events stamped below it are resolved */

/* The last free by realloc of each thread (by tid, direct-mapped), for its UNFREE if the realloc
 * fails: the two may be in different chunks. */
#define REFREE_SLOTS 256
static struct refree {
	uintptr_t addr;
	uint64_t val;
	uint32_t tid;
} refree[REFREE_SLOTS];

/* A buffer resolved alone (a round of one thread's buffers) keeps its allocations in a small table
 * of its own first, which stays in cache and needs no deletion (generations): most blocks of a
 * churn are freed in the chunk that allocated them, and never need to enter livemap. The
 * survivors enter it at the end of the chunk. Probes are bounded: an allocation that finds no
 * slot enters livemap at once. The table has precedence: its blocks are the latest. (Not for a
 * merged round: 16 threads' allocations overflow such a table, and its probes cost more than
 * livemap's; measured.) */
#define LOCAL_BITS 13
#define LOCAL_SIZE (1u << LOCAL_BITS)
#define LOCAL_PROBES 16
#define NO_ORD UINT64_MAX
static struct lslot {
	uintptr_t addr;
	uint64_t ord; /* the live allocation's at addr, or NO_ORD */
	uint32_t gen;
} ltab[LOCAL_SIZE];
static uint32_t lgen = 1;

/* The buffers are ours (written by the shim), so they are well formed: no bounds checks. Most
 * fields are one byte. */
static inline uint64_t get(const uint8_t **pp)
{
	const uint8_t *p = *pp;
	uint64_t v = *p++;
	if (AP_UNLIKELY(v & 0x80)) {
		v &= 0x7f;
		for (unsigned shift = 7;; shift += 7) {
			uint64_t b = *p++;
			v |= (b & 0x7f) << shift;
			if (!(b & 0x80))
				break;
		}
	}
	*pp = p;
	return v;
}

static bool is_realloc(unsigned api)
{
	return api == AP_API_REALLOC || api == AP_API_REALLOCARRAY;
}

/* ---- resolve: a round's events in stamp order ------------------------------------------------- */

struct cursor {
	const uint8_t *p, *end; /* the next event's tag; end of the rows */
	const uint8_t *after;   /* past the next event's stamp delta (peek) */
	uint64_t stamp;         /* the last event's; next_stamp: the next one's */
	uint64_t next_stamp;
	uintptr_t addr;
	uint64_t first_ord;
	uint64_t *res;
	uint32_t i, nres, tid;
};

static inline void peek(struct cursor *c)
{
	if (c->p < c->end) {
		const uint8_t *q = c->p + 1;
		c->next_stamp = c->stamp + get(&q);
		c->after = q;
	}
}

/* The cursor has an event for this round (and room for its result: a buffer that held more
 * events than it counted would leave the rest to the next round, which counts them again). */
static inline bool more(const struct cursor *c)
{
	return c->p < c->end && c->next_stamp < promise && c->i < c->nres;
}

/* A block allocated at addr enters livemap: R_ORD, or R_ADDR when the map is full. A live entry
 * for the address is replaced: that block's free was not recorded (a free the shim could not
 * see), and it stays live for the reader. */
static inline uint64_t livemap_enter(uintptr_t addr, uint64_t ord)
{
	if (AP_LIKELY(ap_livemap_put(addr, ord, false)))
		return R_ORD;
	/* Written with its address, so its free must not find an older block's entry. */
	uint64_t stale;
	ap_livemap_take(addr, &stale);
	return R_ADDR;
}

static inline uint64_t on_alloc(struct cursor *c)
{
	return livemap_enter(c->addr, c->first_ord + c->i);
}

static inline __attribute__((always_inline)) uint64_t on_free(struct cursor *c, unsigned api)
{
	uint64_t v;
	if (!ap_livemap_take(c->addr, &v))
		return R_ADDR; /* a block written with its address, or one allocated before tracing */
	if (is_realloc(api))
		refree[c->tid % REFREE_SLOTS] = (struct refree){.addr = c->addr, .val = v, .tid = c->tid};
	uint64_t ord = v & ~AP_LIVEMAP_REVIVED;
	if (!(v & AP_LIVEMAP_REVIVED) && ord - c->first_ord < ORD_SPAN) {
		c->res[ord - c->first_ord] = R_LOCAL;
		return (ord - c->first_ord) << 2 | R_LOCAL;
	}
	return ord << 2 | R_ORD;
}

static inline struct lslot *local_slot(uintptr_t addr)
{
	uint32_t h = (uint32_t)((addr >> 4) ^ (addr >> 12) ^ (addr >> 22)) & (LOCAL_SIZE - 1);
	for (int probes = 0; probes < LOCAL_PROBES; probes++) {
		struct lslot *s = &ltab[h];
		if (s->gen != lgen || s->addr == addr)
			return s;
		h = (h + 1) & (LOCAL_SIZE - 1);
	}
	return NULL;
}

static inline uint64_t on_alloc_local(struct cursor *c)
{
	struct lslot *s = local_slot(c->addr);
	if (!s)
		return on_alloc(c);
	/* A block still held at this address (its free unseen) is replaced, as in livemap. */
	s->addr = c->addr;
	s->gen = lgen;
	s->ord = c->first_ord + c->i;
	return R_HELD;
}

static inline uint64_t on_free_local(struct cursor *c, unsigned api)
{
	struct lslot *s = local_slot(c->addr);
	if (!s || s->gen != lgen || s->ord == NO_ORD)
		return on_free(c, api);
	uint64_t i = s->ord - c->first_ord; /* the table holds this chunk's allocations only */
	if (is_realloc(api))
		refree[c->tid % REFREE_SLOTS] = (struct refree){.addr = c->addr, .val = s->ord, .tid = c->tid};
	s->ord = NO_ORD;
	c->res[i] = R_LOCAL;
	return i << 2 | R_LOCAL;
}

/* The end of c's chunk: its blocks the table still holds enter livemap. */
static void local_end(struct cursor *c)
{
	for (size_t h = 0; h < LOCAL_SIZE; h++) {
		struct lslot *s = &ltab[h];
		if (s->gen == lgen && s->ord != NO_ORD)
			c->res[s->ord - c->first_ord] = livemap_enter(s->addr, s->ord);
	}
	if (++lgen == 0) { /* wrapped: stale slots could look current */
		memset(ltab, 0, sizeof(ltab));
		lgen = 1;
	}
}

static uint64_t on_unfree(struct cursor *c)
{
	struct refree *f = &refree[c->tid % REFREE_SLOTS];
	if (f->tid != c->tid || f->addr != c->addr || !f->addr)
		return R_ADDR;
	f->addr = 0;
	/* Brought back: its free from now on names its ordinal, never FREE_BACK (the reader has
	 * crossed the block off the chunk's ALLOC_LOCALs). Forced: it must stay in the map. */
	uint64_t ord = f->val & ~AP_LIVEMAP_REVIVED;
	ap_livemap_put(c->addr, ord | AP_LIVEMAP_REVIVED, true);
	return ord << 2 | R_ORD;
}

/* Resolves the event at c and moves past it; with e, also keeps its fields there (so that encode
 * need not decode the rows again). */
static inline __attribute__((always_inline)) void step(struct cursor *c, struct ev *e, bool local)
{
	uint8_t tag = *c->p;
	unsigned kind = tag & 15;
	uint64_t d = c->next_stamp - c->stamp; /* peek read it */
	c->p = c->after;
	c->stamp = c->next_stamp;
	uint64_t r = R_ADDR;
	if (e) {
		e->tag = tag;
		e->dstamp = d;
	}
	if (AP_LIKELY(kind != AP_EV_LOST)) {
		c->addr += (uintptr_t)ap_unzigzag(get(&c->p));
		if (e)
			e->addr = c->addr;
		if (kind == AP_EV_ALLOC) {
			uint64_t size = get(&c->p), stack = get(&c->p);
			if (e) {
				e->size = size;
				e->stack = (uint32_t)stack;
			}
			r = local ? on_alloc_local(c) : on_alloc(c);
		} else if (kind == AP_EV_FREE) {
			r = local ? on_free_local(c, tag >> 4) : on_free(c, tag >> 4);
		} else {
			r = on_unfree(c);
		}
	} else {
		uint64_t a = get(&c->p), f = get(&c->p);
		if (e) {
			e->size = a;
			e->addr = f;
		}
	}
	c->res[c->i++] = r;
	peek(c);
}

/* Earlier stamp first; between equal stamps (threads reading the TSC in the same tick), the
 * buffer written first. */
static inline bool before(const struct cursor *a, const struct cursor *b)
{
	return a->next_stamp < b->next_stamp || (a->next_stamp == b->next_stamp && a < b);
}

static void sift_down(struct cursor **heap, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, m = i;
		if (l < n && before(heap[l], heap[m]))
			m = l;
		if (l + 1 < n && before(heap[l + 1], heap[m]))
			m = l + 1;
		if (m == i)
			return;
		struct cursor *t = heap[i];
		heap[i] = heap[m];
		heap[m] = t;
		i = m;
	}
}

static void resolve(struct cursor **heap, size_t n)
{
	for (size_t i = n / 2; i-- > 0;)
		sift_down(heap, n, i);
	while (n > 1) {
		/* The first buffer's events up to the next buffer's first (the root's children
		 * hold the runner-up) go without touching the heap: a thread's run of events. */
		struct cursor *c = heap[0];
		uint64_t lim = heap[1]->next_stamp;
		if (n > 2 && heap[2]->next_stamp < lim)
			lim = heap[2]->next_stamp;
		do
			step(c, NULL, false);
		while (more(c) && c->next_stamp < lim);
		if (!more(c))
			heap[0] = heap[--n];
		sift_down(heap, n, 0);
	}
	if (n == 1)
		while (more(heap[0]))
			step(heap[0], NULL, false);
}

/* ---- encode: one buffer, its events' fates decided ---------------------------------------------- */

/* Encodes b's events: its first len bytes of rows when len, else its first n events, decoded in
 * evs. */
static inline __attribute__((always_inline)) void
encode(const struct ap_buf *b, size_t n, uint64_t first_ord, const uint64_t *res, struct ap_chunk_out *out,
      size_t len)
{
	out->allocs = out->frees = 0;
	uint8_t *ds = col_ds, *ad = col_addr, *bk = col_back, *in = col_info, *ot = col_other;
	uintptr_t last_addr = 0, row_addr = 0;
	uint64_t last_ord = first_ord;
	uint32_t nlocal = 0;
	const uint8_t *p = b->data, *end = b->data + len;
	size_t i;
	for (i = 0; len ? p < end : i < n; i++) {
		struct ev row = {0}, *e = &evs[i];
		if (len) { /* straight from the rows (decode, without storing them) */
			e = &row;
			row.tag = *p++;
			row.dstamp = get(&p);
			if (AP_LIKELY((row.tag & 15) != AP_EV_LOST)) {
				row_addr += (uintptr_t)ap_unzigzag(get(&p));
				row.addr = row_addr;
				if ((row.tag & 15) == AP_EV_ALLOC) {
					row.size = get(&p);
					row.stack = (uint32_t)get(&p);
				}
			} else {
				row.size = get(&p);
				row.addr = get(&p);
			}
		}
		unsigned kind = e->tag & 15, api = e->tag >> 4;
		uint64_t r = res[i];
		unsigned tag = api << 4;
		if (e->dstamp == 1)
			tag |= AP_TAG_STEP1;
		else
			ds = ap_put_varint(ds, e->dstamp);
		out->allocs += kind == AP_EV_ALLOC;
		out->frees += kind == AP_EV_FREE ? 1 : kind == AP_EV_UNFREE ? -1 : 0;
		switch (kind) {
		case AP_EV_ALLOC:
			if (r == R_LOCAL) {
				kind = AP_EV_ALLOC_LOCAL;
				evs[i].local = (uint16_t)++nlocal;
			} else if (r == R_ORD) {
				kind = AP_EV_ALLOC_ORD;
			} else {
				ad = ap_put_svarint(ad, (int64_t)(e->addr - last_addr));
				last_addr = e->addr;
			}
			in = ap_put_varint(in, e->size);
			in = ap_put_varint(in, e->stack);
			break;
		case AP_EV_FREE:
			if ((r & 3) == R_LOCAL) {
				/* r names the allocation's index: its number among the ALLOC_LOCALs. */
				kind = AP_EV_FREE_BACK;
				bk = ap_put_varint(bk, nlocal + 1 - evs[r >> 2].local);
			} else if ((r & 3) == R_ORD) {
				kind = AP_EV_FREE_ORD;
				bk = ap_put_svarint(bk, (int64_t)((r >> 2) - last_ord));
				last_ord = r >> 2;
			} else {
				ad = ap_put_svarint(ad, (int64_t)(e->addr - last_addr));
				last_addr = e->addr;
			}
			break;
		case AP_EV_UNFREE:
			if ((r & 3) == R_ORD) {
				bk = ap_put_varint(bk, ap_zigzag((int64_t)((r >> 2) - last_ord)) + 1);
				last_ord = r >> 2;
			} else {
				bk = ap_put_varint(bk, 0);
				ad = ap_put_svarint(ad, (int64_t)(e->addr - last_addr));
				last_addr = e->addr;
			}
			break;
		default:
			ot = ap_put_varint(ot, e->size);
			ot = ap_put_varint(ot, e->addr);
			break;
		}
		col_tags[i] = (uint8_t)(tag | kind);
	}
	n = i;

	uint8_t *h = col_head;
	h = ap_put_varint(h, b->tid);
	h = ap_put_varint(h, b->seq);
	h = ap_put_varint(h, b->base_stamp);
	h = ap_put_varint(h, first_ord);
	h = ap_put_varint(h, n);
	uint8_t *ends[5] = {ds, ad, bk, in, ot};
	const uint8_t *starts[5] = {col_ds, col_addr, col_back, col_info, col_other};
	for (int c = 0; c < 5; c++)
		h = ap_put_varint(h, (uint64_t)(ends[c] - starts[c]));
	out->npieces = 0;
	out->total = 0;
	out->piece[out->npieces] = col_head;
	out->len[out->npieces++] = (size_t)(h - col_head);
	out->piece[out->npieces] = col_tags;
	out->len[out->npieces++] = n;
	for (int c = 0; c < 5; c++) {
		out->piece[out->npieces] = starts[c];
		out->len[out->npieces++] = (size_t)(ends[c] - starts[c]);
	}
	for (size_t k = 0; k < out->npieces; k++)
		out->total += out->len[k];
}

/* ---- the round ----------------------------------------------------------------------------------- */

/* Workspace for a round: cursors, the heap, and a result per event. Grown, never shrunk: as big as
 * the largest merged round, about 3 MiB at most (48 full buffers and the threads' current ones). */
static void *work;
static size_t work_size;

static bool reserve(size_t size)
{
	if (size <= work_size)
		return true;
	size_t n = (size + (256 << 10) - 1) & ~(size_t)((256 << 10) - 1); /* little more than asked */
	void *w = ap_sys_map(n);
	if (!w)
		return false;
	if (work)
		ap_sys_unmap(work, work_size);
	work = w;
	work_size = n;
	return true;
}

/* Makes b hold only its events from c->p on: a buffer of its own, as the shim would have begun it
 * (the first event's stamp from base_stamp, its address from 0). */
static void keep_rest(struct ap_buf *b, const struct cursor *c)
{
	static uint8_t tmp[AP_BUF_DATA];
	const uint8_t *p = c->p;
	uint8_t *q = tmp;
	uintptr_t addr = c->addr, last = 0;
	uint32_t n = 0;
	while (p < c->end) {
		uint8_t tag = *p++;
		n++;
		*q++ = tag;
		q = ap_put_varint(q, get(&p));
		if ((tag & 15) != AP_EV_LOST) {
			addr += (uintptr_t)ap_unzigzag(get(&p));
			q = ap_put_svarint(q, (int64_t)(addr - last));
			last = addr;
			if ((tag & 15) != AP_EV_ALLOC)
				continue;
		}
		q = ap_put_varint(q, get(&p));
		q = ap_put_varint(q, get(&p));
	}
	b->len = (size_t)(q - tmp);
	memcpy(b->data, tmp, b->len);
	b->base_stamp = c->stamp;
	b->n_events = n;
}

/* The round's buffers follow one another in time (one thread's, mostly): each can be resolved
 * and encoded alone, in list order, decoded once. */
static bool in_turn(const struct ap_buf *list)
{
	for (const struct ap_buf *b = list; b && b->next; b = b->next) {
		/* The next buffer's first stamp, from its first row (tag, then dstamp). */
		const struct ap_buf *n = b->next;
		const uint8_t *q = n->data + 1;
		if (n->len && b->len && b->last_stamp >= n->base_stamp + get(&q))
			return false;
	}
	return true;
}

/* Encodes what c resolved of b, then keeps b's rest (carry) or gives b up (done). */
static void finish(struct ap_buf *b, const struct cursor *c, size_t n, bool decoded, ap_chunk_sink *sink,
                   void *ctx, struct ap_buf ***keep_tail, struct ap_buf ***done_tail)
{
	size_t len = (size_t)(c->p - b->data);
	if (len) {
		struct ap_chunk_out out;
		if (decoded)
			encode(b, n, c->first_ord, c->res, &out, 0);
		else
			encode(b, 0, c->first_ord, c->res, &out, len);
		sink(ctx, &out);
	}
	b->next = NULL;
	if (c->p < c->end) {
		keep_rest(b, c);
		**keep_tail = b;
		*keep_tail = &b->next;
	} else {
		**done_tail = b;
		*done_tail = &b->next;
	}
}

struct ap_buf *ap_chunk_round(struct ap_buf *list, uint64_t promise_, ap_chunk_sink *sink, void *ctx,
                              struct ap_buf **done)
{
	static uint64_t res1[MAX_EVENTS];
	struct ap_buf *keep = NULL, **keep_tail = &keep, **done_tail = done;
	*done = NULL;
	promise = promise_;
	size_t nb = 0, nev = 0;
	for (const struct ap_buf *b = list; b; b = b->next) {
		nb++;
		nev += b->n_events;
	}
	size_t need = nb * (sizeof(struct cursor) + sizeof(struct cursor *)) + nev * sizeof(uint64_t);
	bool sequential = in_turn(list);
	if (!sequential && !reserve(need)) {
		/* No memory for the round's workspace: each buffer is resolved alone. Exact while
		 * one thread records; with more, a free may be taken for that of a block another
		 * thread allocated at the same address later in the round. */
		AP_WARN_ONCE("out of memory in the writer; with several threads, frees may be "
		             "matched to the wrong block from now on");
		sequential = true;
	}
	if (sequential) {
		for (struct ap_buf *b = list, *next; b; b = next) {
			next = b->next;
			struct cursor c = {.p = b->data, .end = b->data + b->len, .stamp = b->base_stamp,
			                   .first_ord = next_ord, .res = res1, .nres = MAX_EVENTS, .tid = b->tid};
			next_ord += ORD_SPAN;
			peek(&c);
			while (more(&c))
				step(&c, &evs[c.i], true);
			local_end(&c);
			finish(b, &c, c.i, true, sink, ctx, &keep_tail, &done_tail);
		}
		return keep;
	}
	struct cursor *cur = work;
	struct cursor **heap = (struct cursor **)(cur + nb);
	uint64_t *res = (uint64_t *)(heap + nb);
	size_t k = 0, nh = 0;
	for (struct ap_buf *b = list; b; b = b->next, k++) {
		struct cursor *c = &cur[k];
		*c = (struct cursor){.p = b->data, .end = b->data + b->len, .stamp = b->base_stamp,
		                     .first_ord = next_ord, .res = res, .nres = b->n_events, .tid = b->tid};
		next_ord += ORD_SPAN;
		res += b->n_events;
		peek(c);
		if (more(c))
			heap[nh++] = c;
	}
	resolve(heap, nh);
	k = 0;
	for (struct ap_buf *b = list, *next; b; b = next, k++) {
		next = b->next;
		finish(b, &cur[k], 0, false, sink, ctx, &keep_tail, &done_tail);
	}
	return keep;
}

void ap_chunk_reset(void)
{
	ap_livemap_reset();
	next_ord = 0;
	memset(refree, 0, sizeof(refree));
	memset(ltab, 0, sizeof(ltab));
	lgen = 1;
}
