/*
 * decode: reads a trace file as untrusted input and delivers its content in event order.
 *
 * The file is decompressed as a stream (memory does not grow with the file's length). Chunks of
 * different threads arrive out of order; events are held until a SYNC record says that no
 * earlier event can follow, then delivered sorted by stamp, so that a free in one thread always
 * comes before the allocation in another thread that reused the block.
 */
#ifndef AP_DECODE_H
#define AP_DECODE_H

#include "allocprof/trace.h"
#include "symbols.h"
#include "util.h"

typedef struct ap_header {
	uint64_t pid, ppid, start_realtime_ns, start_stamp, start_monotonic_ns;
	uint32_t clock, max_depth, flags;
	uint64_t sample_bytes, seed, page_size;
	const char *exe, *hostname;
	const char *const *argv;
	size_t argc;
} ap_header;

typedef struct ap_event {
	uint64_t stamp;
	uint64_t addr;
	uint64_t size;     /* ALLOC */
	uint32_t stack;    /* ALLOC */
	uint32_t tid;
	uint8_t kind;      /* enum ap_event */
	uint8_t api;       /* enum ap_api */
	uint64_t lost_allocs, lost_frees; /* LOST */
} ap_event;

/* An event as the reader holds it until it can be delivered (40 bytes): ap_event without LOST's
 * counts, which ride in fields LOST does not use (addr = lost frees, size = lost allocs). */
typedef struct ap_event_rec {
	uint64_t stamp, addr, size;
	uint32_t stack, tid;
	uint8_t kind, api;
} ap_event_rec;

static inline ap_event ap_event_from_rec(const ap_event_rec *q)
{
	ap_event e = {.stamp = q->stamp, .tid = q->tid, .kind = q->kind, .api = q->api};
	if (q->kind == AP_EV_LOST) {
		e.lost_allocs = q->size;
		e.lost_frees = q->addr;
	} else {
		e.addr = q->addr;
		e.size = q->size;
		e.stack = q->stack;
	}
	return e;
}

typedef struct ap_stack_rec {
	uint32_t id, generation, flags, nframes;
	const uint64_t *frames; /* return addresses, innermost first */
} ap_stack_rec;

/* What the trace says about its end. */
typedef struct ap_trace_end {
	bool has_end, has_exit;
	uint64_t end_stamp, end_monotonic_ns;
	uint32_t exit_how, exit_status;       /* EXIT: what the waiting parent saw */
	uint32_t end_how, end_status;         /* END: what the shim saw (AP_END_UNKNOWN: nothing) */
	uint64_t counters[AP_CNT__COUNT];
	size_t ncounters;
	/* The last TOTALS record: every call, sampled or not. */
	bool has_totals;
	uint64_t total_allocs, total_bytes, total_frees;
} ap_trace_end;

/* Callbacks; any may be NULL. Pointers passed are valid only during the call. */
typedef struct ap_reader_ops {
	void *ctx;
	void (*header)(void *ctx, const ap_header *h);
	void (*module)(void *ctx, const ap_module_desc *m);
	void (*unload)(void *ctx, uint32_t module_id, uint32_t new_generation);
	void (*stack)(void *ctx, const ap_stack_rec *s);
	/* The events in stamp order, n at a time. */
	void (*events)(void *ctx, const ap_event_rec *v, size_t n);
	void (*clock)(void *ctx, uint64_t stamp, uint64_t monotonic_ns);
	/* Optional, together: blocks allocated and freed within one chunk as per-stack totals
	 * instead of two events each (most of a single-threaded trace's events). Asked once, after
	 * the header callback; if want_pairs says yes, some such blocks are never delivered as
	 * events and pairs reports them instead: count blocks of stack totalling bytes, any number
	 * of times per stack, at any point of the read (the last time after the last event). Only
	 * for a consumer that needs end-of-trace totals, not the moment of each event: the pairs
	 * left out are those that change nothing else (not the last event of their chunk, not
	 * freed by a realloc, in a chunk whose stamps increase), so the last event delivered and
	 * every live block are the same as without folding. */
	bool (*want_pairs)(void *ctx);
	void (*pairs)(void *ctx, uint32_t stack, uint64_t count, uint64_t bytes);
	/* ap_read_trace: decompress in a thread of its own, ahead of the parsing. */
	bool decompress_ahead;
} ap_reader_ops;

typedef struct ap_read_result {
	char error[512];     /* set when the return value is negative */
	bool truncated;      /* the file ends inside a frame or a record */
	bool unordered;      /* events piled up without a SYNC record (corrupt trace?): some were
	                      * delivered before later-read events with smaller stamps */
	uint64_t events, records, late_events, bytes_in, bytes_out;
	uint64_t max_pending; /* most events held at once waiting for a SYNC */
	ap_trace_end end;
} ap_read_result;

/* Reads the whole trace at path. Returns 0 with everything delivered (res->truncated says
 * whether it stopped at a cut), or a negated enum ap_error with res->error set to one line that
 * names the file. */
int ap_read_trace(const char *path, const ap_reader_ops *ops, ap_read_result *res);

/* The same from memory: data holds the file's content (compressed) or the decompressed stream,
 * magic first (!compressed: what `zstd -dc` prints; the fuzz harness feeds records that way).
 * name stands for the file in messages. data must stay valid during the call. */
int ap_read_trace_mem(const char *name, const void *data, size_t len, bool compressed,
                      const ap_reader_ops *ops, ap_read_result *res);

#endif
