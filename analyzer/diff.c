/*
 * diff.c: `allocprof diff BASE NEW`: per function, the old and new figure of a sample index, the
 * delta and delta% (benchcmp's table, pprof's -diff_base), and with --pprof a diff profile: one
 * profile.proto with NEW's samples as they are and BASE's negated and labelled pprof::base=true,
 * as pprof's own -diff_base merges them, so that `go tool pprof` shows the difference with
 * percentages of the base total (-diff_base semantics).
 *
 * BASE and NEW are each a trace or a pprof heap profile (gzip'd or not): the one `allocprof pprof`
 * writes, or any profile.proto whose sample types are named alloc_objects, alloc_space,
 * inuse_objects and inuse_space (Go's heap profiles). Both become the same neutral form, stacks
 * of (function, file, line) frames with four values, so functions match across builds by name.
 */
#include "analyses.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

typedef struct df_frame {
	const char *function, *file; /* interned */
	int64_t line;
} df_frame;

typedef struct df_stack {
	uint32_t *frames; /* indices into df_prof.frames, innermost first */
	size_t n;
	double v[AP_M__COUNT];
} df_stack;

typedef struct df_prof {
	const char *path;
	AP_VEC(df_frame) frames;
	ap_map frame_index;
	AP_VEC(char *) strings; /* interned strings */
	ap_map string_index;
	AP_VEC(df_stack) stacks;
	double total[AP_M__COUNT];
} df_prof;

static const char *intern(df_prof *d, const char *s, size_t len)
{
	for (uint64_t h = (ap_hash64(ap_hash_str(s) ^ len) | 1);; h += 2) {
		bool added;
		uint64_t *slot = ap_map_put(&d->string_index, h, &added);
		if (added) {
			char *c = ap_xmalloc(len + 1);
			memcpy(c, s, len);
			c[len] = 0;
			AP_VEC_PUSH(d->strings, c);
			*slot = d->strings.n;
		}
		const char *have = d->strings.v[*slot - 1];
		if (strlen(have) == len && !memcmp(have, s, len))
			return have;
	}
}

/* Interned strings compare by pointer. */
static uint32_t frame_id(df_prof *d, const char *function, const char *file, int64_t line)
{
	uint64_t h0 = ap_hash64((uint64_t)(uintptr_t)function ^ ap_hash64((uint64_t)(uintptr_t)file + (uint64_t)line));
	for (uint64_t h = h0 | 1;; h += 2) {
		bool added;
		uint64_t *slot = ap_map_put(&d->frame_index, h, &added);
		if (added) {
			df_frame f = {function, file, line};
			AP_VEC_PUSH(d->frames, f);
			*slot = d->frames.n;
		}
		df_frame *f = &d->frames.v[*slot - 1];
		if (f->function == function && f->file == file && f->line == line)
			return (uint32_t)(*slot - 1);
	}
}

static void df_free(df_prof *d)
{
	for (size_t i = 0; i < d->strings.n; i++)
		free(d->strings.v[i]);
	for (size_t i = 0; i < d->stacks.n; i++)
		free(d->stacks.v[i].frames);
	AP_VEC_FREE(d->strings);
	AP_VEC_FREE(d->frames);
	AP_VEC_FREE(d->stacks);
	ap_map_free(&d->frame_index);
	ap_map_free(&d->string_index);
}

/* ---- from a trace ------------------------------------------------------------------------------ */

typedef struct df_walk {
	df_prof *d;
	bool lines;
	AP_VEC(uint32_t) tmp;
} df_walk;

static void df_trace_one(void *ctx, const ap_stack_view *s)
{
	df_walk *w = ctx;
	w->tmp.n = 0;
	for (size_t i = 0; i < s->n; i++) {
		const ap_symframe *f = s->frames[i];
		const char *fn = intern(w->d, f->function, strlen(f->function));
		const char *file = w->lines && f->file ? intern(w->d, f->file, strlen(f->file)) : NULL;
		AP_VEC_PUSH(w->tmp, frame_id(w->d, fn, file, w->lines && f->file ? f->line : 0));
	}
	df_stack st = {.n = w->tmp.n};
	st.frames = ap_xcalloc(w->tmp.n + 1, sizeof(*st.frames));
	if (w->tmp.n)
		memcpy(st.frames, w->tmp.v, w->tmp.n * sizeof(*st.frames));
	memcpy(st.v, s->v, sizeof(st.v));
	AP_VEC_PUSH(w->d->stacks, st);
}

