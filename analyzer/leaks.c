/*
 * leaks.c: `allocprof leaks`: the blocks not freed by the end of the trace, grouped by stack,
 * biggest first, and `--fail-on-leaks[=BYTES]` for CI.
 *
 * "Not freed", never "leaked": a tracer sees frees, not pointers, so it cannot tell a lost block
 * from one still reachable from a global at exit (a cache, a singleton) -- which is legitimate.
 * Blocks the C library and the C++ runtime allocate for themselves and keep until exit (stdio
 * buffers, locale data, the dynamic loader's tables, libstdc++'s emergency exception pool) are
 * counted apart and not listed by default: the program could not have freed them.
 */
#include "analyses.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Runtime-internal allocations: a stack with a frame whose whole function name matches is not
 * listed unless --all. */
static const char internal_re[] =
	"^(_IO_file_doallocate|__GI__IO_file_doallocate|_IO_doallocbuf|_IO_setb|_IO_(new_)?file_overflow|"
	"_IO_(new_)?file_underflow|_IO_(new_)?file_xsputn|_IO_file_xsgetn|_IO_switch_to_get_mode|_nl_.*|__gconv.*|"
	"_dl_.*|__libc_setlocale|setlocale|new_composite_name|__tzfile_read|__tzset_parse_tz|"
	"tzset_internal|__tzstring.*|__nss_.*|nss_.*|__new_exitfn|__cxa_thread_atexit_impl|"
	"__cxa_get_globals.*|__cxa_allocate_exception|_GLOBAL__sub_I_eh_alloc\\.cc|"
	"\\(anonymous namespace\\)::pool::pool.*|__static_initialization_and_destruction_0.*eh_alloc.*)$";

typedef struct lk_entry {
	char *key;
	double objects, space, allocs;
	const ap_symframe **frames;
	size_t n;
} lk_entry;

typedef struct lk_ctx {
	const ap_view_opts *o;
	regex_t internal;
	bool all;
	AP_VEC(lk_entry) e;
	ap_map index;
	AP_VEC(char) buf;
	char *name;
	size_t name_cap;
	double internal_objects, internal_space;
} lk_ctx;

static bool is_internal(lk_ctx *c, const ap_stack_view *s)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->frames[i]->resolved && regexec(&c->internal, s->frames[i]->function, 0, NULL, 0) == 0)
			return true;
	return false;
}

static void lk_one(void *ctx, const ap_stack_view *s)
{
	lk_ctx *c = ctx;
	if (!(s->v[AP_M_INUSE_OBJECTS] > 0))
		return;
	if (!c->all && is_internal(c, s)) {
		c->internal_objects += s->v[AP_M_INUSE_OBJECTS];
		c->internal_space += s->v[AP_M_INUSE_SPACE];
		return;
	}
	/* Sites that print the same stack are one entry. */
	c->buf.n = 0;
	for (size_t i = 0; i < s->n; i++) {
		const char *nm = ap_frame_name(s->frames[i], c->o->lines ? AP_G_LINE : AP_G_FUNCTION, &c->name,
		                               &c->name_cap);
		for (; *nm; nm++)
			AP_VEC_PUSH(c->buf, *nm);
		const char *tail = s->frames[i]->inlined ? " (inline)\n" : "\n";
		for (; *tail; tail++)
			AP_VEC_PUSH(c->buf, *tail);
	}
	AP_VEC_PUSH(c->buf, '\0');
	lk_entry *e = NULL;
	for (uint64_t h = ap_hash_str(c->buf.v) | 1; !e; h += 2) {
		bool added;
		uint64_t *slot = ap_map_put(&c->index, h, &added);
		if (added) {
			lk_entry z = {.key = ap_xstrdup(c->buf.v), .n = s->n};
			z.frames = ap_xcalloc(s->n + 1, sizeof(*z.frames));
			if (s->n)
				memcpy(z.frames, s->frames, s->n * sizeof(*z.frames));
			AP_VEC_PUSH(c->e, z);
			*slot = c->e.n;
		}
		if (!strcmp(c->e.v[*slot - 1].key, c->buf.v))
			e = &c->e.v[*slot - 1];
	}
	e->objects += s->v[AP_M_INUSE_OBJECTS];
	e->space += s->v[AP_M_INUSE_SPACE];
	e->allocs += s->v[AP_M_ALLOC_OBJECTS];
}

static int cmp_lk(const void *a, const void *b)
{
	const lk_entry *x = a, *y = b;
	if (x->space != y->space)
		return x->space > y->space ? -1 : 1;
	if (x->objects != y->objects)
		return x->objects > y->objects ? -1 : 1;
	return strcmp(x->key, y->key);
}

