// SPDX-License-Identifier: GPL-2.0
/* File descriptors opened and closed per process: the sys_exit tracepoints of open, openat, openat2, creat
 * and close only (not raw_syscalls), counted per TGID in fds_counts (atomically: threads of one process run
 * on several CPUs). User space reads the counts on an interval, with each process's open-FD count from
 * /proc. The process filter (--pid, or the agent's selection) is each program's first check. */
#include "kernel_tracer_selection.bpf.h"
#include "fds.h"

char LICENSE[] SEC("license") = "GPL";

/* max_entries: the processes counted at once (--max-keys, set before load). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct fds_counts);
} fds_counts SEC(".maps");

const struct fds_counts *fds_counts_anchor;
const struct kernel_event_header *fds_header_anchor;

static struct fds_counts fds_zero;

/* The counts of the current process, created on first use; NULL (counted) when the map is full. */
static __always_inline struct fds_counts *counts_of(__u32 tgid)
{
	struct fds_counts *counts = bpf_map_lookup_elem(&fds_counts, &tgid);
	if (counts)
		return counts;
	bpf_map_update_elem(&fds_counts, &tgid, &fds_zero, BPF_NOEXIST);
	counts = bpf_map_lookup_elem(&fds_counts, &tgid);
	if (!counts)
		kernel_count(KERNEL_STAT_STATE_OVERFLOW);
	return counts;
}

/* One exit program for the open family (attached to sys_exit_open, openat, openat2, creat). */
SEC("tracepoint/syscalls/sys_exit_openat")
int fds_opened(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!kernel_process_selected(tgid))
		return 0;
	struct fds_counts *counts = counts_of(tgid);
	if (!counts)
		return 0;
	if (ctx->ret >= 0)
		__sync_fetch_and_add(&counts->opens, 1);
	else
		__sync_fetch_and_add(&counts->open_errors, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_close")
int fds_closed(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!kernel_process_selected(tgid))
		return 0;
	struct fds_counts *counts = counts_of(tgid);
	if (!counts)
		return 0;
	if (ctx->ret == 0)
		__sync_fetch_and_add(&counts->closes, 1);
	else
		__sync_fetch_and_add(&counts->close_errors, 1);
	return 0;
}
