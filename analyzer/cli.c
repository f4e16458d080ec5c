/*
 * cli.c: `allocprof SUBCOMMAND ...`: parses options and dispatches to record and the views.
 */
#include "cli.h"

#include <getopt.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "allocprof/trace.h"
#include "analyses.h"
#include "profile.h"
#include "report.h"
#include "views.h"

/* `allocprof pprof` is analyzer/pprof.c's; it is wired in as soon as its header exists, so this
 * file builds before and after that helper lands. (pprof.c must then be in analyzer_sources.) */
#if defined(__has_include)
#if __has_include("pprof.h")
#include "pprof.h"
#define AP_HAVE_PPROF 1
#endif
/* Likewise `allocprof info` (analyzer/info.c). */
#if __has_include("info.h")
#include "info.h"
#define AP_HAVE_INFO 1
#endif
#endif

static const char usage_text[] =
	"usage: allocprof COMMAND [OPTIONS]\n"
	"\n"
	"Record:\n"
	"  allocprof record [-o PATH] [--depth N] -- CMD [ARGS...]\n"
	"      run CMD with the shim preloaded; the trace goes to PATH (%p = pid, %e = program name;\n"
	"      default allocprof.%e.%p.trace)\n"
	"\n"
	"Report (TRACE is a file written by record; the views are shaped like pprof's):\n"
	"  allocprof top [-n N] [--cum] [--json] [VIEW OPTIONS] TRACE\n"
	"      nodes (functions) by flat (or cum) figure; -n: rows (default 10, all with --json)\n"
	"  allocprof list [--source-path DIRS] [VIEW OPTIONS] REGEX TRACE\n"
	"      annotated source of the functions whose name REGEX matches: flat and cum per line;\n"
	"      a source named by a relative path (as the debug info often has it) is looked for in\n"
	"      the colon-separated DIRS, then in the current directory, with its leading\n"
	"      directories dropped one by one (../src/a.c, src/a.c, a.c)\n"
	"  allocprof peek [-n N] [--cum] [VIEW OPTIONS] REGEX TRACE\n"
	"      callers and callees of the matching nodes, with their weights and shares\n"
	"  allocprof traces [-n N] [--json] [VIEW OPTIONS] TRACE\n"
	"      the distinct stacks with their four figures, heaviest first, leaf first\n"
	"  allocprof folded [VIEW OPTIONS] TRACE\n"
	"      folded stacks \"root;...;leaf weight\" for flamegraph.pl, inferno or speedscope;\n"
	"      the weight is alloc_space unless --sample-index says otherwise\n"
#ifdef AP_HAVE_PPROF
	"  allocprof pprof [OPTIONS] TRACE\n"
	"      write the profile in pprof's protobuf format (allocprof pprof --help)\n"
#endif
#ifdef AP_HAVE_INFO
	"  allocprof info [--json] TRACE\n"
	"      the trace's metadata, exact totals and how the program ended\n"