static int df_from_trace(df_prof *d, const char *path, ap_view_opts *o)
{
	ap_profile p;
	int rc = ap_view_load(&p, path, o);
	if (!rc) {
		df_walk w = {.d = d, .lines = o->lines};
		double total[AP_M__COUNT] = {0};
		ap_walk_stacks(&p, o, total, df_trace_one, &w);
		AP_VEC_FREE(w.tmp);
	}
	ap_profile_free(&p);
	return rc;
}

/* ---- from a pprof file -------------------------------------------------------------------------- */

typedef struct pb {
	const uint8_t *p, *end;
	bool bad;
} pb;

static uint64_t pb_varint(pb *b)
{
	uint64_t v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (b->p >= b->end) {
			b->bad = true;
			return 0;
		}
		uint8_t c = *b->p++;
		v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			return v;
	}
	b->bad = true;
	return 0;
}

/* Reads one field's tag; *sub is the payload of a length-delimited field. false at the end. */
static bool pb_field(pb *b, int *field, int *wire, uint64_t *val, pb *sub)
{
	if (b->bad || b->p >= b->end)
		return false;
	uint64_t tag = pb_varint(b);
	*field = (int)(tag >> 3);
	*wire = (int)(tag & 7);
	switch (*wire) {
	case 0:
		*val = pb_varint(b);
		break;
	case 1:
		if (b->end - b->p < 8)
			return b->bad = true, false;
		b->p += 8;
		break;
	case 2: {
		uint64_t len = pb_varint(b);
		if (b->bad || len > (uint64_t)(b->end - b->p))
			return b->bad = true, false;
		sub->p = b->p;
		sub->end = b->p + len;
		sub->bad = false;
		b->p += len;
		break;
	}
	case 5:
		if (b->end - b->p < 4)
			return b->bad = true, false;
		b->p += 4;
		break;
	default:
		return b->bad = true, false;
	}
	return !b->bad;
}

/* A repeated integer field, packed (wire 2) or not (wire 0). */
typedef AP_VEC(uint64_t) u64vec;
static void pb_ints(int wire, uint64_t val, pb *sub, u64vec *out)
{
	if (wire == 0) {
		AP_VEC_PUSH(*out, val);
		return;
	}
	while (wire == 2 && sub->p < sub->end && !sub->bad) {
		uint64_t v = pb_varint(sub);
		AP_VEC_PUSH(*out, v);
	}
}

typedef struct pp_loc {
	uint64_t id;
	u64vec fn, line; /* Line entries: function id, line, innermost first */
} pp_loc;
typedef struct pp_fn {
	uint64_t id, name, file;
} pp_fn;
typedef struct pp_sample {
	u64vec loc, val;
} pp_sample;

static bool read_file(const char *path, uint8_t **data, size_t *len)
{
	gzFile g = gzopen(path, "rb"); /* reads plain files as they are */
	if (!g)
		return false;
	size_t cap = 1 << 16, n = 0;
	uint8_t *buf = ap_xmalloc(cap);
	int r;
	while ((r = gzread(g, buf + n, (unsigned)(cap - n))) > 0) {
		n += (size_t)r;
		if (n == cap)
			buf = ap_xrealloc(buf, cap *= 2);
	}
	bool ok = r == 0;
	gzclose(g);
	if (!ok) {
		free(buf);
		return false;
	}
	*data = buf;
	*len = n;
	return true;
}

