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
 * value (an address of ~0 plus one is 0). Keys and values share a slot (one cache line holds a
 * key and what it maps to); a key's home slot is the top bits of key * 2^64/phi (Fibonacci
 * hashing: one multiplication, and addresses that differ in any bit spread over the table). The
 * lookups are inline: the replay does one or two per event. */
typedef struct ap_map_slot {
	uint64_t key, val;
} ap_map_slot;
typedef struct ap_map {
	ap_map_slot *slots;
	size_t cap, n;        /* n counts key 0 too */
	unsigned shift;       /* 64 - log2(cap) */
	bool has_zero;
	uint64_t zero_val;
} ap_map;

void ap_map_free(ap_map *m);
/* Returns a pointer to the value of key, inserting it with value 0 when absent (*added = true). */
static inline uint64_t *ap_map_put(ap_map *m, uint64_t key, bool *added);
static inline uint64_t *ap_map_get(const ap_map *m, uint64_t key);
static inline bool ap_map_del(ap_map *m, uint64_t key, uint64_t *val_out);

/* Out of line: the rare paths of the map. */
void ap_map_grow_(ap_map *m);
uint64_t *ap_map_put_zero_(ap_map *m, bool *added);
bool ap_map_del_zero_(ap_map *m, uint64_t *val_out);
void ap_map_shift_(ap_map *m, size_t hole);

static inline size_t ap_map_home_(const ap_map *m, uint64_t key)
{
	return (size_t)((key * 0x9e3779b97f4a7c15ull) >> m->shift);
}

static inline uint64_t *ap_map_put(ap_map *m, uint64_t key, bool *added)
{
	if (__builtin_expect(!key, 0))
		return ap_map_put_zero_(m, added);
	if (__builtin_expect((m->n + 1) * 4 > m->cap * 3, 0))
		ap_map_grow_(m); /* n may count key 0, which needs no slot: growing early is harmless */
	size_t mask = m->cap - 1, i = ap_map_home_(m, key);
	ap_map_slot *s = m->slots;
	while (s[i].key && s[i].key != key)
		i = (i + 1) & mask;
	if (!s[i].key) {
		s[i].key = key;
		s[i].val = 0;
		m->n++;
		if (added)
			*added = true;
	} else if (added) {
		*added = false;
	}
	return &s[i].val;
}

static inline uint64_t *ap_map_get(const ap_map *m, uint64_t key)
{
	if (__builtin_expect(!key, 0))
		return m->has_zero ? (uint64_t *)&m->zero_val : NULL;
	if (!m->cap)
		return NULL;
	size_t mask = m->cap - 1, i = ap_map_home_(m, key);
	ap_map_slot *s = m->slots;
	while (s[i].key) {
		if (s[i].key == key)
			return &s[i].val;
		i = (i + 1) & mask;
	}
	return NULL;
}

static inline bool ap_map_del(ap_map *m, uint64_t key, uint64_t *val_out)
{
	if (__builtin_expect(!key, 0))
		return ap_map_del_zero_(m, val_out);
	if (!m->cap)
		return false;
	size_t mask = m->cap - 1, i = ap_map_home_(m, key);
	ap_map_slot *s = m->slots;
	while (s[i].key != key) {
		if (!s[i].key)
			return false;
		i = (i + 1) & mask;
	}
	if (val_out)
		*val_out = s[i].val;
	m->n--;
	if (!s[(i + 1) & mask].key) /* the common case: the end of its probe run */
		s[i].key = 0;
	else
		ap_map_shift_(m, i);
	return true;
}

/* Asks the cache for key's home slot, a few lookups ahead of the lookup. */
static inline __attribute__((always_inline)) void ap_map_prefetch(const ap_map *m, uint64_t key)
{
	if (m->cap)
		__builtin_prefetch(&m->slots[ap_map_home_(m, key)]);
}

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
