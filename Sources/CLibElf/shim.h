#ifndef TRACER_CLIBELF_SHIM_H
#define TRACER_CLIBELF_SHIM_H
#include <libelf.h>
#include <gelf.h>
#include <elfutils/libdw.h>
#include <dwarf.h>
#endif