#endif
	"\n"
	"Analyses:\n"
	"  allocprof timeline [-o FILE.svg] [--json] [--width N] [--height N] [--ascii] TRACE\n"
	"      heap in use over the run: a text chart with the peak marked; -o: an SVG chart with\n"
	"      the top 5 functions (by their share of the peak) stacked; --json: the series\n"
	"  allocprof leaks [-n N] [--json] [--all] [--fail-on-leaks[=BYTES]] [VIEW OPTIONS] TRACE\n"
	"      blocks not freed by exit, by stack, biggest first; --all: with the C library's own\n"
	"      (stdio buffers, locale); --fail-on-leaks: exit 1 if more than BYTES (default 0)\n"
	"  allocprof temps [-n N] [--json] [VIEW OPTIONS] TRACE\n"
	"      temporary allocations (freed by the allocating thread before its next allocation)\n"
	"  allocprof sizes [-n N] [--json] [VIEW OPTIONS] TRACE\n"
	"      per function: histograms of allocation sizes (powers of 2) and lifetimes (decades)\n"
	"  allocprof diff [-n N] [--cum] [--json] [--pprof -o FILE] [VIEW OPTIONS] BASE NEW\n"
	"      per function: base, new, delta, delta%; BASE and NEW are traces or pprof heap\n"
	"      profiles; --pprof: a diff profile (NEW minus BASE) for go tool pprof\n"
	"  allocprof flame -o FILE.html [VIEW OPTIONS] TRACE\n"
	"      a self-contained interactive flame graph (zoom, search, four figures per frame)\n"
	"\n"
	"View options:\n"
	"  --sample-index=INDEX     alloc_objects, alloc_space, inuse_objects or inuse_space\n"
	"                           (default inuse_space, as pprof's for heap profiles; folded:\n"
	"                           alloc_space, since at exit little may be in use)\n"
	"  --focus REGEX            keep only stacks with a frame whose function, file or module\n"
	"                           REGEX matches (percentages stay relative to the whole profile)\n"
	"  --ignore REGEX           drop stacks with such a frame\n"
	"  --hide REGEX             hide frames whose whole function name REGEX matches from the\n"
	"                           innermost end of stacks, as the allocator's own frames are\n"
	"  --show-allocator-frames  keep the allocator's frames (malloc, operator new, ...)\n"
	"  --lines                  nodes are function + file:line instead of functions\n"
	"  --at peak|TIME|event:N   inuse_* = live at that moment, not at the end: the peak of\n"
	"                           inuse_space, a time since the start (1.5s, 200ms, 1.5) or after\n"
	"                           the N-th event (top, list, peek, traces, folded, pprof, flame,\n"
	"                           diff, temps)\n"
	"  --sample-index=temp_objects|temp_space  temporary allocations (in place of alloc_*)\n"
	"REGEX is a POSIX extended regular expression, not anchored (as pprof's).\n"
	"Exit status: 0 ok, 1 list or peek matched nothing, 2 bad usage or an unreadable trace;\n"
	"record exits as CMD did.\n";

static int usage(const char *msg)
{
	if (msg)
		fprintf(stderr, "allocprof: %s\n", msg);
	fputs(usage_text, msg ? stderr : stdout);
	return msg ? 2 : 0;
}

/* ---- view options -------------------------------------------------------------------------------------- */

enum {
	OPT_SAMPLE_INDEX = 256,
	OPT_CUM,
	OPT_JSON,
	OPT_SHOW_ALLOC,
	OPT_HIDE,
	OPT_FOCUS,
	OPT_IGNORE,
	OPT_LINES,
	OPT_SOURCE_PATH,
	OPT_AT,
	OPT_WIDTH,
	OPT_HEIGHT,
	OPT_ASCII,
	OPT_UNICODE,
	OPT_ALL,
	OPT_FAIL_ON_LEAKS,
	OPT_PPROF,
};

