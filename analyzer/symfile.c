/*
 * symfile: one ELF file opened with libdwfl for offline symbolization (see symfile.h).
 *
 * The file is reported alone in a Dwfl of its own at load bias 0, so it is looked up by ELF vaddr
 * whatever base it had at run time. Two lookups libdwfl does slowly are replaced by sorted tables
 * built on first use: symbols (dwfl_module_addrinfo scans the whole symbol table per address)
 * and, for files without .debug_aranges, compilation units.
 */
#include "symfile.h"
#include "util.h"

#include <dwarf.h>
#include <elfutils/libdwelf.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A function symbol; size 0 for symbols without one (assembly). */
struct sym {
	GElf_Addr lo, size;
	const char *name;
	int rank; /* binding: global 0, weak 1, local 2 — at one address the best names the code */
};

/* An address range of a compilation unit, or of a function (concrete subprogram) in one. */
struct die_range {
	Dwarf_Addr lo, hi;
	Dwarf_Die die;
};

/* The functions of one compilation unit, sorted by address. */
struct cu_funcs {
	Dwarf_Off cu_offset;
	struct die_range *funcs;
	size_t n;
};

/* Nesting of lexical blocks and inlined calls in one function; deeper scopes are ignored. */
#define MAX_DEPTH 256

struct ap_symfile {
	Dwfl *dwfl;
	Dwfl_Module *mod;
	struct sym *syms;
	size_t nsyms;
	GElf_Addr max_size;
	bool syms_built;
	struct die_range *cus; /* built on the first address dwfl_module_addrdie misses */
	size_t ncus;
	Dwarf_Addr cus_bias;
	bool cus_built;
	struct cu_funcs *cufs; /* one per CU looked into, sorted by cu_offset */
	size_t ncufs, capcufs;
	/* Source names made absolute with the CU's DW_AT_comp_dir, by libdw's string pointer. */
	ap_map abs_index;
	AP_VEC(char *) abs_paths;
};

static void hex(char *out, const void *bytes, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *p = bytes;
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = 0;
}

/* Without a build-id, the PT_LOAD layout is the only evidence that the file is the one mapped. */
static bool segments_match(Elf *elf, const ap_segment *segs, size_t nsegs)
{
	size_t phnum;
	if (elf == NULL || elf_getphdrnum(elf, &phnum) != 0)
		return false;
	for (size_t i = 0; i < nsegs; i++) {
		bool found = false;
		for (size_t j = 0; j < phnum && !found; j++) {
			GElf_Phdr ph;
			found = gelf_getphdr(elf, (int)j, &ph) != NULL && ph.p_type == PT_LOAD &&
			        ph.p_vaddr == segs[i].vaddr && ph.p_memsz == segs[i].memsz;
		}
		if (!found)
			return false;
	}
	return true;
}

static bool is_vdso(const char *path)
{
	const char *slash = strrchr(path, '/');
	const char *name = slash != NULL ? slash + 1 : path;
	return strcmp(name, "linux-vdso.so.1") == 0 || strcmp(name, "linux-gate.so.1") == 0 ||
	       strcmp(name, "[vdso]") == 0;
}

