/*
 * decode.c: the trace reader. Every length, count and varint is checked against what is left of
 * the input; a malformed record ends the read with an error naming the file, a cut-off file ends
 * it with the events up to the cut and `truncated` set.
 */
#include "decode.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

/* No record the shim writes comes near this; a larger length means corruption, and refusing it
 * keeps a flipped bit from making us buffer gigabytes. */
#define AP_MAX_RECORD (64u << 20)

struct pending {
	ap_event ev;
	uint64_t seq; /* arrival order, to keep the sort stable */
};

struct reader {
	const char *path;
	const ap_reader_ops *ops;
	ap_read_result *res;
	int fd;
	ZSTD_DStream *ds;
	uint8_t *in;
	size_t in_len, in_pos;
	bool in_eof;
	size_t last_ret; /* ZSTD_decompressStream's last hint: 0 at a frame boundary */
	uint8_t *buf;
	size_t len, pos, cap;
	uint64_t offset; /* decompressed bytes consumed before buf[0] */
	AP_VEC(struct pending) pending;
	uint64_t seq, sync;
	uint32_t nstacks, max_stack; /* STACK records seen, largest id defined */
	AP_VEC(uint64_t) frames;
	AP_VEC(ap_segment) segs;
	AP_VEC(const char *) argv;
};

static int fail(struct reader *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct reader *r, int code, const char *fmt, ...)
{
	int n = snprintf(r->res->error, sizeof(r->res->error), "%s: ", r->path);
	va_list ap;
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < sizeof(r->res->error))
		vsnprintf(r->res->error + n, sizeof(r->res->error) - (size_t)n, fmt, ap);
	va_end(ap);
	return -code;
}

/* ---- decompression ------------------------------------------------------------------------------ */

/* Makes more decompressed bytes available: 1 if some were added, 0 at the end of the input, or a
 * negated error. */
static int fill(struct reader *r)
{
	if (r->pos) {
		memmove(r->buf, r->buf + r->pos, r->len - r->pos);
		r->len -= r->pos;
		r->offset += r->pos;
		r->pos = 0;
	}
	size_t want = ZSTD_DStreamOutSize();
	if (r->cap - r->len < want) {
		r->cap = r->len + want > r->cap * 2 ? r->len + want : r->cap * 2;
		r->buf = ap_xrealloc(r->buf, r->cap);
	}
	for (;;) {
		if (r->in_pos == r->in_len && !r->in_eof) {
			ssize_t n;
			do
				n = read(r->fd, r->in, ZSTD_DStreamInSize());
			while (n < 0 && errno == EINTR);
			if (n < 0)
				return fail(r, AP_E_IO, "read error: %s", strerror(errno));
			if (n == 0)
				r->in_eof = true;
			r->in_len = (size_t)n;
			r->in_pos = 0;
			r->res->bytes_in += (uint64_t)n;
		}
		if (r->in_pos == r->in_len && r->in_eof)
			return 0;
		ZSTD_inBuffer in = {r->in, r->in_len, r->in_pos};
		ZSTD_outBuffer out = {r->buf + r->len, r->cap - r->len, 0};
		size_t ret = ZSTD_decompressStream(r->ds, &out, &in);
		if (ZSTD_isError(ret)) {
			if (r->res->bytes_in <= r->in_len && r->offset + r->len == 0)
				return fail(r, AP_E_BADMAGIC, "not an allocprof trace (not zstd-compressed)");
			return fail(r, AP_E_CORRUPT, "corrupt compressed data near file offset %llu (%s)",
			            (unsigned long long)(r->res->bytes_in - r->in_len + r->in_pos),
			            ZSTD_getErrorName(ret));
		}
		r->in_pos = in.pos;
		r->last_ret = ret;
		r->len += out.pos;
		r->res->bytes_out += out.pos;
		if (out.pos)
			return 1;
	}
}

