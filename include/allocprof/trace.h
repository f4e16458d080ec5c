/*
 * allocprof trace format, version 3: the one contract between the shim (liballocprof.so), which
 * writes traces, and the analyzer (allocprof), which reads them. Readers in other languages need
 * only this file; FORMAT.md beside this file says the same in prose, with a reader in Python.
 *
 * ## Layers
 *
 * A trace file is a sequence of zstd frames (RFC 8878). Concatenated, their decompressed contents
 * form one byte stream; `zstd -dc FILE` yields it, also for a file cut short (up to the cut).
 * The shim ends a frame at least every 100 ms and at exit, so a killed process leaves every
 * complete frame readable. Frames hold whole records except when the process died mid-write.
 *
 * ## The stream
 *
 *     stream  := magic record*
 *     magic   := "ALLOCPRF"  (8 bytes)  varint(format version)      -- AP_FORMAT_VERSION
 *     record  := u8(kind)  varint(len)  payload[len]
 *
 * Every record is length-prefixed, so a reader skips a record kind it does not know (kinds added
 * in a later minor revision). A reader must reject a stream whose format version is greater than
 * the one it implements: field meanings may have changed.
 *
 * Integers are unsigned LEB128 varints (at most 10 bytes for 64 bits) unless said otherwise;
 * "svarint" is a zigzag-encoded signed varint; "str" is varint(length) followed by that many
 * bytes, not NUL-terminated.
 *
 * ## Stamps: ordering across threads
 *
 * Every event carries a stamp. Stamps of one process form a total order consistent with real
 * time: the stamp of a free is taken before the real free is called, the stamp of an allocation
 * after the real allocator returned, so when thread A frees a block and thread B receives the same
 * address, A's free has the smaller stamp. With clock AP_CLOCK_TSC the stamp is the CPU time-stamp
 * counter read with a fence (the kernel's clocksource is "tsc", so counters are synchronised
 * across CPUs); with AP_CLOCK_COUNTER it is a process-wide atomic counter. Events of one thread
 * have strictly increasing stamps. CLOCK records give (stamp, CLOCK_MONOTONIC ns) pairs from which
 * a reader converts stamps to time by linear interpolation.
 *
 * Events reach the file in per-thread chunks, out of order between threads. A SYNC record with
 * stamp W promises that every event with a stamp below W appears before it in the stream, so a
 * reader merges chunks by stamp and may process all buffered events below W when it sees it.
 */
#ifndef ALLOCPROF_TRACE_H
#define ALLOCPROF_TRACE_H

#include <stddef.h>
#include <stdint.h>

#define AP_MAGIC "ALLOCPRF"
#define AP_MAGIC_LEN 8
/* Version 1: first release. Version 2: CHUNK events in columns, with ALLOC_LOCAL and FREE_BACK
 * and the STEP1 tag bit. Version 3: ordinals (a CHUNK's first_ord; ALLOC_ORD, FREE_ORD, an UNFREE
 * by ordinal). Bump on any change an older reader would misread. A reader of version 3 reads
 * versions 1 and 2 too (the CHUNK layout is the only difference: see "Version 1 chunks" and the
 * notes on version 2 below). */
#define AP_FORMAT_VERSION 3