static int df_from_pprof(df_prof *d, const char *path, bool lines)
{
	uint8_t *data;
	size_t len;
	if (!read_file(path, &data, &len)) {
		fprintf(stderr, "allocprof: %s: cannot read: %m\n", path);
		return 2;
	}
	AP_VEC(pp_loc) locs = {0};
	AP_VEC(pp_fn) fns = {0};
	AP_VEC(pp_sample) samples = {0};
	AP_VEC(const char *) strs = {0};
	AP_VEC(size_t) strl = {0};
	u64vec types = {0};
	pb b = {data, data + len, false}, sub, s2;
	int field, wire, rc = 0;
	uint64_t val = 0;
	while (pb_field(&b, &field, &wire, &val, &sub)) {
		if (field == 1 && wire == 2) { /* sample_type */
			uint64_t type = 0;
			while (pb_field(&sub, &field, &wire, &val, &s2))
				if (field == 1 && wire == 0)
					type = val;
			AP_VEC_PUSH(types, type);
		} else if (field == 2 && wire == 2) {
			pp_sample smp = {0};
			while (pb_field(&sub, &field, &wire, &val, &s2))
				if (field == 1 || field == 2)
					pb_ints(wire, val, &s2, field == 1 ? &smp.loc : &smp.val);
			AP_VEC_PUSH(samples, smp);
		} else if (field == 4 && wire == 2) {
			pp_loc l = {0};
			while (pb_field(&sub, &field, &wire, &val, &s2)) {
				if (field == 1 && wire == 0)
					l.id = val;
				else if (field == 4 && wire == 2) {
					uint64_t fid = 0, ln = 0;
					pb s3;
					while (pb_field(&s2, &field, &wire, &val, &s3))
						if (wire == 0 && field == 1)
							fid = val;
						else if (wire == 0 && field == 2)
							ln = val;
					AP_VEC_PUSH(l.fn, fid);
					AP_VEC_PUSH(l.line, ln);
				}
			}
			AP_VEC_PUSH(locs, l);
		} else if (field == 5 && wire == 2) {
			pp_fn f = {0};
			while (pb_field(&sub, &field, &wire, &val, &s2))
				if (wire == 0 && field == 1)
					f.id = val;
				else if (wire == 0 && field == 2)
					f.name = val;
				else if (wire == 0 && field == 4)
					f.file = val;
			AP_VEC_PUSH(fns, f);
		} else if (field == 6 && wire == 2) {
			AP_VEC_PUSH(strs, (const char *)sub.p);
			AP_VEC_PUSH(strl, (size_t)(sub.end - sub.p));
		}
	}
	if (b.bad || !strs.n) {
		fprintf(stderr, "allocprof: %s: neither a trace nor a pprof profile (malformed protobuf)\n", path);
		rc = 2;
		goto out;
	}
	/* Which value is which metric. */
	int col[AP_M__COUNT];
	for (int m = 0; m < AP_M__COUNT; m++) {
		col[m] = -1;
		for (size_t i = 0; i < types.n; i++)
			if (types.v[i] < strs.n && strl.v[types.v[i]] == strlen(ap_metric_names[m]) &&
			    !memcmp(strs.v[types.v[i]], ap_metric_names[m], strl.v[types.v[i]]))
				col[m] = (int)i;
	}
	if (col[0] < 0 && col[1] < 0 && col[2] < 0 && col[3] < 0) {
		fprintf(stderr, "allocprof: %s: a pprof profile, but not a heap profile (no sample type named "
		                "alloc_objects, alloc_space, inuse_objects or inuse_space)\n", path);
		rc = 2;
		goto out;
	}
	/* ids -> positions, through maps (ids need not be dense). */
	ap_map loc_index = {0}, fn_index = {0};
	bool added;
	for (size_t i = 0; i < locs.n; i++)
		*ap_map_put(&loc_index, locs.v[i].id + 1, &added) = i + 1;
	for (size_t i = 0; i < fns.n; i++)
		*ap_map_put(&fn_index, fns.v[i].id + 1, &added) = i + 1;
	AP_VEC(uint32_t) tmp = {0};
	for (size_t i = 0; i < samples.n; i++) {
		pp_sample *smp = &samples.v[i];
		tmp.n = 0;
		for (size_t j = 0; j < smp->loc.n; j++) {
			uint64_t *li = ap_map_get(&loc_index, smp->loc.v[j] + 1);
			if (!li)
				continue;
			pp_loc *l = &locs.v[*li - 1];
			for (size_t k = 0; k < l->fn.n; k++) {
				uint64_t *fi = ap_map_get(&fn_index, l->fn.v[k] + 1);
				const pp_fn *f = fi ? &fns.v[*fi - 1] : NULL;
				const char *name = f && f->name < strs.n ? intern(d, strs.v[f->name], strl.v[f->name])
				                                         : intern(d, "?", 1);
				const char *file = lines && f && f->file && f->file < strs.n
				                           ? intern(d, strs.v[f->file], strl.v[f->file]) : NULL;
				AP_VEC_PUSH(tmp, frame_id(d, name, file, file ? (int64_t)l->line.v[k] : 0));
			}
		}
		df_stack st = {.n = tmp.n};
		st.frames = ap_xcalloc(tmp.n + 1, sizeof(*st.frames));
		if (tmp.n)
			memcpy(st.frames, tmp.v, tmp.n * sizeof(*st.frames));
		for (int m = 0; m < AP_M__COUNT; m++)
			st.v[m] = col[m] >= 0 && (size_t)col[m] < smp->val.n ? (double)(int64_t)smp->val.v[col[m]] : 0;
		AP_VEC_PUSH(d->stacks, st);
	}
	AP_VEC_FREE(tmp);
	ap_map_free(&loc_index);
	ap_map_free(&fn_index);
out:
	for (size_t i = 0; i < locs.n; i++) {
		AP_VEC_FREE(locs.v[i].fn);
		AP_VEC_FREE(locs.v[i].line);
	}
	for (size_t i = 0; i < samples.n; i++) {
		AP_VEC_FREE(samples.v[i].loc);
		AP_VEC_FREE(samples.v[i].val);
	}
	AP_VEC_FREE(locs);
	AP_VEC_FREE(fns);
	AP_VEC_FREE(samples);
	AP_VEC_FREE(strs);
	AP_VEC_FREE(strl);
	AP_VEC_FREE(types);
	free(data);
	return rc;
}

