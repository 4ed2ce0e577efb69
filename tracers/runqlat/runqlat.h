/* Layouts shared by the run-queue-delay tracer (runqlat.bpf.c) and Swift (tracers/runqlat). */
#ifndef TRACER_RUNQLAT_H
#define TRACER_RUNQLAT_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* What a histogram of runqlat_hists is per (const volatile runqlat_group_by). */
#define RUNQLAT_GROUP_MACHINE 0 /* one histogram: the key is all zeros */
#define RUNQLAT_GROUP_PROCESS 1 /* one per process: tgid and the comm of the thread switched in */
#define RUNQLAT_GROUP_CGROUP 2  /* one per cgroup (v2 hierarchy) of the thread switched in */

/* Key of a run-queue delay histogram (values: struct kernel_hist of microseconds). */
struct runqlat_key {
	__u64 cgroup; /* RUNQLAT_GROUP_CGROUP: the cgroup's id (its kernfs node id, the inode of its directory) */
	__u32 tgid;
	__u8 comm[16];
	__u32 reserved;
};
_Static_assert(sizeof(struct runqlat_key) == 32, "runqlat_key layout");

#endif
