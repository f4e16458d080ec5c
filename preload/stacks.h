/*
 * stacks.h: the stack table's node, shared by stacks.c (the table) and stackcache.c (the
 * per-thread cache of recently seen stacks in front of it).
 */
#ifndef AP_STACKS_H
#define AP_STACKS_H

#include "shim.h"

struct ap_stack {
	struct ap_stack *next;
	uint64_t hash;
	uint32_t id, nframes, generation, flags;
	atomic_uint sightings; /* misses seen, to learn frame sizes only for stacks that recur */
	uintptr_t frames[];
};

/* Where the allocation call returns to (ret0) and the stack slot that holds that return
 * address (slot0), found by walking the shim's own frame pointers. */
struct ap_stack_key {
	uintptr_t ret0, slot0;
};

void ap_stackcache_init(void) AP_HIDDEN;
/* Fills key; false when the shim's frames cannot be walked (then nothing is cached). */
bool ap_stackcache_key(struct ap_stack_key *key) AP_HIDDEN;
/* The cached stack whose return addresses all still sit where they were, or NULL. */
struct ap_stack *ap_stackcache_lookup(const struct ap_stack_key *key) AP_HIDDEN;
/* Offers a freshly unwound stack to the cache (it may learn frame sizes first). */
void ap_stackcache_insert(const struct ap_stack_key *key, struct ap_stack *s) AP_HIDDEN;

#endif
