/* BPF side shared by the kernel utility tracers: the PID filter global, the per-CPU counters, per-key
 * log2 histograms with a counted overflow histogram, and (with KERNEL_TRACER_EVENTS defined) the events
 * ring buffer, submitted without a wakeup per event (the reader drains on a timer). */
#ifndef TRACER_KERNEL_TRACER_BPF_H
#define TRACER_KERNEL_TRACER_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "kernel_tracer.h"

/* Host TGID to trace, 0 for every process (set by user space before load, `tracer tool NAME --pid P`). */
const volatile __u32 kernel_target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KERNEL_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} kernel_stats SEC(".maps");

/* Samples whose key found its histogram map full: one histogram, reported with otel.metric.overflow. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kernel_hist);
} kernel_hist_overflow SEC(".maps");

static struct kernel_hist kernel_hist_zero;

static __always_inline void kernel_count(__u32 stat)
{
	__u64 *value = bpf_map_lookup_elem(&kernel_stats, &stat);
	if (value)
		*value += 1;
}

static __always_inline int kernel_tgid_selected(__u32 tgid)
{
	return kernel_target_tgid == 0 || kernel_target_tgid == tgid;
}

/* floor(log2(value)), 0 for 0 (libbpf-tools' log2l). */
static __always_inline __u32 kernel_log2(__u64 value)
{
	__u32 result = 0, shift;
	shift = (value > 0xFFFFFFFFULL) << 5; value >>= shift; result |= shift;
	shift = (value > 0xFFFF) << 4; value >>= shift; result |= shift;
	shift = (value > 0xFF) << 3; value >>= shift; result |= shift;
	shift = (value > 0xF) << 2; value >>= shift; result |= shift;
	shift = (value > 0x3) << 1; value >>= shift; result |= shift;
	result |= (value >> 1);
	return result;
}

/* Adds `value` to the histogram of `key` in `map` (a hash of struct kernel_hist), creating it; when the
 * map is full the sample goes to kernel_hist_overflow and is counted. */
static __always_inline void kernel_hist_add(void *map, const void *key, __u64 value)
{
	struct kernel_hist *hist = bpf_map_lookup_elem(map, key);
	if (!hist) {
		bpf_map_update_elem(map, key, &kernel_hist_zero, BPF_NOEXIST);
		hist = bpf_map_lookup_elem(map, key);
		if (!hist) {
			__u32 zero = 0;
			hist = bpf_map_lookup_elem(&kernel_hist_overflow, &zero);
			kernel_count(KERNEL_STAT_HIST_OVERFLOW);
			if (!hist)
				return;
		}
	}
	__u32 slot = kernel_log2(value);
	if (slot >= KERNEL_HIST_SLOTS)
		slot = KERNEL_HIST_SLOTS - 1;
	__sync_fetch_and_add(&hist->slots[slot], 1);
	__sync_fetch_and_add(&hist->count, 1);
	__sync_fetch_and_add(&hist->sum, value);
}

#ifdef KERNEL_TRACER_EVENTS
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} kernel_events SEC(".maps");

/* Room for one event of `size` bytes with its header filled for the current task, or NULL (counted). */
static __always_inline void *kernel_event_reserve(__u32 size, __u32 type)
{
	struct kernel_event_header *header = bpf_ringbuf_reserve(&kernel_events, size, 0);
	if (!header) {
		kernel_count(KERNEL_STAT_EVENTS_DROPPED);
		return NULL;
	}
	__u64 id = bpf_get_current_pid_tgid();
	header->timestamp_ns = bpf_ktime_get_ns();
	header->pid = id >> 32;
	header->tid = (__u32)id;
	bpf_get_current_comm(header->comm, sizeof(header->comm));
	header->type = type;
	header->size = size;
	return header;
}

/* Submits without waking the reader, which drains the ring on a short timer. */
static __always_inline void kernel_event_submit(void *event)
{
	bpf_ringbuf_submit(event, BPF_RB_NO_WAKEUP);
	kernel_count(KERNEL_STAT_EVENTS);
}
#endif

#endif
