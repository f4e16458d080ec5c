/*
 * events.h: the buffers and thread records that events.c fills and writer.c drains.
 */
#ifndef AP_EVENTS_H
#define AP_EVENTS_H

#include "shim.h"

/* 32 KiB holds about 3000 events: few hand-overs to the writer, little memory per thread. */
#define AP_BUF_DATA (32 * 1024 - 64)
/* The largest event: tag + LOST (3 varints) + tag + 4 varints. */
#define AP_EVENT_MAX (2 + 8 * AP_VARINT_MAX)
#define AP_NOBUF ((struct ap_buf *)1)

typedef atomic_flag ap_spinlock;

struct ap_buf {
	struct ap_buf *next;
	uint32_t tid;
	uint64_t seq, base_stamp, last_stamp;
	uintptr_t last_addr;
	size_t len;
	/* Events in data: the writer sizes its workspace for a round by them. */
	uint32_t n_events;
	uint8_t data[AP_BUF_DATA];
};

struct ap_thread {
	_Atomic(struct ap_buf *) cur; /* see events.c */
	struct ap_thread *next;       /* all threads, pushed at the head, never removed */
	atomic_bool vacant;           /* its thread exited: a new thread may take the record */
	uint32_t tid;
	uint64_t seq;                 /* the next chunk's sequence number */
	/* Events dropped by re-entry from a signal handler; written as a LOST event at the next
	 * event of the thread. Atomic because the handler interrupts the owner. */
	atomic_uint lost_allocs, lost_frees;
	/* Every call, recorded or not (TOTALS): the owner's counters in its TLS while it is
	 * attached, plus what earlier owners of the record counted. count_lock orders the owner's
	 * exit (which folds its counters into done and clears hot) against the writer's reads. */
	struct ap_hot *hot;
	uint64_t done[3];
	ap_spinlock count_lock;
};

void ap_lock(ap_spinlock *l) AP_HIDDEN;
void ap_unlock(ap_spinlock *l) AP_HIDDEN;

void ap_events_init(void) AP_HIDDEN;
void ap_events_forked_child(void) AP_HIDDEN;
/* Taken around fork so that the child finds the pool, queue and meta stream consistent. */
void ap_events_lock_all(void) AP_HIDDEN;
void ap_events_unlock_all(void) AP_HIDDEN;

struct ap_thread *ap_threads_first(void) AP_HIDDEN;
/* Up to max of the full buffers handed over so far, oldest first, as a list; stores in
 * *left_min_stamp the smallest base stamp of those left (UINT64_MAX when none are). */
struct ap_buf *ap_queue_take(size_t max, uint64_t *left_min_stamp) AP_HIDDEN;
/* Appends a list of buffers at the end of the queue (the writer puts back what it stole when a
 * backlog means it could not promise their events anyway). */
void ap_queue_requeue(struct ap_buf *list) AP_HIDDEN;
struct ap_buf *ap_meta_take_all(void) AP_HIDDEN;
void ap_meta_reset(void) AP_HIDDEN;
void ap_pool_put(struct ap_buf *b) AP_HIDDEN;

extern atomic_ulong ap_lost_total AP_HIDDEN;
/* Lost while the thread had no record yet (inside its first event). */
extern atomic_ulong ap_orphan_lost_allocs AP_HIDDEN, ap_orphan_lost_frees AP_HIDDEN;

/* writer.c */
bool ap_writer_running(void) AP_HIDDEN;
/* Writes everything now, in the calling thread (used once the writer thread has stopped). */
void ap_writer_sync(void) AP_HIDDEN;
/* Held across fork, so that no round is half done in the child. */
void ap_writer_lock(void) AP_HIDDEN;
void ap_writer_unlock(void) AP_HIDDEN;

#endif