/* Record kinds (the u8 before each record). */
enum ap_record_kind {
	/* HEADER, first record, exactly once per process:
	 *   varint pid, varint ppid, varint start_realtime_ns (since the epoch),
	 *   varint clock (enum ap_clock), varint start_stamp, varint start_monotonic_ns,
	 *   varint sample_bytes (0: every allocation is recorded), varint max_depth,
	 *   varint seed, varint page_size, str exe (absolute path), varint argc, str argv[argc],
	 *   varint flags (AP_HDR_*), str hostname */
	AP_REC_HEADER = 1,
	/* MODULE, a loaded ELF object (at start, and after dlopen):
	 *   varint module_id (from 1), varint generation (see UNLOAD), varint stamp,
	 *   varint base (load bias: runtime address = base + ELF vaddr), str path,
	 *   str build_id (raw bytes of NT_GNU_BUILD_ID, may be empty),
	 *   varint nseg, then nseg times: varint vaddr, varint memsz, varint file_offset,
	 *   varint flags (PF_X=1, PF_W=2, PF_R=4) -- the PT_LOAD segments */
	AP_REC_MODULE = 2,
	/* UNLOAD, a module disappeared (dlclose): varint module_id, varint stamp,
	 *   varint new_generation. Stacks captured after this carry the new generation, so
	 *   addresses reused by another library never resolve to the old one. */
	AP_REC_UNLOAD = 3,
	/* STACK, a distinct call stack, defined once and then referred to by id:
	 *   varint stack_id (from 1), varint generation, varint flags (AP_STACK_*),
	 *   varint nframes, then nframes return addresses, innermost first: the first as varint,
	 *   each next one as svarint(delta to the previous one).
	 * The shim's own frames are not included; frame 0 is the caller of the allocation function.
	 * A STACK record precedes every event that refers to it. */
	AP_REC_STACK = 4,
	/* CHUNK, a run of one thread's events, field by field (columns compress better than rows):
	 *   varint tid, varint chunk_seq (per thread, from 0), varint base_stamp, varint first_ord
	 *   (version 3 only; below 2^62), varint nevents, varint len_stamps, varint len_addrs, varint len_backs, varint len_infos, varint len_others,
	 *   then six sections, one after the other: tags (nevents bytes, one per event), stamps,
	 *   addrs, backs, infos, others (of the lengths given), which must be used up exactly.
	 * See enum ap_event_kind for what each event takes from which section. tid 0 is the shim's
	 * writer: LOST events it collected for threads that wrote no event after the loss. */
	AP_REC_CHUNK = 5,
	/* SYNC: varint stamp W (see "Stamps" above). */
	AP_REC_SYNC = 6,
	/* CLOCK: varint stamp, varint monotonic_ns, varint realtime_ns. */
	AP_REC_CLOCK = 7,
	/* THREAD, a thread's name: varint tid, str name. */
	AP_REC_THREAD = 8,
	/* END, written once by a process that flushed at exit:
	 *   varint stamp, varint monotonic_ns, varint how (enum ap_end_how), varint status,
	 *   then the counters: varint n, n times varint (see enum ap_counter). Records may follow
	 *   END (allocations made after the shim's exit handler, written as they happen).
	 *   how/status are what the shim saw when it wrote END: _exit/_Exit (AP_END_EXIT),
	 *   abort() (AP_END_SIGNAL, SIGABRT); AP_END_UNKNOWN otherwise (an exit() status comes
	 *   in an EXIT record). An EXIT record, when present, takes precedence. */
	AP_REC_END = 9,
	/* EXIT, how the process ended: written by the shim when the program calls exit() or
	 * returns from main (after END), and appended by `allocprof record` after the process
	 * ended; a reader keeps the last one:
	 *   varint how (enum ap_end_how), varint status (exit code or signal number). */
	AP_REC_EXIT = 10,
	/* TOTALS, the exact number of calls, sampled or not, since the start of the process,
	 * written every round (a reader keeps the last one):
	 *   varint stamp, varint alloc_calls, varint alloc_bytes (requested), varint free_calls
	 *   (frees of non-NULL pointers). In sampled mode these are what the estimates estimate;
	 *   there, an allocation below the thread's countdown that fails for lack of memory is
	 *   counted as if it had succeeded (the shim counts before it jumps to the allocator). */
	AP_REC_TOTALS = 11,
};

/* Events inside a CHUNK. An event's tag is (kind | STEP1 flag | api << 4): kind in bits 0-2,
 * AP_TAG_STEP1 in bit 3, enum ap_api in bits 4-7. Each event takes its fields from the sections
 * in order (a section is read front to back, across the events of the chunk):
 *
 *   stamps   varint dstamp, the stamp minus the previous event's (the first event's: minus
 *            base_stamp) -- absent when the tag has AP_TAG_STEP1, which means dstamp = 1
 *   addrs    svarint daddr, the address minus the previous address taken from this section in
 *            the chunk (the first: minus 0)
 *   backs    FREE_BACK's k, FREE_ORD's and UNFREE's ordinal fields (below)
 *   infos    varint size, varint stack_id
 *   others   LOST's two counts
 *
 * Ordinals (version 3) name blocks whose allocation the trace writes without an address. The
 * i-th event of a chunk (from 0) has the ordinal first_ord + i; a block allocated by an ALLOC_ORD
 * or ALLOC_LOCAL is that event's ordinal, and its free names it so, from any chunk of the process
 * (another thread's, earlier or later in the file: match them after ordering by stamp, as for
 * addresses). Chunks' ordinals never overlap. Ordinal fields are differences: each chunk keeps a
 * "last ordinal", first_ord at its start, set by every FREE_ORD and UNFREE by ordinal.
 * Addresses and ordinals are two name spaces: a block allocated with its address is freed by
 * address, one allocated without by ordinal.
 *
 *   ALLOC        stamps, addrs, infos
 *   FREE         stamps, addrs
 *   UNFREE       version 3: backs varint m; m = 0: addrs (the block's address); m > 0: the block
 *                of ordinal last + unzigzag(m - 1).  Versions 1-2: stamps, addrs.
 *                -- the last FREE of this block by this thread did not happen (a failed
 *                   realloc: the old block is still allocated, as it was before)
 *   LOST         stamps, others: varint nallocs, varint nfrees
 *                -- events the shim could not record (re-entered from a signal handler inside the
 *                   shim); the analyzer reports them, so nothing is lost silently
 *   ALLOC_LOCAL  stamps, infos: an allocation without its address, which a FREE_BACK of the same
 *                chunk frees (exactly one does)
 *   FREE_BACK    stamps, backs: varint k (k >= 1): frees the block of the chunk's k-th most recent
 *                ALLOC_LOCAL (1: the latest)
 *   ALLOC_ORD    stamps, infos (version 3): an allocation without its address, named by its
 *                ordinal
 *   FREE_ORD     stamps, backs (version 3): svarint, the ordinal of the block freed minus the
 *                chunk's last ordinal
 *
 * In version 2, an ALLOC_LOCAL block has no ordinal (a reader gives it any key that cannot clash
 * with an address), and the writer uses ALLOC_LOCAL only while the process has a single thread.
 *
 * size is the requested size (calloc: n*size; 0 allowed). stack_id 0 means "no stack captured".
 * realloc(p, n) and reallocarray are written as a FREE of p (api REALLOC, stamped before the
 * call, so a thread that receives p meanwhile sorts after it) followed by an ALLOC of the result
 * (api REALLOC, stamped after the call); realloc(NULL, n) is only the ALLOC; realloc(p, 0)
 * that frees p and returns NULL is only the FREE; a failed realloc is FREE then UNFREE. Any form
 * of free (FREE, FREE_BACK, FREE_ORD) and of allocation may stand for these.
 *
 * Version 1 chunks: varint tid, varint chunk_seq, varint base_stamp, then events in rows until
 * the end of the payload, each a tag byte (kind in bits 0-3, api in bits 4-7; kinds 1-4 only)
 * followed by its fields in the order above: ALLOC dstamp daddr size stack_id, FREE and UNFREE
 * dstamp daddr, LOST dstamp nallocs nfrees. */
