/*
 * codec: per-event costs of the trace codec (format 3), each side alone, so that a regression
 * shows on the side where it happens (bench/micro.py runs it; bench/README.md shows its output).
 *
 *   encode  the shim's chunk encoder (preload/chunkenc.c, ap_chunk_round): a round's buffers of
 *           rows, as the hot path appends them, into CHUNK payloads of columns, the frees
 *           resolved to ordinals in stamp order across the threads' buffers, as the writer does
 *           (from an empty livemap, as a trace starts). Timed over all the rounds.
 *   decode  the analyzer's reader (analyzer/decode.c, ap_read_trace_mem) on the decompressed
 *           stream, from memory: records parsed, chunks turned back into events, held until a
 *           SYNC and delivered in stamp order to an `events` callback that only counts them
 *           (no zstd on either side: that is not the codec). The time to read the stream's
 *           preamble alone (magic, HEADER, STACK records: not events) is taken off.
 *   bytes   what the CHUNK records (kind, length and payload) of a mix add up to per event,
 *           that is what the writer hands to zstd.
 *
 * Event mixes, synthetic and deterministic (fixed seeds), shaped like the bench workloads:
 *
 *   churn    churn.c: one thread, malloc/free of small varied sizes with a FIFO window of 64
 *            live blocks, few stacks (4): most pairs are in one chunk (ALLOC_LOCAL, FREE_BACK)
 *   xthread  churn_mt.c: two threads in a ring, each allocating batches of 8 blocks that the
 *            other frees (every free is a cross-thread free, by ordinal: FREE_ORD)
 *   realloc  realloc_grow.c: 8 buffers at a time grown by 8-71 bytes with realloc (1 in 4 doubles
 *            its capacity), 20-99 steps each, then freed; a realloc is a FREE and an ALLOC (api
 *            REALLOC), and 1 in 4096 fails (FREE then UNFREE)
 *   deep     deep.c: 200 distinct call paths of 30-60 frames, a window of 128 live blocks
 *
 * Addresses come from a small model of glibc's malloc (per-thread caches of 7 blocks per size
 * class in front of per-arena free lists and a bump pointer), so their deltas are as varied as a
 * real trace's; stamps are those of the shim's counter clock (what it chooses on this VM). The
 * rows are cut into buffers exactly as preload/events.c cuts them (a new buffer when the next
 * event might not fit, or when the writer takes the partly filled buffers at the end of a round,
 * here every 2^17 events or a quarter of the mix, followed by a SYNC).
 *
 * Every run first checks that the reader returns exactly the events that were encoded: count,
 * order, thread, kind, api, stamp, size, stack id and address -- except for the blocks whose
 * address the format omits, whose allocation, free and any UNFREE must then carry the same key,
 * never used before, for the same original address. With --check, each round's promise is set
 * below its last stamps, so that rounds leave events to the next one as the writer's do. Any
 * difference exits 1.
 *
 * Usage: codec [--check] [--events N] [--runs N] [--min-time S] [--mix NAME] [--dump DIR]
 *   --check     correctness only (small mixes, nothing timed): what `meson test` runs
 *   --events N  events per mix (default 1000000; --check: 40000)
 *   --runs N    measurements per figure, the median printed (default 5)
 *   --min-time  seconds each measurement lasts at least (default 0.2)
 *   --mix NAME  only this mix (churn, xthread, realloc, deep)
 *   --dump DIR  also write each mix's stream to DIR/codec-MIX.stream (decompressed: `zstd` makes
 *               it a trace file that allocprof reads, e.g. to compare with a workload's trace)
 */
