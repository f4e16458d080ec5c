/*
 * chunkenc.c: the writer's encoder of CHUNK records (format version 2: see allocprof/trace.h).
 *
 * Why columns: zstd models literals per block, and a row of (tag, stamp delta, address delta,
 * size, stack) mixes five alphabets; one column per field compresses a churn trace to less than
 * half. Why pairing: the address of a short-lived block is most of what is left (an allocator's
 * choice of address is close to random), and a block allocated and freed within one chunk needs
 * none: the free names it by its distance among the chunk's such allocations.
 */
#include "chunkenc.h"

#include <string.h>

_Atomic uint64_t ap_multi_since = UINT64_MAX;

/* The smallest event is 3 bytes (tag, stamp delta, address delta). */
#define MAX_EVENTS (AP_BUF_DATA / 3 + 1)
#define HASH_BITS 15 /* 32 Ki slots for at most ~6500 allocations: short probes */
#define HASH_SIZE (1u << HASH_BITS)
#define NONE UINT32_MAX

enum { F_LOCAL = 1, F_BACK = 2 };

struct ev {
	uint64_t stamp, size, lost_frees;
	uintptr_t addr;
	uint32_t stack;
	uint32_t ref; /* F_BACK: the allocation's index; F_LOCAL: its number among local ones */
	uint8_t tag, flags;
};

struct slot {
	uintptr_t addr;
	uint32_t gen;
	uint32_t alloc; /* index of the live allocation at addr, or NONE */
	uint32_t freed; /* index of the free that paired with it (for an UNFREE to undo), or NONE */
};

/* Static: only the writer encodes, under the writer lock; pages never touched cost nothing. */
static struct ev evs[MAX_EVENTS];
static struct slot table[HASH_SIZE];
static uint32_t gen;
/* Column buffers. A column holds at most what the row layout held for its fields, except back
 * references (up to 3 bytes where the address delta might have been 1): bounded by 3 per event. */
static uint8_t col_tags[MAX_EVENTS];
static uint8_t col_ds[AP_BUF_DATA], col_addr[AP_BUF_DATA], col_info[AP_BUF_DATA];
static uint8_t col_back[3 * MAX_EVENTS], col_other[AP_BUF_DATA];
static uint8_t col_head[9 * AP_VARINT_MAX];

/* The buffer is ours (written by the shim), so it is well formed: no checks. */
static inline uint64_t get(const uint8_t **p)
{
	uint64_t v = 0;
	ap_get_varint(p, *p + AP_VARINT_MAX, &v);
	return v;
}

static size_t decode(const struct ap_buf *b)
{
	const uint8_t *p = b->data, *end = b->data + b->len;
	uint64_t stamp = b->base_stamp;
	uintptr_t addr = 0;
	size_t n = 0;
	while (p < end && n < MAX_EVENTS) {
		struct ev *e = &evs[n++];
		e->tag = *p++;
		e->flags = 0;
		stamp += get(&p);
		e->stamp = stamp;
		switch (e->tag & 15) {
		case AP_EV_ALLOC:
			addr += (uintptr_t)ap_unzigzag(get(&p));
			e->addr = addr;
			e->size = get(&p);
			e->stack = (uint32_t)get(&p);
			break;
		case AP_EV_FREE:
		case AP_EV_UNFREE:
			addr += (uintptr_t)ap_unzigzag(get(&p));
			e->addr = addr;
			break;
		default: /* AP_EV_LOST */
			e->size = get(&p);
			e->lost_frees = get(&p);
			break;
		}
	}
	return n;
}

static inline struct slot *lookup(uintptr_t addr)
{
	uint32_t h = (uint32_t)(((uint64_t)addr * 0x9E3779B97F4A7C15ull) >> (64 - HASH_BITS));
	for (;;) {
		struct slot *s = &table[h];
		if (s->gen != gen || s->addr == addr)
			return s;
		h = (h + 1) & (HASH_SIZE - 1);
	}
}

/* Marks the allocations freed later in the chunk (F_LOCAL) and those frees (F_BACK), for frees
 * stamped before pair_before. Mirrors what a reader keyed by address does, so dropping the
 * addresses changes nothing it computes: a second allocation at a live address replaces the
 * first (which keeps its address), and a realloc's UNFREE revives a block, which then keeps its
 * address and its free too. */
static void pair(size_t n, uint64_t pair_before)
{
	if (++gen == 0) { /* wrapped: stale slots could look current */
		memset(table, 0, sizeof(table));
		gen = 1;
	}
	for (size_t i = 0; i < n && evs[i].stamp < pair_before; i++) {
		struct ev *e = &evs[i];
		int kind = e->tag & 15;
		if (kind == AP_EV_LOST)
			continue;
		struct slot *s = lookup(e->addr);
		if (s->gen != gen) {
			s->gen = gen;
			s->addr = e->addr;
			s->alloc = s->freed = NONE;
		}
		if (kind == AP_EV_ALLOC) {
			s->alloc = (uint32_t)i;
			s->freed = NONE;
		} else if (kind == AP_EV_FREE) {
			if (s->alloc != NONE) {
				evs[s->alloc].flags |= F_LOCAL;
				e->flags |= F_BACK;
				e->ref = s->alloc;
				s->freed = (uint32_t)i;
			}
			s->alloc = NONE;
		} else { /* UNFREE */
			if (s->freed != NONE) {
				evs[evs[s->freed].ref].flags &= (uint8_t)~F_LOCAL;
				evs[s->freed].flags &= (uint8_t)~F_BACK;
			}
			s->alloc = s->freed = NONE;
		}
	}
}

void ap_chunk_encode(const struct ap_buf *b, uint64_t pair_before, struct ap_chunk_out *out)
{
	size_t n = decode(b);
	if (pair_before > b->base_stamp)
		pair(n, pair_before);

	uint8_t *ds = col_ds, *ad = col_addr, *bk = col_back, *in = col_info, *ot = col_other;
	uint64_t stamp = b->base_stamp;
	uintptr_t last_addr = 0;
	uint32_t nlocal = 0;
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
		switch (kind) {
		case AP_EV_ALLOC:
			if (e->flags & F_LOCAL) {
				kind = AP_EV_ALLOC_LOCAL;
				e->ref = ++nlocal;
			} else {
				ad = ap_put_svarint(ad, (int64_t)(e->addr - last_addr));
				last_addr = e->addr;
			}
			in = ap_put_varint(in, e->size);
			in = ap_put_varint(in, e->stack);
			break;
		case AP_EV_FREE:
			if (e->flags & F_BACK) {
				kind = AP_EV_FREE_BACK;
				bk = ap_put_varint(bk, nlocal + 1 - evs[e->ref].ref);
				break;
			}
			/* fall through */
		case AP_EV_UNFREE:
			ad = ap_put_svarint(ad, (int64_t)(e->addr - last_addr));
			last_addr = e->addr;
			break;
		default:
			ot = ap_put_varint(ot, e->size);
			ot = ap_put_varint(ot, e->lost_frees);
			break;
		}
		col_tags[i] = (uint8_t)(tag | kind);
	}

	uint8_t *h = col_head;
	h = ap_put_varint(h, b->tid);
	h = ap_put_varint(h, b->seq);
	h = ap_put_varint(h, b->base_stamp);
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
	for (size_t i = 0; i < out->npieces; i++)
		out->total += out->len[i];
}
