// SPDX-License-Identifier: GPL-2.0
/* Flow accounting from conntrack, for kernels with kprobes and nf_conntrack: every packet conntrack
 * accounts passes __nf_ct_refresh_acct (Linux 4.10 onwards), which adds it to the flow of its
 * conntrack entry; nf_ct_delete marks the flow ended. The flows are conntrack's own (forwarded and NATed
 * traffic included, one per namespace and zone, oriented by the original tuple, with the connmark). User
 * space reads flows_table exactly as for the cgroup_skb path. */
#include "flows.bpf.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define IP_CT_IS_REPLY 3

/* The key of a conntrack entry from its original tuple; returns the original direction in key order. */
static __always_inline __u8 conntrack_key(struct nf_conn *ct, struct flow_key *key)
{
	__u16 l3num = BPF_CORE_READ(ct, tuplehash[0].tuple.src.l3num);
	struct nf_conntrack_tuple *tuple = &ct->tuplehash[0].tuple;
	if (l3num == AF_INET) {
		key->family = FLOWS_FAMILY_IPV4;
		bpf_core_read(key->addr_low, 4, &tuple->src.u3.ip);
		bpf_core_read(key->addr_high, 4, &tuple->dst.u3.ip);
	} else {
		key->family = FLOWS_FAMILY_IPV6;
		bpf_core_read(key->addr_low, 16, &tuple->src.u3.in6);
		bpf_core_read(key->addr_high, 16, &tuple->dst.u3.in6);
	}
	key->protocol = BPF_CORE_READ(ct, tuplehash[0].tuple.dst.protonum);
	if (key->protocol == IPPROTO_TCP || key->protocol == IPPROTO_UDP) {
		key->port_low = bpf_ntohs(BPF_CORE_READ(ct, tuplehash[0].tuple.src.u.all));
		key->port_high = bpf_ntohs(BPF_CORE_READ(ct, tuplehash[0].tuple.dst.u.all));
	}
	__u8 original = order(key);
	key->netns = BPF_CORE_READ(ct, ct_net.net, ns.inum);
	return original;
}

static __always_inline __u32 connmark(struct nf_conn *ct)
{
	if (bpf_core_field_exists(ct->mark))
		return BPF_CORE_READ(ct, mark);
	return 0;
}

SEC("kprobe/__nf_ct_refresh_acct")
int BPF_KPROBE(flows_ct_refresh, struct nf_conn *ct, int ctinfo, const struct sk_buff *skb, __u32 extra_jiffies, bool do_acct)
{
	if (!do_acct)
		return 0;
	struct flow_key key = {};
	__u8 original = conntrack_key(ct, &key);
	__u8 direction = ctinfo >= IP_CT_IS_REPLY ? original ^ 1 : original;
	__u32 len = 0;
	BPF_CORE_READ_INTO(&len, skb, len);
	int created = 0;
	struct flow_counters *flow = flows_account(&key, direction, original, len, connmark(ct), &created);
	/* The connmark can change during the flow (a rule that runs after conntrack sets it on the first packet). */
	if (flow)
		flow->mark = connmark(ct);
	return 0;
}

/* The entry leaves conntrack's table (timeout, TCP close, flush): the flow ended. */
SEC("kprobe/nf_ct_delete")
int BPF_KPROBE(flows_ct_delete, struct nf_conn *ct)
{
	struct flow_key key = {};
	conntrack_key(ct, &key);
	struct flow_counters *flow = bpf_map_lookup_elem(&flows_table, &key);
	if (flow) {
		flow->closed = 1;
		flow->mark = connmark(ct);
		count(FLOWS_STAT_CLOSES);
	}
	return 0;
}
