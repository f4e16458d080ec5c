/*
 * info.c: `allocprof info [--json] TRACE`: what a trace is (program, times, options) and what it
 * holds (exact call totals, recorded events, how the process ended), without any view.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "info.h"
#include "profile.h"

static const char *clock_name(uint32_t c)
{
	return c == AP_CLOCK_TSC ? "tsc" : c == AP_CLOCK_COUNTER ? "counter" : "unknown";
}

static void how_ended(const ap_profile *p, char *buf, size_t size)
{
	const ap_trace_end *e = &p->rr.end;
	if (e->has_exit && e->exit_how == AP_END_SIGNAL)
		snprintf(buf, size, "killed by signal %u (%s)", e->exit_status, strsignal((int)e->exit_status));
	else if (e->has_exit && e->exit_how == AP_END_EXIT)
		snprintf(buf, size, "exited with status %u", e->exit_status);
	else if (e->has_end && e->end_how == AP_END_SIGNAL)
		snprintf(buf, size, "killed by signal %u (%s)", e->end_status,
		         strsignal((int)e->end_status));
	else if (e->has_end && e->end_how == AP_END_EXIT)
		snprintf(buf, size, "exited with status %u", e->end_status);
	else if (e->has_end)
		snprintf(buf, size, "exited (status not recorded: run under `allocprof record` to have it)");
	else if (p->rr.truncated)
		snprintf(buf, size, "unknown: the trace is cut short (killed, or the file was truncated)");
	else
		snprintf(buf, size, "unknown: no end record (killed, exec'ed, or still running)");
}

static const char *how_name(uint32_t how)
{
	return how == AP_END_SIGNAL ? "signal" : how == AP_END_EXIT ? "exit" : "unknown";
}

static void json_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

int ap_info_main(int argc, char **argv)
{
	static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
	bool json = false;
	optind = 1;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c != 'j') {
			fprintf(stderr, "allocprof: info: unknown option %s\nusage: allocprof info [--json] TRACE\n",
			        argv[optind - 1]);
			return 2;
		}
		json = true;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: allocprof info [--json] TRACE\n");
		return 2;
	}
	const char *path = argv[optind];
	ap_profile p;
	if (ap_profile_load(&p, path)) {
		ap_profile_free(&p);
		return 2;
	}
	struct stat st;
	uint64_t file_bytes = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
	const ap_trace_end *e = &p.rr.end;
	char ended[160];
	how_ended(&p, ended, sizeof(ended));
	double duration = ap_profile_seconds(&p, p.last_stamp);
	/* The waiting parent's word (EXIT, from `allocprof record`) over the shim's own (END). */
	uint32_t how = e->has_exit ? e->exit_how : e->has_end ? e->end_how : AP_END_UNKNOWN;
	uint32_t status = e->has_exit ? e->exit_status : e->end_status;

	if (json) {
		FILE *o = stdout;
		fprintf(o, "{\"file\": ");
		json_str(o, path);
		fprintf(o, ", \"format_version\": %d, \"pid\": %llu, \"exe\": ", AP_FORMAT_VERSION,
		        (unsigned long long)p.pid);
		json_str(o, p.exe);
		fprintf(o, ", \"argv\": [");
		for (size_t i = 0; i < p.argc; i++) {
			fprintf(o, "%s", i ? ", " : "");
			json_str(o, p.argv[i]);
		}
		fprintf(o, "], \"start_time_ns\": %llu, \"duration_s\": %.6f, \"clock\": \"%s\", "
		           "\"sample_bytes\": %llu, \"events\": %llu, \"stacks\": %zu, \"file_bytes\": %llu, "
		           "\"decompressed_bytes\": %llu",
		        (unsigned long long)p.start_realtime_ns, duration, clock_name(p.clock),
		        (unsigned long long)p.sample_bytes, (unsigned long long)p.events,
		        p.sites.n ? p.sites.n - 1 : 0, (unsigned long long)file_bytes,
		        (unsigned long long)p.rr.bytes_out);
		if (e->has_totals)
			fprintf(o, ", \"totals\": {\"alloc_calls\": %llu, \"alloc_bytes\": %llu, \"free_calls\": %llu}",
			        (unsigned long long)e->total_allocs, (unsigned long long)e->total_bytes,
			        (unsigned long long)e->total_frees);
		fprintf(o, ", \"unknown_frees\": %llu, \"lost_allocs\": %llu, \"lost_frees\": %llu, "
		           "\"truncated\": %s, \"complete\": %s, \"end\": {\"how\": \"%s\"",
		        (unsigned long long)p.unknown_frees, (unsigned long long)p.lost_allocs,
		        (unsigned long long)p.lost_frees, p.rr.truncated ? "true" : "false",
		        e->has_end ? "true" : "false", how_name(how));
		if (how != AP_END_UNKNOWN)
			fprintf(o, ", \"status\": %u", status);
		fprintf(o, ", \"text\": ");
		json_str(o, ended);
		fprintf(o, "}}\n");
	} else {
		printf("File:      %s (%llu bytes, %llu decompressed, format %d)\n", path,
		       (unsigned long long)file_bytes, (unsigned long long)p.rr.bytes_out, AP_FORMAT_VERSION);
		printf("Program:   %s (pid %llu)\n", p.exe, (unsigned long long)p.pid);
		printf("Command:  ");
		for (size_t i = 0; i < p.argc; i++)
			printf(" %s", p.argv[i]);
		printf("\n");
		time_t t = (time_t)(p.start_realtime_ns / 1000000000u);
		char when[64];
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", localtime(&t));
		printf("Started:   %s, ran %.3f s\n", when, duration);
		printf("Ended:     %s\n", ended);
		if (p.sample_bytes)
			printf("Recording: sampled, one allocation every %llu bytes on average; figures are estimates\n",
			       (unsigned long long)p.sample_bytes);
		else
			printf("Recording: every allocation (exact)\n");
		if (e->has_totals)
			printf("Calls:     %llu allocations (%llu bytes requested), %llu frees\n",
			       (unsigned long long)e->total_allocs, (unsigned long long)e->total_bytes,
			       (unsigned long long)e->total_frees);
		printf("Recorded:  %llu events, %zu distinct stacks, %.2f bytes per event on disk\n",
		       (unsigned long long)p.events, p.sites.n ? p.sites.n - 1 : 0,
		       p.events ? (double)file_bytes / (double)p.events : 0.0);
		if (p.unknown_frees)
			printf("Unknown:   %llu frees of blocks allocated before tracing started (not counted)\n",
			       (unsigned long long)p.unknown_frees);
		printf("Clock:     %s\n", clock_name(p.clock));
	}
	ap_profile_free(&p);
	return 0;
}
