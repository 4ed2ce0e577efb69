/* Events of the Go net/http tracer (tracers/go-nethttp), shared by go_nethttp.bpf.c and Swift
 * (through CTracerABI). Fixed-width types, explicit padding, sizes asserted. */
#ifndef GO_NETHTTP_H
#define GO_NETHTTP_H

#include "../../bpf/tracer_common.h"

/* tracer_event_header.type values (the go-nethttp range is 200-299). */
#define GO_NETHTTP_EVENT_SERVER_CONTEXT 200 /* propagation: the ids BPF decided for a server request */
#define GO_NETHTTP_EVENT_CLIENT_START 203 /* client: net/http.(*Transport).roundTrip entered */
#define GO_NETHTTP_EVENT_CLIENT_END 204   /* client: net/http.(*Transport).roundTrip returned */
#define GO_NETHTTP_EVENT_INJECTED 205     /* propagation: a traceparent went into an HTTP/2 HEADERS frame */
#define GO_NETHTTP_EVENT_STREAM 206       /* an HTTP/2 stream's handler or caller goroutine */

/* Bytes of a request head scanned for an incoming traceparent (context propagation). */
#define GO_NETHTTP_REQUEST_CAPTURE 1024
/* Lengths kept of the client request's method, URL scheme, host, path and raw query. */
#define GO_NETHTTP_METHOD_CAPTURE 16
#define GO_NETHTTP_SCHEME_CAPTURE 8
#define GO_NETHTTP_HOST_CAPTURE 128
#define GO_NETHTTP_PATH_CAPTURE 256
#define GO_NETHTTP_QUERY_CAPTURE 256

/* The HTTP/2 servers of Go whose handlers name their stream: net/http's bundled one (go1.26 and older),
 * golang.org/x/net/http2's, and net/http/internal/http2's (go1.27+); the same shapes under three names. */
#define GO_NETHTTP_HTTP2_SERVERS 3

/* Where a handler's stream id is: its response writer's state (responseWriter.rws), that state's stream
 * (responseWriterState.stream), the stream's id (stream.id). */
struct go_nethttp_http2_server_fields {
	__u64 response_writer_rws;
	__u64 response_writer_state_stream;
	__u64 stream_id;
};
_Static_assert(sizeof(struct go_nethttp_http2_server_fields) == 24, "go_nethttp_http2_server_fields layout");

/* Per-process layout facts, written by the Swift side before the process is allowed (map
 * go_nethttp_offsets, keyed by host TGID). Offsets come from DWARF or the offsets table; never guessed. */
struct go_nethttp_offsets {
	__s64 g_tls_offset;          /* where runtime.g's pointer sits relative to the FS base (-8 internally linked) */
	__u64 g_goid;                /* runtime.g.goid */
	__u64 g_parent_goid;         /* runtime.g.parentGoid (go1.21+): a client call's creator; 0 when unknown */
	__u64 request_method;        /* net/http.Request.Method */
	__u64 request_url;           /* net/http.Request.URL */
	__u64 url_scheme;            /* net/url.URL.Scheme */
	__u64 url_host;              /* net/url.URL.Host */
	__u64 url_path;              /* net/url.URL.Path */
	__u64 url_raw_query;         /* net/url.URL.RawQuery */
	__u64 response_status_code;  /* net/http.Response.StatusCode */
	/* Context propagation (--context-propagation): read and written only when `propagate` is 1. */
	__u64 request_header;        /* net/http.Request.Header (the map pointer keys the outgoing request) */
	__u64 transfer_writer_header;/* net/http.transferWriter.Header */
	__u64 bufio_writer_buf;      /* bufio.Writer.buf */
	__u64 bufio_writer_n;        /* bufio.Writer.n */
	/* HTTP/2 and gRPC propagation: where a request's HEADERS frame is written, and the buffered writer it
	 * goes into (its bytes are appended to once the frame is there). */
	__u64 http2_client_conn_fr;  /* net/http.http2ClientConn.fr (*http2Framer) */
	__u64 http2_client_conn_bw;  /* net/http.http2ClientConn.bw (*bufio.Writer the framer writes into) */
	__u64 http2_framer_wbuf;     /* net/http.http2Framer.wbuf (the frame last written) */
	__u64 x_http2_client_conn_fr;/* golang.org/x/net/http2.ClientConn.fr */
	__u64 x_http2_client_conn_bw;/* golang.org/x/net/http2.ClientConn.bw */
	__u64 x_http2_framer_wbuf;   /* golang.org/x/net/http2.Framer.wbuf */
	__u64 grpc_loopy_framer;     /* google.golang.org/grpc/internal/transport.loopyWriter.framer (*framer) */
	__u64 grpc_framer_writer;    /* transport.framer.writer (*bufWriter) */
	__u64 grpc_framer_fr;        /* transport.framer.fr (*http2.Framer) */
	__u64 grpc_buf_writer_buf;   /* transport.bufWriter.buf */
	__u64 grpc_buf_writer_offset;/* transport.bufWriter.offset */
	__u64 propagate;             /* GO_NETHTTP_PROPAGATE_*: what this process's requests get a traceparent in */
	/* HTTP/2 streams served or called by a goroutine other than the one moving their frames (GO_NETHTTP_STREAMS_*). */
	struct go_nethttp_http2_server_fields http2_servers[GO_NETHTTP_HTTP2_SERVERS];
	__u64 grpc_stream_id;                  /* google.golang.org/grpc/internal/transport.Stream.id */
	__u64 grpc_out_stream_id;              /* transport.outStream.id */
	__u64 grpc_out_stream_itl;             /* transport.outStream.itl (*itemList: the stream's queued frames) */
	__u64 grpc_item_list_head;             /* transport.itemList.head (*itemNode) */
	__u64 grpc_item_node_it;               /* transport.itemNode.it (interface{}: the queued *headerFrame) */
	__u64 grpc_header_frame_hf;            /* transport.headerFrame.hf ([]hpack.HeaderField) */
	__u64 streams;                         /* GO_NETHTTP_STREAMS_*: which stream owners this process reports */
};
_Static_assert(sizeof(struct go_nethttp_offsets) == 336, "go_nethttp_offsets layout");

