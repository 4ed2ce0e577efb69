/* Layouts shared by every BPF program and the Swift side (imported through CTracerABI).
 * Fixed-width types only, explicit padding, sizes asserted: one definition, no drift. */
#ifndef TRACER_COMMON_H
#define TRACER_COMMON_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Value of the shared PID filter map (`tracer_pids`), keyed by host TGID: a bit mask of the tracers that
 * may emit for the process (each loaded object's `tracer_pid_mask` holds its own bit). */
#define TRACER_PID_BLOCKED 0u
#define TRACER_PID_ALL_TRACERS 0xffffffffu

/* Largest event a program may emit; also the size of the per-CPU scratch buffer
 * used when events go through the perf-buffer fallback. */
#define TRACER_MAX_EVENT_SIZE 4096

/* Every event starts with this header, so the reader can dispatch on `type`. */
struct tracer_event_header {
	__u32 type;      /* one of the TRACER_EVENT_* numbers of the tracer that emitted it */
	__u32 pid;       /* host TGID of the process */
	__u32 tid;       /* host thread id */
	__u32 reserved;  /* explicit padding: zero */
	__u64 timestamp_ns; /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
};
_Static_assert(sizeof(struct tracer_event_header) == 24, "tracer_event_header layout");

#endif
