/*
 * symfile: one ELF file opened with elfutils' libdwfl for offline symbolization. It checks that
 * the file on disk is the one that was mapped, then maps ELF vaddrs to functions (symbol table)
 * and to source positions with inlined calls expanded (DWARF, also from separate debug files).
 * symbols.c builds on it: module bookkeeping, generations, caching, demangling.
 */
#ifndef AP_SYMFILE_H
#define AP_SYMFILE_H

#include "symbols.h"

#include <elfutils/libdwfl.h>

typedef struct ap_symfile ap_symfile;

/* A frame as the file describes it. function is the raw (possibly mangled) name, never NULL;
 * file is NULL and line 0 when unknown. The strings live as long as the ap_symfile. */
typedef struct ap_rawframe {
	const char *function, *file;
	uint32_t line;
	bool inlined;
} ap_rawframe;

/* Opens path and checks it against the recorded build-id or, when none was recorded, the
 * recorded PT_LOAD segments. On failure returns NULL and writes the reason into problem ("" when
 * it is not worth telling, as for the vDSO, which has no file). On success problem is "" or a
 * remark such as "no symbols and no debug info". callbacks must outlive the file. */
ap_symfile *ap_symfile_open(const Dwfl_Callbacks *callbacks, const char *path,
                            const uint8_t *build_id, size_t build_id_len, const ap_segment *segs,
                            size_t nsegs, char *problem, size_t problem_size);

/* Stores the frames at ELF vaddr addr in out, innermost first, at most max (>= 1), and returns
 * their number: 0 when the file knows nothing about addr. */
size_t ap_symfile_lookup(ap_symfile *f, uint64_t addr, ap_rawframe *out, size_t max);

/* Does up front what the first lookups would do anyway: reads the symbol table and the DWARF
 * (decompressing its sections) and the address index of its compilation units. Lookups give the
 * same results with or without it. */
void ap_symfile_prewarm(ap_symfile *f);

void ap_symfile_close(ap_symfile *f);

#endif