/* Ensures n bytes are buffered at r->pos: 1 yes, 0 the input ended first, or a negated error. */
static int need(struct reader *r, size_t n)
{
	while (r->len - r->pos < n) {
		int got = fill(r);
		if (got <= 0)
			return got;
	}
	return 1;
}

/* ---- parsing helpers ------------------------------------------------------------------------------ */

struct cur {
	const uint8_t *p, *end;
	bool bad;
};

static uint64_t cu(struct cur *c)
{
	uint64_t v;
	if (c->bad || ap_get_varint(&c->p, c->end, &v)) {
		c->bad = true;
		return 0;
	}
	return v;
}

static uint32_t cu32(struct cur *c)
{
	uint64_t v = cu(c);
	if (v > UINT32_MAX)
		c->bad = true;
	return (uint32_t)v;
}

/* A string, copied NUL-terminated into *store (freed by the caller). */
static const uint8_t *cbytes(struct cur *c, size_t *len)
{
	uint64_t n = cu(c);
	if (c->bad || n > (uint64_t)(c->end - c->p)) {
		c->bad = true;
		*len = 0;
		return NULL;
	}
	const uint8_t *s = c->p;
	c->p += n;
	*len = (size_t)n;
	return s;
}

static char *cstr(struct cur *c)
{
	size_t n;
	const uint8_t *s = cbytes(c, &n);
	char *out = ap_xmalloc(n + 1);
	if (s)
		memcpy(out, s, n);
	out[n] = 0;
	return out;
}

/* ---- records --------------------------------------------------------------------------------------- */

