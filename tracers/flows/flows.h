/* Layouts shared by the flow-accounting BPF programs (flows_skb.bpf.c) and Swift (tracers/flows). */
#ifndef TRACER_FLOWS_H
#define TRACER_FLOWS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define FLOWS_FAMILY_IPV4 4
#define FLOWS_FAMILY_IPV6 6

/* Direction of a packet relative to the key's canonical order: from the lower (address, port)
 * endpoint to the higher one, or back. */
#define FLOWS_LOW_TO_HIGH 0
#define FLOWS_HIGH_TO_LOW 1

/* Indexes of the kernel-side counters (flows_stats, per CPU). */
#define FLOWS_STAT_CREATED 0       /* flows inserted into flows_table */
#define FLOWS_STAT_INSERT_FAILED 1 /* a new flow could not be inserted (uncounted packets) */
#define FLOWS_STAT_PACKETS 2       /* packets accounted */
#define FLOWS_STAT_UNPARSED 3      /* packets whose headers could not be read */
#define FLOWS_STAT_CLOSES 4        /* flows seen ending: TCP_CLOSE (cgroup_skb), nf_ct_delete (conntrack) */
#define FLOWS_STAT_COUNT 5

/* One flow, independent of direction: the two endpoints in canonical order (lower address, then lower
 * port, first), so both directions of a connection find the same entry. IPv4 addresses use the first
 * 4 bytes of the 16. Ports in host byte order. */
struct flow_key {
	__u8 addr_low[16];
	__u8 addr_high[16];
	__u16 port_low;
	__u16 port_high;
	__u32 netns;    /* inode number of the network namespace (as in /proc/PID/ns/net), 0 when unknown */
	__u8 protocol;  /* IPPROTO_* */
	__u8 family;    /* FLOWS_FAMILY_IPV4 or _IPV6 */
	__u8 padding[6];
};
_Static_assert(sizeof(struct flow_key) == 48, "flow_key layout");

/* Counters of one flow, updated by every accounted packet. */
struct flow_counters {
	__u64 start_ns;   /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the first packet */
	__u64 last_ns;    /* of the latest packet */
	__u64 packets[2]; /* by direction: FLOWS_LOW_TO_HIGH, FLOWS_HIGH_TO_LOW */
	__u64 bytes[2];   /* IP length (header included), as conntrack accounts */
	__u32 mark;       /* cgroup_skb: skb mark of the first packet (SO_MARK or a netfilter mark); conntrack: the connmark */
	__u8 original;    /* direction of the first packet: the flow's "original" direction */
	__u8 closed;      /* a TCP socket of the flow reached TCP_CLOSE */
	__u8 padding[2];
	/* cgroup_skb: the process that created the local socket of the first packet (0 and "": unknown) */
	__u32 owner_pid;     /* host TGID */
	__u8 owner_comm[16]; /* its thread's comm then */
	__u8 padding2[4];
};
_Static_assert(sizeof(struct flow_counters) == 80, "flow_counters layout");

/* Who created a socket (cgroup_skb path, sk storage flows_owners). */
struct flow_owner {
	__u32 pid;
	__u8 comm[16];
	__u8 padding[4];
};
_Static_assert(sizeof(struct flow_owner) == 24, "flow_owner layout");

#endif
