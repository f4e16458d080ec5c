/*
 * chunkenc: turns a thread's buffer of events (the row layout the hot path appends, cheap to
 * write) into a version-2 CHUNK payload (columns, cheap to compress; see allocprof/trace.h).
 *
 * Runs in the writer, never on the program's hot path. Besides splitting the fields into
 * columns, it drops the address of a block that the same chunk allocates and frees, the free
 * naming the allocation by its distance instead, but only while the process has had a single
 * thread: with two, another thread could have freed and reused the address in between.
 */
#ifndef AP_CHUNKENC_H
#define AP_CHUNKENC_H

#include "events.h"

/* The encoded payload, as pieces to feed the compressor in order (the pieces point into the
 * encoder's static workspace: valid until the next call; callers hold the writer lock). */
struct ap_chunk_out {
	const uint8_t *piece[8];
	size_t len[8];
	size_t npieces, total;
};

/* Encodes b. Allocations and frees stamped before pair_before (UINT64_MAX: the process has
 * had one thread all along) may be paired within the chunk. */
void ap_chunk_encode(const struct ap_buf *b, uint64_t pair_before, struct ap_chunk_out *out) AP_HIDDEN;

/* Stamp at which a second thread first recorded an event (UINT64_MAX: none yet). */
extern _Atomic uint64_t ap_multi_since AP_HIDDEN;

#endif
