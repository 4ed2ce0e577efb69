// SPDX-License-Identifier: GPL-2.0
/* Flow accounting without kprobes: cgroup_skb programs on the cgroup2 root count every IP packet a
 * local socket sends or receives into flows_table (one entry per flow and network namespace),
 * sock:inet_sock_set_state marks TCP flows closed, and cgroup/sock_create records who created each socket,
 * so a new flow names its owner. User space (tracers/flows/FlowAccounting.swift)
 * reads the table on a timer, emits update and destroy events and deletes what ended. */
#include "flows.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define TCP_CLOSE 7
#define LOOPBACK_IFINDEX 1

extern void *bpf_cast_to_kern_ctx(void *ctx) __ksym;

/* Socket → host TGID and comm of the process that created it (cgroup/sock_create runs in its context). BPF_F_CLONE:
 * a socket accept() returns inherits its listener's owner. Sockets created before the start have none. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct flow_owner);
} flows_owners SEC(".maps");

SEC("cgroup/sock_create")
int flows_sock_create(struct bpf_sock *sk)
{
	struct flow_owner owner = {};
	owner.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(owner.comm, sizeof(owner.comm));
	bpf_sk_storage_get(&flows_owners, sk, &owner, BPF_SK_STORAGE_GET_F_CREATE);
	return 1;
}

/* Records the owner of the packet's local socket in a new flow. */
static __always_inline void set_owner(struct flow_counters *flow, struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return;
	struct flow_owner *owner = bpf_sk_storage_get(&flows_owners, sk, 0, 0);
	if (!owner)
		return;
	flow->owner_pid = owner->pid;
	__builtin_memcpy(flow->owner_comm, owner->comm, sizeof(flow->owner_comm));
}

/* Network namespace of the packet's socket (Linux 6.2 for bpf_cast_to_kern_ctx). */
static __always_inline __u32 skb_netns(struct __sk_buff *ctx)
{
	struct sk_buff *skb = bpf_cast_to_kern_ctx(ctx);
	struct sock *sk = skb->sk;
	if (!sk)
		return 0;
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

static __always_inline void account(struct __sk_buff *skb)
{
	struct flow_key key = {};
	__u32 transport;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
			goto unparsed;
		key.family = FLOWS_FAMILY_IPV4;
		key.protocol = ip.protocol;
		__builtin_memcpy(key.addr_low, &ip.saddr, 4);
		__builtin_memcpy(key.addr_high, &ip.daddr, 4);
		transport = ip.ihl * 4;
		if (ip.frag_off & bpf_htons(0x1FFF)) /* a later fragment carries no ports */
			transport = 0;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		/* next header at 6, source address at 8, destination at 24 */
		key.family = FLOWS_FAMILY_IPV6;
		if (bpf_skb_load_bytes(skb, 6, &key.protocol, 1) < 0 ||
		    bpf_skb_load_bytes(skb, 8, key.addr_low, 16) < 0 ||
		    bpf_skb_load_bytes(skb, 24, key.addr_high, 16) < 0)
			goto unparsed;
		transport = 40;
	} else {
		return;
	}
	if (transport && (key.protocol == IPPROTO_TCP || key.protocol == IPPROTO_UDP)) {
		__u16 ports[2];
		if (bpf_skb_load_bytes(skb, transport, ports, sizeof(ports)) == 0) {
			key.port_low = bpf_ntohs(ports[0]);
			key.port_high = bpf_ntohs(ports[1]);
		}
	}
	__u8 direction = order(&key);
	key.netns = skb_netns(skb);

	int created = 0;
	struct flow_counters *flow = flows_account(&key, direction, direction, skb->len, skb->mark, &created);
	if (flow && created)
		set_owner(flow, skb);
	return;
unparsed:
	count(FLOWS_STAT_UNPARSED);
}

SEC("cgroup_skb/egress")
int flows_egress(struct __sk_buff *skb)
{
	account(skb);
	return 1;
}

SEC("cgroup_skb/ingress")
int flows_ingress(struct __sk_buff *skb)
{
	/* A packet that arrives on the loopback device was counted at the sender's egress (both ends are
	 * local sockets of this namespace), as conntrack counts it once. */
	if (skb->ingress_ifindex == LOOPBACK_IFINDEX)
		return 1;
	account(skb);
	return 1;
}

/* A TCP socket reached TCP_CLOSE: its flow is complete once the last packets (the peer's final ACK)
 * went through; user space emits the destroy event after a short grace period. */
SEC("tracepoint/sock/inet_sock_set_state")
int flows_tcp_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->newstate != TCP_CLOSE || ctx->protocol != IPPROTO_TCP)
		return 0;
	struct flow_key key = {};
	if (ctx->family == AF_INET) {
		__builtin_memcpy(key.addr_low, ctx->saddr, 4);
		__builtin_memcpy(key.addr_high, ctx->daddr, 4);
		key.family = FLOWS_FAMILY_IPV4;
	} else {
		/* copied with a helper: the verifier refuses loads through a computed context pointer */
		bpf_probe_read_kernel(key.addr_low, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(key.addr_high, 16, ctx->daddr_v6);
		key.family = FLOWS_FAMILY_IPV6;
		/* an IPv6 socket talking IPv4 (::ffff:a.b.c.d): its packets are IPv4 */
		__u64 *low = (__u64 *)key.addr_low, *high = (__u64 *)key.addr_high;
		if (low[0] == 0 && ((__u32 *)key.addr_low)[2] == bpf_htonl(0xffff)) {
			__u32 source = ((__u32 *)key.addr_low)[3], destination = ((__u32 *)key.addr_high)[3];
			low[0] = low[1] = high[0] = high[1] = 0;
			((__u32 *)key.addr_low)[0] = source;
			((__u32 *)key.addr_high)[0] = destination;
			key.family = FLOWS_FAMILY_IPV4;
		}
	}
	key.port_low = ctx->sport;
	key.port_high = ctx->dport;
	order(&key);
	key.protocol = IPPROTO_TCP;
	key.netns = BPF_CORE_READ((struct sock *)ctx->skaddr, __sk_common.skc_net.net, ns.inum);
	struct flow_counters *flow = bpf_map_lookup_elem(&flows_table, &key);
	if (flow) {
		flow->closed = 1;
		count(FLOWS_STAT_CLOSES);
	}
	return 0;
}
