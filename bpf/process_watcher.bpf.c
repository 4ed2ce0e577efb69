// SPDX-License-Identifier: GPL-2.0
/* Live process discovery: every exec on the machine (user space decides who is selected), and forks and
 * exits of the processes the agent already tracks (those in tracer_pids). Three cheap tracepoints
 * instead of polling /proc. The agent gives this object an events channel of its own (a ring buffer, or
 * perf buffers where the kernel has none), so a flood of tracer events can never drop an exec. */
#include "tracer_common.bpf.h"
#include <bpf/bpf_core_read.h>
#include "process_watcher.h"

char LICENSE[] SEC("license") = "GPL";

const struct process_event *process_event_anchor __attribute__((unused));

static __always_inline int is_tracked(__u32 tgid)
{
	return bpf_map_lookup_elem(&tracer_pids, &tgid) != NULL;
}

static __always_inline void emit(void *ctx, __u32 type, __u32 child_pid, __u32 parent_pid)
{
	struct process_event *event = tracer_reserve(sizeof(*event));
	if (!event)
		return;
	tracer_fill_header(&event->header, type);
	event->child_pid = child_pid;
	event->parent_pid = parent_pid;
	tracer_submit(ctx, event, sizeof(*event));
}

SEC("tracepoint/sched/sched_process_exec")
int process_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 parent = BPF_CORE_READ(task, real_parent, tgid);
	emit(ctx, PROCESS_EVENT_EXEC, 0, parent);
	return 0;
}

SEC("tracepoint/sched/sched_process_fork")
int process_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!is_tracked(tgid))
		return 0;
	emit(ctx, PROCESS_EVENT_FORK, BPF_CORE_READ(ctx, child_pid), tgid);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int process_exit(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if ((__u32)pid_tgid != tgid || !is_tracked(tgid)) /* only the thread-group leader, only tracked */
		return 0;
	emit(ctx, PROCESS_EVENT_EXIT, 0, 0);
	return 0;
}
