/*
 * symbols: offline symbolization of recorded return addresses, with elfutils' libdwfl.
 *
 * The trace records every loaded module (path, load bias, PT_LOAD segments, build-id) and the
 * "generation" in which it was loaded; a dlclose starts a new generation, so an address is
 * resolved against the modules alive in the generation of the stack that holds it. Results are
 * cached per (module, address): each address is resolved once however often it appears.
 */
#ifndef AP_SYMBOLS_H
#define AP_SYMBOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ap_symbols ap_symbols;

/* One PT_LOAD segment of a module, as recorded (ELF vaddr, not runtime address). */
typedef struct ap_segment {
	uint64_t vaddr, memsz, file_offset;
	uint32_t flags; /* PF_X=1, PF_W=2, PF_R=4 */
} ap_segment;

/* A module as the MODULE record describes it. */
typedef struct ap_module_desc {
	uint32_t id;         /* >= 1, unique in the trace */
	uint32_t generation; /* generation in which it was loaded */
	uint64_t base;       /* load bias: runtime address = base + vaddr */
	const char *path;
	const uint8_t *build_id;
	size_t build_id_len;
	const ap_segment *segs;
	size_t nsegs;
} ap_module_desc;

/* One source-level frame. A return address expands to one or more of these, innermost first:
 * inlined callees, then the function that physically contains the code (inlined == false). */
typedef struct ap_symframe {
	const char *function; /* demangled; never NULL: falls back to "module+0xoffset" */
	const char *file;     /* source file, NULL if unknown */
	uint32_t line;        /* 0 if unknown */
	bool inlined;
	bool resolved;        /* false when function is the "module+0xoffset" fallback */
	const char *module;   /* module path, NULL if the address is in no module */
	uint64_t module_offset; /* address relative to the module's load bias */
	uint64_t pc;          /* the address looked up (return address - 1) */
} ap_symframe;

typedef void (*ap_symbols_warn_fn)(void *ctx, const char *message);

/* Creates a symbolizer. warn (may be NULL) receives one message per problem module (file
 * missing, build-id mismatch, no symbols), never one per address. Returns NULL on ENOMEM. */
ap_symbols *ap_symbols_new(ap_symbols_warn_fn warn, void *warn_ctx);
void ap_symbols_free(ap_symbols *s);

/* Where separate debug files are looked for: a colon-separated list in libdwfl's syntax ("" is
 * the module's own directory, ".debug" a subdirectory of it, absolute directories are searched
 * for .build-id/xx/yyyy.debug and for the .gnu_debuglink name). NULL restores the default,
 * ":.debug:/usr/lib/debug". Call it before the first ap_symbols_resolve (and before
 * ap_symbols_prewarm_begin). Returns 0, or -ENOMEM. */
int ap_symbols_set_debuginfo_path(ap_symbols *s, const char *path);

/* Starts opening, in a thread of its own, the files that the stacks given to
 * ap_symbols_note_stack point into, so that resolving them later finds them ready. For a caller
 * that reads a trace in one thread and resolves in it afterwards: between this call and the
 * first ap_symbols_resolve, only ap_symbols_add_module, _unload and _note_stack may be called,
 * from one thread (the first resolve that needs a module's file ends the thread). Does nothing after ap_symbols_no_files. Resolving
 * gives the same results, and the same warnings at the same points, as without it. */
void ap_symbols_prewarm_begin(ap_symbols *s);
/* A stack's return addresses as ap_symbols_resolve would get them: queues the files they fall
 * in for the prewarm thread, if one runs. */
void ap_symbols_note_stack(ap_symbols *s, uint32_t generation, const uint64_t *frames, size_t n);

/* From now on no module file is opened: every address in a module resolves to "name+0xoffset".
 * For callers that must not touch the file system (the fuzz harness: its traces name any path). */
void ap_symbols_no_files(ap_symbols *s);

/* Records a module (copies everything). Returns 0, or -ENOMEM. */
int ap_symbols_add_module(ap_symbols *s, const ap_module_desc *m);

/* Records that module_id was unloaded when generation became new_generation. */
void ap_symbols_unload(ap_symbols *s, uint32_t module_id, uint32_t new_generation);

/* Resolves a return address captured in `generation`: looks up ret_addr - 1 (the call
 * instruction) in the module mapped there at that generation. Stores a pointer to an array of
 * frames, innermost first, in *out and returns their number (>= 1). The array and its strings stay
 * valid until ap_symbols_free. An address in no module yields one frame named "0x<hex>". */
size_t ap_symbols_resolve(ap_symbols *s, uint32_t generation, uint64_t ret_addr,
                          const ap_symframe **out);

/* ---- Module list, for writers that describe the address space (the pprof export) ---- */

/* Number of module records added so far, every generation included. */
size_t ap_symbols_module_count(const ap_symbols *s);

/* Module record i (0 <= i < ap_symbols_module_count), in the order they were added, into *out
 * (pointers stay valid until ap_symbols_free). Returns false when i is out of range. */
bool ap_symbols_module_get(const ap_symbols *s, size_t i, ap_module_desc *out);

/* Index (for ap_symbols_module_get) of the module that maps address pc in generation, or -1 when
 * no module does. This is the module ap_symbols_resolve uses for a return address of pc + 1. */
long ap_symbols_module_index(ap_symbols *s, uint32_t generation, uint64_t pc);

#endif
