// SPDX-License-Identifier: GPL-2.0
/* TCP connections from the sock:inet_sock_set_state tracepoint (Linux 4.16) and retransmits from
 * tcp:tcp_retransmit_skb (4.15): connect latency (a log2 histogram of microseconds per remote endpoint)
 * and events for completed and failed connects, accepts, closes with bytes and lifetime (as libbpf-tools'
 * tcplife) and retransmits. No syscall hook: only TCP state changes run these programs. Two hook sets with
 * the same code: tp_btf (5.5) and raw_tp (4.17). */
#define KERNEL_TRACER_EVENTS
#include "kernel_tracer.bpf.h"
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "tcp.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10

/* What is known of a socket since its first state change: when, and the process that last acted on it
 * from process context (connect: SYN_SENT; close: FIN_WAIT1 or LAST_ACK). */
struct tcp_socket {
	__u64 start_ns;
	__u32 pid;
	__u8 comm[16];
	__u16 local_port; /* the socket's port while bound (the time-wait hand-over unbinds it before CLOSE) */
	__u16 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct tcp_socket);
} tcp_sockets SEC(".maps");

/* Connect latency in microseconds per remote endpoint; max_entries is the cardinality limit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct tcp_endpoint_key);
	__type(value, struct kernel_hist);
} tcp_connect_hists SEC(".maps");

/* Smoothed round-trip time at close in microseconds per remote address; max_entries is the cardinality limit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct tcp_endpoint_key);
	__type(value, struct kernel_hist);
} tcp_rtt_hists SEC(".maps");

/* Set before load: connect-latency histograms per process and remote endpoint (--per-process). */
const volatile __u8 tcp_per_process = 0;
/* Set before load: an event for every state change of a connection (--states). */
const volatile __u8 tcp_report_states = 0;

const struct tcp_event *tcp_event_anchor;
const struct tcp_endpoint_key *tcp_endpoint_key_anchor;
const struct kernel_hist *tcp_hist_anchor;
const struct kernel_event_header *tcp_header_anchor;

static __always_inline void read_address(struct sock *sk, __u16 family, __u8 *local, __u8 *remote)
{
	if (family == AF_INET6) {
		BPF_CORE_READ_INTO((struct in6_addr *)local, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)remote, sk, __sk_common.skc_v6_daddr);
	} else {
		BPF_CORE_READ_INTO((__be32 *)local, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__be32 *)remote, sk, __sk_common.skc_daddr);
	}
}

/* Reserves an event about `sk` of `type`, header naming `known`'s process (or none). */
static __always_inline struct tcp_event *tcp_event_reserve(struct sock *sk, __u32 type, const struct tcp_socket *known)
{
	struct tcp_event *event = kernel_event_reserve(sizeof(*event), type);
	if (!event)
		return NULL;
	event->header.pid = known ? known->pid : 0;
	event->header.tid = 0;
	__builtin_memset(event->header.comm, 0, sizeof(event->header.comm));
	if (known)
		__builtin_memcpy(event->header.comm, known->comm, sizeof(event->header.comm));
	__builtin_memset(event->local_address, 0, sizeof(event->local_address));
	__builtin_memset(event->remote_address, 0, sizeof(event->remote_address));
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	read_address(sk, family, event->local_address, event->remote_address);
	event->family = family;
	event->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!event->local_port && known)
		event->local_port = known->local_port;
	event->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	event->error = 0;
	event->state = 0;
	event->srtt_us = 0;
	event->duration_ns = 0;
	event->bytes_acked = 0;
	event->bytes_received = 0;
	return event;
}

