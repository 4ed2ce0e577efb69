/* Every C layout shared by BPF programs and Swift, imported into Swift from the one header that
 * defines it (bpf/ for the shared ones, tracers/NAME/ for each tracer's events). */
#ifndef TRACER_ABI_H
#define TRACER_ABI_H

#include "../../../bpf/tracer_common.h"
#include "../../../bpf/selftest.h"
#include "../../../bpf/process_watcher.h"
#include "../../../tracers/go-nethttp/go_nethttp.h"
#include "../../../bpf/capture.h"
#include "../../../tracers/flows/flows.h"
#include "../../../bpf/kernel_tracer.h"
#include "../../../tracers/runqlat/runqlat.h"
#include "../../../tracers/oomkill/oomkill.h"
#include "../../../tracers/tcp/tcp.h"
#include "../../../tracers/biolatency/biolatency.h"
#include "../../../tracers/files/files.h"
#include "../../../tracers/fds/fds.h"
#include "../../../tracers/syscalls/syscalls.h"

#endif
