/*
 * cli: the `allocprof` command line: subcommands, their options, exit statuses.
 * Exit status: 0 success, 1 a check failed (e.g. --fail-on-leaks), 2 bad usage or bad input;
 * `record` exits with the traced program's status.
 */
#ifndef AP_CLI_H
#define AP_CLI_H

int ap_cli_main(int argc, char **argv);

/* record.c: `allocprof record [options] -- CMD [ARGS...]`; argv starts after "record". */
int ap_record_main(int argc, char **argv);

#endif