/* A trace starts with its magic; anything else is tried as a pprof profile. */
static int df_load(df_prof *d, const char *path, ap_view_opts *o)
{
	d->path = path;
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "allocprof: %s: cannot open: %m\n", path);
		return 2;
	}
	uint8_t head[8] = {0};
	size_t n = fread(head, 1, sizeof(head), f);
	fclose(f);
	bool pprof = n >= 2 && ((head[0] == 0x1f && head[1] == 0x8b) || head[0] == 0x0a || head[0] == 0x12);
	int rc = pprof ? df_from_pprof(d, path, o->lines) : df_from_trace(d, path, o);
	if (!rc && pprof && (o->at || o->temp_index)) {
		fprintf(stderr, "allocprof: %s: --at and temp_* need a trace, not a pprof profile\n", path);
		rc = 2;
	}
	return rc;
}

/* ---- the table --------------------------------------------------------------------------------- */

typedef struct df_row {
	const char *name;
	double v[2];      /* base, new */
	uint64_t last[2]; /* the last stack that added to cum, per side (+1) */
} df_row;

typedef struct df_table {
	AP_VEC(df_row) rows;
	ap_map index;
	AP_VEC(char *) names;
	double total[2];
} df_table;

static df_row *df_row_for(df_table *t, const char *name)
{
	for (uint64_t h = ap_hash_str(name) | 1;; h += 2) {
		bool added;
		uint64_t *slot = ap_map_put(&t->index, h, &added);
		if (added) {
			char *own = ap_xstrdup(name);
			AP_VEC_PUSH(t->names, own);
			df_row r = {.name = own};
			AP_VEC_PUSH(t->rows, r);
			*slot = t->rows.n;
		}
		if (!strcmp(t->rows.v[*slot - 1].name, name))
			return &t->rows.v[*slot - 1];
	}
}

static const char *frame_label(const df_frame *f, char *buf, size_t size)
{
	if (!f->file)
		return f->function;
	snprintf(buf, size, "%s %s:%lld", f->function, f->file, (long long)f->line);
	return buf;
}

