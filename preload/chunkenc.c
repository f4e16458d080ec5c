/*
 * chunkenc.c: the writer's encoder of CHUNK records (format version 3: see allocprof/trace.h).
 *
 * Why merge threads: the address of a block is most of what a trace costs (an allocator's
 * choice of address is close to random), and a block allocated and freed close together needs
 * none: the free names the allocation by its position instead. That is only exact if nothing
 * else happened to the address in between, and in a program with threads the event in between
 * can be another thread's (a cross-thread free, then the allocator handing the address out
 * again). In stamp order, every thread's events of the round in one sequence, the encoder sees
 * them all. Why columns: zstd models literals per block, and a row of (tag, stamp delta,
 * address delta, size, stack) mixes five alphabets; one column per field compresses to less
 * than half.
 */
#include "chunkenc.h"

#include <string.h>

/* Events per record. A round seldom holds more (the writer wakes at each full buffer, about
 * 3000 events); a larger one is cut into several records, pairs only within one. The static
 * workspace below is about 1 MiB at this size, of which a process touches what its rounds use. */
#define SEG_MAX 16384
/* 32 Ki slots (512 KiB), twice the events of a record. Probes are bounded: an address that
 * finds no slot is not paired (its events keep their addresses), which is always correct. */
#define HASH_BITS 15
#define MAX_PROBES 16
#define HASH_SIZE (1u << HASH_BITS)
#define NONE UINT16_MAX
_Static_assert(SEG_MAX < NONE, "event indexes must fit in a slot");

enum { F_LOCAL = 1, F_BACK = 2 };

/* One decoded event: 40 bytes. LOST keeps its counts in size and addr. */
struct ev {
	uint64_t stamp, size;
	uintptr_t addr;
	uint32_t stack, tid;
	uint16_t ref; /* F_BACK: the allocation's index; F_LOCAL: its number among local ones */
	uint8_t tag, flags;
};

struct slot {
	uintptr_t addr;
	uint32_t gen;
	uint16_t alloc; /* index of the pairable live allocation at addr, or NONE */
	uint16_t freed; /* index of the free that paired with it (for an UNFREE to undo), or NONE */
};

/* A buffer being merged: its rows from p on, and its next event, decoded. */
struct cursor {
	const uint8_t *p, *end;
	uintptr_t addr;
	uint32_t tid;
	struct ev next;
};

/* Static: only the writer encodes, under the writer lock; pages never touched cost nothing. */
static struct ev evs[SEG_MAX];
static struct slot table[HASH_SIZE];
static uint32_t gen;
/* The largest stamp written in earlier records: an allocation stamped at or below it may have
 * events of earlier rounds after it, which this round cannot see. */
static uint64_t written_max;
/* Column buffers, each bounded by its field's largest encoding times SEG_MAX. A back reference
 * is a zigzag'ed difference of two indexes below SEG_MAX: 3 bytes at most. A thread run is a tid
 * and a count. */
static uint8_t col_tags[SEG_MAX];
static uint8_t col_ds[SEG_MAX * AP_VARINT_MAX], col_addr[SEG_MAX * AP_VARINT_MAX];
static uint8_t col_info[SEG_MAX * 2 * AP_VARINT_MAX], col_other[SEG_MAX * 2 * AP_VARINT_MAX];
static uint8_t col_back[SEG_MAX * 3], col_runs[SEG_MAX * 8];
static uint8_t col_head[8 * AP_VARINT_MAX];

/* The buffer is ours (written by the shim), so it is well formed: no bounds checks. Most
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

/* Decodes the cursor's next row into c->next; false at the end of the buffer. */
static inline bool advance(struct cursor *c)
{
	if (c->p >= c->end)
		return false;
	struct ev *e = &c->next;
	const uint8_t *p = c->p;
	e->tag = *p++;
	e->flags = 0;
	e->tid = c->tid;
	e->stamp += get(&p);
	if (AP_LIKELY((e->tag & 15) != AP_EV_LOST)) {
		c->addr += (uintptr_t)ap_unzigzag(get(&p));
		e->addr = c->addr;
		if ((e->tag & 15) == AP_EV_ALLOC) {
			e->size = get(&p);
			e->stack = (uint32_t)get(&p);
		}
	} else {
		e->size = get(&p);
		e->addr = get(&p);
	}
	c->p = p;
	return true;
}

