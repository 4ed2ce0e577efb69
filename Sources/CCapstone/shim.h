#ifndef TRACER_CCAPSTONE_SHIM_H
#define TRACER_CCAPSTONE_SHIM_H
#include <capstone/capstone.h>

/// The library the functions of these headers are loaded from (dlopen): the soname of the major version
/// whose structures (`cs_insn`) the headers describe.
#define TRACER_CAPSTONE_SONAME "libcapstone.so.4"
_Static_assert(CS_API_MAJOR == 4, "TRACER_CAPSTONE_SONAME names capstone 4: update it with the headers");
#endif
