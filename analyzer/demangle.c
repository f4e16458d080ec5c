/*
 * demangle: C++ names through libstdc++'s __cxa_demangle, Rust names (legacy "_ZN...17h<hash>E"
 * and v0 "_R...") through libiberty's rust_demangle.
 */
#include "demangle.h"

#include <stdlib.h>
#include <string.h>

#include <libiberty/demangle.h>

/* libstdc++'s ABI demangler; declared here because <cxxabi.h> is C++ only. */
extern char *__cxa_demangle(const char *mangled, char *buf, size_t *len, int *status);

char *ap_demangle(const char *name)
{
	if (name == NULL || name[0] != '_')
		return NULL;
	/* Rust first: a legacy Rust name is also a valid C++ name, which __cxa_demangle would render
	 * with the "::h0123456789abcdef" hash and the $LT$-style escapes left in. rust_demangle
	 * checks the hash, so C++ names fall through; without DMGL_VERBOSE it drops the hash and
	 * the v0 crate disambiguators, which carry no meaning for a reader. */
	if (name[1] == 'R' || strncmp(name, "_ZN", 3) == 0) {
		char *r = rust_demangle(name, DMGL_PARAMS | DMGL_ANSI);
		if (r != NULL)
			return r;
	}
	if (name[1] == 'Z') {
		int status = 0;
		char *r = __cxa_demangle(name, NULL, NULL, &status);
		if (status == 0 && r != NULL)
			return r;
		free(r);
	}
	return NULL;
}
