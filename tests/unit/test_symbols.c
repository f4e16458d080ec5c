/*
 * test_symbols: unit test of analyzer/symbols.c. It describes its own executable (and, when built
 * with AP_TEST_CXX, a C++ helper library) the way the shim records modules, takes return
 * addresses inside functions whose names and call lines it knows, and checks what the symbolizer
 * makes of them: names, files, lines, inline expansion, separate debug files, build-id checks and
 * generations. Exit status 0 when every check passed, 1 otherwise.
 */
#include "demangle.h"
#include "symbols.h"

#include <elf.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <link.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int checks, failures;

#define CHECK(cond, ...)                                                                         \
	do {                                                                                     \
		checks++;                                                                        \
		if (!(cond)) {                                                                   \
			failures++;                                                              \
			fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                            \
			fputc('\n', stderr);                                                     \
		}                                                                                \
	} while (0)

/* ---- the code whose addresses are resolved ---- */

uint64_t take_ra(void);
uint64_t plain_caller(int *line);
uint64_t inline_outer(int *inner_line, int *mid_line, int *outer_line);

/* A real call with the caller's return address, and no clone with a changed name. */
#ifdef __clang__
#define NOIPA __attribute__((noinline))
#else
#define NOIPA __attribute__((noipa))
#endif

NOIPA uint64_t take_ra(void)
{
	return (uint64_t)(uintptr_t)__builtin_extract_return_addr(__builtin_return_address(0));
}

/* Each call and its __LINE__ share a line: the line the symbolizer must report for the call. */
NOIPA uint64_t plain_caller(int *line)
{
	uint64_t r = take_ra(); *line = __LINE__;
	__asm__ volatile("" : : : "memory"); /* no tail call */
	return r;
}

static inline __attribute__((always_inline)) uint64_t inner_helper(int *line)
{
	uint64_t r = take_ra(); *line = __LINE__;
	__asm__ volatile("" : : : "memory");
	return r;
}

static inline __attribute__((always_inline)) uint64_t mid_helper(int *inner_line, int *mid_line)
{
	uint64_t r = inner_helper(inner_line); *mid_line = __LINE__;
	__asm__ volatile("" : : : "memory");
	return r;
}

NOIPA uint64_t inline_outer(int *inner_line, int *mid_line, int *outer_line)
{
	uint64_t r = mid_helper(inner_line, mid_line); *outer_line = __LINE__;
	__asm__ volatile("" : : : "memory");
	return r;
}

#ifdef AP_TEST_CXX
uint64_t symtest_cxx_call(uint64_t (*cb)(void), int *line, int *inl_line);
#endif

/* ---- module descriptions, as the shim records them ---- */

struct modinfo {
	const char *needle; /* NULL: the main program */
	bool found;
	char path[PATH_MAX];
	uint64_t base;
	ap_segment segs[16];
	size_t nsegs;
	uint8_t build_id[64];
	size_t build_id_len;
};

static void read_build_id(struct modinfo *mi, const char *p, size_t n)
{
	while (n >= sizeof(ElfW(Nhdr))) {
		const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
		size_t name_sz = (nh->n_namesz + 3) & ~(size_t)3, desc_sz = (nh->n_descsz + 3) & ~(size_t)3;
		size_t total = sizeof(*nh) + name_sz + desc_sz;
		if (total > n)
			return;
		if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 &&
		    memcmp(p + sizeof(*nh), "GNU", 4) == 0 && nh->n_descsz <= sizeof(mi->build_id)) {
			memcpy(mi->build_id, p + sizeof(*nh) + name_sz, nh->n_descsz);
			mi->build_id_len = nh->n_descsz;
			return;
		}
		p += total;
		n -= total;
	}
}

static int phdr_cb(struct dl_phdr_info *info, size_t size __attribute__((unused)), void *arg)
{
	struct modinfo *mi = arg;
	const char *name = info->dlpi_name;
	bool is_main = name == NULL || name[0] == 0;
	if (mi->needle == NULL ? !is_main : is_main || strstr(name, mi->needle) == NULL)
		return 0;
	if (realpath(is_main ? "/proc/self/exe" : name, mi->path) == NULL)
		return 0;
	mi->base = info->dlpi_addr;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type == PT_LOAD && mi->nsegs < 16)
			mi->segs[mi->nsegs++] = (ap_segment){ph->p_vaddr, ph->p_memsz, ph->p_offset, ph->p_flags};
		else if (ph->p_type == PT_NOTE && mi->build_id_len == 0)
			read_build_id(mi, (const char *)(info->dlpi_addr + ph->p_vaddr), ph->p_memsz);
	}
	mi->found = true;
	return 1;
}

