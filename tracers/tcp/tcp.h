/* Layouts shared by the TCP tracer (tcp.bpf.c) and Swift (tracers/tcp). */
#ifndef TRACER_TCP_H
#define TRACER_TCP_H

#include "../../bpf/kernel_tracer.h"

/* Event types (kernel_event_header.type). */
#define TCP_EVENT_CONNECT 1        /* an active open completed (SYN_SENT -> ESTABLISHED) */
#define TCP_EVENT_CONNECT_FAILED 2 /* an active open failed (SYN_SENT -> CLOSE): refused, timed out, reset */
#define TCP_EVENT_ACCEPT 3         /* a passive open completed (SYN_RECV -> ESTABLISHED) */
#define TCP_EVENT_CLOSE 4          /* an established connection reached CLOSE */
#define TCP_EVENT_RETRANSMIT 5     /* a segment was retransmitted (tcp:tcp_retransmit_skb) */
#define TCP_EVENT_STATE 6          /* any state change of a connection (with tcp_report_states, as tcpstates) */

/* One TCP event. The header names the process that opened the connection (connect) or last acted on it
 * from process context (accept, close), as libbpf-tools' tcplife does; 0 and "" when unknown. Addresses
 * are in network byte order, IPv4 in the first 4 bytes. */
struct tcp_event {
	struct kernel_event_header header;
	__u8 local_address[16];
	__u8 remote_address[16];
	__u16 local_port;  /* host byte order */
	__u16 remote_port; /* host byte order */
	__u16 family;      /* AF_INET or AF_INET6 */
	__u16 error;       /* connect failed: the socket's error (errno); state change: the old state; else 0 */
	__u32 state;       /* retransmit: the TCP state (TCP_ESTABLISHED = 1 ...); else the new state */
	__u32 srtt_us;     /* close: the smoothed round-trip time (tcp_sock.srtt_us >> 3), µs; 0 before any sample */
	__u64 duration_ns; /* connect: SYN_SENT to ESTABLISHED; close: first state change to CLOSE */
	__u64 bytes_acked;    /* close: tcp_sock.bytes_acked, sequence space the peer acknowledged (SYN, FIN: 1 each) */
	__u64 bytes_received; /* close: tcp_sock.bytes_received, sequence space received (a FIN counts 1) */
};
_Static_assert(sizeof(struct tcp_event) == 112, "tcp_event layout");

/* Key of a connect-latency histogram: the remote endpoint (values: struct kernel_hist of microseconds); of a
 * round-trip-time histogram: the remote address (port 0). */
struct tcp_endpoint_key {
	__u8 address[16];
	__u16 port;
	__u16 family;
	__u32 tgid; /* connect latency with --per-process: the process that connected; else 0 */
};
_Static_assert(sizeof(struct tcp_endpoint_key) == 24, "tcp_endpoint_key layout");

#endif
