// SPDX-License-Identifier: GPL-2.0
/* OOM kills from the oom:mark_victim tracepoint (Linux 4.9; memory figures, uid and comm since 6.8,
 * read only where the running kernel's trace record has them: bpf_core_field_exists). libbpf-tools'
 * oomkill uses a kprobe on oom_kill_process instead, which kernels without kprobes cannot attach.
 * With a PID filter, a kill is kept when that process is the victim or the task that triggered it. */
#define KERNEL_TRACER_EVENTS
#include "kernel_tracer.bpf.h"
#include "oomkill.h"

char LICENSE[] SEC("license") = "GPL";

const struct oomkill_event *oomkill_event_anchor;
const struct kernel_event_header *oomkill_header_anchor;

SEC("tracepoint/oom/mark_victim")
int oomkill_mark_victim(struct trace_event_raw_mark_victim *ctx)
{
	__u32 victim = BPF_CORE_READ(ctx, pid);
	if (!kernel_tgid_selected(victim) && !kernel_tgid_selected(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct oomkill_event *event = kernel_event_reserve(sizeof(*event), OOMKILL_EVENT_VICTIM);
	if (!event)
		return 0;
	event->victim_pid = victim;
	event->victim_uid = 0;
	__builtin_memset(event->victim_comm, 0, sizeof(event->victim_comm));
	event->total_vm_kib = event->anon_rss_kib = event->file_rss_kib = event->shmem_rss_kib = event->pgtables_kib = 0;
	event->oom_score_adj = 0;
	__builtin_memset(event->padding, 0, sizeof(event->padding));
	if (bpf_core_field_exists(ctx->total_vm)) {
		event->total_vm_kib = BPF_CORE_READ(ctx, total_vm);
		event->anon_rss_kib = BPF_CORE_READ(ctx, anon_rss);
		event->file_rss_kib = BPF_CORE_READ(ctx, file_rss);
		event->shmem_rss_kib = BPF_CORE_READ(ctx, shmem_rss);
		event->pgtables_kib = BPF_CORE_READ(ctx, pgtables);
		event->victim_uid = BPF_CORE_READ(ctx, uid);
		event->oom_score_adj = BPF_CORE_READ(ctx, oom_score_adj);
	}
	if (bpf_core_field_exists(ctx->__data_loc_comm)) {
		__u32 location = BPF_CORE_READ(ctx, __data_loc_comm);
		bpf_probe_read_kernel_str(event->victim_comm, sizeof(event->victim_comm), (void *)ctx + (location & 0xffff));
	}
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	int memory = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	const char *name = BPF_CORE_READ(task, cgroups, subsys[memory], cgroup, kn, name);
	__builtin_memset(event->memory_cgroup, 0, sizeof(event->memory_cgroup));
	if (name)
		bpf_probe_read_kernel_str(event->memory_cgroup, sizeof(event->memory_cgroup), name);
	kernel_event_submit(event);
	return 0;
}