static int cmp_pending(const void *a, const void *b)
{
	const struct pending *x = a, *y = b;
	if (x->ev.stamp != y->ev.stamp)
		return x->ev.stamp < y->ev.stamp ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Delivers, in stamp order, every held event with a stamp below limit. */
static void deliver(struct reader *r, uint64_t limit)
{
	if (!r->pending.n)
		return;
	qsort(r->pending.v, r->pending.n, sizeof(*r->pending.v), cmp_pending);
	size_t i = 0;
	for (; i < r->pending.n && r->pending.v[i].ev.stamp < limit; i++)
		if (r->ops->event)
			r->ops->event(r->ops->ctx, &r->pending.v[i].ev);
	memmove(r->pending.v, r->pending.v + i, (r->pending.n - i) * sizeof(*r->pending.v));
	r->pending.n -= i;
}

static void hold(struct reader *r, const ap_event *ev)
{
	if (ev->stamp < r->sync)
		r->res->late_events++;
	struct pending p = {*ev, r->seq++};
	AP_VEC_PUSH(r->pending, p);
	r->res->events++;
}

static int rec_chunk(struct reader *r, struct cur *c)
{
	ap_event ev = {0};
	ev.tid = cu32(c);
	cu(c); /* chunk_seq: order within a thread comes from the stamps */
	uint64_t stamp = cu(c), addr = 0;
	while (!c->bad && c->p < c->end) {
		uint8_t tag = *c->p++;
		ev.kind = tag & 15;
		ev.api = tag >> 4;
		stamp += cu(c);
		ev.stamp = stamp;
		switch (ev.kind) {
		case AP_EV_ALLOC:
			addr += (uint64_t)ap_unzigzag(cu(c));
			ev.addr = addr;
			ev.size = cu(c);
			ev.stack = cu32(c);
			/* The writer puts a STACK record before any event naming it. */
			if (!c->bad && ev.stack > r->max_stack)
				return fail(r, AP_E_CORRUPT, "corrupt trace: an event of thread %u refers to stack %u, "
				            "which was never defined", ev.tid, ev.stack);
			break;
		case AP_EV_FREE:
		case AP_EV_UNFREE:
			addr += (uint64_t)ap_unzigzag(cu(c));
			ev.addr = addr;
			ev.size = 0;
			ev.stack = 0;
			break;
		case AP_EV_LOST:
			ev.lost_allocs = cu(c);
			ev.lost_frees = cu(c);
			break;
		default:
			return fail(r, AP_E_CORRUPT, "corrupt trace: unknown event kind %u in a chunk of thread %u",
			            ev.kind, ev.tid);
		}
		if (c->bad)
			break;
		hold(r, &ev);
		ev.lost_allocs = ev.lost_frees = 0;
	}
	if (c->bad)
		return fail(r, AP_E_CORRUPT, "corrupt trace: malformed event in a chunk of thread %u", ev.tid);
	return 0;
}

static int rec_header(struct reader *r, struct cur *c)
{
	ap_header h = {0};
	h.pid = cu(c);
	h.ppid = cu(c);
	h.start_realtime_ns = cu(c);
	h.clock = cu32(c);
	h.start_stamp = cu(c);
	h.start_monotonic_ns = cu(c);
	h.sample_bytes = cu(c);
	h.max_depth = cu32(c);
	h.seed = cu(c);
	h.page_size = cu(c);
	char *exe = cstr(c);
	uint64_t argc = cu(c);
	if (argc > (uint64_t)(c->end - c->p))
		c->bad = true;
	r->argv.n = 0;
	for (uint64_t i = 0; i < argc && !c->bad; i++)
		AP_VEC_PUSH(r->argv, cstr(c));
	h.flags = cu32(c);
	char *host = cstr(c);
	int ret = 0;
	if (c->bad) {
		ret = fail(r, AP_E_CORRUPT, "corrupt trace: malformed header");
	} else {
		h.exe = exe;
		h.hostname = host;
		h.argv = r->argv.v;
		h.argc = r->argv.n;
		if (r->ops->header)
			r->ops->header(r->ops->ctx, &h);
	}
	for (size_t i = 0; i < r->argv.n; i++)
		free((void *)r->argv.v[i]);
	r->argv.n = 0;
	free(exe);
	free(host);
	return ret;
}

static int rec_module(struct reader *r, struct cur *c)
{
	ap_module_desc m = {0};
	m.id = cu32(c);
	m.generation = cu32(c);
	cu(c); /* stamp */
	m.base = cu(c);
	char *path = cstr(c);
	m.build_id = cbytes(c, &m.build_id_len);
	uint64_t nseg = cu(c);
	if (nseg > (uint64_t)(c->end - c->p))
		c->bad = true;
	r->segs.n = 0;
	for (uint64_t i = 0; i < nseg && !c->bad; i++) {
		ap_segment s;
		s.vaddr = cu(c);
		s.memsz = cu(c);
		s.file_offset = cu(c);
		s.flags = cu32(c);
		AP_VEC_PUSH(r->segs, s);
	}
	int ret = 0;
	if (c->bad || !m.id) {
		ret = fail(r, AP_E_CORRUPT, "corrupt trace: malformed module record");
	} else if (r->ops->module) {
		m.path = path;
		m.segs = r->segs.v;
		m.nsegs = r->segs.n;
		r->ops->module(r->ops->ctx, &m);
	}
	free(path);
	return ret;
}

static int rec_stack(struct reader *r, struct cur *c)
{
	ap_stack_rec s = {0};
	s.id = cu32(c);
	s.generation = cu32(c);
	s.flags = cu32(c);
	uint64_t n = cu(c);
	if (n > (uint64_t)(c->end - c->p) || !s.id)
		c->bad = true;
	r->frames.n = 0;
	uint64_t prev = 0;
	for (uint64_t i = 0; i < n && !c->bad; i++) {
		prev = i ? prev + (uint64_t)ap_unzigzag(cu(c)) : cu(c);
		AP_VEC_PUSH(r->frames, prev);
	}
	if (c->bad)
		return fail(r, AP_E_CORRUPT, "corrupt trace: malformed stack record");
	/* Ids are handed out in sequence (a lost insertion race wastes one now and then), so an id
	 * far beyond the number of stacks seen is corruption, not a reason to allocate gigabytes. */
	if (s.id > 2 * (uint64_t)r->nstacks + 4096)
		return fail(r, AP_E_CORRUPT, "corrupt trace: stack id %u out of range", s.id);
	r->nstacks++;
	if (s.id > r->max_stack)
		r->max_stack = s.id;
	s.nframes = (uint32_t)n;
	s.frames = r->frames.v;
	if (r->ops->stack)
		r->ops->stack(r->ops->ctx, &s);
	return 0;
}

static int rec_end(struct reader *r, struct cur *c, bool is_exit)
{
	ap_trace_end *e = &r->res->end;
	if (is_exit) {
		e->exit_how = cu32(c);
		e->exit_status = cu32(c);
		e->has_exit = !c->bad;
	} else {
		e->end_stamp = cu(c);
		e->end_monotonic_ns = cu(c);
		cu(c); /* how: the shim does not know */
		cu(c);
		uint64_t n = cu(c);
		for (uint64_t i = 0; i < n && !c->bad; i++) {
			uint64_t v = cu(c);
			if (i < AP_CNT__COUNT)
				e->counters[i] = v;
		}
		e->ncounters = n < AP_CNT__COUNT ? (size_t)n : AP_CNT__COUNT;
		e->has_end = !c->bad;
	}
	if (c->bad)
		return fail(r, AP_E_CORRUPT, "corrupt trace: malformed %s record", is_exit ? "exit" : "end");
	return 0;
}

static int record(struct reader *r, uint8_t kind, const uint8_t *p, size_t len)
{
	struct cur c = {p, p + len, false};
	r->res->records++;
	switch (kind) {
	case AP_REC_HEADER:
		return rec_header(r, &c);
	case AP_REC_MODULE:
		return rec_module(r, &c);
	case AP_REC_UNLOAD: {
		uint32_t id = cu32(&c);
		cu(&c);
		uint32_t gen = cu32(&c);
		if (c.bad)
			return fail(r, AP_E_CORRUPT, "corrupt trace: malformed unload record");
		if (r->ops->unload)
			r->ops->unload(r->ops->ctx, id, gen);
		return 0;
	}
	case AP_REC_STACK:
		return rec_stack(r, &c);
	case AP_REC_CHUNK:
		return rec_chunk(r, &c);
	case AP_REC_SYNC: {
		uint64_t w = cu(&c);
		if (c.bad)
			return fail(r, AP_E_CORRUPT, "corrupt trace: malformed sync record");
		if (w > r->sync) {
			r->sync = w;
			deliver(r, w);
		}
		return 0;
	}
	case AP_REC_CLOCK: {
		uint64_t stamp = cu(&c), mono = cu(&c);
		if (c.bad)
			return fail(r, AP_E_CORRUPT, "corrupt trace: malformed clock record");
		if (r->ops->clock)
			r->ops->clock(r->ops->ctx, stamp, mono);
		return 0;
	}
	case AP_REC_TOTALS: {
		cu(&c);
		uint64_t a = cu(&c), b = cu(&c), f = cu(&c);
		if (c.bad)
			return fail(r, AP_E_CORRUPT, "corrupt trace: malformed totals record");
		r->res->end.has_totals = true;
		r->res->end.total_allocs = a;
		r->res->end.total_bytes = b;
		r->res->end.total_frees = f;
		return 0;
	}
	case AP_REC_END:
		return rec_end(r, &c, false);
	case AP_REC_EXIT:
		return rec_end(r, &c, true);
	default:
		return 0; /* a kind added later: the length lets us skip it */
	}
}

static int read_magic(struct reader *r)
{
	int got = need(r, AP_MAGIC_LEN);
	if (got < 0)
		return got;
	if (got == 0) {
		if (r->res->bytes_in == 0)
			return fail(r, AP_E_EMPTY, "empty file");
		if (r->len == 0 && r->last_ret == 0)
			return fail(r, AP_E_BADMAGIC, "not an allocprof trace (no data)");
		r->res->truncated = true;
		return fail(r, AP_E_CORRUPT, "truncated before the trace header");
	}
	if (memcmp(r->buf + r->pos, AP_MAGIC, AP_MAGIC_LEN))
		return fail(r, AP_E_BADMAGIC, "not an allocprof trace (bad magic)");
	r->pos += AP_MAGIC_LEN;
	got = need(r, AP_VARINT_MAX);
	if (got < 0)
		return got;
	const uint8_t *p = r->buf + r->pos;
	uint64_t version;
	if (ap_get_varint(&p, r->buf + r->len, &version))
		return fail(r, AP_E_CORRUPT, "truncated or corrupt format version");
	if (version > AP_FORMAT_VERSION)
		return fail(r, AP_E_VERSION,
		            "written by a newer allocprof (trace format %llu; this allocprof reads up to %d)",
		            (unsigned long long)version, AP_FORMAT_VERSION);
	if (version == 0)
		return fail(r, AP_E_CORRUPT, "corrupt trace: format version 0");
	r->pos = (size_t)(p - r->buf);
	return 0;
}

static int read_records(struct reader *r)
{
	bool first = true;
	for (;;) {
		int got = need(r, 1);
		if (got <= 0)
			return got;
		/* kind + length varint */
		got = need(r, 1 + AP_VARINT_MAX);
		if (got < 0)
			return got;
		uint8_t kind = r->buf[r->pos];
		const uint8_t *p = r->buf + r->pos + 1;
		uint64_t len;
		if (ap_get_varint(&p, r->buf + r->len, &len)) {
			if (r->len - r->pos < 1 + AP_VARINT_MAX) {
				r->res->truncated = true;
				return 0;
			}
			return fail(r, AP_E_CORRUPT, "corrupt trace: bad record length at stream offset %llu",
			            (unsigned long long)(r->offset + r->pos));
		}
		if (kind == 0 || len > AP_MAX_RECORD)
			return fail(r, AP_E_CORRUPT, "corrupt trace: bad record (kind %u, length %llu) at stream offset %llu",
			            kind, (unsigned long long)len, (unsigned long long)(r->offset + r->pos));
		if (first && kind != AP_REC_HEADER)
			return fail(r, AP_E_CORRUPT, "corrupt trace: the first record is not the header");
		first = false;
		size_t head = (size_t)(p - (r->buf + r->pos));
		got = need(r, head + len);
		if (got < 0)
			return got;
		if (got == 0) {
			r->res->truncated = true;
			return 0;
		}
		const uint8_t *payload = r->buf + r->pos + head;
		r->pos += head + len;
		int err = record(r, kind, payload, (size_t)len);
		if (err)
			return err;
	}
}

int ap_read_trace(const char *path, const ap_reader_ops *ops, ap_read_result *res)
{
	memset(res, 0, sizeof(*res));
	struct reader r = {.path = path, .ops = ops, .res = res};
	r.fd = open(path, O_RDONLY | O_CLOEXEC);
	if (r.fd < 0)
		return fail(&r, AP_E_IO, "%s", strerror(errno));
	r.ds = ZSTD_createDStream();
	r.in = ap_xmalloc(ZSTD_DStreamInSize());
	int ret = r.ds ? 0 : fail(&r, AP_E_NOMEM, "out of memory");
	if (!ret)
		ret = read_magic(&r);
	if (!ret)
		ret = read_records(&r);
	if (!ret) {
		deliver(&r, UINT64_MAX);
		if (r.last_ret != 0 || r.len != r.pos)
			res->truncated = true;
	}
	close(r.fd);
	ZSTD_freeDStream(r.ds);
	free(r.in);
	free(r.buf);
	AP_VEC_FREE(r.pending);
	AP_VEC_FREE(r.frames);
	AP_VEC_FREE(r.segs);
	AP_VEC_FREE(r.argv);
	return ret;
}
