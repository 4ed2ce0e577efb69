/* The layouts are checked by the _Static_asserts of their headers, compiled here for the host too. */
#include "tracer_abi.h"
