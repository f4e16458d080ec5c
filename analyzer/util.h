/*
 * util.h: the analyzer's small shared pieces: checked allocation, growable arrays, a u64 hash
 * map, and the error codes every reader function returns.
 */
#ifndef AP_UTIL_H
#define AP_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Error codes: functions return 0 (or a count) on success, one of these negated on failure. */
enum ap_error {
	AP_E_IO = 1,        /* the file could not be opened or read (errno in the message) */
	AP_E_EMPTY = 2,     /* the file is empty */
	AP_E_BADMAGIC = 3,  /* not an allocprof trace */
	AP_E_VERSION = 4,   /* written by a newer allocprof */
	AP_E_CORRUPT = 5,   /* malformed content */
	AP_E_NOMEM = 6,
	AP_E_USAGE = 7,
};

/* Allocation that cannot fail: the analyzer prints a message and exits 2 when memory runs out. */
void *ap_xmalloc(size_t n) __attribute__((returns_nonnull, malloc));
void *ap_xcalloc(size_t n, size_t size) __attribute__((returns_nonnull, malloc));
void *ap_xrealloc(void *p, size_t n) __attribute__((returns_nonnull));
char *ap_xstrdup(const char *s) __attribute__((returns_nonnull, malloc));

/* Growable array of T: struct { T *v; size_t n, cap; }. */
#define AP_VEC(T)                                                                                  \
	struct {                                                                                   \
		T *v;                                                                              \
		size_t n, cap;                                                                     \
	}
#define AP_VEC_PUSH(vec, x)                                                                        \
	do {                                                                                       \
		if ((vec).n == (vec).cap) {                                                        \
			(vec).cap = (vec).cap ? (vec).cap * 2 : 16;                                \
			(vec).v = ap_xrealloc((vec).v, (vec).cap * sizeof(*(vec).v));               \
		}                                                                                  \
		(vec).v[(vec).n++] = (x);                                                          \
	} while (0)
#define AP_VEC_FREE(vec) (free((vec).v), (vec).v = NULL, (vec).n = (vec).cap = 0)

/* Grows the array *arrp (a pointer of any type, accessed through memcpy, which may alias it) to
 * hold at least need elements of elem bytes, doubling. false on ENOMEM (the array is unchanged). */
bool ap_grow(void *arrp, size_t *cap, size_t need, size_t elem);

/* Open-addressing map from a u64 key to a u64 value, with backward-shift deletion (no
 * tombstones, so a long replay of allocations and frees never degrades it). Key 0 marks empty
 * slots, so it lives apart (has_zero, zero_val): keys come from traces, and a trace can hold any
 * value (an address of ~0 plus one is 0). */
typedef struct ap_map {
	uint64_t *keys, *vals;
	size_t cap, n;        /* n counts key 0 too */
	bool has_zero;
	uint64_t zero_val;
} ap_map;

void ap_map_free(ap_map *m);
/* Returns a pointer to the value of key, inserting it with value 0 when absent (*added = true). */
uint64_t *ap_map_put(ap_map *m, uint64_t key, bool *added);
uint64_t *ap_map_get(const ap_map *m, uint64_t key);
bool ap_map_del(ap_map *m, uint64_t key, uint64_t *val_out);

static inline uint64_t ap_hash64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

uint64_t ap_hash_str(const char *s);

/* Prints "allocprof: " + message to stderr. */
void ap_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
