#ifndef TRACER_CLIBBPF_SHIM_H
#define TRACER_CLIBBPF_SHIM_H
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#endif