static struct modinfo find_module(const char *needle)
{
	struct modinfo mi = {.needle = needle};
	dl_iterate_phdr(phdr_cb, &mi);
	return mi;
}

static ap_module_desc desc(const struct modinfo *mi, uint32_t id, uint32_t gen, const char *path)
{
	return (ap_module_desc){
		.id = id, .generation = gen, .base = mi->base, .path = path ? path : mi->path,
		.build_id = mi->build_id, .build_id_len = mi->build_id_len,
		.segs = mi->segs, .nsegs = mi->nsegs,
	};
}

/* ---- helpers ---- */

struct warnings {
	int n;
	char last[1024];
};

static void on_warn(void *ctx, const char *msg)
{
	struct warnings *w = ctx;
	w->n++;
	snprintf(w->last, sizeof(w->last), "%s", msg);
}

static const char *base_name(const char *p)
{
	if (p == NULL)
		return "(null)";
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

static void dump(const char *what, const ap_symframe *f, size_t n)
{
	printf("%s:\n", what);
	for (size_t i = 0; i < n; i++)
		printf("  #%zu %s at %s:%" PRIu32 "%s%s [%s+0x%" PRIx64 "]\n", i, f[i].function,
		       base_name(f[i].file), f[i].line, f[i].inlined ? " (inlined)" : "",
		       f[i].resolved ? "" : " (unresolved)", base_name(f[i].module), f[i].module_offset);
}

/* Checks one frame; file == NULL means "no source position expected". */
static void check_frame(const char *what, const ap_symframe *f, const char *function, const char *file,
                        int line, bool inlined)
{
	CHECK(strcmp(f->function, function) == 0, "%s: function '%s', want '%s'", what, f->function,
	      function);
	if (file != NULL) {
		CHECK(f->file != NULL && strcmp(base_name(f->file), file) == 0, "%s: file %s, want %s", what,
		      f->file ? f->file : "(null)", file);
		CHECK(f->line == (uint32_t)line, "%s: line %" PRIu32 ", want %d", what, f->line, line);
	} else {
		CHECK(f->file == NULL && f->line == 0, "%s: has a source position %s:%" PRIu32, what,
		      f->file, f->line);
	}
	CHECK(f->inlined == inlined, "%s: inlined %d, want %d", what, f->inlined, inlined);
	CHECK(f->resolved, "%s: not resolved", what);
}

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
	char cmd[4 * PATH_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

/* ---- the tests ---- */

static uint64_t ra_plain, ra_inline;
static int l_plain, l_inner, l_mid, l_outer;

static void test_main_program(const struct modinfo *exe)
{
	ap_symbols *s = ap_symbols_new(NULL, NULL);
	ap_module_desc d = desc(exe, 1, 0, NULL);
	CHECK(ap_symbols_add_module(s, &d) == 0, "add_module");
	const ap_symframe *f;

	size_t n = ap_symbols_resolve(s, 0, ra_plain, &f);
	dump("plain call", f, n);
	CHECK(n == 1, "plain: %zu frames", n);
	check_frame("plain", &f[0], "plain_caller", "test_symbols.c", l_plain, false);
	CHECK(f[0].pc == ra_plain - 1 && f[0].module_offset == ra_plain - 1 - exe->base,
	      "plain: pc/offset wrong");
	CHECK(f[0].module != NULL && strcmp(f[0].module, exe->path) == 0, "plain: module %s", f[0].module);

	n = ap_symbols_resolve(s, 0, ra_inline, &f);
	dump("call in two levels of inlining", f, n);
	CHECK(n == 3, "inline: %zu frames, want 3", n);
	if (n == 3) {
		check_frame("inline #0", &f[0], "inner_helper", "test_symbols.c", l_inner, true);
		check_frame("inline #1", &f[1], "mid_helper", "test_symbols.c", l_mid, true);
		check_frame("inline #2", &f[2], "inline_outer", "test_symbols.c", l_outer, false);
	}

	const ap_symframe *again;
	CHECK(ap_symbols_resolve(s, 0, ra_inline, &again) == n && again == f,
	      "second lookup not served from the cache");

	n = ap_symbols_resolve(s, 0, 0x10, &f);
	dump("address in no module", f, n);
	CHECK(n == 1 && strcmp(f[0].function, "0x10") == 0 && !f[0].resolved && f[0].module == NULL,
	      "unknown address: '%s'", f[0].function);
	ap_symbols_free(s);
}

static void test_build_id_mismatch(const struct modinfo *exe)
{
	struct warnings w = {0};
	ap_symbols *s = ap_symbols_new(on_warn, &w);
	struct modinfo wrong = *exe;
	wrong.build_id[0] ^= 0xff;
	ap_module_desc d = desc(&wrong, 1, 0, NULL);
	ap_symbols_add_module(s, &d);
	const ap_symframe *f;
	size_t n = ap_symbols_resolve(s, 0, ra_plain, &f);
	dump("build-id mismatch", f, n);
	char want[PATH_MAX + 32];
	snprintf(want, sizeof(want), "%s+0x%" PRIx64, base_name(exe->path), ra_plain - 1 - exe->base);
	CHECK(n == 1 && strcmp(f[0].function, want) == 0 && !f[0].resolved && f[0].file == NULL,
	      "mismatch: '%s', want '%s'", f[0].function, want);
	ap_symbols_resolve(s, 0, ra_inline, &f);
	printf("  -> %s\n", w.last);
	CHECK(w.n == 1, "mismatch: %d warnings, want 1", w.n);
	CHECK(strstr(w.last, "build-id differs") != NULL && strstr(w.last, exe->path) != NULL,
	      "mismatch warning: %s", w.last);
	ap_symbols_free(s);
}

static void test_missing_file(const struct modinfo *exe)
{
	struct warnings w = {0};
	ap_symbols *s = ap_symbols_new(on_warn, &w);
	ap_module_desc d = desc(exe, 7, 0, "/nonexistent/dir/libgone.so.1");
	ap_symbols_add_module(s, &d);
	const ap_symframe *f;
	size_t n = ap_symbols_resolve(s, 0, ra_plain, &f);
	dump("missing file", f, n);
	char want[64];
	snprintf(want, sizeof(want), "libgone.so.1+0x%" PRIx64, ra_plain - 1 - exe->base);
	CHECK(n == 1 && strcmp(f[0].function, want) == 0 && !f[0].resolved, "missing: '%s', want '%s'",
	      f[0].function, want);
	ap_symbols_resolve(s, 0, ra_inline, &f);
	printf("  -> %s\n", w.last);
	CHECK(w.n == 1 && strstr(w.last, "libgone.so.1") != NULL, "missing: %d warnings: %s", w.n,
	      w.last);
	ap_symbols_free(s);
}

/* Without a recorded build-id the file is still used, unless its PT_LOAD layout differs. */
static void test_no_build_id(const struct modinfo *exe)
{
	for (int bad = 0; bad <= 1; bad++) {
		struct warnings w = {0};
		ap_symbols *s = ap_symbols_new(on_warn, &w);
		struct modinfo m = *exe;
		m.build_id_len = 0;
		m.segs[m.nsegs - 1].memsz += bad * 4096;
		ap_module_desc d = desc(&m, 1, 0, NULL);
		ap_symbols_add_module(s, &d);
		const ap_symframe *f;
		ap_symbols_resolve(s, 0, ra_plain, &f);
		if (bad) {
			printf("no build-id, other segments:\n  -> %s\n", w.last);
			CHECK(!f[0].resolved && w.n == 1 && strstr(w.last, "segments differ") != NULL,
			      "no build-id, bad segments: '%s', %d warnings", f[0].function, w.n);
		} else {
			CHECK(f[0].resolved && strcmp(f[0].function, "plain_caller") == 0 && w.n == 0,
			      "no build-id: '%s', %d warnings", f[0].function, w.n);
		}
		ap_symbols_free(s);
	}
}

/* The executable's file mapped twice at different bases in turn, so that one address lies in
 * plain_caller in the first life and inside the inlined helpers in the second. */
static void test_generations(const struct modinfo *exe)
{
	ap_symbols *s = ap_symbols_new(NULL, NULL);
	struct modinfo second = *exe;
	second.base = exe->base + (ra_plain - ra_inline);
	ap_module_desc d1 = desc(exe, 1, 1, NULL), d2 = desc(&second, 2, 3, NULL);
	ap_symbols_add_module(s, &d1);
	ap_symbols_unload(s, 1, 3);
	ap_symbols_add_module(s, &d2);
	const ap_symframe *f;

	size_t n = ap_symbols_resolve(s, 0, ra_plain, &f);
	CHECK(n == 1 && f[0].module == NULL, "gen 0: '%s', want no module", f[0].function);
	for (uint32_t gen = 1; gen <= 2; gen++) {
		n = ap_symbols_resolve(s, gen, ra_plain, &f);
		CHECK(n == 1 && strcmp(f[0].function, "plain_caller") == 0, "gen %u: '%s'", gen,
		      f[0].function);
	}
	for (uint32_t gen = 3; gen <= 9; gen += 6) {
		n = ap_symbols_resolve(s, gen, ra_plain, &f);
		if (gen == 3)
			dump("same address, generation 3", f, n);
		CHECK(n == 3 && strcmp(f[0].function, "inner_helper") == 0 && f[0].line == (uint32_t)l_inner &&
		      strcmp(f[n - 1].function, "inline_outer") == 0, "gen %u: '%s'", gen, f[0].function);
		CHECK(f[0].module_offset == ra_inline - 1 - exe->base, "gen %u: offset", gen);
	}
	ap_symbols_free(s);
}

/* Stripped copies of the executable whose DWARF lives in a separate file, found by build-id in
 * one case and by .gnu_debuglink in the other; and one with no DWARF at all. */
static void test_separate_debuginfo(const struct modinfo *exe)
{
	if (run("command -v objcopy >/dev/null 2>&1") != 0 || exe->build_id_len < 2) {
		printf("separate debug info: SKIPPED (no objcopy or no build-id)\n");
		return;
	}
	char tmp[] = "/tmp/test_symbols.XXXXXX";
	if (mkdtemp(tmp) == NULL) {
		CHECK(false, "mkdtemp: %s", strerror(errno));
		return;
	}
	char hexid[129];
	for (size_t i = 0; i < exe->build_id_len; i++)
		sprintf(hexid + 2 * i, "%02x", exe->build_id[i]);
	CHECK(run("mkdir -p %s/dbg/.build-id/%.2s %s/dl %s/none", tmp, hexid, tmp, tmp) == 0 &&
	      run("objcopy --only-keep-debug '%s' %s/dbg/.build-id/%.2s/%s.debug", exe->path, tmp, hexid,
	          hexid + 2) == 0 &&
	      run("objcopy --strip-debug '%s' %s/bid", exe->path, tmp) == 0 &&
	      run("objcopy --only-keep-debug '%s' %s/dl/copy.debug", exe->path, tmp) == 0 &&
	      run("objcopy --strip-all --add-gnu-debuglink=%s/dl/copy.debug '%s' %s/dl/copy", tmp,
	          exe->path, tmp) == 0 &&
	      run("objcopy --strip-debug '%s' %s/none/copy", exe->path, tmp) == 0,
	      "objcopy failed");

	static const char *const cases[] = {"bid", "dl/copy"};
	for (size_t c = 0; c < 2; c++) {
		struct warnings w = {0};
		ap_symbols *s = ap_symbols_new(on_warn, &w);
		char path[PATH_MAX], dbg[PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s", tmp, cases[c]);
		snprintf(dbg, sizeof(dbg), "%s/dbg", tmp);
		if (c == 0)
			ap_symbols_set_debuginfo_path(s, dbg);
		ap_module_desc d = desc(exe, 1, 0, path);
		ap_symbols_add_module(s, &d);
		const ap_symframe *f;
		size_t n = ap_symbols_resolve(s, 0, ra_inline, &f);
		dump(c == 0 ? "debug info found by build-id" : "debug info found by .gnu_debuglink", f, n);
		CHECK(n == 3 && f[0].line == (uint32_t)l_inner && f[2].line == (uint32_t)l_outer &&
		      strcmp(f[2].function, "inline_outer") == 0, "%s: '%s' line %u", cases[c],
		      f[0].function, f[0].line);
		CHECK(w.n == 0, "%s: warning %s", cases[c], w.last);
		ap_symbols_free(s);
	}

	ap_symbols *s = ap_symbols_new(NULL, NULL);
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/none/copy", tmp);
	ap_module_desc d = desc(exe, 1, 0, path);
	ap_symbols_add_module(s, &d);
	const ap_symframe *f;
	size_t n = ap_symbols_resolve(s, 0, ra_inline, &f);
	dump("no debug info: symbol table only", f, n);
	CHECK(n == 1, "symtab only: %zu frames", n);
	check_frame("symtab only", &f[0], "inline_outer", NULL, 0, false);
	ap_symbols_free(s);
	run("rm -rf %s", tmp);
}

#ifdef AP_TEST_CXX
static void test_cxx(void)
{
	struct modinfo lib = find_module("symtest_cxx");
	CHECK(lib.found, "libsymtest_cxx not among the loaded modules");
	if (!lib.found)
		return;
	int line = 0, inl_line = 0;
	uint64_t ra = symtest_cxx_call(take_ra, &line, &inl_line);
	ap_symbols *s = ap_symbols_new(NULL, NULL);
	ap_module_desc d = desc(&lib, 3, 0, NULL);
	ap_symbols_add_module(s, &d);
	const ap_symframe *f;
	size_t n = ap_symbols_resolve(s, 0, ra, &f);
	dump("C++ template method with an inlined template function", f, n);
	CHECK(n == 2, "C++: %zu frames, want 2", n);
	if (n == 2) {
		CHECK(strstr(f[0].function, "apsym::grab<int>(") != NULL && f[0].inlined &&
		      f[0].line == (uint32_t)inl_line, "C++ inlined: '%s'", f[0].function);
		CHECK(strncmp(f[1].function, "apsym::Widget<int>::poke(", 25) == 0 && !f[1].inlined &&
		      f[1].line == (uint32_t)line && strcmp(base_name(f[1].file), "symtest_cxx.cpp") == 0,
		      "C++ method: '%s' at %s:%u", f[1].function, f[1].file, f[1].line);
	}
	ap_symbols_free(s);
}
#endif

static void check_demangle(const char *mangled, const char *want)
{
	char *got = ap_demangle(mangled);
	CHECK(want == NULL ? got == NULL : got != NULL && strcmp(got, want) == 0,
	      "demangle %s: '%s', want '%s'", mangled, got ? got : "(null)", want ? want : "(null)");
	free(got);
}

static void test_demangle(void)
{
	check_demangle("main", NULL);
	check_demangle("_ZN5apsym6WidgetIiE4pokeEPFmvEPiS4_",
	               "apsym::Widget<int>::poke(unsigned long (*)(), int*, int*)");
	check_demangle("_ZNKSt6vectorIiSaIiEE4sizeEv", "std::vector<int, std::allocator<int> >::size() const");
	check_demangle("_ZN3foo3barEv", "foo::bar()");
	/* Rust legacy: hash dropped, $-escapes decoded. */
	check_demangle("_ZN4core3fmt5write17h0123456789abcdefE", "core::fmt::write");
	check_demangle("_ZN4core3ptr42drop_in_place$LT$alloc..string..String$GT$17h7d58ab3ea1e2f4c9E",
	               "core::ptr::drop_in_place<alloc::string::String>");
	/* Rust v0. */
	check_demangle("_RNvCs1234_7mycrate3foo", "mycrate::foo");
	check_demangle("_RNvNtCs9ltgdHTiPiY_4core3ptr13drop_in_place", "core::ptr::drop_in_place");
}

int main(void)
{
	/* A debuginfod server would be asked for the build-ids of the stripped copies. */
	unsetenv("DEBUGINFOD_URLS");
	ra_plain = plain_caller(&l_plain);
	ra_inline = inline_outer(&l_inner, &l_mid, &l_outer);
	struct modinfo exe = find_module(NULL);
	CHECK(exe.found && exe.nsegs > 0, "main program not found by dl_iterate_phdr");
	CHECK(exe.build_id_len > 0, "the test executable has no build-id");
	if (!exe.found)
		return 1;

	test_demangle();
	test_main_program(&exe);
	test_build_id_mismatch(&exe);
	test_missing_file(&exe);
	test_no_build_id(&exe);
	test_generations(&exe);
	test_separate_debuginfo(&exe);
#ifdef AP_TEST_CXX
	test_cxx();
#endif
	printf("%d passed, %d failed\n", checks - failures, failures);
	return failures ? 1 : 0;
}
