/* The shared capture layer (bpf/capture.bpf.c): socket data and TLS plaintext of the selected processes,
 * per connection, for the protocol parsers in user space. Imported into Swift through CTracerABI.
 * Fixed-width types only, explicit padding, sizes asserted. */
#ifndef TRACER_CAPTURE_H
#define TRACER_CAPTURE_H

#include "tracer_common.h"

/* tracer_event_header.type of the capture layer (its range is 800-809). */
#define CAPTURE_EVENT_CHUNK 800 /* bytes crossed a connection */
#define CAPTURE_EVENT_CLOSE 801 /* the process closed the connection, or it is gone */
#define CAPTURE_EVENT_CONTEXT 802 /* span ids decided in the kernel for the chunk that follows (network propagation) */

/* capture_chunk_event.direction */
#define CAPTURE_DIRECTION_RECEIVE 0
#define CAPTURE_DIRECTION_SEND 1

/* capture_chunk_event.source: where the bytes were seen. */
#define CAPTURE_SOURCE_SOCKET 0 /* the socket layer: plaintext connections */
#define CAPTURE_SOURCE_LIBSSL 1 /* SSL_read/SSL_write(_ex) of libssl: TLS plaintext */
#define CAPTURE_SOURCE_GO_TLS 2 /* crypto/tls.(*Conn).Read/Write of a Go program: TLS plaintext */

/* capture_connection.flags and capture_chunk_event.flags */
#define CAPTURE_FLAG_TLS 1       /* the socket carries TLS records: its socket bytes are never emitted */
#define CAPTURE_FLAG_NO_BUFFER 2 /* the transfer named no user buffer (sendfile, splice, io_uring): length only */
#define CAPTURE_FLAG_CLOSING 4   /* a close event was emitted for the connection */

/* Per-connection verdicts from user space (map capture_verdicts, keyed by connection id; user space bumps
 * capture_verdict_epoch after writing one). */
#define CAPTURE_VERDICT_CAPTURE 0 /* emit every chunk with a prefix of its bytes (the default) */
#define CAPTURE_VERDICT_COUNT 1   /* no parser wants it: count the bytes, emit nothing until close */

/* Bytes of each chunk kept: records are reserved in classes (fixed part + 128, 512 or 1024 bytes), so a
 * small chunk does not take a kilobyte of ring. Powers of two. */
#define CAPTURE_CLASS_SMALL 128
#define CAPTURE_CLASS_MEDIUM 512
#define CAPTURE_MAX_DATA 1024
/* Bytes kept from the end of each chunk (the last chunk of a chunked body, "\r\n0\r\n\r\n"). */
#define CAPTURE_TAIL 8

/* Both ends of a connection: IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d); ports in host byte order. */
struct capture_tuple {
	__u8 local_address[16];
	__u8 remote_address[16];
	__u16 local_port;
	__u16 remote_port;
	__u16 family;   /* AF_INET (2), AF_INET6 (10); 0 when unknown (TLS without a known socket) */
	__u16 reserved;
};
_Static_assert(sizeof(struct capture_tuple) == 40, "capture_tuple layout");

/* Per-process facts written by user space before the process is allowed (map capture_processes, keyed
 * by host TGID). Go offsets come from DWARF or the offsets table; never guessed. */
struct capture_process {
	__s64 go_g_tls_offset; /* where runtime.g's pointer sits relative to the FS base; 0: not Go */
	__u64 go_goid_offset;  /* runtime.g.goid */
	__u32 follows;         /* the selected process whose entry the kernel copied at fork; 0: prepared by user space */
	__u32 go_tls;          /* 1: Go crypto/tls plaintext probes apply (Go 1.17+ register ABI, goid known) */
	/* Where a crypto/tls.Conn keeps what its Reads hand out (Go TLS plaintext is taken from it at the
	 * connection's next call, so Read needs no RET probe): */
	__u32 go_tls_input;    /* Conn.input + bytes.Reader.s: the decrypted record's array and length */
	__u32 go_tls_consumed; /* Conn.input + bytes.Reader.i: how much of it Reads have handed out */
	__u32 go_tls_sequence; /* Conn.in + halfConn.seq: the number of the last record read (big-endian) */
	__u32 go_tls_failure;  /* Conn.in + halfConn.err: the error that ends the connection's reads (an interface) */
};
_Static_assert(sizeof(struct capture_process) == 40, "capture_process layout");

