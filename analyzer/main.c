/* allocprof: the command. Everything lives in the analyzer library (cli.c dispatches). */
#include "cli.h"

int main(int argc, char **argv)
{
	return ap_cli_main(argc, argv);
}
