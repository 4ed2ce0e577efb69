/* Layouts shared by the kernel utility tracers (tracers/runqlat, tracers/oomkill, ...) and Swift
 * (TracerFramework's KernelTracerSession), imported through CTracerABI. */
#ifndef TRACER_KERNEL_TRACER_H
#define TRACER_KERNEL_TRACER_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Log2 buckets of a histogram: slot 0 holds 0 and 1, slot i (i > 0) holds [2^i, 2^(i+1) - 1], as
 * libbpf-tools' log2l(); the last slot also holds everything larger. */
#define KERNEL_HIST_SLOTS 32

/* One histogram, aggregated in a BPF hash map per key (the key struct is the tracer's own). */
struct kernel_hist {
	__u64 slots[KERNEL_HIST_SLOTS];
	__u64 count; /* samples added */
	__u64 sum;   /* sum of the samples, in the histogram's unit */
};
_Static_assert(sizeof(struct kernel_hist) == 272, "kernel_hist layout");

/* Indexes of the per-CPU counters every kernel tracer keeps (map kernel_stats). */
#define KERNEL_STAT_HIST_OVERFLOW 0  /* samples added to kernel_hist_overflow: the per-key map was full */
#define KERNEL_STAT_EVENTS_DROPPED 1 /* events the ring buffer had no room for */
#define KERNEL_STAT_STATE_OVERFLOW 2 /* in-flight starts (timestamps) not stored: their table was full */
#define KERNEL_STAT_EVENTS 3         /* events submitted */
#define KERNEL_STAT_COUNT 4

/* Every event of a kernel tracer starts with this header; the tracer's fields follow. */
struct kernel_event_header {
	__u64 timestamp_ns; /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
	__u32 pid;          /* host TGID of the process the event is about */
	__u32 tid;          /* its thread */
	__u8 comm[16];      /* its thread's comm */
	__u32 type;         /* the tracer's own event type number */
	__u32 size;         /* bytes of the whole event, header included */
};
_Static_assert(sizeof(struct kernel_event_header) == 40, "kernel_event_header layout");

#endif