/* Bits of go_nethttp_offsets.streams: whose HTTP/2 streams name their goroutine (GO_NETHTTP_EVENT_STREAM). */
#define GO_NETHTTP_STREAMS_HTTP2_SERVERS 7 /* bit 1 << i: handlers of http2_servers[i] */
#define GO_NETHTTP_STREAMS_GRPC_SERVER 8    /* grpc-go server handlers */
#define GO_NETHTTP_STREAMS_GRPC_CLIENT 16   /* grpc-go client calls */

/* Bits of go_nethttp_offsets.propagate. Any bit: trace contexts are kept in BPF for this process. */
#define GO_NETHTTP_PROPAGATE_HTTP1 1   /* net/http HTTP/1.x requests (transferWriter.writeHeader) */
#define GO_NETHTTP_PROPAGATE_HTTP2 2   /* net/http's bundled HTTP/2 client (http2ClientConn) */
#define GO_NETHTTP_PROPAGATE_X_HTTP2 4 /* golang.org/x/net/http2's client under a net/http.Transport (ClientConn) */
#define GO_NETHTTP_PROPAGATE_GRPC 8    /* grpc-go calls (its loopyWriter, on golang.org/x/net/http2's Framer) */

/* A span's identity decided in BPF (only with context propagation: the injected traceparent must name
 * the client span before user space sees any event). Ids are numbers whose big-endian bytes are the W3C
 * ids: trace-id = trace_id_high, trace_id_low; all zero with `valid` 0 when user space picks the ids. */
struct go_nethttp_span_context {
	__u64 trace_id_high;
	__u64 trace_id_low;
	__u64 span_id;
	__u64 parent_span_id; /* 0: a root span */
	__u8 flags;           /* W3C trace-flags */
	__u8 valid;
	__u8 reserved[6];
};
_Static_assert(sizeof(struct go_nethttp_span_context) == 40, "go_nethttp_span_context layout");

/* Keys of the propagation maps go_nethttp_serving / go_nethttp_client_headers and go_nethttp_outgoing. */
struct go_nethttp_goroutine_key {
	__u32 tgid;
	__u32 reserved;
	__u64 goid;
};
_Static_assert(sizeof(struct go_nethttp_goroutine_key) == 16, "go_nethttp_goroutine_key layout");

struct go_nethttp_header_key {
	__u32 tgid;
	__u32 reserved;
	__u64 header; /* what names a client request: its net/http.Header map, or grpc-go's []hpack.HeaderField array */
};
_Static_assert(sizeof(struct go_nethttp_header_key) == 16, "go_nethttp_header_key layout");

/* Length of the header line written into an outgoing request:
 * "Traceparent: 00-" 32 hex "-" 16 hex "-" 2 hex "\r\n". */
