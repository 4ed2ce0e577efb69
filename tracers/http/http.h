/* Layouts shared by tracers/http/http.bpf.c and the Swift HTTP tracer (imported through CTracerABI).
 * Fixed-width types only, explicit padding, sizes asserted. */
#ifndef TRACER_HTTP_H
#define TRACER_HTTP_H

#include "../../bpf/tracer_common.h"

/* tracer_event_header.type of the HTTP tracer (its range is 100-199). */
#define HTTP_EVENT_EXCHANGE 100

/* Bytes kept of each request (request line and headers: method, target, traceparent) and of each
 * response (status line). Powers of two: the BPF side masks offsets with them. */
#define HTTP_REQUEST_CAPTURE 512
#define HTTP_RESPONSE_CAPTURE 64

/* http_event.role: which side of the connection the traced process is. */
#define HTTP_ROLE_SERVER 1 /* it read the request and wrote the response */
#define HTTP_ROLE_CLIENT 2 /* it wrote the request and read the response */

/* http_event.flags */
#define HTTP_FLAG_TLS 1         /* plaintext seen in SSL_read/SSL_write (libssl uprobes) */
#define HTTP_FLAG_ACCEPTED 2    /* the fd came from accept()/accept4() while traced */
#define HTTP_FLAG_CONNECTED 4   /* the fd was connect()ed while traced */
#define HTTP_FLAG_NO_RESPONSE 8 /* the exchange ended (close, next request) before a response was seen */

/* One request/response exchange on one connection of one process. */
struct http_event {
	struct tracer_event_header header; /* type HTTP_EVENT_EXCHANGE; timestamp_ns = when it was emitted */
	__u64 start_ns;         /* first byte of the request read (server) or written (client) */
	__u64 end_ns;           /* last byte of the response written (server) or read (client) */
	__u64 request_bytes;    /* request bytes seen (headers and body, all reads) */
	__u64 response_bytes;   /* response bytes seen */
	__u32 fd;               /* the socket's fd in the process (pseudo fd >= 0x80000000 for TLS without one) */
	__u16 local_port;       /* host byte order */
	__u16 peer_port;        /* host byte order */
	__u8 local_addr[16];    /* IPv4 in the first 4 bytes when family is AF_INET */
	__u8 peer_addr[16];
	__u8 family;            /* AF_INET (2), AF_INET6 (10), 0 when unknown */
	__u8 role;              /* HTTP_ROLE_* */
	__u8 flags;             /* HTTP_FLAG_* */
	__u8 pipeline_index;    /* which request in request[] this exchange answers (pipelining), 0 mostly */
	__u16 request_len;      /* valid bytes in request[] */
	__u16 response_len;     /* valid bytes in response[] */
	__u8 request[HTTP_REQUEST_CAPTURE];
	__u8 response[HTTP_RESPONSE_CAPTURE];
};
_Static_assert(sizeof(struct http_event) == 680, "http_event layout");

#endif