static void leaks_json(ap_profile *p, lk_ctx *c, size_t shown, double objects, double space)
{
	printf("{\"not_freed\": {\"objects\": %.0f, \"space\": %.0f, \"stacks\": %zu}, "
	       "\"internal\": {\"objects\": %.0f, \"space\": %.0f}, ",
	       objects, space, c->e.n, c->internal_objects, c->internal_space);
	ap_json_trace_info(p, stdout);
	printf(", \"stacks\": [");
	for (size_t i = 0; i < shown; i++) {
		const lk_entry *e = &c->e.v[i];
		printf("%s\n  {\"objects\": %.0f, \"space\": %.0f, \"alloc_objects\": %.0f, \"frames\": [", i ? "," : "",
		       e->objects, e->space, e->allocs);
		for (size_t j = 0; j < e->n; j++) {
			const ap_symframe *f = e->frames[j];
			printf("%s{\"function\": ", j ? ", " : "");
			ap_json_str(stdout, f->function);
			printf(", \"file\": ");
			if (f->file)
				ap_json_str(stdout, f->file);
			else
				fputs("null", stdout);
			printf(", \"line\": %u, \"inlined\": %s}", f->line, f->inlined ? "true" : "false");
		}
		printf("]}");
	}
	printf("]}\n");
}

int ap_leaks_run(const char *trace, ap_view_opts *o)
{
	ap_profile p;
	memset(&p, 0, sizeof(p));
	if (ap_profile_load_ex(&p, trace, NULL)) {
		ap_profile_free(&p);
		return 2;
	}
	lk_ctx c = {.o = o, .all = o->all};
	if (regcomp(&c.internal, internal_re, REG_EXTENDED | REG_NOSUB)) {
		ap_warn("internal error: bad runtime-internal expression");
		regcomp(&c.internal, "^$", REG_EXTENDED | REG_NOSUB);
	}
	double total[AP_M__COUNT] = {0};
	ap_walk_stacks(&p, o, total, lk_one, &c);
	if (c.e.n > 1) /* c.e.v is NULL when empty */
		qsort(c.e.v, c.e.n, sizeof(*c.e.v), cmp_lk);
	double objects = 0, space = 0;
	for (size_t i = 0; i < c.e.n; i++) {
		objects += c.e.v[i].objects;
		space += c.e.v[i].space;
	}
	size_t shown = o->nrows >= 0 && (size_t)o->nrows < c.e.n ? (size_t)o->nrows : c.e.n;
	if (o->nrows < 0 && !o->json && shown > 20)
		shown = 20;
	char a[32], b[32];
	if (o->json) {
		leaks_json(&p, &c, shown, objects, space);
	} else {
		ap_view_opts h = *o;
		h.sample_index = AP_M_INUSE_SPACE;
		ap_report_header(&p, &h, stdout);
		ap_format_value(a, sizeof(a), space, AP_M_INUSE_SPACE);
		if (!c.e.n)
			printf("Not freed at exit: nothing\n");
		else
			printf("Not freed at exit: %s in %.0f block%s from %zu stack%s\n", a, objects,
			       objects == 1 ? "" : "s", c.e.n, c.e.n == 1 ? "" : "s");
		if (c.internal_objects > 0) {
			ap_format_value(b, sizeof(b), c.internal_space, AP_M_INUSE_SPACE);
			printf("Not listed: %s in %.0f block%s the C library or C++ runtime allocated for itself "
			       "(stdio buffers, locale, loader); --all lists them\n",
			       b, c.internal_objects, c.internal_objects == 1 ? "" : "s");
		}
		if (p.rr.truncated || !p.rr.end.has_end)
			printf("Warning: the trace does not reach the program's exit: these are the blocks not freed "
			       "by its last write\n");
		static const char sep[] = "-----------+-------------------------------------------------------";
		for (size_t i = 0; i < shown; i++) {
			const lk_entry *e = &c.e.v[i];
			printf("%s\n", sep);
			ap_format_value(a, sizeof(a), e->space, AP_M_INUSE_SPACE);
			printf("%10s   %.0f block%s not freed (of %.0f allocated here)\n", a, e->objects,
			       e->objects == 1 ? "" : "s", e->allocs);
			for (const char *line = e->key; *line;) {
				const char *nl = strchr(line, '\n');
				printf("%10s   %.*s\n", "", (int)(nl - line), line);
				line = nl + 1;
			}
		}
		if (c.e.n)
			printf("%s\n", sep);
		if (shown < c.e.n)
			printf("Showing %zu of %zu stacks (-n)\n", shown, c.e.n);
	}
	int rc = 0;
	if (o->fail_on_leaks && space > (double)o->fail_bytes) {
		ap_format_value(a, sizeof(a), space, AP_M_INUSE_SPACE);
		ap_format_value(b, sizeof(b), (double)o->fail_bytes, AP_M_INUSE_SPACE);
		fprintf(stderr, "allocprof: %s: %s in %.0f blocks not freed at exit (more than %s allowed by "
		                "--fail-on-leaks)\n", trace, a, objects, b);
		rc = 1;
	}
	for (size_t i = 0; i < c.e.n; i++) {
		free(c.e.v[i].key);
		free(c.e.v[i].frames);
	}
	AP_VEC_FREE(c.e);
	AP_VEC_FREE(c.buf);
	ap_map_free(&c.index);
	free(c.name);
	regfree(&c.internal);
	ap_profile_free(&p);
	return rc;
}
