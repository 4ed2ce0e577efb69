/* Events of the Go net/http tracer (tracers/go-nethttp), shared by go_nethttp.bpf.c and Swift
 * (through CTracerABI). Fixed-width types, explicit padding, sizes asserted. */
#ifndef GO_NETHTTP_H
#define GO_NETHTTP_H

#include "../../bpf/tracer_common.h"

/* tracer_event_header.type values (the go-nethttp range is 200-299). */
#define GO_NETHTTP_EVENT_REQUEST 200      /* server: a read returned the head of an HTTP/1.x request */
#define GO_NETHTTP_EVENT_WRITE 201        /* server: bytes written on a connection that carries a request */
#define GO_NETHTTP_EVENT_CLOSE 202        /* server: that connection was closed */
#define GO_NETHTTP_EVENT_CLIENT_START 203 /* client: net/http.(*Transport).roundTrip entered */
#define GO_NETHTTP_EVENT_CLIENT_END 204   /* client: net/http.(*Transport).roundTrip returned */

/* Records carrying captured bytes are reserved in size classes (fixed part + 128, 512 or the maximum
 * below), so a small request or response head does not take a kilobyte of ring buffer. */
#define GO_NETHTTP_CAPTURE_CLASS_SMALL 128
#define GO_NETHTTP_CAPTURE_CLASS_MEDIUM 512

/* Bytes of a request kept from the read that carried its head (request line and headers). */
#define GO_NETHTTP_REQUEST_CAPTURE 1024
/* Bytes kept from the start of each response write (the status line and headers of the first one). */
#define GO_NETHTTP_RESPONSE_CAPTURE 512
/* Bytes kept from the end of each response write (to see a chunked body's last chunk). */
#define GO_NETHTTP_TAIL_CAPTURE 8
/* Lengths kept of the client request's method, URL scheme, host, path and raw query. */
#define GO_NETHTTP_METHOD_CAPTURE 16
#define GO_NETHTTP_SCHEME_CAPTURE 8
#define GO_NETHTTP_HOST_CAPTURE 128
#define GO_NETHTTP_PATH_CAPTURE 256
#define GO_NETHTTP_QUERY_CAPTURE 256

/* Per-process layout facts, written by the Swift side before the process is allowed (map
 * go_nethttp_offsets, keyed by host TGID). Offsets come from DWARF or the offsets table; never guessed. */
struct go_nethttp_offsets {
	__s64 g_tls_offset;          /* where runtime.g's pointer sits relative to the FS base (-8 internally linked) */
	__u64 g_goid;                /* runtime.g.goid */
	__u64 request_method;        /* net/http.Request.Method */
	__u64 request_url;           /* net/http.Request.URL */
	__u64 url_scheme;            /* net/url.URL.Scheme */
	__u64 url_host;              /* net/url.URL.Host */
	__u64 url_path;              /* net/url.URL.Path */
	__u64 url_raw_query;         /* net/url.URL.RawQuery */
	__u64 response_status_code;  /* net/http.Response.StatusCode */
};
_Static_assert(sizeof(struct go_nethttp_offsets) == 72, "go_nethttp_offsets layout");

/* A connection's addresses, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d); ports in host order. */
struct go_nethttp_addresses {
	__u8 local_address[16];
	__u8 remote_address[16];
	__u16 local_port;
	__u16 remote_port;
	__u32 reserved;
};
_Static_assert(sizeof(struct go_nethttp_addresses) == 40, "go_nethttp_addresses layout");

/* GO_NETHTTP_EVENT_REQUEST: emitted at the exit of read(2) when the bytes read start with an HTTP method. */
struct go_nethttp_request_event {
	struct tracer_event_header header; /* timestamp: the read returned */
	__u64 goid;          /* goroutine that read the request (net/http.(*conn).serve, which also runs the handler) */
	__u32 fd;
	__u32 length;        /* bytes the read returned */
	__u32 captured;      /* bytes in data */
	__u8 prefix;         /* first byte of the request when a 1-byte background read took it, else 0 */
	__u8 reserved[3];
	struct go_nethttp_addresses addresses;
	__u8 data[];         /* `captured` bytes; the record is sized by class (see GO_NETHTTP_CAPTURE_CLASS_*) */
};
_Static_assert(sizeof(struct go_nethttp_request_event) == 88, "go_nethttp_request_event layout");

/* GO_NETHTTP_EVENT_WRITE: emitted at the exit of write(2) on a connection that carried a request. */
struct go_nethttp_write_event {
	struct tracer_event_header header; /* timestamp: the write returned */
	__u32 fd;
	__u32 length;        /* bytes the write sent */
	__u32 captured;      /* bytes in data */
	__u32 tail_captured; /* bytes in tail */
	__u8 tail[GO_NETHTTP_TAIL_CAPTURE];
	__u8 data[];         /* `captured` bytes; the record is sized by class */
};
_Static_assert(sizeof(struct go_nethttp_write_event) == 48, "go_nethttp_write_event layout");

/* GO_NETHTTP_EVENT_CLOSE: emitted at the exit of close(2) for a connection that carried a request. */
struct go_nethttp_close_event {
	struct tracer_event_header header;
	__u32 fd;
	__u32 reserved;
};
_Static_assert(sizeof(struct go_nethttp_close_event) == 32, "go_nethttp_close_event layout");

/* GO_NETHTTP_EVENT_CLIENT_START: uprobe at the entry of net/http.(*Transport).roundTrip. */
struct go_nethttp_client_start_event {
	struct tracer_event_header header;
	__u64 goid;          /* the calling goroutine (a handler's, for calls made while serving) */
	__u16 method_length; /* bytes kept of each string below */
	__u16 scheme_length;
	__u16 host_length;
	__u16 path_length;
	__u16 query_length;
	__u8 query_truncated; /* the raw query was longer than GO_NETHTTP_QUERY_CAPTURE */
	__u8 path_truncated;  /* the path was longer than GO_NETHTTP_PATH_CAPTURE */
	__u32 reserved;
	char method[GO_NETHTTP_METHOD_CAPTURE];
	char scheme[GO_NETHTTP_SCHEME_CAPTURE];
	char host[GO_NETHTTP_HOST_CAPTURE];
	char path[GO_NETHTTP_PATH_CAPTURE];
	char query[GO_NETHTTP_QUERY_CAPTURE];
};
_Static_assert(sizeof(struct go_nethttp_client_start_event) == 712, "go_nethttp_client_start_event layout");

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
