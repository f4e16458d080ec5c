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

/* Maps addr (non-zero) to val. Returns false, leaving the map as it was, when it is full; force
 * uses the room kept for blocks brought back by an UNFREE, whose allocation was written without
 * an address and so must stay in the map. A live entry for addr is replaced. */
bool ap_livemap_put(uintptr_t addr, uint64_t val, bool force) AP_HIDDEN;
/* Removes addr's entry and stores its value in *val; false when there is none. */
bool ap_livemap_take(uintptr_t addr, uint64_t *val) AP_HIDDEN;
/* Empties the map and gives back its memory (a fork child's new trace starts from nothing). */
void ap_livemap_reset(void) AP_HIDDEN;
/* Entries, and bytes mapped for them. */
size_t ap_livemap_count(void) AP_HIDDEN;
size_t ap_livemap_bytes(void) AP_HIDDEN;

#endif
