/*
 * chunkenc: turns the buffers of one writer round (the row layout the hot path appends, cheap to
 * write) into format-3 CHUNK records (every thread's events merged in stamp order, then stored
 * in columns, cheap to compress; see allocprof/trace.h).
 *
 * Runs in the writer, never on the program's hot path. Merging the threads is what lets it drop
 * the address of a block that is allocated and freed within one record, whichever threads do
 * it: in stamp order it sees every event on that address in between, provided no event
 * between the two can have been written in another round (see ap_round_encode).
 */
#ifndef AP_CHUNKENC_H
#define AP_CHUNKENC_H

#include "events.h"

/* One encoded record payload, as pieces to feed the compressor in order (the pieces point into
 * the encoder's static workspace: valid during the sink's call only; callers hold the writer
 * lock). */
struct ap_chunk_out {
	const uint8_t *piece[10];
	size_t len[10];
	size_t npieces, total;
};

typedef void (*ap_chunk_sink)(const struct ap_chunk_out *out);

/* Encodes the n buffers of a round, handing each CHUNK payload to sink. pair_before is the
 * SYNC stamp the round will write after them (0: none): an allocation and a free are paired
 * (written without their address) only if the free is stamped below it and the allocation
 * above every event of earlier rounds, so that no event between them is outside this round. */
void ap_round_encode(struct ap_buf *const *bufs, size_t n, uint64_t pair_before, ap_chunk_sink sink) AP_HIDDEN;

#endif