#define GO_NETHTTP_TRACEPARENT_LINE 70

/* An HPACK "literal header field without indexing, new name" (RFC 7541 6.2.2) for traceparent: 0x00, name
 * length 11, "traceparent", value length 55, the value. Appended to a client's HEADERS frame; it leaves the
 * peer's dynamic table alone. */
#define GO_NETHTTP_TRACEPARENT_FIELD 69

/* Slots of the per-CPU array go_nethttp_propagation_counts. */
#define GO_NETHTTP_PROPAGATION_INJECTED 0 /* a traceparent was written into a request */
#define GO_NETHTTP_PROPAGATION_SKIPPED 1  /* the request's buffer had no room or did not hold what was expected */

/* Context propagation only. GO_NETHTTP_EVENT_SERVER_CONTEXT: read(2) returned the head of an HTTP/1.x
 * request in goroutine `goid`, and BPF decided its server span's ids (an incoming traceparent honoured).
 * GO_NETHTTP_EVENT_INJECTED: goroutine `goid` wrote an HTTP/2 request's HEADERS frame with a traceparent
 * naming the client span `context` (its parent included, which the header cannot carry). */
struct go_nethttp_context_event {
	struct tracer_event_header header;
	__u64 goid;
	struct go_nethttp_span_context context;
};
_Static_assert(sizeof(struct go_nethttp_context_event) == 72, "go_nethttp_context_event layout");

/* GO_NETHTTP_EVENT_STREAM: HTTP/2 stream `stream_id` of the connection whose frames goroutine `mover_goid`
 * moves -- reads, on a server (the connection's reader goroutine); writes, on a client (grpc-go's loopyWriter)
 * -- is served or called by goroutine `goid`: the handler that net/http or grpc-go started for it, or the
 * goroutine that made the gRPC call. */
struct go_nethttp_stream_event {
	struct tracer_event_header header;
	__u64 goid;
	__u64 parent_goid;   /* goid's creator (go1.21+), 0 when unknown */
	__u64 mover_goid;
	__u32 stream_id;
	__u8 role;           /* GO_NETHTTP_STREAM_SERVED or GO_NETHTTP_STREAM_CALLED */
	__u8 reserved[3];
};
_Static_assert(sizeof(struct go_nethttp_stream_event) == 56, "go_nethttp_stream_event layout");

#define GO_NETHTTP_STREAM_SERVED 1 /* a server stream's handler */
#define GO_NETHTTP_STREAM_CALLED 2 /* a client stream's caller */

/* GO_NETHTTP_EVENT_CLIENT_START: uprobe at the entry of net/http.(*Transport).roundTrip. */
struct go_nethttp_client_start_event {
	struct tracer_event_header header;
	__u64 goid;          /* the calling goroutine (a handler's, for calls made while serving) */
	__u64 parent_goid;   /* the goroutine that started it (go1.21+), 0 when unknown */
	__u16 method_length; /* bytes kept of each string below */
	__u16 scheme_length;
	__u16 host_length;
	__u16 path_length;
	__u16 query_length;
	__u8 query_truncated; /* the raw query was longer than GO_NETHTTP_QUERY_CAPTURE */
	__u8 path_truncated;  /* the path was longer than GO_NETHTTP_PATH_CAPTURE */
	__u32 reserved;
	struct go_nethttp_span_context context; /* the client span's ids, as written into the request */
	char method[GO_NETHTTP_METHOD_CAPTURE];
	char scheme[GO_NETHTTP_SCHEME_CAPTURE];
	char host[GO_NETHTTP_HOST_CAPTURE];
	char path[GO_NETHTTP_PATH_CAPTURE];
	char query[GO_NETHTTP_QUERY_CAPTURE];
};
_Static_assert(sizeof(struct go_nethttp_client_start_event) == 760, "go_nethttp_client_start_event layout");

/* GO_NETHTTP_EVENT_CLIENT_END: uprobes at every RET of net/http.(*Transport).roundTrip. */
struct go_nethttp_client_end_event {
	struct tracer_event_header header;
	__u64 goid;
	__s64 status_code;   /* net/http.Response.StatusCode, 0 without a response */
	__u8 failed;         /* roundTrip returned a non-nil error */
	__u8 reserved[7];
};
_Static_assert(sizeof(struct go_nethttp_client_end_event) == 48, "go_nethttp_client_end_event layout");

#endif
