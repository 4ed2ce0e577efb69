// SPDX-License-Identifier: GPL-2.0
/* Self-test programs: every attach kind the runtime offers, and a flood source for the
 * ring-buffer tests and benchmarks. */
#include "tracer_common.bpf.h"
#include <bpf/bpf_tracing.h>
#include "selftest.h"

char LICENSE[] SEC("license") = "GPL";

/* How many events one run of selftest_flood emits (at most 1024). */
const volatile __u32 flood_count = 1;

/* Anchors the event struct in the object's BTF, so tests can compare it with Swift's layout. */
const struct selftest_event *selftest_event_anchor __attribute__((unused));

static __always_inline int emit(void *ctx, __u32 type, __u64 value, __u64 sequence)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!tracer_pid_allowed(pid_tgid >> 32))
		return 0;
	struct selftest_event *event = tracer_reserve(sizeof(*event));
	if (!event)
		return 0;
	tracer_fill_header(&event->header, type);
	event->cookie = bpf_get_attach_cookie(ctx);
	event->value = value;
	event->sequence = sequence;
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	tracer_submit(ctx, event, sizeof(*event));
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int selftest_tracepoint(void *ctx)
{
	return emit(ctx, SELFTEST_EVENT_TRACEPOINT, 0, 0);
}

SEC("raw_tp/sys_enter")
int selftest_raw_tracepoint(struct bpf_raw_tracepoint_args *ctx)
{
	/* args[1] is the syscall number; only getppid, so the test sees its own calls. */
	if (ctx->args[1] != 110)
		return 0;
	return emit(ctx, SELFTEST_EVENT_TRACEPOINT, 110, 0);
}

SEC("uprobe")
int BPF_KPROBE(selftest_uprobe, __u64 argument)
{
	return emit(ctx, SELFTEST_EVENT_UPROBE, argument, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(selftest_uretprobe, __u64 result)
{
	return emit(ctx, SELFTEST_EVENT_URETPROBE, result, 0);
}

/* Loaded with expected attach type BPF_TRACE_UPROBE_MULTI by the runtime. */
SEC("uprobe")
int BPF_KPROBE(selftest_uprobe_multi, __u64 argument)
{
	return emit(ctx, SELFTEST_EVENT_UPROBE_MULTI, argument, 0);
}

static long flood_one(__u64 index, void *unused)
{
	struct selftest_event *event = tracer_reserve(sizeof(*event));
	if (!event)
		return 0;
	tracer_fill_header(&event->header, SELFTEST_EVENT_FLOOD);
	event->cookie = 0;
	event->value = flood_count;
	event->sequence = index;
	__builtin_memset(event->comm, 0, sizeof(event->comm));
	tracer_submit(NULL, event, sizeof(*event)); /* ring buffer only: perf output needs a context */
	return 0;
}

/* Emits flood_count events per run (bpf_loop, Linux 5.17); run with BPF_PROG_TEST_RUN. */
SEC("syscall")
int selftest_flood(void *ctx)
{
	bpf_loop(flood_count, flood_one, NULL, 0);
	return 0;
}

/* Benchmark baseline: a uprobe that does nothing. */
SEC("uprobe")
int selftest_empty_uprobe(void *ctx)
{
	return 0;
}

/* A 64-byte benchmark event: the header and a payload, no extra helper calls. */
static __always_inline struct selftest_event *bench_event(void)
{
	struct selftest_event *event = tracer_reserve(sizeof(*event));
	if (!event)
		return NULL;
	tracer_fill_header(&event->header, SELFTEST_EVENT_UPROBE);
	event->cookie = 0;
	event->value = 0;
	event->sequence = 0;
	__builtin_memset(event->comm, 0, sizeof(event->comm));
	return event;
}

/* Benchmark: the event submitted with the project's policy (tracer_submit: no wakeup per event). */
SEC("uprobe")
int selftest_uprobe_policy(void *ctx)
{
	struct selftest_event *event = bench_event();
	if (event)
		tracer_submit(ctx, event, sizeof(*event));
	return 0;
}

/* Benchmark: the same event never waking the reader (no threshold check), to isolate the policy's share. */
SEC("uprobe")
int selftest_uprobe_never_wake(void *ctx)
{
	struct selftest_event *event = bench_event();
	if (event)
		bpf_ringbuf_submit(event, BPF_RB_NO_WAKEUP);
	return 0;
}

/* Benchmark: the same event with a wakeup per event, the policy tracer_submit avoids. */
SEC("uprobe")
int selftest_uprobe_wakeup_each(void *ctx)
{
	struct selftest_event *event = bench_event();
	if (event)
		bpf_ringbuf_submit(event, 0);
	return 0;
}

/* Rejected by the verifier (reads a hash map value without a NULL check): proves that a
 * failed load names the program, carries the verifier log and leaves nothing behind.
 * Never loaded unless a test asks for it. */
SEC("tracepoint/syscalls/sys_enter_getppid")
int selftest_rejected(void *ctx)
{
	__u32 pid = 0;
	__u32 *state = bpf_map_lookup_elem(&tracer_pids, &pid);
	return *state;
}

