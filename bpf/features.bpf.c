// SPDX-License-Identifier: GPL-2.0
/* Minimal programs the kernel feature probe loads (and attaches) one at a time. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("kprobe/do_nanosleep")
int probe_kprobe(void *ctx) { return 0; }

SEC("fentry/do_nanosleep")
int probe_fentry(void *ctx) { return 0; }

SEC("tp_btf/sched_process_exec")
int probe_tp_btf(void *ctx) { return 0; }

SEC("raw_tp/sched_process_exec")
int probe_raw_tp(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_tracepoint(void *ctx) { return 0; }

/* Loaded with expected attach type BPF_TRACE_UPROBE_MULTI (Linux 6.6). */
SEC("uprobe")
int probe_uprobe_multi(void *ctx) { return 0; }

SEC("uprobe")
int probe_uprobe(void *ctx) { return 0; }

/* Loads only where the kernel lets BPF write user memory (not under lockdown). The size must not be 0:
 * the verifier rejects a zero size (EACCES), which made this probe fail on every kernel. */
SEC("uprobe")
int probe_write_user(struct pt_regs *ctx)
{
	__u64 value = 0;
	bpf_probe_write_user((void *)PT_REGS_SP(ctx), &value, sizeof(value));
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_ringbuf SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_ring_buffer(void *ctx)
{
	bpf_ringbuf_output(&probe_ringbuf, &ctx, sizeof(ctx), 0);
	return 0;
}
