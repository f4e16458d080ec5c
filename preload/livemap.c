/*
 * livemap.c: see livemap.h. Linear probing with backward-shift deletion keeps lookups to one or
 * two cache lines at a load of at most 1/2 and needs no tombstones, which a map that sees every
 * free of the program would otherwise fill with.
 */
#include "livemap.h"

#include <string.h>

#define MIN_SLOTS (1u << 12)

struct slot {
	uintptr_t addr; /* 0: empty */
	uint64_t val;
};

static struct slot *slots;
static size_t nslots, count;

static inline size_t home(uintptr_t addr, size_t mask)
{
	/* Fibonacci hashing: blocks of one size class are spaced by a constant stride, which a
	 * plain mask would pile into a few slots. */
	return (size_t)((addr * 0x9e3779b97f4a7c15ull) >> 32) & mask;
}

static bool grow(void)
{
	size_t n = nslots ? nslots * 2 : MIN_SLOTS;
	struct slot *s = ap_sys_map(n * sizeof(*s));
	if (!s)
		return false;
	size_t mask = n - 1;
	for (size_t i = 0; i < nslots; i++) {
		if (!slots[i].addr)
			continue;
		size_t h = home(slots[i].addr, mask);
		while (s[h].addr)
			h = (h + 1) & mask;
		s[h] = slots[i];
	}
	if (slots)
		ap_sys_unmap(slots, nslots * sizeof(*slots));
	slots = s;
	nslots = n;
	return true;
}

bool ap_livemap_put(uintptr_t addr, uint64_t val, bool force)
{
	if (count + 1 > nslots / 2) {
		/* At the largest size the load may reach 3/4 before the map says it is full, and
		 * nearly 1 when forced (probes get long, but only for such rare blocks). */
		bool room = nslots < AP_LIVEMAP_MAX_SLOTS ? grow() : false;
		if (!room && !(nslots && count + 1 <= (force ? nslots - 1 : nslots / 4 * 3)))
			return false;
	}
	size_t mask = nslots - 1, h = home(addr, mask);
	while (slots[h].addr && slots[h].addr != addr)
		h = (h + 1) & mask;
	if (!slots[h].addr) {
		slots[h].addr = addr;
		count++;
	}
	slots[h].val = val;
	return true;
}

bool ap_livemap_take(uintptr_t addr, uint64_t *val)
{
	if (!count)
		return false;
	size_t mask = nslots - 1, h = home(addr, mask);
	for (;;) {
		if (!slots[h].addr)
			return false;
		if (slots[h].addr == addr)
			break;
		h = (h + 1) & mask;
	}
	*val = slots[h].val;
	count--;
	/* Backward shift: pull later entries of the run into the hole when their home allows. */
	size_t hole = h;
	for (size_t i = (h + 1) & mask; slots[i].addr; i = (i + 1) & mask) {
		size_t k = home(slots[i].addr, mask);
		/* i's entry may move to hole when its home is not in (hole, i] (cyclically). */
		if ((i > hole && (k <= hole || k > i)) || (i < hole && k <= hole && k > i)) {
			slots[hole] = slots[i];
			hole = i;
		}
	}
	slots[hole].addr = 0;
	return true;
}

void ap_livemap_reset(void)
{
	if (slots)
		ap_sys_unmap(slots, nslots * sizeof(*slots));
	slots = NULL;
	nslots = count = 0;
}

size_t ap_livemap_count(void)
{
	return count;
}

size_t ap_livemap_bytes(void)
{
	return nslots * sizeof(struct slot);
}
