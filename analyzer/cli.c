/*
 * cli.c: `allocprof SUBCOMMAND ...`: parses options and dispatches to the views.
 */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocprof/trace.h"
#include "profile.h"
#include "report.h"

static const char usage_text[] =
	"usage: allocprof COMMAND [OPTIONS]\n"
	"\n"
	"Record:\n"
	"  allocprof record [-o PATH] [--depth N] -- CMD [ARGS...]\n"
	"      run CMD with the shim preloaded; the trace goes to PATH (%p = pid, %e = program name;\n"
	"      default allocprof.%e.%p.trace)\n"
	"\n"
	"Report (TRACE is a file written by record):\n"
	"  allocprof top [-n N] [--sample-index=INDEX] [--cum] [--json] TRACE\n"
	"      functions by flat (or cum) figure, like pprof's top\n"
	"\n"
	"INDEX is alloc_objects, alloc_space, inuse_objects or inuse_space (default inuse_space, as\n"
	"pprof's for heap profiles). View options: --show-allocator-frames, --hide REGEX.\n"
	"Exit status: 0 ok, 2 bad usage or an unreadable trace; record exits as CMD did.\n";

static int usage(const char *msg)
{
	if (msg)
		fprintf(stderr, "allocprof: %s\n", msg);
	fputs(usage_text, msg ? stderr : stdout);
	return msg ? 2 : 0;
}

enum { OPT_SAMPLE_INDEX = 256, OPT_CUM, OPT_JSON, OPT_SHOW_ALLOC, OPT_HIDE };

static const struct option view_options[] = {
	{"sample-index", required_argument, NULL, OPT_SAMPLE_INDEX},
	{"sample_index", required_argument, NULL, OPT_SAMPLE_INDEX},
	{"cum", no_argument, NULL, OPT_CUM},
	{"json", no_argument, NULL, OPT_JSON},
	{"show-allocator-frames", no_argument, NULL, OPT_SHOW_ALLOC},
	{"hide", required_argument, NULL, OPT_HIDE},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static int parse_view(int argc, char **argv, ap_view_opts *o, const char **trace)
{
	memset(o, 0, sizeof(*o));
	o->sample_index = AP_M_INUSE_SPACE;
	o->nrows = -1;
	optind = 1;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":n:h", view_options, NULL)) != -1) {
		switch (c) {
		case 'n': {
			char *end;
			long v = strtol(optarg, &end, 10);
			if (*end || v < 0) {
				fprintf(stderr, "allocprof: -n takes a number of rows, not '%s'\n", optarg);
				return 2;
			}
			o->nrows = v;
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
			o->cum_sort = true;
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_SHOW_ALLOC:
			o->show_allocator = true;
			break;
		case OPT_HIDE:
			ap_profile_hide_add(optarg);
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
	if (optind != argc - 1)
		return usage(optind >= argc ? "which trace? (give one TRACE file)" : "give exactly one TRACE file");
	*trace = argv[optind];
	return 0;
}

static int cmd_top(int argc, char **argv)
{
	ap_view_opts o;
	const char *trace = NULL;
	int err = parse_view(argc, argv, &o, &trace);
	if (err)
		return err < 0 ? 0 : err;
	ap_profile p;
	if (ap_profile_load(&p, trace)) {
		ap_profile_free(&p);
		return 2;
	}
	ap_report_top(&p, &o, stdout);
	ap_profile_free(&p);
	return 0;
}

int ap_cli_main(int argc, char **argv)
{
	if (argc < 2)
		return usage("no command given");
	const char *cmd = argv[1];
	if (!strcmp(cmd, "record"))
		return ap_record_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "top"))
		return cmd_top(argc - 1, argv + 1);
	if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h"))
		return usage(NULL);
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("allocprof %s (trace format %d)\n", AP_VERSION, AP_FORMAT_VERSION);
		return 0;
	}
	fprintf(stderr, "allocprof: unknown command '%s'\n", cmd);
	return usage(NULL), 2;
}