ap_symfile *ap_symfile_open(const Dwfl_Callbacks *callbacks, const char *path,
                            const uint8_t *build_id, size_t build_id_len, const ap_segment *segs,
                            size_t nsegs, char *problem, size_t problem_size)
{
	problem[0] = 0;
	/* The path comes from the trace: it may name a FIFO (open would wait for a writer),
	 * /dev/stdin or /dev/zero (reading would never end). O_NONBLOCK keeps open from waiting;
	 * only a regular file is read. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		if (!is_vdso(path))
			snprintf(problem, problem_size, "cannot open (%s)", strerror(errno));
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(problem, problem_size, "not a regular file");
		close(fd);
		return NULL;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	ap_symfile *f = calloc(1, sizeof(*f));
	if (f == NULL || (f->dwfl = dwfl_begin(callbacks)) == NULL) {
		snprintf(problem, problem_size, "out of memory");
		free(f);
		close(fd);
		return NULL;
	}
	dwfl_report_begin(f->dwfl);
	const char *slash = strrchr(path, '/');
	f->mod = dwfl_report_elf(f->dwfl, slash != NULL ? slash + 1 : path, path, fd, 0, true);
	dwfl_report_end(f->dwfl, NULL, NULL);
	if (f->mod == NULL) {
		snprintf(problem, problem_size, "%s", dwfl_errmsg(-1));
		close(fd); /* libdwfl takes the descriptor only on success */
		ap_symfile_close(f);
		return NULL;
	}

	Dwarf_Addr bias;
	Elf *elf = dwfl_module_getelf(f->mod, &bias);
	const void *disk_id = NULL;
	ssize_t disk_len = elf != NULL ? dwelf_elf_gnu_build_id(elf, &disk_id) : -1;
	if (build_id_len > 0 && (disk_len != (ssize_t)build_id_len || memcmp(disk_id, build_id, build_id_len) != 0)) {
		char want[2 * 64 + 1], have[2 * 64 + 1] = "none";
		hex(want, build_id, build_id_len > 64 ? 64 : build_id_len);
		if (disk_len > 0)
			hex(have, disk_id, disk_len > 64 ? 64 : (size_t)disk_len);
		snprintf(problem, problem_size, "build-id differs from the one recorded (%s on disk vs %s)",
		         have, want);
	} else if (build_id_len == 0 && !segments_match(elf, segs, nsegs)) {
		snprintf(problem, problem_size,
		         "its PT_LOAD segments differ from the recorded ones (and no build-id was recorded)");
	}
	if (problem[0] != 0) {
		ap_symfile_close(f);
		return NULL;
	}
	if (dwfl_module_getsymtab(f->mod) <= 0 && dwfl_module_getdwarf(f->mod, &bias) == NULL)
		snprintf(problem, problem_size, "no symbols and no debug info");
	return f;
}

void ap_symfile_close(ap_symfile *f)
{
	if (f == NULL)
		return;
	dwfl_end(f->dwfl);
	free(f->syms);
	free(f->cus);
	for (size_t i = 0; i < f->ncufs; i++)
		free(f->cufs[i].funcs);
	free(f->cufs);
	for (size_t i = 0; i < f->abs_paths.n; i++)
		free(f->abs_paths.v[i]);
	AP_VEC_FREE(f->abs_paths);
	ap_map_free(&f->abs_index);
	free(f);
}

static int sym_cmp(const void *a, const void *b)
{
	const struct sym *x = a, *y = b;
	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	return x->rank != y->rank ? x->rank - y->rank : strcmp(x->name, y->name);
}

static bool is_code(Elf *elf, GElf_Word shndx)
{
	GElf_Shdr shdr;
	Elf_Scn *scn = elf_getscn(elf, shndx);
	return scn != NULL && gelf_getshdr(scn, &shdr) != NULL && (shdr.sh_flags & SHF_EXECINSTR);
}

static void build_symtab(ap_symfile *f)
{
	f->syms_built = true;
	size_t cap = 0;
	int n = dwfl_module_getsymtab(f->mod);
	for (int i = 1; i < n; i++) {
		GElf_Sym sym;
		GElf_Addr addr;
		GElf_Word shndx;
		Elf *elf;
		Dwarf_Addr bias;
		const char *name = dwfl_module_getsym_info(f->mod, i, &sym, &addr, &shndx, &elf, &bias);
		int type = GELF_ST_TYPE(sym.st_info), bind = GELF_ST_BIND(sym.st_info);
		/* Untyped symbols name code only in executable sections; "$x"-style are ARM mapping
		 * symbols, not names. */
		if (name == NULL || name[0] == 0 || name[0] == '$' || shndx == SHN_UNDEF ||
		    shndx == SHN_ABS || !(type == STT_FUNC || type == STT_GNU_IFUNC ||
		                          (type == STT_NOTYPE && is_code(elf, shndx))))
			continue;
		if (!ap_grow(&f->syms, &cap, f->nsyms + 1, sizeof(*f->syms)))
			break;
		f->syms[f->nsyms++] = (struct sym){addr, sym.st_size, name,
		                                   bind == STB_GLOBAL ? 0 : bind == STB_WEAK ? 1 : 2};
		if (sym.st_size > f->max_size)
			f->max_size = sym.st_size;
	}
	if (f->nsyms > 0)
		qsort(f->syms, f->nsyms, sizeof(*f->syms), sym_cmp);
}