static const struct option view_options[] = {
	{"sample-index", required_argument, NULL, OPT_SAMPLE_INDEX},
	{"sample_index", required_argument, NULL, OPT_SAMPLE_INDEX},
	{"cum", no_argument, NULL, OPT_CUM},
	{"json", no_argument, NULL, OPT_JSON},
	{"show-allocator-frames", no_argument, NULL, OPT_SHOW_ALLOC},
	{"hide", required_argument, NULL, OPT_HIDE},
	{"focus", required_argument, NULL, OPT_FOCUS},
	{"ignore", required_argument, NULL, OPT_IGNORE},
	{"lines", no_argument, NULL, OPT_LINES},
	{"source-path", required_argument, NULL, OPT_SOURCE_PATH},
	{"at", required_argument, NULL, OPT_AT},
	{"output", required_argument, NULL, 'o'},
	{"width", required_argument, NULL, OPT_WIDTH},
	{"height", required_argument, NULL, OPT_HEIGHT},
	{"ascii", no_argument, NULL, OPT_ASCII},
	{"unicode", no_argument, NULL, OPT_UNICODE},
	{"all", no_argument, NULL, OPT_ALL},
	{"fail-on-leaks", optional_argument, NULL, OPT_FAIL_ON_LEAKS},
	{"pprof", no_argument, NULL, OPT_PPROF},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

/* What a view accepts beyond the common options, and what it takes before TRACE. */
typedef struct view_desc {
	const char *name;
	bool nrows, cum, json, regex; /* regex: a REGEX argument before TRACE */
	bool source;                  /* reads source files (--source-path) */
	int default_index;            /* AP_M_*, or -1: temp_objects */
	unsigned x;                   /* what else it takes: X_* */
} view_desc;

enum {
	X_AT = 1,          /* --at */
	X_TEMP = 2,        /* --sample-index=temp_* */
	X_OUT = 4,         /* -o FILE */
	X_CHART = 8,       /* --width, --height, --ascii, --unicode */
	X_LEAKS = 16,      /* --all, --fail-on-leaks */
	X_PPROF = 32,      /* --pprof */
	X_TWO = 64,        /* two inputs: BASE NEW */
	X_NOFILTER = 128,  /* no --focus, --ignore, --lines, --sample-index */
	X_ONLY_TEMP = 256, /* the sample index can only be temp_* */
};

static const view_desc views[] = {
	{"top", true, true, true, false, false, AP_M_INUSE_SPACE, X_AT | X_TEMP},
	{"list", false, false, false, true, true, AP_M_INUSE_SPACE, X_AT | X_TEMP},
	{"peek", true, true, false, true, false, AP_M_INUSE_SPACE, X_AT | X_TEMP},
	{"traces", true, false, true, false, false, AP_M_INUSE_SPACE, X_AT | X_TEMP},
	{"folded", false, false, false, false, false, AP_M_ALLOC_SPACE, X_AT | X_TEMP},
	{"timeline", false, false, true, false, false, AP_M_INUSE_SPACE, X_OUT | X_CHART | X_NOFILTER},
	{"leaks", true, false, true, false, false, AP_M_INUSE_SPACE, X_LEAKS},
	{"temps", true, false, true, false, false, -1, X_AT | X_TEMP | X_ONLY_TEMP},
	{"sizes", true, false, true, false, false, AP_M_ALLOC_OBJECTS, 0},
	{"diff", true, true, true, false, false, AP_M_INUSE_SPACE, X_AT | X_TEMP | X_OUT | X_PPROF | X_TWO},
	{"flame", false, false, false, false, false, AP_M_ALLOC_SPACE, X_AT | X_TEMP | X_OUT},
};

static int compile_re(regex_t *re, const char *src, const char *what)
{
	int err = regcomp(re, src, REG_EXTENDED | REG_NOSUB);
	if (err) {
		char msg[256];
		regerror(err, re, msg, sizeof(msg));
		fprintf(stderr, "allocprof: bad %s regular expression '%s': %s\n", what, src, msg);
		return 2;
	}
	return 0;
}

/* Options the command does not take are refused rather than ignored: a silently ignored -n or
 * --json would look like a bug in the figures. */
static int not_for(const view_desc *v, const char *opt)
{
	fprintf(stderr, "allocprof: %s does not take %s\n", v->name, opt);
	return 2;
}

/* Parses argv (argv[0] = the command) into o; on success *re holds the compiled REGEX of list and
 * peek. Returns 0, 2 for bad usage, -1 after --help. */
static int parse_view(const view_desc *v, int argc, char **argv, ap_view_opts *o, regex_t *re,
                      const char **trace)
{
	o->sample_index = v->default_index;
	if (v->default_index < 0) {
		o->sample_index = AP_M_ALLOC_OBJECTS;
		o->temp_index = 1;
		o->index_name = "temp_objects";
	}
	o->nrows = -1;
	optind = 1;
	opterr = 0;
	int c, err;
	while ((c = getopt_long(argc, argv, ":n:o:h", view_options, NULL)) != -1) {
		if ((v->x & X_NOFILTER) && (c == OPT_SAMPLE_INDEX || c == OPT_FOCUS || c == OPT_IGNORE || c == OPT_LINES))
			return not_for(v, "--focus, --ignore, --lines or --sample-index (it charts inuse_space of every stack)");
		switch (c) {
		case 'n': {
			if (!v->nrows)
				return not_for(v, "-n");
			char *end;
			long n = strtol(optarg, &end, 10);
			if (!*optarg || *end || n < 0) {
				fprintf(stderr, "allocprof: -n takes a number of rows, not '%s'\n", optarg);
				return 2;
			}
			o->nrows = n;
			break;
		}
		case OPT_SAMPLE_INDEX:
			if (!strcmp(optarg, "temp_objects") || !strcmp(optarg, "temp_space")) {
				if (!(v->x & X_TEMP))
					return not_for(v, "--sample-index=temp_*");
				o->temp_index = optarg[5] == 'o' ? 1 : 2;
				o->sample_index = o->temp_index == 1 ? AP_M_ALLOC_OBJECTS : AP_M_ALLOC_SPACE;
				o->index_name = o->temp_index == 1 ? "temp_objects" : "temp_space";
				break;
			}
			if (v->x & X_ONLY_TEMP) {
				fprintf(stderr, "allocprof: %s takes --sample-index=temp_objects or temp_space\n", v->name);
				return 2;
			}
			o->temp_index = 0;
			o->index_name = NULL;
			o->sample_index = ap_metric_parse(optarg);
			if (o->sample_index < 0) {
				fprintf(stderr, "allocprof: unknown sample index '%s' (alloc_objects, alloc_space, "
				                "inuse_objects, inuse_space%s)\n", optarg,
				        (v->x & X_TEMP) ? ", temp_objects, temp_space" : "");
				return 2;
			}
			break;
		case OPT_AT:
			if (!(v->x & X_AT))
				return not_for(v, "--at");
			if (!ap_at_valid(optarg)) {
				fprintf(stderr, "allocprof: --at takes peak, end, event:N or a time (1.5s, 200ms, 1.5), "
				                "not '%s'\n", optarg);
				return 2;
			}
			o->at = optarg;
			break;
		case 'o':
			if (!(v->x & X_OUT))
				return not_for(v, "-o");
			o->output = optarg;
			break;
		case OPT_WIDTH:
		case OPT_HEIGHT: {
			if (!(v->x & X_CHART))
				return not_for(v, c == OPT_WIDTH ? "--width" : "--height");
			char *end;
			long n = strtol(optarg, &end, 10);
			if (!*optarg || *end || n < 4 || n > 400) {
				fprintf(stderr, "allocprof: %s takes a number from 4 to 400, not '%s'\n",
				        c == OPT_WIDTH ? "--width" : "--height", optarg);
				return 2;
			}
			*(c == OPT_WIDTH ? &o->width : &o->height) = n;
			break;
		}
		case OPT_ASCII:
		case OPT_UNICODE:
			if (!(v->x & X_CHART))
				return not_for(v, c == OPT_ASCII ? "--ascii" : "--unicode");
			o->ascii = c == OPT_ASCII;
			o->unicode = c == OPT_UNICODE;
			break;
		case OPT_ALL:
			if (!(v->x & X_LEAKS))
				return not_for(v, "--all");
			o->all = true;
			break;
		case OPT_FAIL_ON_LEAKS:
			if (!(v->x & X_LEAKS))
				return not_for(v, "--fail-on-leaks");
			o->fail_on_leaks = true;
			o->fail_bytes = 0;
			if (optarg && !ap_parse_bytes(optarg, &o->fail_bytes)) {
				fprintf(stderr, "allocprof: --fail-on-leaks=BYTES takes a byte count (4096, 64K, 1M), "
				                "not '%s'\n", optarg);
				return 2;
			}
			break;
		case OPT_PPROF:
			if (!(v->x & X_PPROF))
				return not_for(v, "--pprof");
			o->pprof_out = true;
			break;
		case OPT_CUM:
			if (!v->cum)
				return not_for(v, "--cum");
			o->cum_sort = true;
			break;
		case OPT_JSON:
			if (!v->json)
				return not_for(v, "--json");
			o->json = true;
			break;
		case OPT_SHOW_ALLOC:
			o->show_allocator = true;
			break;
		case OPT_HIDE: {
			/* Checked here so a typo is a usage error, not a warning after the trace loaded. */
			regex_t check;
			if ((err = compile_re(&check, optarg, "--hide")))
				return err;
			regfree(&check);
			ap_profile_hide_add(optarg);
			break;
		}
		case OPT_FOCUS:
		case OPT_IGNORE: {
			bool focus = c == OPT_FOCUS;
			bool *has = focus ? &o->has_focus : &o->has_ignore;
			regex_t *r = focus ? &o->focus : &o->ignore;
			if (*has) /* as in pprof, the last one given wins */
				regfree(r);
			*has = false;
			if ((err = compile_re(r, optarg, focus ? "--focus" : "--ignore")))
				return err;
			*has = true;
			break;
		}
		case OPT_LINES:
			o->lines = true;
			break;
		case OPT_SOURCE_PATH:
			if (!v->source)
				return not_for(v, "--source-path");
			o->source_path = optarg;
			break;
		case 'h':
			return usage(NULL), -1;
		case ':':
			fprintf(stderr, "allocprof: option %s needs a value\n", argv[optind - 1]);
			return 2;
		default:
			fprintf(stderr, "allocprof: unknown option %s\n", argv[optind - 1]);
			return 2;
		}
	}
	int want = v->regex || (v->x & X_TWO) ? 2 : 1;
	if (argc - optind != want) {
		char msg[128];
		snprintf(msg, sizeof(msg), "%s takes %s", v->name,
		         v->regex ? "a REGEX and one TRACE file" : (v->x & X_TWO) ? "two inputs, BASE and NEW"
		                                                                  : "exactly one TRACE file");
		return usage(msg);
	}
	if (o->pprof_out && !o->output && isatty(STDOUT_FILENO)) {
		fprintf(stderr, "allocprof: not writing a binary profile to a terminal; use -o FILE\n");
		return 2;
	}
	if (v->regex && (err = compile_re(re, argv[optind], "REGEX")))
		return err;
	*trace = argv[argc - 1];
	return 0;
}

static void free_view(ap_view_opts *o)
{
	if (o->has_focus)
		regfree(&o->focus);
	if (o->has_ignore)
		regfree(&o->ignore);
}

static int cmd_view(const view_desc *v, int argc, char **argv)
{
	ap_view_opts o = {0};
	regex_t re;
	const char *trace = NULL;
	int err = parse_view(v, argc, argv, &o, &re, &trace);
	if (err) {
		free_view(&o);
		return err < 0 ? 0 : err;
	}
	int rc = 2;
	if (!strcmp(v->name, "timeline") || !strcmp(v->name, "leaks") || !strcmp(v->name, "temps") ||
	    !strcmp(v->name, "sizes") || !strcmp(v->name, "flame") || !strcmp(v->name, "diff")) {
		if (!strcmp(v->name, "timeline"))
			rc = ap_timeline_run(trace, &o);
		else if (!strcmp(v->name, "leaks"))
			rc = ap_leaks_run(trace, &o);
		else if (!strcmp(v->name, "temps"))
			rc = ap_temps_run(trace, &o);
		else if (!strcmp(v->name, "sizes"))
			rc = ap_sizes_run(trace, &o);
		else if (!strcmp(v->name, "flame"))
			rc = ap_flame_run(trace, &o);
		else
			rc = ap_diff_run(argv[argc - 2], trace, &o);
		free_view(&o);
		return rc;
	}
	ap_profile p;
	if (ap_view_load(&p, trace, &o) == 0) {
		if (!strcmp(v->name, "top"))
			rc = ap_report_top(&p, &o, stdout);
		else if (!strcmp(v->name, "list"))
			rc = ap_report_list(&p, &o, &re, stdout);
		else if (!strcmp(v->name, "peek"))
			rc = ap_report_peek(&p, &o, &re, stdout);
		else if (!strcmp(v->name, "traces"))
			rc = ap_report_traces(&p, &o, stdout);
		else
			rc = ap_report_folded(&p, &o, stdout);
		if (rc == 1)
			fprintf(stderr, "allocprof: no matches found for regexp: %s (among nodes with a non-zero "
			                "%s)\n", argv[argc - 2], ap_metric_names[o.sample_index]);
	}
	ap_profile_free(&p);
	if (v->regex)
		regfree(&re);
	free_view(&o);
	return rc;
}

#ifdef AP_HAVE_PPROF
/* `allocprof pprof --at SPEC`: pprof.c loads its profile itself, so --at is taken out of argv
 * here and reaches its load through the default load options. */
static int pprof_with_at(int argc, char **argv)
{
	const char *at = NULL;
	char **args = ap_xcalloc((size_t)argc + 1, sizeof(*args));
	int n = 0;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--at") && i + 1 < argc)
			at = argv[++i];
		else if (!strncmp(argv[i], "--at=", 5))
			at = argv[i] + 5;
		else if (!strcmp(argv[i], "--"))
			break;
		else
			args[n++] = argv[i];
	}
	int rc = 0;
	if (at) {
		ap_load_opts lo = {0};
		const char *trace = n > 1 ? args[n - 1] : NULL;
		if (!ap_at_valid(at)) {
			fprintf(stderr, "allocprof: --at takes peak, end, event:N or a time (1.5s, 200ms, 1.5), "
			                "not '%s'\n", at);
			rc = 2;
		} else if (trace && trace[0] != '-' && ap_at_prepare(at, trace, &lo)) {
			rc = 2;
		}
		ap_profile_set_default_opts(&lo);
	}
	if (!rc)
		rc = ap_pprof_main(at ? n : argc, at ? args : argv);
	ap_profile_set_default_opts(NULL);
	free(args);
	return rc;
}
#endif

int ap_cli_main(int argc, char **argv)
{
	if (argc < 2)
		return usage("no command given");
	const char *cmd = argv[1];
	if (!strcmp(cmd, "record"))
		return ap_record_main(argc - 1, argv + 1);
	for (size_t i = 0; i < sizeof(views) / sizeof(*views); i++)
		if (!strcmp(cmd, views[i].name))
			return cmd_view(&views[i], argc - 1, argv + 1);
#ifdef AP_HAVE_INFO
	if (!strcmp(cmd, "info"))
		return ap_info_main(argc - 1, argv + 1);
#endif
	if (!strcmp(cmd, "pprof")) {
#ifdef AP_HAVE_PPROF
		return pprof_with_at(argc - 1, argv + 1);
#else
		/* WIRING SPOT: analyzer/pprof.c (ap_pprof_main, argv[0] = "pprof") is not in this build. */
		fprintf(stderr, "allocprof: pprof export is not built into this allocprof\n");
		return 2;
#endif
	}
	if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h"))
		return usage(NULL);
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("allocprof %s (trace format %d)\n", AP_VERSION, AP_FORMAT_VERSION);
		return 0;
	}
	fprintf(stderr, "allocprof: unknown command '%s'\n", cmd);
	return usage(NULL), 2;
}
