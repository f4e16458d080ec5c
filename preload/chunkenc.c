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
/* 8 Ki slots (128 KiB): a chunk has at most ~6500 allocations but seldom more than a few hundred
 * distinct addresses, and a small table stays in cache. Probes are bounded: an address that
 * finds no slot is not paired (its events keep their addresses), which is always correct. */
#define HASH_BITS 13
#define MAX_PROBES 16
#define HASH_SIZE (1u << HASH_BITS)
#define NONE UINT16_MAX
_Static_assert(MAX_EVENTS < NONE, "event indexes must fit in a slot");

enum { F_LOCAL = 1, F_BACK = 2 };

/* One decoded event: 32 bytes. LOST keeps its counts in size and addr. */
struct ev {
	uint64_t dstamp, size;
	uintptr_t addr;
	uint32_t stack;
	uint16_t ref; /* F_BACK: the allocation's index; F_LOCAL: its number among local ones */
	uint8_t tag, flags;
};

struct slot {
	uintptr_t addr;
	uint32_t gen;
	uint16_t alloc; /* index of the live allocation at addr, or NONE */
	uint16_t freed; /* index of the free that paired with it (for an UNFREE to undo), or NONE */
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

static inline struct slot *lookup(uintptr_t addr)
{
	/* Not a multiplicative hash: nearby blocks (most of a chunk's) keep to nearby slots, which
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

/* Marks the allocations freed later in the chunk (F_LOCAL) and those frees (F_BACK). Mirrors
 * what a reader keyed by address does, so dropping the addresses changes nothing it computes:
 * a second allocation at a live address replaces the first (which keeps its address), and a
 * realloc's UNFREE revives a block, which then keeps its address and its free too. */
static inline void pair(struct ev *e, uint16_t i)
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
		s->alloc = i;
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

/* Decodes the buffer's rows into evs, pairing allocations and frees stamped before
 * pair_before. Returns the number of events. */
static size_t decode(const struct ap_buf *b, uint64_t pair_before)
{
	const uint8_t *p = b->data, *end = b->data + b->len;
	uint64_t stamp = b->base_stamp;
	uintptr_t addr = 0;
	size_t n = 0;
	bool pairing = pair_before > stamp;
	if (pairing && ++gen == 0) { /* wrapped: stale slots could look current */
		memset(table, 0, sizeof(table));
		gen = 1;
	}
	while (p < end && n < MAX_EVENTS) {
		struct ev *e = &evs[n];
		e->tag = *p++;
		e->flags = 0;
		e->dstamp = get(&p);
		stamp += e->dstamp;
		if (AP_LIKELY((e->tag & 15) != AP_EV_LOST)) {
			addr += (uintptr_t)ap_unzigzag(get(&p));
			e->addr = addr;
			if ((e->tag & 15) == AP_EV_ALLOC) {
				e->size = get(&p);
				e->stack = (uint32_t)get(&p);
			}
			if (pairing) {
				if (stamp < pair_before)
					pair(e, (uint16_t)n);
				else
					pairing = false;
			}
		} else {
			e->size = get(&p);
			e->addr = get(&p);
		}
		n++;
	}
	return n;
}

void ap_chunk_encode(const struct ap_buf *b, uint64_t pair_before, struct ap_chunk_out *out)
{
	size_t n = decode(b, pair_before);

	uint8_t *ds = col_ds, *ad = col_addr, *bk = col_back, *in = col_info, *ot = col_other;
	uintptr_t last_addr = 0;
	uint32_t nlocal = 0;
	for (size_t i = 0; i < n; i++) {
		struct ev *e = &evs[i];
		unsigned kind = e->tag & 15, api = e->tag >> 4;
		uint64_t d = e->dstamp;
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
			ot = ap_put_varint(ot, e->addr);
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