static void df_table_add(df_table *t, const df_prof *d, int side, int m, bool cum)
{
	char buf[1024];
	for (size_t i = 0; i < d->stacks.n; i++) {
		const df_stack *s = &d->stacks.v[i];
		double v = s->v[m];
		t->total[side] += v;
		if (!s->n || v == 0)
			continue;
		if (!cum) {
			df_row_for(t, frame_label(&d->frames.v[s->frames[0]], buf, sizeof(buf)))->v[side] += v;
			continue;
		}
		for (size_t j = 0; j < s->n; j++) {
			df_row *r = df_row_for(t, frame_label(&d->frames.v[s->frames[j]], buf, sizeof(buf)));
			if (r->last[side] != i + 1) { /* once per stack: recursion counts once */
				r->last[side] = i + 1;
				r->v[side] += v;
			}
		}
	}
}

static int cmp_df_row(const void *a, const void *b)
{
	const df_row *x = a, *y = b;
	double dx = fabs(x->v[1] - x->v[0]), dy = fabs(y->v[1] - y->v[0]);
	if (dx != dy)
		return dx > dy ? -1 : 1;
	return strcmp(x->name, y->name);
}

static void delta_pct(char *buf, size_t size, double base, double new_)
{
	if (base == 0)
		snprintf(buf, size, new_ == 0 ? "0%%" : "new");
	else if (new_ == 0)
		snprintf(buf, size, "gone");
	else
		snprintf(buf, size, "%+.2f%%", 100 * (new_ - base) / fabs(base));
}

/* ---- the diff profile -------------------------------------------------------------------------- */

typedef AP_VEC(uint8_t) pbuf;

static void put_varint(pbuf *b, uint64_t x)
{
	do {
		uint8_t c = (uint8_t)(x & 0x7f);
		x >>= 7;
		AP_VEC_PUSH(*b, (uint8_t)(c | (x ? 0x80 : 0)));
	} while (x);
}

static void put_uint(pbuf *b, int field, uint64_t x)
{
	put_varint(b, (uint64_t)field << 3);
	put_varint(b, x);
}

static void put_bytes(pbuf *b, int field, const void *data, size_t n)
{
	put_varint(b, (uint64_t)field << 3 | 2);
	put_varint(b, n);
	for (size_t i = 0; i < n; i++)
		AP_VEC_PUSH(*b, ((const uint8_t *)data)[i]);
}

static void put_msg(pbuf *b, int field, pbuf *m)
{
	put_bytes(b, field, m->v, m->n);
	m->n = 0;
}

/* Writes NEW's stacks and BASE's negated into one profile: frames become one Function and one
 * Location each (a location per (function, file, line), no addresses: the two builds need not
 * share any). */
