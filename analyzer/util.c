/*
 * util.c: checked allocation, the u64 hash map, messages.
 */
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void oom(size_t n)
{
	fprintf(stderr, "allocprof: out of memory (asked for %zu bytes)\n", n);
	exit(2);
}

void *ap_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

void *ap_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		oom(n * size);
	return p;
}

void *ap_xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

char *ap_xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	return memcpy(ap_xmalloc(n), s, n);
}

void ap_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("allocprof: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

uint64_t ap_hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	while (*s)
		h = (h ^ (uint8_t)*s++) * 1099511628211ull;
	return h;
}

/* A map's table. One of 2 MiB or more (a big live set's) is aligned to 2 MiB and marked for
 * transparent huge pages: its lookups land at random, and with 4 KiB pages nearly every one
 * also missed the TLB; huge pages also take one page fault per 2 MiB instead of 512. */
#define HUGE_PAGE (2u << 20)
static void *slots_alloc(size_t bytes)
{
	if (bytes < HUGE_PAGE)
		return ap_xcalloc(1, bytes);
	void *p = aligned_alloc(HUGE_PAGE, bytes);
	if (!p)
		oom(bytes);
#ifdef MADV_HUGEPAGE
	madvise(p, bytes, MADV_HUGEPAGE);
#endif
	memset(p, 0, bytes);
	return p;
}

void ap_map_free(ap_map *m)
{
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

void ap_map_grow_(ap_map *m)
{
	size_t oldcap = m->cap;
	ap_map_slot *old = m->slots;
	m->cap = oldcap ? oldcap * 2 : 64;
	m->shift = 64 - (unsigned)__builtin_ctzll(m->cap);
	m->slots = slots_alloc(m->cap * sizeof(*m->slots));
	size_t mask = m->cap - 1;
	for (size_t i = 0; i < oldcap; i++) {
		if (!old[i].key)
			continue;
		size_t j = ap_map_home_(m, old[i].key);
		while (m->slots[j].key)
			j = (j + 1) & mask;
		m->slots[j] = old[i];
	}
	free(old);
}

uint64_t *ap_map_put_zero_(ap_map *m, bool *added)
{
	if (added)
		*added = !m->has_zero;
	if (!m->has_zero) {
		m->has_zero = true;
		m->zero_val = 0;
		m->n++;
	}
	return &m->zero_val;
}

bool ap_map_del_zero_(ap_map *m, uint64_t *val_out)
{
	if (!m->has_zero)
		return false;
	if (val_out)
		*val_out = m->zero_val;
	m->has_zero = false;
	m->n--;
	return true;
}

/* Backward shift after the key at hole was removed: moves later members of the probe run into
 * the hole when their home slot lies at or before it, then empties the last hole. */
void ap_map_shift_(ap_map *m, size_t hole)
{
	size_t mask = m->cap - 1;
	ap_map_slot *s = m->slots;
	for (size_t j = (hole + 1) & mask; s[j].key; j = (j + 1) & mask) {
		size_t home = ap_map_home_(m, s[j].key);
		if (((j - home) & mask) >= ((j - hole) & mask)) {
			s[hole] = s[j];
			hole = j;
		}
	}
	s[hole].key = 0;
}

bool ap_grow(void *arrp, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return true;
	size_t cap2 = *cap ? *cap : 16;
	while (cap2 < need)
		cap2 *= 2;
	void *arr;
	memcpy(&arr, arrp, sizeof(arr));
	void *p = realloc(arr, cap2 * elem);
	if (p == NULL)
		return false;
	memcpy(arrp, &p, sizeof(p));
	*cap = cap2;
	return true;
}
