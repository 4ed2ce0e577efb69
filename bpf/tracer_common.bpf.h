/* BPF-side pieces every program shares: the events ring buffer with its submit policy,
 * the kernel-side drop counter, the perf-buffer fallback and the PID filter. */
#ifndef TRACER_COMMON_BPF_H
#define TRACER_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "tracer_common.h"

/* Settings written by BPFRuntime before load (`const volatile`: the verifier sees them as constants
 * and prunes the branches they disable). */
const volatile __u64 tracer_wakeup_bytes = 64 * 1024; /* wake the reader once this much data is pending */
const volatile __u8 tracer_use_perf_buffer = 0;       /* kernels before 5.8 have no ring buffer */
const volatile __u8 tracer_filter_pids = 0;           /* emit only for PIDs allowed in tracer_pids */
const volatile __u32 tracer_pid_mask = TRACER_PID_ALL_TRACERS; /* this object's bit in tracer_pids values */

/* The events channel: a ring buffer (BPF_MAP_TYPE_RINGBUF, Linux 5.8), shared by every object of the
 * agent; BPFRuntime sets its size before load. On older kernels BPFRuntime turns it into a
 * BPF_MAP_TYPE_PERF_EVENT_ARRAY and sets tracer_use_perf_buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} tracer_events SEC(".maps");

/* Events the kernel side could not hand over (ring full, perf output failed), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tracer_drops SEC(".maps");

/* Events submitted on each CPU, so the pending-data check runs on every TRACER_WAKEUP_CHECK_EVERY-th
 * event only: bpf_ringbuf_query() reads the consumer position, a cache line the reader's CPU writes, and
 * that miss cost more than the rest of the submit. */
#define TRACER_WAKEUP_CHECK_EVERY 16
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tracer_submit_count SEC(".maps");

/* Where an event is built when it goes through the perf buffer (not created with a ring buffer). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__uint(value_size, TRACER_MAX_EVENT_SIZE);
} tracer_scratch SEC(".maps");

/* Host TGID -> mask of the tracers allowed for it (TRACER_PID_BLOCKED: none); absent means not selected. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} tracer_pids SEC(".maps");

/* Adds one to slot `slot` of `counts`, a per-CPU array of __u64 counters (summed over CPUs by user space). */
static __always_inline void tracer_count(void *counts, __u32 slot)
{
	__u64 *count = bpf_map_lookup_elem(counts, &slot);
	if (count)
		*count += 1;
}

static __always_inline void tracer_count_drop(void)
{
	tracer_count(&tracer_drops, 0);
}

/* Whether this object may emit events for the process: user space allows each selected process only
 * for the tracers that apply to it (e.g. not the generic HTTP tracer for a Go process the Go tracer
 * handles). */
static __always_inline int tracer_pid_allowed(__u32 tgid)
{
	if (!tracer_filter_pids)
		return 1;
	__u32 *state = bpf_map_lookup_elem(&tracer_pids, &tgid);
	return state && (*state & tracer_pid_mask);
}

/* Space for an event of `size` bytes (a compile-time constant), or NULL after counting a drop. */
static __always_inline void *tracer_reserve(__u64 size)
{
	if (tracer_use_perf_buffer) {
		__u32 zero = 0;
		return bpf_map_lookup_elem(&tracer_scratch, &zero);
	}
	void *event = bpf_ringbuf_reserve(&tracer_events, size, 0);
	if (!event)
		tracer_count_drop();
	return event;
}

/* Hands an event from tracer_reserve() to user space. The consumer is not woken per event
 * (a wakeup costs the traced thread ~4 µs): only once tracer_wakeup_bytes are pending, checked every
 * TRACER_WAKEUP_CHECK_EVERY events per CPU; the reader drains the rest on its timer. */
static __always_inline void tracer_submit(void *ctx, void *event, __u64 size)
{
	if (tracer_use_perf_buffer) {
		if (bpf_perf_event_output(ctx, &tracer_events, BPF_F_CURRENT_CPU, event, size) < 0)
			tracer_count_drop();
		return;
	}
	__u64 flags = BPF_RB_NO_WAKEUP;
	__u32 zero = 0;
	__u32 *submitted = bpf_map_lookup_elem(&tracer_submit_count, &zero);
	if (submitted && (++*submitted % TRACER_WAKEUP_CHECK_EVERY) == 0 &&
	    bpf_ringbuf_query(&tracer_events, BPF_RB_AVAIL_DATA) >= tracer_wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(event, flags);
}

/* Fills the common header of an event: three helper calls, the least that identifies and times it
 * (each helper call costs the traced thread ~10-20 ns). */
static __always_inline void tracer_fill_header(struct tracer_event_header *header, __u32 type)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	header->type = type;
	header->pid = pid_tgid >> 32;
	header->tid = (__u32)pid_tgid;
	header->reserved = 0;
	header->timestamp_ns = bpf_ktime_get_ns();
}

#endif