static int write_diff_pprof(const df_prof *base, const df_prof *nw, int m, const char *path)
{
	pbuf out = {0}, msg = {0}, sub = {0};
	df_prof strings = {0}; /* only its interning: the string table */
	AP_VEC(const char *) table = {0};
	ap_map str_id = {0};
	const char *empty = intern(&strings, "", 0);
	bool added;
#define STR(s)                                                                                     \
	({                                                                                         \
		const char *in_ = intern(&strings, (s), strlen(s));                                \
		uint64_t *id_ = ap_map_put(&str_id, (uint64_t)(uintptr_t)in_, &added);             \
		if (added) {                                                                       \
			AP_VEC_PUSH(table, in_);                                                   \
			*id_ = table.n - 1;                                                        \
		}                                                                                  \
		*id_;                                                                              \
	})
	(void)STR(empty);
	static const char *const units[AP_M__COUNT] = {"count", "bytes", "count", "bytes"};
	for (int i = 0; i < AP_M__COUNT; i++) {
		put_uint(&sub, 1, STR(ap_metric_names[i]));
		put_uint(&sub, 2, STR(units[i]));
		put_msg(&out, 1, &sub);
	}
	/* Locations: one per distinct frame of either side, ids from 1. */
	df_prof frames = {0}; /* its frame table merges both sides' frames */
	const df_prof *side[2] = {nw, base};
	for (int s = 0; s < 2; s++) {
		for (size_t i = 0; i < side[s]->stacks.n; i++) {
			const df_stack *st = &side[s]->stacks.v[i];
			bool any = false;
			for (int k = 0; k < AP_M__COUNT; k++)
				any |= llround(st->v[k]) != 0;
			if (!any)
				continue;
			msg.n = 0;
			for (size_t j = 0; j < st->n; j++) {
				const df_frame *f = &side[s]->frames.v[st->frames[j]];
				const char *fn = intern(&frames, f->function, strlen(f->function));
				const char *file = f->file ? intern(&frames, f->file, strlen(f->file)) : NULL;
				put_varint(&msg, frame_id(&frames, fn, file, f->line) + 1);
			}
			put_bytes(&sub, 1, msg.v, msg.n);
			msg.n = 0;
			for (int k = 0; k < AP_M__COUNT; k++)
				put_varint(&msg, (uint64_t)(s == 0 ? llround(st->v[k]) : -llround(st->v[k])));
			put_bytes(&sub, 2, msg.v, msg.n);
			msg.n = 0;
			if (s == 1) {
				/* pprof counts only samples with this label in the total when any has it. */
				put_uint(&msg, 1, STR("pprof::base"));
				put_uint(&msg, 2, STR("true"));
				put_msg(&sub, 3, &msg);
			}
			put_msg(&out, 2, &sub);
		}
	}
	/* One mapping without addresses: pprof wants a main binary's name, and says so otherwise. */
	put_uint(&sub, 1, 1);
	put_uint(&sub, 5, STR("[allocprof diff]"));
	put_uint(&sub, 7, 1);
	put_uint(&sub, 8, 1);
	put_uint(&sub, 9, 1);
	put_uint(&sub, 10, 1);
	put_msg(&out, 3, &sub);
	for (size_t i = 0; i < frames.frames.n; i++) {
		const df_frame *f = &frames.frames.v[i];
		put_uint(&sub, 1, i + 1);
		put_uint(&sub, 2, 1);
		put_uint(&msg, 1, i + 1);
		if (f->line > 0)
			put_uint(&msg, 2, (uint64_t)f->line);
		put_msg(&sub, 4, &msg);
		put_msg(&out, 4, &sub);
		put_uint(&sub, 1, i + 1);
		put_uint(&sub, 2, STR(f->function));
		put_uint(&sub, 3, STR(f->function));
		if (f->file)
			put_uint(&sub, 4, STR(f->file));
		put_msg(&out, 5, &sub);
	}
	put_uint(&sub, 1, STR("space"));
	put_uint(&sub, 2, STR("bytes"));
	put_msg(&out, 11, &sub);
	put_uint(&out, 12, 1);
	char comment[1024];
	snprintf(comment, sizeof(comment), "allocprof diff: %s minus %s", nw->path, base->path);
	put_uint(&out, 13, STR(comment));
	put_uint(&out, 14, STR(ap_metric_names[m]));
#undef STR
	for (size_t i = 0; i < table.n; i++)
		put_bytes(&out, 6, table.v[i], strlen(table.v[i]));
	int rc = 0;
	gzFile g = !strcmp(path, "-") ? gzdopen(1, "wb") : gzopen(path, "wb");
	if (!g || gzwrite(g, out.v, (unsigned)out.n) != (int)out.n || gzclose(g) != Z_OK) {
		fprintf(stderr, "allocprof: %s: cannot write the diff profile: %m\n", path);
		rc = 2;
	}
	AP_VEC_FREE(out);
	AP_VEC_FREE(msg);
	AP_VEC_FREE(sub);
	AP_VEC_FREE(table);
	ap_map_free(&str_id);
	df_free(&strings);
	df_free(&frames);
	return rc;
}

