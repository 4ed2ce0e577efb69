/* Layouts shared by the OOM-kill tracer (oomkill.bpf.c) and Swift (tracers/oomkill). */
#ifndef TRACER_OOMKILL_H
#define TRACER_OOMKILL_H

#include "../../bpf/kernel_tracer.h"

#define OOMKILL_EVENT_VICTIM 1

/* One OOM kill (tracepoint oom:mark_victim). The header names the triggering task: the tracepoint runs
 * in the context of the task whose allocation found no memory and chose the victim. Memory figures are
 * the victim's, in KiB, as the tracepoint reports them (Linux 6.8+; 0 on older kernels, whose
 * mark_victim carries only the pid). */
struct oomkill_event {
	struct kernel_event_header header;
	__u32 victim_pid;
	__u32 victim_uid;
	__u8 victim_comm[16];
	__u64 total_vm_kib;
	__u64 anon_rss_kib;
	__u64 file_rss_kib;
	__u64 shmem_rss_kib;
	__u64 pgtables_kib;
	__s16 oom_score_adj;
	__u8 padding[6];
	__u8 memory_cgroup[64]; /* leaf name of the triggering task's memory cgroup ("" at the root) */
};
_Static_assert(sizeof(struct oomkill_event) == 176, "oomkill_event layout");

#endif
