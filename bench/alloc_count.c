/* alloc_count: a minimal LD_PRELOAD shim that counts malloc-family calls.
 *
 * Used by bench/run.py (in a separate, untimed run) to get the event count
 * of workloads that cannot count their own calls (the Python workload) and
 * to cross-check the "events: N" line the C workloads print.
 *
 * At exit each process appends one line to the file named by
 * $ALLOCCOUNT_OUT:
 *   pid=<pid> events=<n> malloc=<n> calloc=<n> realloc=<n> memalign=<n> free=<n> free_null=<n>
 * where events = all allocation calls + non-NULL frees (free(NULL) is a
 * no-op that profilers may skip, so it is reported but not counted).
 * Forwards to glibc's __libc_* entry points, so no dlsym bootstrap issue.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

/* Not (or no longer) declared by glibc's headers. */
void cfree(void *p);
void *memalign(size_t al, size_t n);
void *valloc(size_t n);
void *pvalloc(size_t n);
void *reallocarray(void *p, size_t a, size_t b);

static _Atomic uint64_t c_malloc, c_calloc, c_realloc, c_memalign, c_free, c_free_null;

#define BUMP(c) atomic_fetch_add_explicit(&(c), 1, memory_order_relaxed)
#define EXPORT __attribute__((visibility("default")))

EXPORT void *malloc(size_t n) { BUMP(c_malloc); return __libc_malloc(n); }
EXPORT void *calloc(size_t a, size_t b) { BUMP(c_calloc); return __libc_calloc(a, b); }
EXPORT void *realloc(void *p, size_t n) { BUMP(c_realloc); return __libc_realloc(p, n); }
EXPORT void free(void *p)
{
    if (p)
        BUMP(c_free);
    else
        BUMP(c_free_null);
    __libc_free(p);
}
EXPORT void cfree(void *p) { free(p); }
EXPORT void *reallocarray(void *p, size_t a, size_t b)
{
    size_t n;
    if (__builtin_mul_overflow(a, b, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, n);
}
EXPORT void *memalign(size_t al, size_t n) { BUMP(c_memalign); return __libc_memalign(al, n); }
EXPORT void *aligned_alloc(size_t al, size_t n) { BUMP(c_memalign); return __libc_memalign(al, n); }
EXPORT void *valloc(size_t n) { BUMP(c_memalign); return __libc_valloc(n); }
EXPORT void *pvalloc(size_t n) { BUMP(c_memalign); return __libc_pvalloc(n); }
EXPORT int posix_memalign(void **out, size_t al, size_t n)
{
    BUMP(c_memalign);
    if (al < sizeof(void *) || (al & (al - 1)) != 0)
        return EINVAL;
    void *p = __libc_memalign(al, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

static char *put_u64(char *s, uint64_t v)
{
    char tmp[24];
    int i = 0;
    do {
        tmp[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (i)
        *s++ = tmp[--i];
    return s;
}

static char *put_str(char *s, const char *t)
{
    size_t n = strlen(t);
    memcpy(s, t, n);
    return s + n;
}

__attribute__((destructor)) static void alloc_count_report(void)
{
    const char *path = getenv("ALLOCCOUNT_OUT");
    if (!path || !*path)
        return;
    uint64_t m = c_malloc, c = c_calloc, r = c_realloc, a = c_memalign, f = c_free, fn = c_free_null;
    char line[256], *s = line;
    s = put_str(s, "pid=");
    s = put_u64(s, (uint64_t)getpid());
    s = put_str(s, " events=");
    s = put_u64(s, m + c + r + a + f);
    s = put_str(s, " malloc=");
    s = put_u64(s, m);
    s = put_str(s, " calloc=");
    s = put_u64(s, c);
    s = put_str(s, " realloc=");
    s = put_u64(s, r);
    s = put_str(s, " memalign=");
    s = put_u64(s, a);
    s = put_str(s, " free=");
    s = put_u64(s, f);
    s = put_str(s, " free_null=");
    s = put_u64(s, fn);
    *s++ = '\n';
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    ssize_t unused = write(fd, line, (size_t)(s - line));
    (void)unused;
    close(fd);
}