static inline struct slot *lookup(uintptr_t addr)
{
	/* Not a multiplicative hash: nearby blocks (most of a record's) keep to nearby slots, which
	 * stay in cache; the higher bits folded in spread page-aligned blocks. */
	uint32_t h = (uint32_t)((addr >> 4) ^ (addr >> 12) ^ (addr >> 22)) & (HASH_SIZE - 1);
	for (int probes = 0; probes < MAX_PROBES; probes++) {
		struct slot *s = &table[h];
		if (s->gen != gen || s->addr == addr)
			return s;
		h = (h + 1) & (HASH_SIZE - 1);
	}
	return NULL;
}

/* Marks the allocations freed later in the record (F_LOCAL) and those frees (F_BACK). Mirrors
 * what a reader keyed by address does, so dropping the addresses changes nothing it computes:
 * a second allocation at a live address replaces the first (which keeps its address), and a
 * realloc's UNFREE revives a block, which then keeps its address and its free too. */
static inline void pair(struct ev *e, uint16_t i, bool pairable)
{
	int kind = e->tag & 15;
	struct slot *s = lookup(e->addr);
	if (!s)
		return;
	if (s->gen != gen) {
		s->gen = gen;
		s->addr = e->addr;
		s->alloc = s->freed = NONE;
	}
	if (kind == AP_EV_ALLOC) {
		s->alloc = pairable ? i : NONE;
		s->freed = NONE;
	} else if (kind == AP_EV_FREE) {
		if (s->alloc != NONE) {
			evs[s->alloc].flags = F_LOCAL;
			e->flags = F_BACK;
			e->ref = s->alloc;
			s->freed = i;
		}
		s->alloc = NONE;
	} else { /* UNFREE */
		if (s->freed != NONE) {
			evs[evs[s->freed].ref].flags = 0;
			evs[s->freed].flags = 0;
		}
		s->alloc = s->freed = NONE;
	}
}

