/*
 * chunkenc: turns the threads' buffers of events (the row layout the hot path appends, cheap to
 * write) into version-3 CHUNK payloads (columns, cheap to compress; see allocprof/trace.h).
 *
 * Runs in the writer, never on the program's hot path, a round at a time. Besides splitting the
 * fields into columns, it writes allocations without their addresses and names the freed block
 * by its ordinal instead, which takes knowing every live block's ordinal (livemap) and resolving
 * the round's frees in stamp order across threads.
 */
#ifndef AP_CHUNKENC_H
#define AP_CHUNKENC_H

#include "events.h"

/* An encoded payload, as pieces to feed the compressor in order (the pieces point into the
 * encoder's static workspace: valid until the sink returns; callers hold the writer lock). */
struct ap_chunk_out {
	const uint8_t *piece[8];
	size_t len[8];
	size_t npieces, total;
	uint64_t allocs;  /* ALLOC events in the chunk, of any form */
	int64_t frees;    /* FREE events minus UNFREEs */
};

typedef void ap_chunk_sink(void *ctx, const struct ap_chunk_out *out);

/* Encodes the events stamped below promise of one round's buffers (the list through b->next, in
 * the order they are written), handing each chunk to sink. promise: the stamp of the SYNC the
 * writer writes after this round (or the last it wrote, if it cannot promise one now): every event
 * stamped below it is in this round or was in an earlier one. Returns the buffers that hold
 * events stamped at or after it, rewritten to hold only those, for the next round to take first;
 * the others are put on *done. */
struct ap_buf *ap_chunk_round(struct ap_buf *list, uint64_t promise, ap_chunk_sink *sink, void *ctx,
                              struct ap_buf **done) AP_HIDDEN;

/* Forgets every block and starts ordinals from 0: a fork child's new trace. */
void ap_chunk_reset(void) AP_HIDDEN;

#endif