static __always_inline void state_changed(struct sock *sk, int old, int new)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP || new == TCP_LISTEN)
		return;
	__u64 key = (__u64)sk;
	if (old == TCP_LISTEN && new == TCP_CLOSE) { /* a listener closed: not a connection */
		bpf_map_delete_elem(&tcp_sockets, &key);
		return;
	}
	__u64 now = bpf_ktime_get_ns();
	struct tcp_socket *known = bpf_map_lookup_elem(&tcp_sockets, &key);
	if (!known && new < TCP_FIN_WAIT1) {
		struct tcp_socket fresh = { .start_ns = now };
		if (bpf_map_update_elem(&tcp_sockets, &key, &fresh, BPF_NOEXIST))
			kernel_count(KERNEL_STAT_STATE_OVERFLOW);
		known = bpf_map_lookup_elem(&tcp_sockets, &key);
	}
	if (known && (new == TCP_SYN_SENT || new == TCP_FIN_WAIT1 || new == TCP_LAST_ACK)) {
		__u32 pid = bpf_get_current_pid_tgid() >> 32;
		if (pid) {
			known->pid = pid;
			bpf_get_current_comm(known->comm, sizeof(known->comm));
		}
	}
	if (known && new == TCP_SYN_SENT) /* a socket reused for another connect starts again */
		known->start_ns = now;
	__u16 bound = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (known && bound)
		known->local_port = bound;

	struct tcp_event *event;
	if (tcp_report_states && known && kernel_tgid_selected(known->pid)) {
		event = tcp_event_reserve(sk, TCP_EVENT_STATE, known);
		if (event) {
			event->state = new;
			event->error = old;
			kernel_event_submit(event);
		}
	}
	if (old == TCP_SYN_SENT && (new == TCP_ESTABLISHED || new == TCP_CLOSE)) {
		if (!known || !kernel_tgid_selected(known->pid))
			goto forget;
		__u64 waited = now - known->start_ns;
		if (new == TCP_ESTABLISHED) {
			struct tcp_endpoint_key endpoint = {};
			if (tcp_per_process)
				endpoint.tgid = known->pid;
			endpoint.family = BPF_CORE_READ(sk, __sk_common.skc_family);
			endpoint.port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
			__u8 ignored[16];
			read_address(sk, endpoint.family, ignored, endpoint.address);
			kernel_hist_add(&tcp_connect_hists, &endpoint, waited / 1000);
		}
		event = tcp_event_reserve(sk, new == TCP_ESTABLISHED ? TCP_EVENT_CONNECT : TCP_EVENT_CONNECT_FAILED, known);
		if (event) {
			event->duration_ns = waited;
			event->state = new;
			if (new == TCP_CLOSE)
				event->error = BPF_CORE_READ(sk, sk_err);
			kernel_event_submit(event);
		}
		goto forget;
	}
	if (old == TCP_SYN_RECV && new == TCP_ESTABLISHED) {
		/* Softirq context: the accepting process is not known yet (the close event names it). */
		if (kernel_target_tgid)
			return;
		event = tcp_event_reserve(sk, TCP_EVENT_ACCEPT, NULL);
		if (event) {
			event->state = new;
			kernel_event_submit(event);
		}
		return;
	}
forget:
	if (new != TCP_CLOSE || !known)
		return;
	if (old != TCP_SYN_SENT && kernel_tgid_selected(known->pid)) {
		struct tcp_sock *tp = (struct tcp_sock *)sk;
		__u32 srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
		if (srtt_us) {
			struct tcp_endpoint_key peer = {};
			__u8 ignored[16];
			peer.family = BPF_CORE_READ(sk, __sk_common.skc_family);
			read_address(sk, peer.family, ignored, peer.address);
			kernel_hist_add(&tcp_rtt_hists, &peer, srtt_us);
		}
		event = tcp_event_reserve(sk, TCP_EVENT_CLOSE, known);
		if (event) {
			event->state = new;
			event->duration_ns = now - known->start_ns;
			event->bytes_acked = BPF_CORE_READ(tp, bytes_acked);
			event->bytes_received = BPF_CORE_READ(tp, bytes_received);
			event->srtt_us = srtt_us;
			kernel_event_submit(event);
		}
	}
	bpf_map_delete_elem(&tcp_sockets, &key);
}

static __always_inline void retransmitted(struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct tcp_socket *known = bpf_map_lookup_elem(&tcp_sockets, &key);
	if (kernel_target_tgid && (!known || !kernel_tgid_selected(known->pid)))
		return;
	struct tcp_event *event = tcp_event_reserve(sk, TCP_EVENT_RETRANSMIT, known);
	if (!event)
		return;
	event->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	kernel_event_submit(event);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_state_btf, struct sock *sk, int old, int new)
{
	state_changed(sk, old, new);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_btf, struct sock *sk)
{
	retransmitted(sk);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tcp_state_raw, struct sock *sk, int old, int new)
{
	state_changed(sk, old, new);
	return 0;
}

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_raw, struct sock *sk)
{
	retransmitted(sk);
	return 0;
}