/* The innermost sized symbol containing addr; failing that, a sizeless symbol at the nearest
 * address below it. At one address the best binding wins (sorted first). */
static const char *symbol_at(ap_symfile *f, GElf_Addr addr)
{
	if (!f->syms_built)
		build_symtab(f);
	size_t lo = 0, hi = f->nsyms;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (f->syms[mid].lo <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	GElf_Addr nearest = f->syms[lo - 1].lo;
	const struct sym *best = NULL, *sizeless = NULL;
	for (size_t j = lo; j-- > 0;) {
		const struct sym *s = &f->syms[j];
		if (best != NULL && s->lo != best->lo)
			break;
		/* No symbol starting this far below addr can reach it. */
		if (best == NULL && s->lo != nearest && addr - s->lo >= f->max_size)
			break;
		if (s->size == 0 && s->lo == nearest)
			sizeless = s;
		else if (s->size != 0 && addr - s->lo < s->size)
			best = s;
	}
	best = best != NULL ? best : sizeless;
	return best != NULL ? best->name : NULL;
}

static int die_range_cmp(const void *a, const void *b)
{
	const struct die_range *x = a, *y = b;
	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* The entry of a sorted die_range table that contains addr, or NULL. */
static struct die_range *range_find(struct die_range *v, size_t n, Dwarf_Addr addr)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v[mid].lo <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 && addr < v[lo - 1].hi ? &v[lo - 1] : NULL;
}

/* Appends the address ranges of die to *v; false on ENOMEM. */
static bool add_ranges(struct die_range **v, size_t *n, size_t *cap, Dwarf_Die *die, Dwarf_Addr bias)
{
	Dwarf_Addr base, lo, hi;
	for (ptrdiff_t off = 0; (off = dwarf_ranges(die, off, &base, &lo, &hi)) > 0;) {
		if (!ap_grow(v, cap, *n + 1, sizeof(**v)))
			return false;
		(*v)[(*n)++] = (struct die_range){lo + bias, hi + bias, *die};
	}
	return true;
}

/* libdw before 0.191 finds the CU of an address only through .debug_aranges, which clang and
 * rustc do not emit by default: without this table their code would have no DWARF at all. */
static Dwarf_Die *cu_of(ap_symfile *f, Dwarf_Addr addr, Dwarf_Addr *bias)
{
	Dwarf_Die *cu = dwfl_module_addrdie(f->mod, addr, bias);
	if (cu != NULL)
		return cu;
	if (!f->cus_built) {
		f->cus_built = true;
		size_t cap = 0;
		for (cu = dwfl_module_nextcu(f->mod, NULL, &f->cus_bias); cu != NULL;
		     cu = dwfl_module_nextcu(f->mod, cu, &f->cus_bias))
			if (!add_ranges(&f->cus, &f->ncus, &cap, cu, f->cus_bias))
				break;
		if (f->ncus > 0)
			qsort(f->cus, f->ncus, sizeof(*f->cus), die_range_cmp);
	}
	struct die_range *r = range_find(f->cus, f->ncus, addr);
	*bias = f->cus_bias; /* one Dwarf per module, so one bias */
	return r != NULL ? &r->die : NULL;
}

/* Concrete functions under die; namespaces and classes hold C++ and Rust definitions. */
static bool collect_funcs(Dwarf_Die *die, struct cu_funcs *c, size_t *cap)
{
	Dwarf_Die child;
	if (dwarf_child(die, &child) != 0)
		return true;
	do {
		switch (dwarf_tag(&child)) {
		case DW_TAG_subprogram:
		case DW_TAG_entry_point:
			if (!add_ranges(&c->funcs, &c->n, cap, &child, 0))
				return false;
			break;
		case DW_TAG_namespace:
		case DW_TAG_module:
		case DW_TAG_class_type:
		case DW_TAG_structure_type:
		case DW_TAG_union_type:
			if (!collect_funcs(&child, c, cap))
				return false;
			break;
		}
	} while (dwarf_siblingof(&child, &child) == 0);
	return true;
}

/* The function DIE containing addr (a CU-relative address) in cu. dwarf_getscopes would walk
 * the whole CU for every address, twice with dwarf_getscopes_die: the function index of a CU
 * is built once, with one walk, the first time an address falls in it. */
static Dwarf_Die *func_of(ap_symfile *f, Dwarf_Die *cu, Dwarf_Addr addr)
{
	Dwarf_Off off = dwarf_dieoffset(cu);
	size_t lo = 0, hi = f->ncufs;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (f->cufs[mid].cu_offset < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == f->ncufs || f->cufs[lo].cu_offset != off) {
		if (!ap_grow(&f->cufs, &f->capcufs, f->ncufs + 1, sizeof(*f->cufs)))
			return NULL;
		memmove(&f->cufs[lo + 1], &f->cufs[lo], (f->ncufs - lo) * sizeof(*f->cufs));
		f->ncufs++;
		struct cu_funcs *c = &f->cufs[lo];
		*c = (struct cu_funcs){.cu_offset = off};
		size_t cap = 0;
		collect_funcs(cu, c, &cap); /* on ENOMEM, what was found is still right */
		if (c->n > 0)
			qsort(c->funcs, c->n, sizeof(*c->funcs), die_range_cmp);
	}
	struct die_range *r = range_find(f->cufs[lo].funcs, f->cufs[lo].n, addr);
	return r != NULL ? &r->die : NULL;
}

/* Fills chain with the DIEs from fn down to the innermost scope holding addr; returns their
 * number. Siblings do not overlap, so one child holds addr at each level. */
static size_t scope_chain(Dwarf_Die *fn, Dwarf_Addr addr, Dwarf_Die *chain, size_t max)
{
	size_t n = 0;
	chain[n++] = *fn;
	for (bool deeper = true; deeper && n < max;) {
		Dwarf_Die child;
		deeper = false;
		if (dwarf_child(&chain[n - 1], &child) != 0)
			break;
		do {
			int tag = dwarf_tag(&child);
			if ((tag == DW_TAG_inlined_subroutine || tag == DW_TAG_lexical_block ||
			     tag == DW_TAG_subprogram || tag == DW_TAG_try_block ||
			     tag == DW_TAG_catch_block || tag == DW_TAG_with_stmt) &&
			    dwarf_haspc(&child, addr) > 0) {
				chain[n++] = child;
				deeper = true;
				break;
			}
		} while (dwarf_siblingof(&child, &child) == 0);
	}
	return n;
}

/* Name of a subprogram or inlined instance, following abstract_origin and specification.
 * Linkage names first: for C++ and Rust they carry the namespace and parameters. */
static const char *die_name(Dwarf_Die *die)
{
	static const int attrs[] = {DW_AT_linkage_name, DW_AT_MIPS_linkage_name, DW_AT_name};
	for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
		Dwarf_Attribute a;
		const char *n = dwarf_formstring(dwarf_attr_integrate(die, attrs[i], &a));
		if (n != NULL)
			return n;
	}
	return NULL;
}

