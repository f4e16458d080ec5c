/* info: `allocprof info [--json] TRACE`, a trace's metadata, exact totals and how it ended. */
#ifndef AP_INFO_H
#define AP_INFO_H

/* argv[0] is "info". Returns the exit status. */
int ap_info_main(int argc, char **argv);

#endif