/* Pairs and encodes evs[0..n), in stamp order, as one record. */
static void encode(size_t n, uint64_t pair_before, ap_chunk_sink sink)
{
	if (++gen == 0) { /* wrapped: stale slots could look current */
		memset(table, 0, sizeof(table));
		gen = 1;
	}
	uint64_t after = written_max;
	for (size_t i = 0; i < n; i++) {
		struct ev *e = &evs[i];
		if (e->stamp >= pair_before)
			break; /* in stamp order: no later free can be paired either */
		if ((e->tag & 15) != AP_EV_LOST)
			pair(e, (uint16_t)i, e->stamp > after);
	}

	uint8_t *ds = col_ds, *ad = col_addr, *bk = col_back, *in = col_info, *ot = col_other;
	uint8_t *ru = col_runs;
	uintptr_t last_addr = 0;
	uint32_t nlocal = 0, run_tid = evs[0].tid, run_len = 0;
	int64_t last_back = -1;
	uint64_t base = evs[0].stamp, stamp = base;
	for (size_t i = 0; i < n; i++) {
		struct ev *e = &evs[i];
		unsigned kind = e->tag & 15, api = e->tag >> 4;
		uint64_t d = e->stamp - stamp;
		stamp = e->stamp;
		unsigned tag = api << 4;
		if (d == 1)
			tag |= AP_TAG_STEP1;
		else
			ds = ap_put_varint(ds, d);
		if (e->tid != run_tid) {
			ru = ap_put_varint(ru, run_tid);
			ru = ap_put_varint(ru, run_len);
			run_tid = e->tid;
			run_len = 0;
		}
		run_len++;
		switch (kind) {
		case AP_EV_ALLOC:
			if (e->flags & F_LOCAL) {
				kind = AP_EV_ALLOC_LOCAL;
				e->ref = (uint16_t)nlocal++;
			} else {
				ad = ap_put_svarint(ad, (int64_t)(e->addr - last_addr));
				last_addr = e->addr;
			}
			in = ap_put_varint(in, e->size);
			in = ap_put_varint(in, e->stack);
			break;
		case AP_EV_FREE:
			if (e->flags & F_BACK) {
				/* Relative to the allocation after the one the last such free named: 0 when
				 * blocks are freed in the order they were allocated (a queue between threads,
				 * a batch), small when close to it. */
				int64_t local = evs[e->ref].ref;
				kind = AP_EV_FREE_BACK;
				bk = ap_put_svarint(bk, local - (last_back + 1));
				last_back = local;
				break;
			}
			/* fall through */
		case AP_EV_UNFREE:
			ad = ap_put_svarint(ad, (int64_t)(e->addr - last_addr));
			last_addr = e->addr;
			break;
		default:
			ot = ap_put_varint(ot, e->size);
			ot = ap_put_varint(ot, e->addr);
			break;
		}
		col_tags[i] = (uint8_t)(tag | kind);
	}
	ru = ap_put_varint(ru, run_tid);
	ru = ap_put_varint(ru, run_len);
	if (stamp > written_max)
		written_max = stamp;

	uint8_t *h = col_head;
	h = ap_put_varint(h, base);
	h = ap_put_varint(h, n);
	uint8_t *ends[6] = {ds, ad, bk, in, ot, ru};
	const uint8_t *starts[6] = {col_ds, col_addr, col_back, col_info, col_other, col_runs};
	for (int c = 0; c < 6; c++)
		h = ap_put_varint(h, (uint64_t)(ends[c] - starts[c]));
	struct ap_chunk_out out = {.npieces = 0, .total = 0};
	out.piece[out.npieces] = col_head;
	out.len[out.npieces++] = (size_t)(h - col_head);
	out.piece[out.npieces] = col_tags;
	out.len[out.npieces++] = n;
	for (int c = 0; c < 6; c++) {
		out.piece[out.npieces] = starts[c];
		out.len[out.npieces++] = (size_t)(ends[c] - starts[c]);
	}
	for (size_t i = 0; i < out.npieces; i++)
		out.total += out.len[i];
	sink(&out);
}

void ap_round_encode(struct ap_buf *const *bufs, size_t nbufs, uint64_t pair_before, ap_chunk_sink sink)
{
	/* A round has a few buffers: one per thread at most, plus the queue's (at most 16). */
	struct cursor cur[64];
	size_t ncur = 0, n = 0;
	if (nbufs > 64)
		pair_before = 0; /* merged in batches: a batch cannot see the next one's events */
	while (nbufs) {
		/* Merged a batch of buffers at a time (a round of more than 64 threads), each into
		 * records of its own. */
		ncur = 0;
		for (; nbufs && ncur < 64; nbufs--, bufs++) {
			struct cursor *c = &cur[ncur];
			c->p = (*bufs)->data;
			c->end = c->p + (*bufs)->len;
			c->addr = 0;
			c->tid = (*bufs)->tid;
			c->next.stamp = (*bufs)->base_stamp;
			if (advance(c))
				ncur++;
		}
		while (ncur) {
			/* The smallest next stamp; a linear scan: there are few cursors. */
			size_t m = 0;
			for (size_t i = 1; i < ncur; i++)
				if (cur[i].next.stamp < cur[m].next.stamp)
					m = i;
			evs[n++] = cur[m].next;
			if (!advance(&cur[m]))
				cur[m] = cur[--ncur];
			if (n == SEG_MAX) {
				encode(n, pair_before, sink);
				n = 0;
			}
		}
		if (n) {
			encode(n, pair_before, sink);
			n = 0;
		}
	}
}