/* Joins a relative source name with the directory the compiler ran in, and folds "." and ".."
 * lexically, so that `list` finds the file from any directory and pprof shows a real path
 * (meson's builds record names like "../src/foo.c", relative to the build directory). */
static const char *absolute(ap_symfile *f, Dwarf_Die *cu, const char *file)
{
	if (file == NULL || file[0] == '/')
		return file;
	uint64_t *slot = ap_map_get(&f->abs_index, (uint64_t)(uintptr_t)file);
	if (slot != NULL)
		return f->abs_paths.v[*slot];
	Dwarf_Attribute a;
	const char *dir = dwarf_formstring(dwarf_attr(cu, DW_AT_comp_dir, &a));
	if (dir == NULL || dir[0] != '/')
		return file;
	size_t len = strlen(dir) + strlen(file) + 2;
	char *joined = ap_xmalloc(len), *out = ap_xmalloc(len);
	snprintf(joined, len, "%s/%s", dir, file);
	size_t o = 0;
	for (const char *p = joined; *p;) {
		while (*p == '/')
			p++;
		const char *end = p + strcspn(p, "/");
		size_t n = (size_t)(end - p);
		if (n == 0 || (n == 1 && p[0] == '.')) {
			/* nothing */
		} else if (n == 2 && p[0] == '.' && p[1] == '.') {
			while (o > 0 && out[--o] != '/')
				;
		} else {
			out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		p = end;
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = 0;
	free(joined);
	AP_VEC_PUSH(f->abs_paths, out);
	*ap_map_put(&f->abs_index, (uint64_t)(uintptr_t)file, NULL) = f->abs_paths.n - 1;
	return out;
}

/* Expands the inlined calls at addr, innermost first, then the function that physically holds
 * the code. Returns 0 when there is no DWARF for addr. */
static size_t lookup_dwarf(ap_symfile *f, Dwarf_Addr addr, const char *symname, ap_rawframe *out,
                           size_t max)
{
	Dwarf_Addr bias;
	Dwarf_Die *cu = cu_of(f, addr, &bias);
	if (cu == NULL)
		return 0;
	const char *file = NULL;
	int line = 0;
	Dwarf_Line *dl = dwarf_getsrc_die(cu, addr - bias);
	if (dl != NULL && (file = dwarf_linesrc(dl, NULL, NULL)) != NULL && dwarf_lineno(dl, &line) != 0)
		line = 0;
	file = absolute(f, cu, file);

	Dwarf_Die chain[MAX_DEPTH];
	Dwarf_Die *fn = func_of(f, cu, addr - bias);
	size_t nchain = fn != NULL ? scope_chain(fn, addr - bias, chain, MAX_DEPTH) : 0;
	Dwarf_Files *files = NULL;
	size_t n = 0;
	bool physical = false;
	for (size_t i = nchain; i-- > 0 && !physical;) {
		Dwarf_Die *sc = &chain[i];
		int tag = dwarf_tag(sc);
		const char *name = die_name(sc);
		if (tag == DW_TAG_inlined_subroutine) {
			/* Past max, the outer inlined frames go; the physical one always stays. */
			if (n + 1 < max)
				out[n++] = (ap_rawframe){name != NULL ? name : "<inlined>", file, (uint32_t)line, true};
			/* The caller's position is the inlined call site. */
			Dwarf_Attribute a;
			Dwarf_Word w;
			file = NULL;
			line = 0;
			if (files == NULL && dwarf_getsrcfiles(cu, &files, NULL) != 0)
				files = NULL;
			if (files != NULL && dwarf_formudata(dwarf_attr(sc, DW_AT_call_file, &a), &w) == 0)
				file = absolute(f, cu, dwarf_filesrc(files, w, NULL, NULL));
			if (dwarf_formudata(dwarf_attr(sc, DW_AT_call_line, &a), &w) == 0)
				line = (int)w;
		} else if (tag == DW_TAG_subprogram || tag == DW_TAG_entry_point) {
			/* DWARF names the source function where the symbol may be a compiler clone
			 * ("f.part.0", "f.cold"). */
			out[n++] = (ap_rawframe){name != NULL ? name : symname != NULL ? symname : "<unknown>",
			                         file, (uint32_t)line, false};
			physical = true;
		}
	}
	if (!physical) {
		/* Code DWARF has lines for but no function (assembly): the symbol names it. */
		if (symname == NULL)
			return 0;
		out[n++] = (ap_rawframe){symname, file, (uint32_t)line, false};
	}
	return n;
}

size_t ap_symfile_lookup(ap_symfile *f, uint64_t addr, ap_rawframe *out, size_t max)
{
	const char *symname = symbol_at(f, addr);
	size_t n = lookup_dwarf(f, addr, symname, out, max);
	if (n == 0 && symname != NULL)
		out[n++] = (ap_rawframe){symname, NULL, 0, false};
	return n;
}

void ap_symfile_prewarm(ap_symfile *f)
{
	if (!f->syms_built)
		build_symtab(f);
	Dwarf_Addr bias;
	Dwarf *dw = dwfl_module_getdwarf(f->mod, &bias);
	Dwarf_Aranges *ar;
	size_t n;
	if (dw != NULL)
		dwarf_getaranges(dw, &ar, &n);
}
