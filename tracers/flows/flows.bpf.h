/* BPF side shared by the flow-accounting programs (flows_skb.bpf.c, flows_conntrack.bpf.c): the flow
 * table, the kernel-side counters, the key's canonical order and the per-packet update. */
#ifndef TRACER_FLOWS_BPF_H
#define TRACER_FLOWS_BPF_H

#include "../../bpf/vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "flows.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

/* Every flow; least recently used entries are evicted when it is full (user space counts flows that
 * vanished without a close). max_entries is set by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_counters);
} flows_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOWS_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} flows_stats SEC(".maps");

/* Anchor the shared structs in the object's BTF for the layout test. */
const struct flow_key *flows_key_anchor __attribute__((unused));
const struct flow_counters *flows_counters_anchor __attribute__((unused));

extern void *bpf_cast_to_kern_ctx(void *ctx) __ksym;

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&flows_stats, &index);
	if (value)
		*value += 1;
}

/* Puts the key's endpoints, filled as (source, destination), into canonical order (lower address, then
 * lower port, first); returns the packet's direction. */
static __always_inline __u8 order(struct flow_key *key)
{
	__u64 *low = (__u64 *)key->addr_low, *high = (__u64 *)key->addr_high;
	int cmp = 0;
	for (int i = 0; i < 2 && cmp == 0; i++) {
		__u64 a = bpf_be64_to_cpu(low[i]), b = bpf_be64_to_cpu(high[i]);
		if (a != b)
			cmp = a < b ? -1 : 1;
	}
	if (cmp == 0)
		cmp = key->port_low < key->port_high ? -1 : (key->port_low > key->port_high ? 1 : 0);
	if (cmp <= 0)
		return FLOWS_LOW_TO_HIGH;
	for (int i = 0; i < 2; i++) {
		__u64 swap = low[i];
		low[i] = high[i];
		high[i] = swap;
	}
	__u16 port = key->port_low;
	key->port_low = key->port_high;
	key->port_high = port;
	return FLOWS_HIGH_TO_LOW;
}

/* Adds one packet of `len` bytes in `direction` to the flow, creating it with `original` as its original
 * direction and `mark` when it is new (then *created is 1); returns the flow (NULL when it could not be
 * inserted). */
static __always_inline struct flow_counters *flows_account(struct flow_key *key, __u8 direction, __u8 original, __u32 len,
							    __u32 mark, int *created)
{
	__u64 now = bpf_ktime_get_ns();
	struct flow_counters *flow = bpf_map_lookup_elem(&flows_table, key);
	if (!flow) {
		struct flow_counters fresh = {};
		fresh.start_ns = now;
		fresh.last_ns = now;
		fresh.original = original;
		fresh.mark = mark;
		/* BPF_NOEXIST: a packet of the same new flow on another CPU may have inserted it first. */
		if (bpf_map_update_elem(&flows_table, key, &fresh, BPF_NOEXIST) == 0) {
			count(FLOWS_STAT_CREATED);
			*created = 1;
		}
		flow = bpf_map_lookup_elem(&flows_table, key);
		if (!flow) {
			count(FLOWS_STAT_INSERT_FAILED);
			return NULL;
		}
	}
	flow->last_ns = now;
	__sync_fetch_and_add(&flow->packets[direction & 1], 1);
	__sync_fetch_and_add(&flow->bytes[direction & 1], len);
	count(FLOWS_STAT_PACKETS);
	return flow;
}

#endif
