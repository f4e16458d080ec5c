/*
 * fuzz_trace.c: the libFuzzer target over the analyzer's reader: decode -> replay into the
 * profile -> aggregation by function and by line (what `allocprof top` and the other views
 * compute), on one input.
 *
 * Built twice: by default the input is the decompressed stream (what `zstd -dc` prints), so the
 * fuzzer explores records and events rather than zstd's framing; with -DFUZZ_COMPRESSED it is
 * the trace file as written (zstd frames), which covers the decompression path too.
 *
 * Module files are never opened (ap_profile_load_mem's open_files = false): the paths in a
 * fuzzed trace are arbitrary, and symbolization must neither depend on the machine's files nor
 * spend the fuzzer's time in libdwfl. Frames then resolve to "module+0xoffset" or "0x<addr>".
 *
 * The same function is called by regress_main.c, a plain main() that replays saved inputs.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "profile.h"
#include "report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifdef FUZZ_COMPRESSED
#define FUZZ_IS_COMPRESSED true
#else
#define FUZZ_IS_COMPRESSED false
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ap_profile p;
	if (ap_profile_load_mem(&p, "fuzz-input", data, size, FUZZ_IS_COMPRESSED, false) == 0) {
		/* Every figure goes through the same aggregation the views use; with edges, so that
		 * caller->callee bookkeeping is exercised too. */
		static const enum ap_granularity gs[] = {AP_G_FUNCTION, AP_G_LINE};
		for (size_t g = 0; g < sizeof(gs) / sizeof(*gs); g++) {
			ap_view_opts o;
			memset(&o, 0, sizeof(o));
			o.sample_index = (int)(g == 0 ? AP_M_INUSE_SPACE : AP_M_ALLOC_OBJECTS);
			o.nrows = -1;
			ap_rows rows;
			ap_rows_build(&p, &o, gs[g], true, &rows);
			ap_rows_sort(&rows, o.sample_index, g != 0);
			ap_rows_free(&rows);
		}
		for (size_t i = 0; i < p.clock_pts.n; i++)
			(void)ap_profile_seconds(&p, p.clock_pts.v[i].stamp);
		(void)ap_profile_seconds(&p, p.last_stamp);
	}
	ap_profile_free(&p);
	return 0;
}
