// SPDX-License-Identifier: GPL-2.0
/* Per-syscall latency of selected processes (libbpf-tools' syscount -L, as histograms): at sys_enter the
 * time and syscall number are kept per thread, at sys_exit the time taken in nanoseconds goes into a log2
 * histogram per syscall (and process, with per-process keys), and a failed call (-4095 <= ret < 0) also
 * into a histogram per syscall and errno. sys_enter/sys_exit run on every syscall of every process: the
 * process filter (--pid, or the agent's selection) is the first check, so others leave at once. Two hook
 * sets with the same code: tp_btf (Linux 5.5) and raw_tp (Linux 4.17). */
#include "kernel_tracer_selection.bpf.h"
#include <bpf/bpf_tracing.h>
#include "syscalls.h"

char LICENSE[] SEC("license") = "GPL";

#define MAX_ERRNO 4095

/* Non-zero: one histogram per process and syscall. */
const volatile __u32 syscalls_per_process = 0;

struct syscalls_start {
	__u64 time;
	__u32 number;
	__u32 reserved;
};

/* The syscall each thread is in (time 0: none). LRU: the slot of a thread that is gone is evicted, not leaked. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct syscalls_start);
} syscalls_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct syscalls_key);
	__type(value, struct kernel_hist);
} syscalls_hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct syscalls_key);
	__type(value, struct kernel_hist);
} syscalls_error_hists SEC(".maps");

const struct syscalls_key *syscalls_key_anchor;
const struct kernel_hist *syscalls_hist_anchor;
const struct kernel_event_header *syscalls_header_anchor;

/* The thread's slot is written in place once it exists (no map update per syscall), and marked free at
 * exit by a zero time (no delete per syscall). */
static __always_inline void entered(long number)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!kernel_process_selected(id >> 32))
		return;
	if (number < 0)
		return;
	__u32 tid = (__u32)id;
	__u64 now = bpf_ktime_get_ns();
	struct syscalls_start *slot = bpf_map_lookup_elem(&syscalls_start, &tid);
	if (slot) {
		slot->time = now;
		slot->number = number;
		return;
	}
	struct syscalls_start start = { .time = now, .number = number };
	if (bpf_map_update_elem(&syscalls_start, &tid, &start, BPF_ANY))
		kernel_count(KERNEL_STAT_STATE_OVERFLOW);
}

static __always_inline void exited(long result)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!kernel_process_selected(id >> 32))
		return;
	__u32 tid = (__u32)id;
	struct syscalls_start *slot = bpf_map_lookup_elem(&syscalls_start, &tid);
	if (!slot || !slot->time)
		return;
	__u64 now = bpf_ktime_get_ns();
	__u64 took = now > slot->time ? now - slot->time : 0;
	struct syscalls_key key = { .number = slot->number };
	slot->time = 0;
	if (syscalls_per_process)
		key.tgid = id >> 32;
	kernel_hist_add(&syscalls_hists, &key, took);
	if (result < 0 && result >= -MAX_ERRNO) {
		key.error = -result;
		kernel_hist_add(&syscalls_error_hists, &key, took);
	}
}

SEC("tp_btf/sys_enter")
int BPF_PROG(syscalls_enter_btf, struct pt_regs *regs, long number)
{
	entered(number);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(syscalls_exit_btf, struct pt_regs *regs, long result)
{
	exited(result);
	return 0;
}

SEC("raw_tp/sys_enter")
int BPF_PROG(syscalls_enter_raw, struct pt_regs *regs, long number)
{
	entered(number);
	return 0;
}

SEC("raw_tp/sys_exit")
int BPF_PROG(syscalls_exit_raw, struct pt_regs *regs, long result)
{
	exited(result);
	return 0;
}
