/*
 * sampler.h: sampled mode's hot path, inlined into hooks.c (see sampler.c for the method).
 *
 * Two things are read on every call, and nothing else of the sampler:
 *  - ap_hot.sample_left (shim.h), this thread's bytes to go before its next sample. At or below
 *    0 it is not armed (full mode, a thread without a record yet, tracing off, a fork child, a
 *    take not yet given back, the guard set): the call takes the slow path, which arms it. An
 *    allocation of weight w < left only subtracts w, and a free whose filter bucket is 0
 *    (below) only counts. Under the guard the countdown is ap_hot.parked (ap_guard_enter): the
 *    slow path's decisions (sampler.c) read and write that copy.
 *  - ap_sampled_filter, a counting filter over the addresses of the live sampled blocks: one
 *    byte per bucket (ap_filter_slot), the number of live sampled blocks (and bootstrap-pool blocks, see
 *    hooks.c) in it, saturating (255 stays). A free whose bucket is 0 was not sampled: that is
 *    one load; only the rest probe the table (sampler.c) under its sequence counter.
 * The filter is changed only under the set's lock, together with the table, and before the
 * sampled block is returned to the program, so any thread that may legitimately free the block
 * sees its bucket non-zero (the program's own hand-over orders the two).
 */
#ifndef AP_SAMPLER_H
#define AP_SAMPLER_H

#include "shim.h"

#define AP_FILTER_BITS 16

extern _Atomic uint8_t ap_sampled_filter[1u << AP_FILTER_BITS] AP_HIDDEN;

/* What an allocation counts for the countdown: zero-byte requests count as one byte, so that
 * they can be sampled at all. */
static inline uint64_t ap_sample_weight(size_t size)
{
	return (uint64_t)size + (size == 0);
}

/* A block's bucket: address bits 4 and up, not a hash of them. Every free reads its bucket, and
 * blocks allocated together lie together, so this keeps their buckets on the same cache lines
 * (a hash spreads a large program's frees over the whole 64 KiB: an L1 miss on most of them).
 * Blocks are 16-byte aligned; two collide when their addresses differ by a multiple of 1 MiB,
 * which costs a false "maybe" (a probe of the set), never a wrong answer. */
static inline size_t ap_filter_slot(const void *p)
{
	return (size_t)(((uintptr_t)p >> 4) & ((1u << AP_FILTER_BITS) - 1));
}

/* false: p is certainly not a live sampled block (nor a bootstrap-pool block). */
static inline bool ap_sampled_maybe(const void *p)
{
	return atomic_load_explicit(&ap_sampled_filter[ap_filter_slot(p)], memory_order_relaxed) != 0;
}

/* Whether this thread's countdown (parked: under the guard) is armed. Positive, not just
 * non-zero: a malloc on this thread
 * takes its weight off before it knows the result, and gives it back when that crosses zero, so
 * a signal handler that interrupts it in between sees a countdown at or below zero, which it
 * must treat as not armed (in full mode the countdown is 0 and this is that very case). */
static inline bool ap_sample_armed(void)
{
	return (int64_t)ap_hot.parked > 0;
}

/* Arms this thread's countdown (ap_hot.parked: the caller holds the guard) if sampled mode is on
 * and the thread has a record (the fast paths count into it); else leaves it as it is. */
void ap_sample_arm(void) AP_HIDDEN;

/* Marks p's bucket for good (a bootstrap-pool block: its free must take the slow path). */
void ap_sampled_pin(const void *p) AP_HIDDEN;

#endif
