/* Shared helpers for the allocprof benchmark workloads.
 *
 * Every workload takes an optional positional scale factor (default 1.0;
 * the harness passes 0.1 for --quick), prints nothing on stdout, and
 * prints exactly one line "events: N" on stderr, N being the exact number
 * of malloc-family calls plus frees the workload itself made.
 */
#ifndef ALLOCPROF_BENCH_COMMON_H
#define ALLOCPROF_BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Make a pointer escape so the compiler cannot elide malloc/free pairs. */
#define ESCAPE(p) __asm__ volatile("" : : "r"(p) : "memory")
/* Opaque barrier after a call so it cannot become a tail call. */
#define NOTAIL() __asm__ volatile("" ::: "memory")

#define NOINLINE __attribute__((noinline, noclone))

static inline uint64_t bench_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t bench_mix(uint64_t x)
{
    return bench_splitmix64(&x);
}

/* Parse a scale factor; exits with status 2 on garbage. */
static inline double bench_parse_scale(const char *s)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v > 0.0) || v > 1000.0) {
        fprintf(stderr, "invalid scale '%s' (want a number in (0, 1000])\n", s);
        exit(2);
    }
    return v;
}

static inline uint64_t bench_scaled(uint64_t full, double scale)
{
    double v = (double)full * scale;
    return v < 1.0 ? 1 : (uint64_t)v;
}

static inline void bench_report_events(uint64_t n)
{
    fprintf(stderr, "events: %llu\n", (unsigned long long)n);
}

#endif