enum ap_event_kind {
	AP_EV_ALLOC = 1,
	AP_EV_FREE = 2,
	AP_EV_UNFREE = 3,
	AP_EV_LOST = 4,
	AP_EV_ALLOC_LOCAL = 5,
	AP_EV_FREE_BACK = 6,
	AP_EV_ALLOC_ORD = 0, /* version 3 */
	AP_EV_FREE_ORD = 7,  /* version 3 */
};

#define AP_TAG_KIND_MASK 0x7u
#define AP_TAG_STEP1 0x8u /* the stamp is the previous one plus 1; no stamps field */

/* Which function the program called (the high nibble of an event tag). */
enum ap_api {
	AP_API_MALLOC = 0,
	AP_API_CALLOC = 1,
	AP_API_REALLOC = 2,
	AP_API_POSIX_MEMALIGN = 3,
	AP_API_ALIGNED_ALLOC = 4,
	AP_API_MEMALIGN = 5,
	AP_API_VALLOC = 6,
	AP_API_PVALLOC = 7,
	AP_API_REALLOCARRAY = 8,
	AP_API_FREE = 9,
	/* jemalloc's mallocx. Its rallocx and a successful xallocx are written as realloc (api
	 * REALLOC), its dallocx and sdallocx as free (api FREE). */
	AP_API_MALLOCX = 10,
	AP_API_OTHER = 15,
};

enum ap_clock {
	AP_CLOCK_TSC = 1,
	AP_CLOCK_COUNTER = 2,
};

/* HEADER flags. */
#define AP_HDR_CHILDREN 0x1u /* children (fork/exec) are traced too, each into its own file */

/* STACK flags. */
#define AP_STACK_TRUNCATED 0x1u /* deeper than max_depth: the outermost frames are missing */

enum ap_end_how {
	AP_END_UNKNOWN = 0,
	AP_END_EXIT = 1,   /* exit status in status */
	AP_END_SIGNAL = 2, /* killed by signal number status */
};

/* END counters, in this order; a reader ignores counters it does not know. */
enum ap_counter {
	AP_CNT_ALLOCS = 0,       /* allocation calls recorded (realloc counts once) */
	AP_CNT_FREES = 1,        /* frees recorded */
	AP_CNT_LOST = 2,         /* events not recorded (see LOST) */
	AP_CNT_STACKS = 3,       /* distinct stacks */
	AP_CNT_BYTES_RAW = 4,    /* uncompressed stream bytes */
	AP_CNT_BYTES_FILE = 5,   /* bytes written to the file */
	AP_CNT_SHIM_MEMORY = 6,  /* bytes of memory the shim mapped for itself, at its peak */
	AP_CNT__COUNT = 7,
};

/* ---- Varint helpers, shared by the writer and the reader ------------------------------------ */

#define AP_VARINT_MAX 10

/* Encodes v at p (room for AP_VARINT_MAX bytes needed); returns the byte after it. */
static inline uint8_t *ap_put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

static inline uint64_t ap_zigzag(int64_t v)
{
	return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int64_t ap_unzigzag(uint64_t v)
{
	return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static inline uint8_t *ap_put_svarint(uint8_t *p, int64_t v)
{
	return ap_put_varint(p, ap_zigzag(v));
}

/* Decodes a varint from [*pp, end). Returns 0 and advances *pp on success; -1 if the input ends
 * inside the varint or the varint is longer than 10 bytes or overflows 64 bits (*pp unchanged). */
static inline int ap_get_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
	const uint8_t *p = *pp;
	uint64_t v = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (p >= end)
			return -1;
		uint8_t b = *p++;
		if (shift == 63 && b > 1)
			return -1;
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*pp = p;
			*out = v;
			return 0;
		}
	}
	return -1;
}

#endif
