#ifndef TRACER_CCAPSTONE_SHIM_H
#define TRACER_CCAPSTONE_SHIM_H
#include <capstone/capstone.h>
#endif
