// SPDX-License-Identifier: GPL-2.0
/* Run-queue delay (libbpf-tools' runqlat): a thread is stamped when it becomes runnable (sched_wakeup,
 * sched_wakeup_new, or preempted while still TASK_RUNNING at sched_switch) and, when sched_switch
 * switches it in, the wait in microseconds goes into a log2 histogram per key (machine or process).
 * Two hook sets with the same code: tp_btf (Linux 5.5, BTF-typed, no trace record built per hit) and
 * raw_tp (Linux 4.17) where tp_btf cannot attach. */
#include "kernel_tracer.bpf.h"
#include <bpf/bpf_tracing.h>
#include "runqlat.h"

char LICENSE[] SEC("license") = "GPL";

#define TASK_RUNNING 0

/* RUNQLAT_GROUP_MACHINE or RUNQLAT_GROUP_PROCESS. */
const volatile __u32 runqlat_group_by = RUNQLAT_GROUP_MACHINE;

/* When each runnable thread (by tid) started waiting; sized by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, __u64);
} runqlat_start SEC(".maps");

/* Histograms of run-queue delay in microseconds; max_entries is the cardinality limit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct runqlat_key);
	__type(value, struct kernel_hist);
} runqlat_hists SEC(".maps");

const struct runqlat_key *runqlat_key_anchor;
const struct kernel_hist *runqlat_hist_anchor;
const struct kernel_event_header *runqlat_header_anchor;

/* Linux 5.14 renamed task_struct.state to __state. */
struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline long task_state(struct task_struct *task)
{
	if (bpf_core_field_exists(task->__state))
		return BPF_CORE_READ(task, __state);
	return BPF_CORE_READ((struct task_struct___pre514 *)task, state);
}

static __always_inline void enqueue(struct task_struct *task)
{
	__u32 tid = BPF_CORE_READ(task, pid);
	if (!tid || !kernel_tgid_selected(BPF_CORE_READ(task, tgid)))
		return;
	__u64 now = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&runqlat_start, &tid, &now, BPF_ANY))
		kernel_count(KERNEL_STAT_STATE_OVERFLOW);
}

static __always_inline void switched(struct task_struct *prev, struct task_struct *next)
{
	if (task_state(prev) == TASK_RUNNING)
		enqueue(prev);
	__u32 tid = BPF_CORE_READ(next, pid);
	__u64 *since = bpf_map_lookup_elem(&runqlat_start, &tid);
	if (!since)
		return;
	__u64 now = bpf_ktime_get_ns();
	__u64 delay = now > *since ? (now - *since) / 1000 : 0;
	bpf_map_delete_elem(&runqlat_start, &tid);
	struct runqlat_key key = {};
	if (runqlat_group_by == RUNQLAT_GROUP_PROCESS) {
		key.tgid = BPF_CORE_READ(next, tgid);
		bpf_probe_read_kernel_str(key.comm, sizeof(key.comm), next->comm);
	} else if (runqlat_group_by == RUNQLAT_GROUP_CGROUP) {
		key.cgroup = BPF_CORE_READ(next, cgroups, dfl_cgrp, kn, id);
	}
	kernel_hist_add(&runqlat_hists, &key, delay);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(runqlat_wakeup_btf, struct task_struct *task)
{
	enqueue(task);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(runqlat_wakeup_new_btf, struct task_struct *task)
{
	enqueue(task);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(runqlat_switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	switched(prev, next);
	return 0;
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(runqlat_wakeup_raw, struct task_struct *task)
{
	enqueue(task);
	return 0;
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(runqlat_wakeup_new_raw, struct task_struct *task)
{
	enqueue(task);
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(runqlat_switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	switched(prev, next);
	return 0;
}
