/*
 * config.c: the shim's options, one table read once from the environment (ALLOCPROF_*).
 * `allocprof record` passes its command-line flags down as these same variables, so there is one
 * source of configuration. A bad value warns once and keeps the default: the program runs on.
 */
#include "shim.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

ap_config ap_cfg = {
	.output = "allocprof.%e.%p.trace",
	.depth = 64,
	.stack_cache = true,
	.clock = 0,
};

enum opt_type { OPT_STRING, OPT_UINT, OPT_BOOL, OPT_CLOCK };

static const struct option {
	const char *name;
	enum opt_type type;
	uint64_t min, max; /* OPT_UINT */
	const char *help;
} options[] = {
	{"ALLOCPROF_OUTPUT", OPT_STRING, 0, 0, "trace file path; %p = pid, %e = program name"},
	{"ALLOCPROF_DEPTH", OPT_UINT, 1, 1024, "frames kept per stack (default 64)"},
	{"ALLOCPROF_CLOCK", OPT_CLOCK, 0, 0, "cross-thread order stamp: auto, tsc or counter"},
	{"ALLOCPROF_QUIET", OPT_BOOL, 0, 0, "no messages on stderr"},
	{"ALLOCPROF_VERBOSE", OPT_BOOL, 0, 0, "print the effective options at start"},
	{"ALLOCPROF_SAMPLE_BYTES", OPT_UINT, 0, 1ull << 40, "mean bytes between samples, 0 = every allocation"},
	{"ALLOCPROF_SEED", OPT_UINT, 0, UINT64_MAX, "the sampler's random seed"},
	{"ALLOCPROF_STACK_CACHE", OPT_BOOL, 0, 0, "reuse validated recent stacks instead of unwinding (default on)"},
	{"ALLOCPROF_NO_CHILDREN", OPT_BOOL, 0, 0, "trace this process only, not its fork/exec children"},
	{"ALLOCPROF_RUN_LOG", OPT_STRING, 0, 0, "file to append \"pid ppid trace-path\" lines to"},
};

static bool parse_uint(const char *s, uint64_t *out)
{
	if (!*s)
		return false;
	uint64_t v = 0;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	/* Size suffixes, so ALLOCPROF_*_BYTES=512K reads as people write it. */
	uint64_t mult = 1;
	if (*s == 'k' || *s == 'K')
		mult = 1u << 10;
	else if (*s == 'm' || *s == 'M')
		mult = 1u << 20;
	else if (*s == 'g' || *s == 'G')
		mult = 1u << 30;
	if (mult > 1) {
		s++;
		if (*s == 'i' || *s == 'I')
			s++;
		if (*s == 'b' || *s == 'B')
			s++;
	}
	if (*s || (v && mult > UINT64_MAX / v))
		return false;
	*out = v * mult;
	return true;
}

static bool parse_bool(const char *s, bool *out)
{
	static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off", ""};
	for (size_t i = 0; i < sizeof(yes) / sizeof(*yes); i++)
		if (!strcasecmp(s, yes[i]))
			return *out = true, true;
	for (size_t i = 0; i < sizeof(no) / sizeof(*no); i++)
		if (!strcasecmp(s, no[i]))
			return *out = false, true;
	return false;
}

static bool apply(const struct option *o, const char *val)
{
	uint64_t u;
	bool b;
	switch (o->type) {
	case OPT_STRING: {
		char *dst = strcmp(o->name, "ALLOCPROF_OUTPUT") ? ap_cfg.run_log : ap_cfg.output;
		if (!*val || strlen(val) >= sizeof(ap_cfg.output))
			return false;
		strcpy(dst, val);
		return true;
	}
	case OPT_UINT:
		if (!parse_uint(val, &u) || u < o->min || u > o->max)
			return false;
		if (!strcmp(o->name, "ALLOCPROF_DEPTH"))
			ap_cfg.depth = (uint32_t)u;
		else if (!strcmp(o->name, "ALLOCPROF_SAMPLE_BYTES"))
			ap_cfg.sample_bytes = u;
		else {
			ap_cfg.seed = u;
			ap_cfg.seed_given = true;
		}
		return true;
	case OPT_BOOL:
		if (!parse_bool(val, &b))
			return false;
		if (!strcmp(o->name, "ALLOCPROF_QUIET"))
			ap_cfg.quiet = b;
		else if (!strcmp(o->name, "ALLOCPROF_STACK_CACHE"))
			ap_cfg.stack_cache = b;
		else if (!strcmp(o->name, "ALLOCPROF_NO_CHILDREN"))
			ap_cfg.no_children = b;
		else
			ap_cfg.verbose = b;
		return true;
	case OPT_CLOCK:
		if (!strcasecmp(val, "auto"))
			ap_cfg.clock = 0;
		else if (!strcasecmp(val, "tsc"))
			ap_cfg.clock = AP_CLOCK_TSC;
		else if (!strcasecmp(val, "counter"))
			ap_cfg.clock = AP_CLOCK_COUNTER;
		else
			return false;
		return true;
	}
	return false;
}

void ap_config_init(void)
{
	/* QUIET first, so that it also silences warnings about the other options. */
	const char *q = getenv("ALLOCPROF_QUIET");
	bool b;
	if (q && parse_bool(q, &b))
		ap_cfg.quiet = b;
	for (size_t i = 0; i < sizeof(options) / sizeof(*options); i++) {
		const struct option *o = &options[i];
		const char *val = getenv(o->name);
		if (val && !apply(o, val)) {
			if (o->type == OPT_UINT)
				ap_log("%s=%s is not valid (%s, %lu..%lu); using the default", o->name, val,
				       o->help, (unsigned long)o->min, (unsigned long)o->max);
			else
				ap_log("%s=%s is not valid (%s); using the default", o->name, val, o->help);
		}
	}
	if (!ap_cfg.seed_given) {
		/* Two processes started at once must not sample alike. */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ap_cfg.seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 42) ^
		              (uint64_t)(uintptr_t)&ts;
	}
	if (ap_cfg.verbose)
		ap_log("options: ALLOCPROF_OUTPUT=%s ALLOCPROF_DEPTH=%u ALLOCPROF_CLOCK=%s "
		       "ALLOCPROF_SAMPLE_BYTES=%lu ALLOCPROF_SEED=%lu",
		       ap_cfg.output, ap_cfg.depth,
		       ap_cfg.clock == AP_CLOCK_TSC ? "tsc" : ap_cfg.clock == AP_CLOCK_COUNTER ? "counter" : "auto",
		       (unsigned long)ap_cfg.sample_bytes, (unsigned long)ap_cfg.seed);
}
