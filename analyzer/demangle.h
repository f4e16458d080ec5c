/*
 * demangle: turns C++ and Rust (legacy and v0) symbol names into source-level names for the
 * symbolizer.
 */
#ifndef AP_DEMANGLE_H
#define AP_DEMANGLE_H

/* Returns the demangled form of name in a malloc'd string the caller frees, or NULL when name is
 * not a mangled C++ or Rust name (plain C names come back NULL: use them as they are). */
char *ap_demangle(const char *name);

#endif
