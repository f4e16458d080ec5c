/*
 * cli.c: `allocprof SUBCOMMAND ...`: parses options and dispatches to record and the views.
 */
#include "cli.h"

#include <getopt.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocprof/trace.h"
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
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

/* What a view accepts beyond the common options, and what it takes before TRACE. */
typedef struct view_desc {
	const char *name;
	bool nrows, cum, json, regex; /* regex: a REGEX argument before TRACE */
	bool source;                  /* reads source files (--source-path) */
	int default_index;
} view_desc;

static const view_desc views[] = {
	{"top", true, true, true, false, false, AP_M_INUSE_SPACE},
	{"list", false, false, false, true, true, AP_M_INUSE_SPACE},
	{"peek", true, true, false, true, false, AP_M_INUSE_SPACE},
	{"traces", true, false, true, false, false, AP_M_INUSE_SPACE},
	{"folded", false, false, false, false, false, AP_M_ALLOC_SPACE},
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
	o->nrows = -1;
	optind = 1;
	opterr = 0;
	int c, err;
	while ((c = getopt_long(argc, argv, ":n:h", view_options, NULL)) != -1) {
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
			o->sample_index = ap_metric_parse(optarg);
			if (o->sample_index < 0) {
				fprintf(stderr, "allocprof: unknown sample index '%s' (alloc_objects, alloc_space, "
				                "inuse_objects, inuse_space)\n", optarg);
				return 2;
			}
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
	int want = v->regex ? 2 : 1;
	if (argc - optind != want) {
		char msg[128];
		snprintf(msg, sizeof(msg), "%s takes %s", v->name,
		         v->regex ? "a REGEX and one TRACE file" : "exactly one TRACE file");
		return usage(msg);
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
	ap_profile p;
	if (ap_profile_load(&p, trace) == 0) {
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
		return ap_pprof_main(argc - 1, argv + 1);
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