/* CAPTURE_EVENT_CHUNK: one read or write of a connection (or TLS plaintext of one). */
struct capture_chunk_event {
	struct tracer_event_header header; /* pid/tid of the task that moved the bytes; timestamp: when */
	__u64 connection;    /* connection id, unique while the agent runs */
	__u64 goid;          /* Go: the goroutine that moved the bytes; else 0 */
	__u32 length;        /* bytes transferred */
	__u32 captured;      /* bytes in data (a prefix of the transfer) */
	__u32 fd;            /* the socket's fd in the process, 0xffffffff when unknown */
	__u8 direction;      /* CAPTURE_DIRECTION_* */
	__u8 source;         /* CAPTURE_SOURCE_* */
	__u8 flags;          /* CAPTURE_FLAG_* */
	__u8 tail_captured;  /* bytes in tail: 0 when data holds the whole transfer (its end is data's end) */
	__u8 tail[CAPTURE_TAIL]; /* the last bytes of a transfer longer than data */
	__u32 follows;       /* capture_process.follows of the process: not selected yet, its parent is */
	__u32 netns;         /* the task's network namespace (the inode /proc/PID/ns/net names); 0: unknown */
	struct capture_tuple tuple;
	__u8 data[];         /* `captured` bytes; the record is sized by class */
};
_Static_assert(sizeof(struct capture_chunk_event) == 112, "capture_chunk_event layout");

/* CAPTURE_EVENT_CLOSE: the connection's owner closed it (FIN_WAIT1, LAST_ACK) or it is gone (CLOSE). */
struct capture_close_event {
	struct tracer_event_header header; /* pid: the process that owned the connection */
	__u64 connection;
	__u64 bytes_sent;     /* every byte sent on the connection while traced */
	__u64 bytes_received;
	__u8 verdict;         /* CAPTURE_VERDICT_* at close */
	__u8 flags;           /* CAPTURE_FLAG_* of the connection */
	__u8 reserved[6];
};
_Static_assert(sizeof(struct capture_close_event) == 56, "capture_close_event layout");

/* Value of the connection table (capture_connections, keyed by struct sock *; a TLS connection whose
 * socket is unknown is keyed by its SSL * with the low bit set). */
struct capture_connection {
	__u64 id;
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 verdict_epoch; /* capture_verdict_epoch when the verdict was last looked up */
	__u32 tgid;      /* the process that first moved bytes on it */
	__u8 verdict;
	__u8 flags;
	__u8 reserved[2];
	struct capture_tuple tuple;
	__u64 received_ns; /* TLS: when bytes last arrived on the socket (the time of the plaintext read from them) */
};
_Static_assert(sizeof(struct capture_connection) == 88, "capture_connection layout");

/* capture_context_event.flags */
#define CAPTURE_CONTEXT_INJECTED 1    /* a send: the ids went out in a traceparent the capture inserted */
#define CAPTURE_CONTEXT_TRACEPARENT 2 /* a receive: the request carried a traceparent, parent_span_id is its span */

/* The traceparent line network propagation inserts after a request line:
 * "traceparent: 00-" + 32 hex + "-" + 16 hex + "-01\r\n". */
#define CAPTURE_TRACEPARENT_LINE 70

/* CAPTURE_EVENT_CONTEXT (network propagation only): the ids the kernel decided for the next chunk of the
 * same connection and direction, emitted just before it. A receive that starts an HTTP/1 request names the
 * server span (its parent from the request's traceparent); a send names the client span whose traceparent
 * the sk_msg program inserted (injected bytes more went out than the chunk's length says). */
struct capture_context_event {
	struct tracer_event_header header;
	__u64 connection;
	__u8 trace_id[16];
	__u8 span_id[8];
	__u8 parent_span_id[8]; /* zero: a root */
	__u32 injected;         /* bytes the capture added to the stream (CAPTURE_TRACEPARENT_LINE or 0) */
	__u8 direction;         /* CAPTURE_DIRECTION_* of the chunk it names */
	__u8 flags;             /* CAPTURE_CONTEXT_* */
	__u8 reserved[2];
};
_Static_assert(sizeof(struct capture_context_event) == 72, "capture_context_event layout");

/* Counters of network propagation (map capture_propagation_counts, per CPU). */
#define CAPTURE_PROPAGATION_INJECTED 0 /* a traceparent was inserted */
#define CAPTURE_PROPAGATION_SKIPPED 1  /* a request was left alone: it carried one, or could not be framed */
#define CAPTURE_PROPAGATION_FAILED 2   /* inserting failed (the request went out unchanged) */
#define CAPTURE_PROPAGATION_COUNTERS 3

/* Reads of Go's crypto/tls whose plaintext could not be emitted (map capture_go_tls_losses, per CPU). */
#define CAPTURE_GO_TLS_OVERWRITTEN 0 /* a later record was decrypted over the Read's bytes before it was taken */
#define CAPTURE_GO_TLS_UNTIED 1      /* no socket was seen for its connection: nothing to tie the bytes to */
#define CAPTURE_GO_TLS_LOSSES 2

#endif
