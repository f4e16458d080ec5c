/*
 * livemap: the writer's map from the address of a live block to its ordinal, the name the
 * trace gives a block whose allocation it writes without its address (format 3: see
 * allocprof/trace.h). Only the writer uses it, under the writer's lock.
 *
 * Open addressing with linear probing in mmap'd memory (never the traced allocator), grown by
 * doubling up to AP_LIVEMAP_MAX_SLOTS: past that the map says it is full, and the writer writes
 * the addresses of further allocations, which is always correct. So the shim's memory for it is
 * bounded (8 MiB) whatever the program's live set.
 */
#ifndef AP_LIVEMAP_H
#define AP_LIVEMAP_H

#include "shim.h"

#define AP_LIVEMAP_MAX_SLOTS (1u << 19)

/* Stored with an ordinal: the block was freed and brought back by an UNFREE (failed realloc). */
#define AP_LIVEMAP_REVIVED (1ull << 63)

struct ap_livemap_slot {
	uintptr_t addr; /* 0: empty */
	uint64_t val;
};

/* The map's state, for the inline functions below; only livemap.c changes its size. */
extern struct ap_livemap {
	struct ap_livemap_slot *slots;
	size_t mask, count, limit; /* limit: the count past which put grows the map or fails */
} ap_livemap AP_HIDDEN;

static inline size_t ap_livemap_home(uintptr_t addr, size_t mask)
{
	/* Fibonacci hashing: blocks of one size class are spaced by a constant stride, which a
	 * plain mask would pile into a few slots. */
	return (size_t)((addr * 0x9e3779b97f4a7c15ull) >> 32) & mask;
}

/* The put that must grow the map first, or may find it full. */
bool ap_livemap_put_slow(uintptr_t addr, uint64_t val, bool force) AP_HIDDEN;

/* Sets addr's entry, there being room for one more. */
static inline void ap_livemap_set_(struct ap_livemap *m, uintptr_t addr, uint64_t val)
{
	size_t h = ap_livemap_home(addr, m->mask);
	while (m->slots[h].addr && m->slots[h].addr != addr)
		h = (h + 1) & m->mask;
	m->count += !m->slots[h].addr;
	m->slots[h].addr = addr;
	m->slots[h].val = val;
}

/* Maps addr (non-zero) to val. Returns false, leaving the map as it was, when it is full; force
 * uses the room kept for blocks brought back by an UNFREE, whose allocation was written without
 * an address and so must stay in the map. A live entry for addr is replaced. */
static inline bool ap_livemap_put(uintptr_t addr, uint64_t val, bool force)
{
	struct ap_livemap *m = &ap_livemap;
	if (AP_UNLIKELY(m->count >= m->limit))
		return ap_livemap_put_slow(addr, val, force);
	ap_livemap_set_(m, addr, val);
	return true;
}

/* Removes addr's entry and stores its value in *val; false when there is none. */
static inline bool ap_livemap_take(uintptr_t addr, uint64_t *val)
{
	struct ap_livemap *m = &ap_livemap;
	if (!m->count)
		return false;
	size_t mask = m->mask, h = ap_livemap_home(addr, mask);
	for (;;) {
		if (!m->slots[h].addr)
			return false;
		if (m->slots[h].addr == addr)
			break;
		h = (h + 1) & mask;
	}
	*val = m->slots[h].val;
	m->count--;
	/* Backward shift: pull later entries of the run into the hole when their home allows
	 * (no tombstones, which a map that sees every free would fill with). */
	size_t hole = h;
	for (size_t i = (h + 1) & mask; m->slots[i].addr; i = (i + 1) & mask) {
		size_t k = ap_livemap_home(m->slots[i].addr, mask);
		/* i's entry may move to hole when its home is not in (hole, i] (cyclically). */
		if ((i > hole && (k <= hole || k > i)) || (i < hole && k <= hole && k > i)) {
			m->slots[hole] = m->slots[i];
			hole = i;
		}
	}
	m->slots[hole].addr = 0;
	return true;
}

/* Empties the map and gives back its memory (a fork child's new trace starts from nothing). */
void ap_livemap_reset(void) AP_HIDDEN;

#endif
