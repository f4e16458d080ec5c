/*
 * livemap.c: see livemap.h; the lookups are inline there. Linear probing with backward-shift
 * deletion keeps a lookup to one or two cache lines at a load of at most 1/2.
 */
#include "livemap.h"

#define MIN_SLOTS (1u << 12)

struct ap_livemap ap_livemap;

static size_t nslots(void)
{
	return ap_livemap.slots ? ap_livemap.mask + 1 : 0;
}

static bool grow(void)
{
	struct ap_livemap *m = &ap_livemap;
	size_t old = nslots(), n = old ? old * 2 : MIN_SLOTS;
	struct ap_livemap_slot *s = ap_sys_map(n * sizeof(*s));
	if (!s)
		return false;
	size_t mask = n - 1;
	for (size_t i = 0; i < old; i++) {
		if (!m->slots[i].addr)
			continue;
		size_t h = ap_livemap_home(m->slots[i].addr, mask);
		while (s[h].addr)
			h = (h + 1) & mask;
		s[h] = m->slots[i];
	}
	if (m->slots)
		ap_sys_unmap(m->slots, old * sizeof(*m->slots));
	m->slots = s;
	m->mask = mask;
	/* Past the largest size the load may reach 3/4 before the map says it is full. */
	m->limit = n < AP_LIVEMAP_MAX_SLOTS ? n / 2 : n / 4 * 3;
	return true;
}

bool ap_livemap_put_slow(uintptr_t addr, uint64_t val, bool force)
{
	struct ap_livemap *m = &ap_livemap;
	if (nslots() < AP_LIVEMAP_MAX_SLOTS && grow())
		return ap_livemap_put(addr, val, force);
	/* Full: only a forced put, into the room above the limit (probes get long, but only for
	 * such rare blocks), while one slot at least stays empty to end every probe. */
	if (!force || !m->slots || m->count + 2 > nslots())
		return false;
	ap_livemap_set_(m, addr, val);
	return true;
}

void ap_livemap_reset(void)
{
	struct ap_livemap *m = &ap_livemap;
	if (m->slots)
		ap_sys_unmap(m->slots, nslots() * sizeof(*m->slots));
	*m = (struct ap_livemap){0};
}
