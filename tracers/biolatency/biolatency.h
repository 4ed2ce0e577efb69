/* Layouts shared by the block I/O latency tracer (biolatency.bpf.c) and Swift (tracers/biolatency). */
#ifndef TRACER_BIOLATENCY_H
#define TRACER_BIOLATENCY_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* What a sample of biolatency_hists measures (const volatile biolatency_measure). */
#define BIOLATENCY_DEVICE_TIME 0 /* block_rq_issue -> block_rq_complete (libbpf-tools biolatency) */
#define BIOLATENCY_QUEUED_TIME 1 /* block_rq_insert -> block_rq_complete, OS queue included (biolatency -Q) */

/* Key of a block I/O latency histogram (values: struct kernel_hist of microseconds). */
struct biolatency_key {
	__u32 major; /* the whole disk's dev_t (gendisk major, first_minor); 0:0 unless per disk */
	__u32 minor;
	__u32 op;    /* cmd_flags & REQ_OP_MASK: REQ_OP_READ 0, REQ_OP_WRITE 1, REQ_OP_FLUSH 2, ... */
	__u32 reserved;
};
_Static_assert(sizeof(struct biolatency_key) == 16, "biolatency_key layout");

#endif