#include "chunkenc.h"
#include "decode.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* What the encoder takes from the shim's sys.c: mmap'd memory and a log line. */
void *ap_sys_map(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void ap_sys_unmap(void *p, size_t size)
{
	munmap(p, size);
}

void ap_log(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("allocprof: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- the events: what is encoded, and what decoding must give back ------------------------- */

struct xev {
	uint64_t stamp, addr, size;
	uint32_t stack, tid;
	uint8_t kind, api;
};

struct mix {
	const char *name;
	AP_VEC(struct xev) ev;        /* in stamp order (stamps are unique across threads) */
	unsigned nthreads;
	uint32_t nstacks;             /* ids 1..nstacks */
	unsigned min_depth, max_depth; /* of the stacks' frames (STACK records) */
	uint64_t stamp;               /* the counter clock: the last stamp handed out */
};

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void emit(struct mix *m, unsigned thread, int kind, int api, uint64_t addr, uint64_t size,
                 uint32_t stack)
{
	uint64_t stamp = ++m->stamp;
	struct xev e = {.stamp = stamp, .addr = addr, .size = kind == AP_EV_ALLOC ? size : 0,
	                .stack = kind == AP_EV_ALLOC ? stack : 0, .tid = 1000 + thread,
	                .kind = (uint8_t)kind, .api = (uint8_t)api};
	AP_VEC_PUSH(m->ev, e);
}

/* ---- a model of glibc malloc's addresses ----------------------------------------------------- */

/* Chunks are 16-byte granules with an 8-byte header, 32 bytes at least; size classes of 16 bytes
 * up to 64 KiB (larger chunks are never reused: no mix makes many). */
#define NCLASS 4096
#define TCACHE_COUNT 7
#define MAX_ARENAS 4 /* and threads: thread i allocates from arena i */

typedef AP_VEC(uint64_t) addr_list;

struct arena {
	uint64_t base, top;
	addr_list free[NCLASS];
};

static struct arena arenas[MAX_ARENAS];
static addr_list tcache[MAX_ARENAS][NCLASS]; /* per thread; thread i's arena is arena i */
static unsigned narenas;

static uint64_t chunk_size(uint64_t size)
{
	uint64_t c = (size + 8 + 15) & ~(uint64_t)15;
	return c < 32 ? 32 : c;
}

/* n arenas: the main one for a single thread, else one of the threads' mmapped heaps each. */
static void heap_init(unsigned n)
{
	for (unsigned i = 0; i < MAX_ARENAS; i++)
		for (unsigned c = 0; c < NCLASS; c++) {
			AP_VEC_FREE(arenas[i].free[c]);
			AP_VEC_FREE(tcache[i][c]);
		}
	narenas = n;
	for (unsigned i = 0; i < n; i++) {
		/* The main arena after a PIE's data; threads' arenas are 128 MiB apart. */
		arenas[i].base = n > 1 ? 0x7fb8f4000000ull + ((uint64_t)i << 27) : 0x55d4c6a2b000ull;
		arenas[i].top = arenas[i].base + 0x290; /* tcache_perthread_struct comes first */
	}
}

static unsigned arena_of(uint64_t addr)
{
	for (unsigned i = narenas; i-- > 1;)
		if (addr >= arenas[i].base)
			return i;
	return 0;
}

static uint64_t heap_alloc(unsigned thread, uint64_t size)
{
	uint64_t cs = chunk_size(size), c = cs / 16;
	if (c < NCLASS) {
		addr_list *l = &tcache[thread][c];
		if (l->n)
			return l->v[--l->n];
		l = &arenas[thread].free[c];
		if (l->n)
			return l->v[--l->n];
	}
	struct arena *a = &arenas[thread];
	uint64_t p = a->top + 16;
	a->top += cs;
	return p;
}

static void heap_free(unsigned thread, uint64_t addr, uint64_t size)
{
	uint64_t c = chunk_size(size) / 16;
	if (c >= NCLASS)
		return;
	if (tcache[thread][c].n < TCACHE_COUNT)
		AP_VEC_PUSH(tcache[thread][c], addr);
	else
		AP_VEC_PUSH(arenas[arena_of(addr)].free[c], addr);
}

/* ---- the mixes ------------------------------------------------------------------------------- */

/* churn.c's and churn_mt.c's sizes: skewed towards tiny objects. */
static uint64_t pick_size(uint64_t r)
{
	static const unsigned short sizes[16] = {
		8, 16, 16, 24, 24, 32, 32, 40, 48, 64, 64, 96, 128, 200, 256, 512,
	};
	return sizes[r & 15] + ((r >> 4) & 7);
}

static void gen_churn(struct mix *m, size_t target)
{
	enum { WINDOW = 64 };
	uint64_t rng = 0x1234567, live[WINDOW] = {0}, live_size[WINDOW] = {0};
	m->nthreads = 1;
	m->nstacks = 4;
	m->min_depth = m->max_depth = 15;
	heap_init(1);
	for (uint64_t i = 0; m->ev.n + 2 * WINDOW < target; i++) {
		uint64_t r = splitmix64(&rng), slot = i % WINDOW;
		if (live[slot]) {
			emit(m, 0, AP_EV_FREE, AP_API_FREE, live[slot], 0, 0);
			heap_free(0, live[slot], live_size[slot]);
		}
		uint64_t size = pick_size(r);
		live[slot] = heap_alloc(0, size);
		live_size[slot] = size;
		emit(m, 0, AP_EV_ALLOC, AP_API_MALLOC, live[slot], size, 1 + (uint32_t)((r >> 8) & 3));
	}
	for (unsigned s = 0; s < WINDOW; s++)
		if (live[s])
			emit(m, 0, AP_EV_FREE, AP_API_FREE, live[s], 0, 0);
}

/* churn_mt.c with its default 2 threads, event by event: the thread whose virtual clock is
 * behind makes the next call (each call costs it 20-60 units), so the threads' stamps interleave
 * as two threads running side by side do; now and then a thread is off the CPU for a while
 * (2000-32000 units) and the other runs alone, as on this 2-core machine shared with the shim's
 * writer thread: a real churn_mt trace has 4 in 5 events stamped right after the same thread's
 * previous one, and this one about as many. A thread produces up to 8 blocks into its queue to
 * the next thread (1024 at most in flight), then frees what its queue from the previous one
 * held when it looked, and again. */
static void gen_xthread(struct mix *m, size_t target)
{
	enum { T = 2, QCAP = 1024, BATCH = 8, DESCHED = 128 };
	struct {
		uint64_t addr[QCAP], size[QCAP];
		uint64_t head, tail;
	} *q = calloc(T, sizeof(*q));
	struct {
		uint64_t clock, rng;
		int draining;
		uint64_t left; /* of this produce or drain phase */
	} w[T];
	if (!q)
		abort();
	m->nthreads = T;
	m->nstacks = T;
	m->min_depth = m->max_depth = 15;
	heap_init(T);
	for (unsigned t = 0; t < T; t++)
		w[t] = (__typeof__(w[0])){.clock = t, .rng = 0xc0ffee + t, .draining = 1, .left = 0};
	bool producing = true;
	for (;;) {
		unsigned t = 0;
		for (unsigned i = 1; i < T; i++)
			if (w[i].clock < w[t].clock)
				t = i;
		uint64_t r = splitmix64(&w[t].rng);
		w[t].clock += 20 + r % 41;
		if ((r >> 32) % DESCHED == 0)
			w[t].clock += 2000 + (r >> 40) % 30001;
		if (w[t].left == 0) { /* the next phase */
			w[t].draining = !w[t].draining;
			if (w[t].draining) {
				w[t].left = q[(t + T - 1) % T].head - q[(t + T - 1) % T].tail;
			} else {
				uint64_t space = QCAP - (q[t].head - q[t].tail);
				w[t].left = producing ? (space < BATCH ? space : BATCH) : 0;
			}
			if (!producing && !w[t].left && !w[t].draining) {
				bool empty = true;
				for (unsigned i = 0; i < T; i++)
					empty &= q[i].head == q[i].tail;
				if (empty)
					break;
			}
			continue; /* the phase's first call comes on the thread's next turn */
		}
		w[t].left--;
		if (w[t].draining) {
			unsigned from = (t + T - 1) % T;
			uint64_t k = q[from].tail++ % QCAP;
			emit(m, t, AP_EV_FREE, AP_API_FREE, q[from].addr[k], 0, 0);
			heap_free(t, q[from].addr[k], q[from].size[k]);
		} else {
			uint64_t k = q[t].head++ % QCAP, size = pick_size(r >> 8);
			q[t].addr[k] = heap_alloc(t, size);
			q[t].size[k] = size;
			emit(m, t, AP_EV_ALLOC, AP_API_MALLOC, q[t].addr[k], size, 1 + t);
		}
		if (m->ev.n >= target)
			producing = false;
	}
	free(q);
}

/* realloc_grow.c. A block grows in place when its chunk has room or is the last of the arena;
 * otherwise realloc moves it. */
static void gen_realloc(struct mix *m, size_t target)
{
	enum { CONCURRENT = 8 };
	struct {
		uint64_t p, len, cap;
		unsigned steps_left;
		bool doubling, done;
	} b[CONCURRENT];
	uint64_t rng = 0xabcdef;
	m->nthreads = 1;
	m->nstacks = 1;
	m->min_depth = m->max_depth = 12;
	heap_init(1);
	for (unsigned i = 0; i < CONCURRENT; i++) {
		uint64_t r = splitmix64(&rng);
		b[i] = (__typeof__(b[0])){.steps_left = 20 + (unsigned)(r % 80), .doubling = (r >> 8) % 4 == 0};
	}
	for (unsigned active = CONCURRENT; active;) {
		for (unsigned i = 0; i < CONCURRENT; i++) {
			if (b[i].done)
				continue;
			uint64_t r = splitmix64(&rng);
			if (b[i].steps_left == 0) {
				emit(m, 0, AP_EV_FREE, AP_API_FREE, b[i].p, 0, 0);
				heap_free(0, b[i].p, b[i].cap);
				if (m->ev.n < target) {
					b[i] = (__typeof__(b[0])){.steps_left = 20 + (unsigned)(r % 80),
					                          .doubling = (r >> 8) % 4 == 0};
				} else {
					b[i].done = true;
					active--;
				}
				continue;
			}
			uint64_t need = b[i].len + 8 + (r & 63);
			b[i].steps_left--;
			if (need <= b[i].cap) {
				b[i].len = need;
				continue;
			}
			uint64_t cap = b[i].doubling ? (b[i].cap ? b[i].cap * 2 : 16) : need;
			while (cap < need)
				cap *= 2;
			if (!b[i].p) {
				b[i].p = heap_alloc(0, cap);
				emit(m, 0, AP_EV_ALLOC, AP_API_REALLOC, b[i].p, cap, 1);
			} else if ((r >> 16) % 4096 == 0) { /* a failed realloc: tried again next step */
				emit(m, 0, AP_EV_FREE, AP_API_REALLOC, b[i].p, 0, 0);
				emit(m, 0, AP_EV_UNFREE, AP_API_REALLOC, b[i].p, 0, 0);
				b[i].steps_left++;
				continue;
			} else {
				emit(m, 0, AP_EV_FREE, AP_API_REALLOC, b[i].p, 0, 0);
				struct arena *a = &arenas[0];
				uint64_t old = chunk_size(b[i].cap), want = chunk_size(cap);
				if (want <= old) {
					/* the chunk has room */
				} else if (b[i].p - 16 + old == a->top) {
					a->top += want - old;
				} else {
					uint64_t np = heap_alloc(0, cap);
					heap_free(0, b[i].p, b[i].cap);
					b[i].p = np;
				}
				emit(m, 0, AP_EV_ALLOC, AP_API_REALLOC, b[i].p, cap, 1);
			}
			b[i].cap = cap;
			b[i].len = need;
		}
	}
}

static void gen_deep(struct mix *m, size_t target)
{
	enum { WINDOW = 128, NPATHS = 200 };
	uint64_t rng = 42, live[WINDOW] = {0}, live_size[WINDOW] = {0};
	m->nthreads = 1;
	m->nstacks = NPATHS;
	m->min_depth = 30;
	m->max_depth = 60;
	heap_init(1);
	for (uint64_t i = 0; m->ev.n + 2 * WINDOW < target; i++) {
		unsigned path = (unsigned)(splitmix64(&rng) % NPATHS), slot = (unsigned)(i % WINDOW);
		if (live[slot]) {
			emit(m, 0, AP_EV_FREE, AP_API_FREE, live[slot], 0, 0);
			heap_free(0, live[slot], live_size[slot]);
		}
		uint64_t size = 16 + (path * 24) % 1000;
		live[slot] = heap_alloc(0, size);
		live_size[slot] = size;
		emit(m, 0, AP_EV_ALLOC, AP_API_MALLOC, live[slot], size, 1 + path);
	}
	for (unsigned s = 0; s < WINDOW; s++)
		if (live[s])
			emit(m, 0, AP_EV_FREE, AP_API_FREE, live[s], 0, 0);
}

static const struct {
	const char *name;
	void (*gen)(struct mix *m, size_t target);
} mixes[] = {
	{"churn", gen_churn},
	{"xthread", gen_xthread},
	{"realloc", gen_realloc},
	{"deep", gen_deep},
};

/* ---- recording: rows in buffers, as preload/events.c writes them ----------------------------- */

/* What the writer does in order: encode a buffer into a CHUNK record, or write a SYNC. */
struct item {
	struct ap_buf *b; /* NULL: SYNC */
	uint64_t sync;
};

struct recording {
	AP_VEC(struct item) items;
	size_t nbufs;
};

static void take(struct recording *rec, struct ap_buf **open)
{
	if (*open && (*open)->len)
		AP_VEC_PUSH(rec->items, ((struct item){.b = *open}));
	else
		free(*open);
	*open = NULL;
}

static void record_rows(const struct mix *m, size_t round, struct recording *rec)
{
	struct ap_buf *open[MAX_ARENAS] = {0};
	uint64_t seq[MAX_ARENAS] = {0};
	for (size_t i = 0; i < m->ev.n; i++) {
		const struct xev *e = &m->ev.v[i];
		unsigned t = e->tid - 1000;
		struct ap_buf *b = open[t];
		if (b && b->len + AP_EVENT_MAX > AP_BUF_DATA)
			take(rec, &open[t]); /* full: handed over */
		if (!open[t]) {
			b = open[t] = ap_xcalloc(1, sizeof(*b));
			b->tid = e->tid;
			b->seq = seq[t]++;
			rec->nbufs++;
		}
		b = open[t];
		if (b->len == 0)
			b->base_stamp = b->last_stamp = e->stamp;
		uint8_t *q = b->data + b->len;
		*q++ = (uint8_t)(e->kind | e->api << 4);
		q = ap_put_varint(q, e->stamp - b->last_stamp);
		b->last_stamp = e->stamp;
		q = ap_put_svarint(q, (int64_t)(e->addr - b->last_addr));
		b->last_addr = e->addr;
		if (e->kind == AP_EV_ALLOC) {
			q = ap_put_varint(q, e->size);
			q = ap_put_varint(q, e->stack);
		}
		b->n_events++;
		b->len = (size_t)(q - b->data);
		if ((i + 1) % round == 0 || i + 1 == m->ev.n) {
			/* The end of a writer round: every partly filled buffer is taken, then the
			 * promise that no event stamped before the next one is still to come. */
			for (unsigned k = 0; k < m->nthreads; k++)
				take(rec, &open[k]);
			AP_VEC_PUSH(rec->items, ((struct item){.sync = e->stamp + 1}));
		}
	}
}

static void recording_free(struct recording *rec)
{
	for (size_t i = 0; i < rec->items.n; i++)
		free(rec->items.v[i].b);
	AP_VEC_FREE(rec->items);
}

/* ---- the stream the reader reads ------------------------------------------------------------- */

typedef AP_VEC(uint8_t) bytes;

static void put_bytes(bytes *s, const void *p, size_t n)
{
	if (!ap_grow(&s->v, &s->cap, s->n + n, 1)) {
		fprintf(stderr, "codec: out of memory\n");
		exit(2);
	}
	memcpy(s->v + s->n, p, n);
	s->n += n;
}

static void put_varint(bytes *s, uint64_t v)
{
	uint8_t b[AP_VARINT_MAX];
	put_bytes(s, b, (size_t)(ap_put_varint(b, v) - b));
}

static void put_record(bytes *s, int kind, const bytes *payload)
{
	uint8_t k = (uint8_t)kind;
	put_bytes(s, &k, 1);
	put_varint(s, payload->n);
	put_bytes(s, payload->v, payload->n);
}

static void put_str(bytes *s, const char *str)
{
	put_varint(s, strlen(str));
	put_bytes(s, str, strlen(str));
}

/* The magic, a HEADER and the STACK records: what precedes the events. */
static void put_preamble(bytes *s, const struct mix *m)
{
	put_bytes(s, AP_MAGIC, AP_MAGIC_LEN);
	put_varint(s, AP_FORMAT_VERSION);
	bytes p = {0};
	put_varint(&p, 4242);                  /* pid */
	put_varint(&p, 4241);                  /* ppid */
	put_varint(&p, 1796000000000000000ull); /* start_realtime_ns */
	put_varint(&p, AP_CLOCK_COUNTER);
	put_varint(&p, 0);                     /* start_stamp */
	put_varint(&p, 1000000000);            /* start_monotonic_ns */
	put_varint(&p, 0);                     /* sample_bytes: every allocation */
	put_varint(&p, 128);                   /* max_depth */
	put_varint(&p, 1);                     /* seed */
	put_varint(&p, 4096);                  /* page_size */
	put_str(&p, "/bench/codec");
	put_varint(&p, 1);
	put_str(&p, m->name);
	put_varint(&p, 0);                     /* flags */
	put_str(&p, "bench");
	put_record(s, AP_REC_HEADER, &p);
	uint64_t rng = 0x5eed;
	for (uint32_t id = 1; id <= m->nstacks; id++) {
		unsigned depth = m->min_depth + (unsigned)(splitmix64(&rng) % (m->max_depth - m->min_depth + 1));
		uint64_t bits = splitmix64(&rng);
		p.n = 0;
		put_varint(&p, id);
		put_varint(&p, 0); /* generation */
		put_varint(&p, 0); /* flags */
		put_varint(&p, depth);
		/* Return addresses into two functions of the program, then main and libc's start. */
		uint64_t prev = 0;
		for (unsigned f = 0; f < depth; f++) {
			uint64_t pc = f + 2 == depth ? 0x55d4c5a01234ull
			            : f + 1 == depth ? 0x7f3a5c429d90ull
			            : 0x55d4c5a01400ull + ((bits >> (f % 64)) & 1) * 0x180 + (f == 0) * 0x40;
			if (f == 0)
				put_varint(&p, pc);
			else
				put_varint(&p, ap_zigzag((int64_t)(pc - prev)));
			prev = pc;
		}
		put_record(s, AP_REC_STACK, &p);
	}
	AP_VEC_FREE(p);
}

/* How far below the end of each round its promise is, so that the rounds leave events to the next
 * one as the writer's do (the events its threads record while it steals their buffers). */
static uint64_t promise_lag = 0;

/* The recording's rounds: the buffers up to each SYNC, chained through next after what the round
 * before left, encoded as the writer encodes a round (ap_chunk_round) and handed to sink in
 * order; the last round takes everything. */
static void encode_rounds(const struct recording *rec, ap_chunk_sink *sink, void *ctx,
                          void (*on_sync)(void *ctx, uint64_t sync))
{
	size_t first = 0;
	struct ap_buf *carry = NULL;
	uint64_t promise = 0;
	for (size_t i = 0; i < rec->items.n; i++) {
		const struct item *it = &rec->items.v[i];
		if (it->b)
			continue;
		struct ap_buf *list = carry, **tail = &list;
		while (*tail)
			tail = &(*tail)->next;
		for (size_t k = first; k < i; k++) {
			*tail = rec->items.v[k].b;
			(*tail)->next = NULL;
			tail = &(*tail)->next;
		}
		bool last = i + 1 == rec->items.n;
		if (last)
			promise = it->sync;
		else if (it->sync > promise + promise_lag)
			promise = it->sync - promise_lag;
		struct ap_buf *done;
		carry = ap_chunk_round(list, promise, sink, ctx, &done);
		if (on_sync)
			on_sync(ctx, promise);
		first = i + 1;
	}
}

struct stream_ctx {
	bytes *s, p;
	uint64_t chunk_bytes;
};

static void stream_chunk(void *ctx, const struct ap_chunk_out *out)
{
	struct stream_ctx *c = ctx;
	c->p.n = 0;
	for (size_t k = 0; k < out->npieces; k++)
		put_bytes(&c->p, out->piece[k], out->len[k]);
	size_t before = c->s->n;
	put_record(c->s, AP_REC_CHUNK, &c->p);
	c->chunk_bytes += c->s->n - before;
}

static void stream_sync(void *ctx, uint64_t sync)
{
	struct stream_ctx *c = ctx;
	c->p.n = 0;
	put_varint(&c->p, sync);
	put_record(c->s, AP_REC_SYNC, &c->p);
}

/* The whole stream; *chunk_bytes gets what the CHUNK records take. */
static void build_stream(const struct mix *m, const struct recording *rec, bytes *s, size_t *preamble_len,
                         uint64_t *chunk_bytes)
{
	put_preamble(s, m);
	*preamble_len = s->n;
	ap_chunk_reset(); /* a new trace: ordinals from 0 */
	struct stream_ctx c = {.s = s};
	encode_rounds(rec, stream_chunk, &c, stream_sync);
	*chunk_bytes = c.chunk_bytes;
	AP_VEC_FREE(c.p);
}

/* ---- checking: decoding gives back exactly what was encoded ---------------------------------- */

struct check {
	const struct mix *m;
	size_t next;    /* index of the next expected event */
	ap_map live;    /* key of a block delivered without its address -> its original address */
	ap_map dead;    /* the same, once freed (an UNFREE may bring one back) */
	uint64_t nlocal; /* such blocks */
	char error[320];
};

#define LOCAL_KEY_BASE (1ull << 63) /* the reader's keys for blocks whose address is omitted */

/* Moves key from one map to the other if it is there for addr; false if not. */
static bool move_key(ap_map *from, ap_map *to, uint64_t key, uint64_t addr)
{
	uint64_t *val = ap_map_get(from, key);
	if (!val || *val != addr)
		return false;
	ap_map_del(from, key, NULL);
	bool added;
	*ap_map_put(to, key, &added) = addr;
	return true;
}

static void check_events(void *ctx, const ap_event_rec *v, size_t n)
{
	struct check *c = ctx;
	for (size_t i = 0; i < n && !c->error[0]; i++, c->next++) {
		const ap_event_rec *d = &v[i];
		if (c->next >= c->m->ev.n) {
			snprintf(c->error, sizeof(c->error), "more events decoded than the %zu encoded", c->m->ev.n);
			return;
		}
		const struct xev *e = &c->m->ev.v[c->next];
		const char *what = NULL;
		if (d->stamp != e->stamp)
			what = "stamp";
		else if (d->tid != e->tid)
			what = "thread";
		else if (d->kind != e->kind)
			what = "kind";
		else if (d->api != e->api)
			what = "api";
		else if (d->size != e->size)
			what = "size";
		else if (d->stack != e->stack)
			what = "stack id";
		else if (d->addr >= LOCAL_KEY_BASE && e->kind == AP_EV_ALLOC) {
			/* ALLOC_ORD, ALLOC_LOCAL: a key the reader makes from the block's ordinal,
			 * never given twice */
			bool added;
			uint64_t *val = ap_map_put(&c->live, d->addr, &added);
			if (!added || ap_map_get(&c->dead, d->addr))
				what = "address (a key for an omitted one, given twice)";
			*val = e->addr;
			c->nlocal++;
		} else if (d->addr >= LOCAL_KEY_BASE && e->kind == AP_EV_FREE) {
			/* FREE_ORD, FREE_BACK: the key of a live block of the same address, allocated by
			 * any thread */
			if (!move_key(&c->live, &c->dead, d->addr, e->addr))
				what = "address (the free of an omitted one)";
		} else if (d->addr >= LOCAL_KEY_BASE && e->kind == AP_EV_UNFREE) {
			/* By ordinal: a block this trace freed, of the same address */
			if (!move_key(&c->dead, &c->live, d->addr, e->addr))
				what = "address (the UNFREE of an omitted one)";
		} else if (d->addr != e->addr) {
			what = "address";
		}
		if (what)
			snprintf(c->error, sizeof(c->error),
			         "event %zu (stamp %llu, thread %u, kind %u): the %s differs (decoded addr %#llx "
			         "size %llu stack %u kind %u api %u; encoded addr %#llx size %llu stack %u kind %u api %u)",
			         c->next, (unsigned long long)e->stamp, e->tid, e->kind, what,
			         (unsigned long long)d->addr, (unsigned long long)d->size, d->stack, d->kind, d->api,
			         (unsigned long long)e->addr, (unsigned long long)e->size, e->stack, e->kind, e->api);
	}
}

/* 0 if the stream decodes into exactly m's events; else prints why and returns 1. */
static int check_stream(const struct mix *m, const bytes *s, uint64_t *nlocal)
{
	struct check c = {.m = m};
	ap_reader_ops ops = {.ctx = &c, .events = check_events};
	ap_read_result res;
	int err = ap_read_trace_mem(m->name, s->v, s->n, false, &ops, &res);
	if (err) {
		fprintf(stderr, "codec: %s: the reader failed: %s\n", m->name, res.error);
		return 1;
	}
	if (!c.error[0] && c.next != m->ev.n)
		snprintf(c.error, sizeof(c.error), "%zu events decoded, %zu encoded", c.next, m->ev.n);
	if (!c.error[0] && (res.truncated || res.unordered || res.late_events))
		snprintf(c.error, sizeof(c.error), "the reader says truncated %d, unordered %d, late events %llu",
		         res.truncated, res.unordered, (unsigned long long)res.late_events);
	*nlocal = c.nlocal;
	ap_map_free(&c.live);
	ap_map_free(&c.dead);
	if (c.error[0]) {
		fprintf(stderr, "codec: %s: decoding does not give back the events encoded: %s\n", m->name, c.error);
		return 1;
	}
	return 0;
}

static int dump_stream(const char *dir, const struct mix *m, const bytes *s)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/codec-%s.stream", dir, m->name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(s->v, 1, s->n, f) != s->n || fclose(f)) {
		fprintf(stderr, "codec: cannot write %s\n", path);
		return 1;
	}
	return 0;
}

/* ---- timing -------------------------------------------------------------------------------- */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct bench {
	const struct mix *m;
	const struct recording *rec;
	const bytes *s;
	size_t len; /* of s to read: all of it, or the preamble */
	uint64_t sink;
};

static void sum_chunk(void *ctx, const struct ap_chunk_out *out)
{
	*(uint64_t *)ctx += out->total;
}

static void encode_all(struct bench *b)
{
	ap_chunk_reset();
	encode_rounds(b->rec, sum_chunk, &b->sink, NULL);
}

static void count_events(void *ctx, const ap_event_rec *v, size_t n)
{
	(void)v;
	*(uint64_t *)ctx += n;
}

static void decode_all(struct bench *b)
{
	ap_reader_ops ops = {.ctx = &b->sink, .events = count_events};
	ap_read_result res;
	if (ap_read_trace_mem(b->m->name, b->s->v, b->len, false, &ops, &res)) {
		fprintf(stderr, "codec: %s: %s\n", b->m->name, res.error);
		exit(1);
	}
}

/* Seconds per call of fn, over as many calls as take min_time. */
static double measure(void (*fn)(struct bench *), struct bench *b, double min_time)
{
	fn(b); /* warm */
	uint64_t calls = 0;
	double t0 = now(), t;
	do {
		fn(b);
		calls++;
	} while ((t = now() - t0) < min_time);
	return t / (double)calls;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- main ---------------------------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: codec [--check] [--events N] [--runs N] [--min-time SECONDS] [--mix NAME] "
	        "[--dump DIR]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	bool check_only = false;
	size_t events = 0;
	int runs = 5;
	double min_time = 0.2;
	const char *only = NULL, *dump = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--check"))
			check_only = true, promise_lag = 37; /* rounds leave events to the next: checked too */
		else if (!strcmp(a, "--events") && i + 1 < argc)
			events = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(a, "--runs") && i + 1 < argc)
			runs = atoi(argv[++i]);
		else if (!strcmp(a, "--min-time") && i + 1 < argc)
			min_time = strtod(argv[++i], NULL);
		else if (!strcmp(a, "--mix") && i + 1 < argc)
			only = argv[++i];
		else if (!strcmp(a, "--dump") && i + 1 < argc)
			dump = argv[++i];
		else
			usage();
	}
	if (!events)
		events = check_only ? 40000 : 1000000;
	if (runs < 1 || runs > 99 || !(min_time > 0))
		usage();
	/* A writer round: the partly filled buffers taken and a SYNC written (at least 4 a mix). */
	size_t round = events / 4 < (1u << 17) ? events / 4 + 1 : (1u << 17);

	if (!check_only)
		printf("trace codec (format 3), per event; median of %d runs of >= %.2f s (min-max)\n"
		       "  %-8s %9s %12s %20s %20s\n", runs, min_time, "mix", "events", "bytes/event",
		       "encode ns/event", "decode ns/event");
	int found = 0;
	for (size_t k = 0; k < sizeof(mixes) / sizeof(mixes[0]); k++) {
		if (only && strcmp(only, mixes[k].name))
			continue;
		found++;
		struct mix m = {.name = mixes[k].name};
		mixes[k].gen(&m, events);
		struct recording rec = {0};
		record_rows(&m, round, &rec);
		bytes s = {0};
		size_t preamble_len;
		uint64_t chunk_bytes, nlocal;
		build_stream(&m, &rec, &s, &preamble_len, &chunk_bytes);
		if (check_stream(&m, &s, &nlocal))
			return 1;
		if (dump && dump_stream(dump, &m, &s))
			return 1;
		double per_byte = (double)chunk_bytes / (double)m.ev.n;
		if (check_only) {
			printf("codec --check: %-8s %zu events in %zu chunks, %.2f bytes/event, %llu blocks without "
			       "addresses: decoded events match\n", m.name, m.ev.n, rec.nbufs, per_byte,
			       (unsigned long long)nlocal);
		} else {
			/* Interleaved, so that noise from the machine's other work hits all three alike.
			 * The read of the preamble alone (header, stacks) is taken off the decoding:
			 * STACK records are not events. */
			double enc[99], dec[99], pre[99];
			struct bench b = {.m = &m, .rec = &rec, .s = &s};
			for (int r = 0; r < runs; r++) {
				enc[r] = measure(encode_all, &b, min_time);
				b.len = s.n;
				dec[r] = measure(decode_all, &b, min_time);
				b.len = preamble_len;
				pre[r] = measure(decode_all, &b, min_time / 4);
			}
			double n = (double)m.ev.n / 1e9, pre_med = median(pre, runs);
			double enc_med = median(enc, runs) / n, dec_med = (median(dec, runs) - pre_med) / n;
			char ebuf[32], dbuf[32]; /* median() sorted: [0] and [runs - 1] are the extremes */
			snprintf(ebuf, sizeof(ebuf), "%.1f (%.1f-%.1f)", enc_med, enc[0] / n, enc[runs - 1] / n);
			snprintf(dbuf, sizeof(dbuf), "%.1f (%.1f-%.1f)", dec_med, (dec[0] - pre_med) / n,
			         (dec[runs - 1] - pre_med) / n);
			printf("  %-8s %9zu %12.2f %20s %20s\n", m.name, m.ev.n, per_byte, ebuf, dbuf);
			fflush(stdout);
		}
		recording_free(&rec);
		AP_VEC_FREE(s);
		AP_VEC_FREE(m.ev);
	}
	if (!found)
		usage();
	if (check_only)
		printf("codec --check: ok\n");
	return 0;
}
