// SPDX-License-Identifier: GPL-2.0
/* Block I/O latency (libbpf-tools' biolatency): a request is stamped when the block layer issues it to
 * the driver (block_rq_issue) or, measuring queued time, when it is inserted into the OS queue
 * (block_rq_insert; a request issued without passing a queue is stamped at issue); at block_rq_complete
 * the time in microseconds goes into a log2 histogram per key (operation, and disk with per-disk keys).
 * Completions run in interrupt context: no process filter. Two hook sets with the same code: tp_btf
 * (Linux 5.5) and raw_tp (Linux 4.17) where tp_btf cannot attach. */
#include "kernel_tracer.bpf.h"
#include <bpf/bpf_tracing.h>
#include "biolatency.h"

char LICENSE[] SEC("license") = "GPL";

#define REQ_OP_MASK ((1 << 8) - 1)
#define E2BIG 7

/* BIOLATENCY_DEVICE_TIME or BIOLATENCY_QUEUED_TIME. */
const volatile __u32 biolatency_measure = BIOLATENCY_DEVICE_TIME;
/* Non-zero: one histogram per disk (libbpf-tools biolatency -D). */
const volatile __u32 biolatency_per_disk = 0;
/* Non-zero: only requests of the disk biolatency_disk_major:biolatency_disk_minor (biolatency -d). */
const volatile __u32 biolatency_filter_disk = 0;
const volatile __u32 biolatency_disk_major = 0;
const volatile __u32 biolatency_disk_minor = 0;

/* When each in-flight request (by address) was stamped. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct request *);
	__type(value, __u64);
} biolatency_start SEC(".maps");

/* Histograms of block I/O latency in microseconds; max_entries is the cardinality limit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct biolatency_key);
	__type(value, struct kernel_hist);
} biolatency_hists SEC(".maps");

const struct biolatency_key *biolatency_key_anchor;
const struct kernel_hist *biolatency_hist_anchor;
const struct kernel_event_header *biolatency_header_anchor;

/* Linux 5.17 moved the disk from request.rq_disk to request_queue.disk. */
struct request___pre517 {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

static __always_inline struct gendisk *request_disk(struct request *rq)
{
	if (bpf_core_field_exists(((struct request___pre517 *)rq)->rq_disk))
		return BPF_CORE_READ((struct request___pre517 *)rq, rq_disk);
	return BPF_CORE_READ(rq, q, disk);
}

/* Stamps `rq` now (unless another disk than the selected one's); `replace` 0 keeps an earlier stamp
 * (the insert's, when measuring queued time). */
static __always_inline void stamp(struct request *rq, int replace)
{
	if (biolatency_filter_disk) {
		struct gendisk *disk = request_disk(rq);
		if (!disk || BPF_CORE_READ(disk, major) != biolatency_disk_major ||
		    BPF_CORE_READ(disk, first_minor) != biolatency_disk_minor)
			return;
	}
	__u64 now = bpf_ktime_get_ns();
	long err = bpf_map_update_elem(&biolatency_start, &rq, &now, replace ? BPF_ANY : BPF_NOEXIST);
	if (err == -E2BIG)
		kernel_count(KERNEL_STAT_STATE_OVERFLOW);
}

static __always_inline void inserted(struct request *rq)
{
	if (biolatency_measure == BIOLATENCY_QUEUED_TIME)
		stamp(rq, 1);
}

static __always_inline void issued(struct request *rq)
{
	stamp(rq, biolatency_measure == BIOLATENCY_DEVICE_TIME);
}

static __always_inline void completed(struct request *rq)
{
	__u64 *since = bpf_map_lookup_elem(&biolatency_start, &rq);
	if (!since)
		return;
	__u64 now = bpf_ktime_get_ns();
	__u64 latency = now > *since ? (now - *since) / 1000 : 0;
	bpf_map_delete_elem(&biolatency_start, &rq);
	struct biolatency_key key = {};
	key.op = BPF_CORE_READ(rq, cmd_flags) & REQ_OP_MASK;
	if (biolatency_per_disk) {
		struct gendisk *disk = request_disk(rq);
		if (disk) {
			key.major = BPF_CORE_READ(disk, major);
			key.minor = BPF_CORE_READ(disk, first_minor);
		}
	}
	kernel_hist_add(&biolatency_hists, &key, latency);
}

SEC("tp_btf/block_rq_insert")
int BPF_PROG(biolatency_insert_btf, struct request *rq)
{
	inserted(rq);
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(biolatency_issue_btf, struct request *rq)
{
	issued(rq);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(biolatency_complete_btf, struct request *rq)
{
	completed(rq);
	return 0;
}

SEC("raw_tp/block_rq_insert")
int BPF_PROG(biolatency_insert_raw, struct request *rq)
{
	inserted(rq);
	return 0;
}

SEC("raw_tp/block_rq_issue")
int BPF_PROG(biolatency_issue_raw, struct request *rq)
{
	issued(rq);
	return 0;
}

SEC("raw_tp/block_rq_complete")
int BPF_PROG(biolatency_complete_raw, struct request *rq)
{
	completed(rq);
	return 0;
}
