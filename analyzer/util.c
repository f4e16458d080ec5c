/*
 * util.c: checked allocation, the u64 hash map, messages.
 */
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void ap_map_free(ap_map *m)
{
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof(*m));
}

static void map_grow(ap_map *m)
{
	size_t oldcap = m->cap;
	uint64_t *ok = m->keys, *ov = m->vals;
	m->cap = oldcap ? oldcap * 2 : 64;
	m->keys = ap_xcalloc(m->cap, sizeof(*m->keys));
	m->vals = ap_xmalloc(m->cap * sizeof(*m->vals));
	for (size_t i = 0; i < oldcap; i++) {
		if (!ok[i])
			continue;
		size_t j = ap_hash64(ok[i]) & (m->cap - 1);
		while (m->keys[j])
			j = (j + 1) & (m->cap - 1);
		m->keys[j] = ok[i];
		m->vals[j] = ov[i];
	}
	free(ok);
	free(ov);
}

uint64_t *ap_map_put(ap_map *m, uint64_t key, bool *added)
{
	if (!key) {
		if (added)
			*added = !m->has_zero;
		if (!m->has_zero) {
			m->has_zero = true;
			m->zero_val = 0;
			m->n++;
		}
		return &m->zero_val;
	}
	if ((m->n + 1) * 4 > m->cap * 3)
		map_grow(m); /* n may count key 0, which needs no slot: growing early is harmless */
	size_t i = ap_hash64(key) & (m->cap - 1);
	while (m->keys[i] && m->keys[i] != key)
		i = (i + 1) & (m->cap - 1);
	if (!m->keys[i]) {
		m->keys[i] = key;
		m->vals[i] = 0;
		m->n++;
		if (added)
			*added = true;
	} else if (added) {
		*added = false;
	}
	return &m->vals[i];
}

uint64_t *ap_map_get(const ap_map *m, uint64_t key)
{
	if (!key)
		return m->has_zero ? (uint64_t *)&m->zero_val : NULL;
	if (!m->cap)
		return NULL;
	size_t i = ap_hash64(key) & (m->cap - 1);
	while (m->keys[i]) {
		if (m->keys[i] == key)
			return &m->vals[i];
		i = (i + 1) & (m->cap - 1);
	}
	return NULL;
}

bool ap_map_del(ap_map *m, uint64_t key, uint64_t *val_out)
{
	if (!key) {
		if (!m->has_zero)
			return false;
		if (val_out)
			*val_out = m->zero_val;
		m->has_zero = false;
		m->n--;
		return true;
	}
	if (!m->cap)
		return false;
	size_t mask = m->cap - 1, i = ap_hash64(key) & mask;
	while (m->keys[i] != key) {
		if (!m->keys[i])
			return false;
		i = (i + 1) & mask;
	}
	if (val_out)
		*val_out = m->vals[i];
	/* Backward shift: move later members of the probe run into the hole when their home slot
	 * lies at or before it. */
	size_t hole = i;
	for (size_t j = (i + 1) & mask; m->keys[j]; j = (j + 1) & mask) {
		size_t home = ap_hash64(m->keys[j]) & mask;
		if (((j - home) & mask) >= ((j - hole) & mask)) {
			m->keys[hole] = m->keys[j];
			m->vals[hole] = m->vals[j];
			hole = j;
		}
	}
	m->keys[hole] = 0;
	m->n--;
	return true;
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