int ap_diff_run(const char *base_path, const char *new_path, ap_view_opts *o)
{
	df_prof base = {0}, nw = {0};
	int rc = df_load(&base, base_path, o);
	if (!rc)
		rc = df_load(&nw, new_path, o);
	if (rc)
		goto out;
	int m = o->sample_index;
	if (o->pprof_out) {
		rc = write_diff_pprof(&base, &nw, m, o->output ? o->output : "-");
		if (!rc && o->output)
			fprintf(stderr, "allocprof: wrote %s (NEW minus BASE); view it with: go tool pprof -top %s\n",
			        o->output, o->output);
		goto out;
	}
	df_table t = {0};
	df_table_add(&t, &base, 0, m, o->cum_sort);
	df_table_add(&t, &nw, 1, m, o->cum_sort);
	if (t.rows.n > 1) /* t.rows.v is NULL when empty */
		qsort(t.rows.v, t.rows.n, sizeof(*t.rows.v), cmp_df_row);
	size_t keep = 0;
	for (size_t i = 0; i < t.rows.n; i++)
		if (llround(t.rows.v[i].v[0]) != 0 || llround(t.rows.v[i].v[1]) != 0)
			t.rows.v[keep++] = t.rows.v[i];
	size_t shown = o->nrows >= 0 && (size_t)o->nrows < keep ? (size_t)o->nrows : keep;
	if (o->nrows < 0 && !o->json && shown > 20)
		shown = 20;
	const char *idx = ap_view_index_name(o);
	char a[32], b[32], c[32], d[32];
	if (o->json) {
		printf("{\"sample_index\": \"%s\", \"by\": \"%s\", \"base\": {\"file\": ", idx, o->cum_sort ? "cum" : "flat");
		ap_json_str(stdout, base_path);
		printf(", \"total\": %.0f}, \"new\": {\"file\": ", t.total[0]);
		ap_json_str(stdout, new_path);
		printf(", \"total\": %.0f}, \"rows\": [", t.total[1]);
		for (size_t i = 0; i < shown; i++) {
			const df_row *r = &t.rows.v[i];
			printf("%s\n  {\"function\": ", i ? "," : "");
			ap_json_str(stdout, r->name);
			printf(", \"base\": %.0f, \"new\": %.0f, \"delta\": %.0f, \"delta_pct\": ", r->v[0], r->v[1],
			       r->v[1] - r->v[0]);
			if (r->v[0] != 0)
				printf("%.4f}", 100 * (r->v[1] - r->v[0]) / fabs(r->v[0]));
			else
				printf("null}");
		}
		printf("]}\n");
	} else {
		int vm = m;
		printf("Type: %s (%s)\nBase: %s\nNew:  %s\n", idx, o->cum_sort ? "cum" : "flat", base_path, new_path);
		ap_format_value(a, sizeof(a), t.total[0], vm);
		ap_format_value(b, sizeof(b), t.total[1], vm);
		ap_format_value(c, sizeof(c), t.total[1] - t.total[0], vm);
		delta_pct(d, sizeof(d), t.total[0], t.total[1]);
		printf("Total: %s -> %s, delta %s (%s)\n", a, b, c, d);
		if (shown < keep)
			printf("Showing top %zu functions out of %zu, by |delta|\n", shown, keep);
		printf("%12s %12s %12s %9s  %s\n", "base", "new", "delta", "delta%", "function");
		for (size_t i = 0; i < shown; i++) {
			const df_row *r = &t.rows.v[i];
			ap_format_value(a, sizeof(a), r->v[0], vm);
			ap_format_value(b, sizeof(b), r->v[1], vm);
			ap_format_value(c, sizeof(c), r->v[1] - r->v[0], vm);
			if (r->v[1] - r->v[0] > 0.5) {
				memmove(c + 1, c, strlen(c) + 1);
				c[0] = '+';
			}
			delta_pct(d, sizeof(d), r->v[0], r->v[1]);
			printf("%12s %12s %12s %9s  %s\n", a, b, c, d, r->name);
		}
	}
	for (size_t i = 0; i < t.names.n; i++)
		free(t.names.v[i]);
	AP_VEC_FREE(t.names);
	AP_VEC_FREE(t.rows);
	ap_map_free(&t.index);
out:
	df_free(&base);
	df_free(&nw);
	return rc;
}
