// SPDX-License-Identifier: GPL-2.0
/* Go net/http tracer: client calls. (Server requests are HTTP/1 exchanges of the shared capture layer,
 * whose chunks name their goroutine: no probe here.)
 *
 * Client side: net/http.(*Transport).roundTrip, entry and every RET (never a uretprobe: Go moves stacks).
 * The caller's goroutine id ties a client call made by a handler to the server request it serves.
 *
 * Context propagation (only with go_nethttp_propagate, on kernels that allow bpf_probe_write_user): the
 * server request's ids are decided here (an incoming traceparent parsed from the head read(2) returned,
 * seen by a sys_exit raw tracepoint attached only then), the client call takes its parent from the
 * goroutine's server request, and a uprobe at the entry of
 * net/http.(*transferWriter).writeHeader -- called by net/http.(*Request).write between the request's
 * User-Agent line and its other headers -- appends a "Traceparent:" line to the bufio.Writer the request
 * is being written into. */
#include "tracer_common.bpf.h"
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "go_nethttp.h"

char LICENSE[] SEC("license") = "GPL";

/* Anchors the event structs in the object's BTF (layout tests compare them with Swift's view). */
const struct go_nethttp_context_event *go_nethttp_context_anchor __attribute__((unused));
const struct go_nethttp_client_start_event *go_nethttp_client_start_anchor __attribute__((unused));
const struct go_nethttp_client_end_event *go_nethttp_client_end_anchor __attribute__((unused));
const struct go_nethttp_stream_event *go_nethttp_stream_anchor __attribute__((unused));

/* Host TGID -> struct offsets of that process (written before the process is allowed). A process
 * without an entry is not traced by this object. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct go_nethttp_offsets);
} go_nethttp_offsets SEC(".maps");

/* (TGID << 32 | fd) -> the one byte that net/http.(*connReader).backgroundRead took from the next
 * request while the previous handler was finishing (the conn goroutine then reads the rest). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} go_nethttp_first_bytes SEC(".maps");

/* Set before load: 1 with --context-propagation on a kernel that allows bpf_probe_write_user. The
 * verifier drops every propagation path when it is 0. */
const volatile __u8 go_nethttp_propagate = 0;

/* (TGID, goid) -> ids of the server request that goroutine is handling (propagation only). LRU: a
 * goroutine that ends keeps its entry until it ages out; goids are never reused. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_nethttp_goroutine_key);
	__type(value, struct go_nethttp_span_context);
} go_nethttp_serving SEC(".maps");

/* (TGID, goid) -> Header map pointer of the request that goroutine has in roundTrip (propagation only). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_nethttp_goroutine_key);
	__type(value, __u64);
} go_nethttp_client_headers SEC(".maps");

/* (TGID, Header map pointer) -> client span ids to write into that request, from roundTrip's entry
 * to its return. The request is written by another goroutine (net/http.(*persistConn).writeLoop, or the
 * HTTP/2 client's per-request one), which finds it by its Header map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_nethttp_header_key);
	__type(value, struct go_nethttp_span_context);
} go_nethttp_outgoing SEC(".maps");

/* GO_NETHTTP_PROPAGATION_* counts, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} go_nethttp_propagation_counts SEC(".maps");

/* A Go string header (runtime.stringStruct). */
struct go_string {
	__u64 pointer;
	__s64 length;
};

/* Whether `b` starts with an HTTP/1.x request method and a space. */
static __always_inline int is_request_line(const __u8 *b)
{
	switch (b[0]) {
	case 'G': return b[1] == 'E' && b[2] == 'T' && b[3] == ' ';
	case 'P':
		return (b[1] == 'O' && b[2] == 'S' && b[3] == 'T' && b[4] == ' ') ||
		       (b[1] == 'U' && b[2] == 'T' && b[3] == ' ') ||
		       (b[1] == 'A' && b[2] == 'T' && b[3] == 'C' && b[4] == 'H' && b[5] == ' ');
	case 'H': return b[1] == 'E' && b[2] == 'A' && b[3] == 'D' && b[4] == ' ';
	case 'D': return b[1] == 'E' && b[2] == 'L' && b[3] == 'E' && b[4] == 'T' && b[5] == 'E' && b[6] == ' ';
	case 'O': return b[1] == 'P' && b[2] == 'T' && b[3] == 'I' && b[4] == 'O' && b[5] == 'N' && b[6] == 'S' && b[7] == ' ';
	case 'C': return b[1] == 'O' && b[2] == 'N' && b[3] == 'N' && b[4] == 'E' && b[5] == 'C' && b[6] == 'T' && b[7] == ' ';
	case 'T': return b[1] == 'R' && b[2] == 'A' && b[3] == 'C' && b[4] == 'E' && b[5] == ' ';
	default: return 0;
	}
}

/* The goroutine running on this thread: runtime.g from the thread's TLS slot (FS base + tlsg offset,
 * read from task_struct.thread.fsbase), then runtime.g.goid. 0 when unreadable. */
static __always_inline __u64 current_goid(const struct go_nethttp_offsets *offsets)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 fsbase = BPF_CORE_READ(task, thread.fsbase);
	__u64 g = 0, goid = 0;
	if (!fsbase || bpf_probe_read_user(&g, sizeof(g), (void *)(fsbase + offsets->g_tls_offset)) || !g)
		return 0;
	bpf_probe_read_user(&goid, sizeof(goid), (void *)(g + offsets->g_goid));
	return goid;
}

/* min(value, limit) for a size passed to a helper, clamped on the register the helper gets: clang would
 * otherwise clamp a copy, and Linux 6.1's verifier then sees an unbounded size. `value` must be >= 0. */
static __always_inline __u32 at_most(__u64 value, const __u32 limit)
{
	__u32 bounded = value > limit ? limit : value;
	asm volatile("" : "+r"(bounded)); /* clang may not reuse what it knows of `bounded` below */
	return bounded > limit ? limit : bounded;
}

static __always_inline __u64 random_u64(void)
{
	return (__u64)bpf_get_prandom_u32() << 32 | bpf_get_prandom_u32();
}

/* Value of one hex digit, or -1. */
static __always_inline int hex_digit(__u8 c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Parses `digits` hex digits at `text` into *value; returns 0 on success. */
static __always_inline int parse_hex(const __u8 *text, const int digits, __u64 *value)
{
	__u64 result = 0;
	for (int i = 0; i < digits; i++) {
		int digit = hex_digit(text[i]);
		if (digit < 0)
			return -1;
		result = result << 4 | digit;
	}
	*value = result;
	return 0;
}

/* A traceparent header value as read from the request: up to 8 spaces, then "00-" 32 hex "-" 16 hex "-"
 * 2 hex. */
struct traceparent_text {
	__u8 bytes[64];
};

/* Fills the trace id, the parent span id and the flags of `context` from `text`; returns 0 on success
 * (W3C: all-zero ids are invalid). A global function: the verifier checks it once, not per caller path. */
__noinline int go_nethttp_parse_traceparent(const struct traceparent_text *text, struct go_nethttp_span_context *context)
{
	if (!text || !context)
		return -1;
	int skip = 0;
	for (; skip < 8 && text->bytes[skip] == ' '; skip++)
		;
	const __u8 *value = text->bytes + (skip & 7);
	__u64 flags = 0;
	if (value[0] != '0' || value[1] != '0' || value[2] != '-' || value[35] != '-' || value[52] != '-')
		return -1;
	if (parse_hex(value + 3, 16, &context->trace_id_high) || parse_hex(value + 19, 16, &context->trace_id_low) ||
	    parse_hex(value + 36, 16, &context->parent_span_id) || parse_hex(value + 53, 2, &flags))
		return -1;
	if ((!context->trace_id_high && !context->trace_id_low) || !context->parent_span_id)
		return -1;
	context->flags = flags;
	return 0;
}

/* "\n" "traceparent:" at h, the header name in any case. */
static __always_inline int is_traceparent_header(const __u8 *h)
{
	return h[0] == '\n' && (h[1] | 0x20) == 't' && (h[2] | 0x20) == 'r' && (h[3] | 0x20) == 'a' &&
	       (h[4] | 0x20) == 'c' && (h[5] | 0x20) == 'e' && (h[6] | 0x20) == 'p' && (h[7] | 0x20) == 'a' &&
	       (h[8] | 0x20) == 'r' && (h[9] | 0x20) == 'e' && (h[10] | 0x20) == 'n' && (h[11] | 0x20) == 't' &&
	       h[12] == ':';
}

/* Bytes of a header line "\n" "traceparent:" and its 55-byte value. */
#define TRACEPARENT_HEADER_NAME 13
#define TRACEPARENT_VALUE 55

/* A request head copied for scanning, with room past the end for the name compared at the last byte. */
struct go_nethttp_scan_buffer {
	__u8 bytes[GO_NETHTTP_REQUEST_CAPTURE + 64];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct go_nethttp_scan_buffer);
} go_nethttp_scan SEC(".maps");

struct traceparent_scan {
	const __u8 *bytes; /* a go_nethttp_scan value */
	__u32 length;
	__s32 found;       /* offset of the "\n" before the header name, or -1 */
};

/* bpf_loop callback (Linux 5.17): looks at the 8 bytes at index * 8 for the traceparent header; a
 * word without a newline is passed over with one test. Returns 1 to stop. */
static long scan_for_traceparent(__u64 index, struct traceparent_scan *scan)
{
	__u32 position = (index * 8) & (GO_NETHTTP_REQUEST_CAPTURE - 1);
	if (position + TRACEPARENT_HEADER_NAME + TRACEPARENT_VALUE > scan->length)
		return 1;
	const __u8 *bytes = scan->bytes + position;
	__u64 newlines = *(const __u64 *)bytes ^ 0x0a0a0a0a0a0a0a0aULL;
	if (!((newlines - 0x0101010101010101ULL) & ~newlines & 0x8080808080808080ULL))
		return 0;
	for (int k = 0; k < 8; k++) {
		if (is_traceparent_header(bytes + k)) {
			scan->found = position + k;
			return 1;
		}
	}
	return 0;
}

/* The server span's ids for a request whose head was read into `buffer` (`length` bytes): the trace id
 * and parent from an incoming traceparent, else a new trace; a new span id. Remembered for the goroutine,
 * whose client calls become its children. */
static __always_inline void decide_server_context(__u64 buffer, long length, __u32 tgid, __u64 goid,
						  struct go_nethttp_span_context *context)
{
	__u32 zero = 0;
	struct go_nethttp_scan_buffer *copy = bpf_map_lookup_elem(&go_nethttp_scan, &zero);
	struct traceparent_scan scan = { .found = -1 };
	__u32 captured = at_most(length, GO_NETHTTP_REQUEST_CAPTURE);
	if (copy && !bpf_probe_read_user(copy->bytes, captured, (void *)buffer)) {
		scan.bytes = copy->bytes;
		scan.length = captured;
		bpf_loop((captured + 7) / 8, scan_for_traceparent, &scan, 0);
	}
	/* The value is parsed from a stack copy. */
	struct traceparent_text value;
	if (scan.found < 0 ||
	    bpf_probe_read_user(&value, sizeof(value), (void *)(buffer + scan.found + TRACEPARENT_HEADER_NAME)) ||
	    go_nethttp_parse_traceparent(&value, context)) {
		context->trace_id_high = random_u64();
		context->trace_id_low = random_u64();
		context->parent_span_id = 0;
		context->flags = 1;
	}
	context->span_id = random_u64();
	context->valid = 1;
	struct go_nethttp_goroutine_key key = { .tgid = tgid, .goid = goid };
	bpf_map_update_elem(&go_nethttp_serving, &key, context, BPF_ANY);
}

/* Hands the server span's ids to user space, which gives them to the span of the request this goroutine
 * reads (the capture layer's HTTP/1 exchange). */
static __always_inline void emit_server_context(void *ctx, __u64 goid, const struct go_nethttp_span_context *context)
{
	struct go_nethttp_context_event *event = tracer_reserve(sizeof(*event));
	if (!event)
		return;
	tracer_fill_header(&event->header, GO_NETHTTP_EVENT_SERVER_CONTEXT);
	event->goid = goid;
	event->context = *context;
	tracer_submit(ctx, event, sizeof(*event));
}

/* read(2) returned `length` bytes into `buffer`: for a request head (or the rest of one whose first byte
 * the background read took), decide the server span's ids. */
static __always_inline void on_read(void *ctx, __u32 tgid, __u32 fd, __u64 buffer, long length)
{
	if (!go_nethttp_propagate || length <= 0) /* most reads of a keep-alive connection return EAGAIN */
		return;
	struct go_nethttp_offsets *offsets = bpf_map_lookup_elem(&go_nethttp_offsets, &tgid);
	if (!offsets || !offsets->propagate || !tracer_pid_allowed(tgid))
		return;
	__u64 key = (__u64)tgid << 32 | fd;
	__u8 head[8] = {};
	if (length == 1) {
		/* net/http's background read asks for exactly one byte. */
		if (bpf_probe_read_user(head, 1, (void *)buffer) == 0 && head[0] >= 'A' && head[0] <= 'Z')
			bpf_map_update_elem(&go_nethttp_first_bytes, &key, &head[0], BPF_ANY);
		return;
	}
	/* The shortest request head, "GET / HTTP/1.0\r\n\r\n", has 18 bytes. */
	if (length < 16 || bpf_probe_read_user(head, sizeof(head), (void *)buffer))
		return;
	if (!is_request_line(head)) {
		__u8 *first = bpf_map_lookup_elem(&go_nethttp_first_bytes, &key);
		if (!first)
			return;
		__u8 joined[8] = { *first, head[0], head[1], head[2], head[3], head[4], head[5], head[6] };
		bpf_map_delete_elem(&go_nethttp_first_bytes, &key);
		if (!is_request_line(joined))
			return;
	}
	__u64 goid = current_goid(offsets);
	struct go_nethttp_span_context context = {};
	decide_server_context(buffer, length, tgid, goid, &context);
	emit_server_context(ctx, goid, &context);
}

/* Every syscall exit (raw tracepoint sys_exit: struct pt_regs *regs, long ret), attached only with context
 * propagation: only read(2) of x86-64 goes further; its arguments are in the saved user registers. */
SEC("raw_tp/sys_exit")
int go_nethttp_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	if (BPF_CORE_READ(regs, orig_ax) != 0 /* read */)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	on_read(ctx, tgid, (__u32)BPF_CORE_READ(regs, di), BPF_CORE_READ(regs, si), (long)ctx->args[1]);
	return 0;
}

/* Copies Go string `field` into `destination` (at most `capacity` bytes); returns the bytes kept and
 * sets *truncated when the string was longer. */
static __always_inline __u16 read_go_string(const void *field, char *destination, __u32 capacity, __u8 *truncated)
{
	struct go_string string = {};
	*truncated = 0;
	if (bpf_probe_read_user(&string, sizeof(string), field) || string.length <= 0 || !string.pointer)
		return 0;
	__u32 length = at_most(string.length, capacity);
	*truncated = string.length > capacity;
	if (bpf_probe_read_user(destination, length, (void *)string.pointer))
		return 0;
	return length;
}

/* New ids for a client span of goroutine `goid`: a child of the server request that goroutine handles, or
 * else the one its creator `parent_goid` handles (a handler's `go` statement), else a new trace. */
static __always_inline void new_client_context(__u32 tgid, __u64 goid, __u64 parent_goid, struct go_nethttp_span_context *context)
{
	struct go_nethttp_goroutine_key goroutine = { .tgid = tgid, .goid = goid };
	struct go_nethttp_span_context *server = bpf_map_lookup_elem(&go_nethttp_serving, &goroutine);
	if (!server && parent_goid) {
		struct go_nethttp_goroutine_key creator = { .tgid = tgid, .goid = parent_goid };
		server = bpf_map_lookup_elem(&go_nethttp_serving, &creator);
	}
	if (server) {
		context->trace_id_high = server->trace_id_high;
		context->trace_id_low = server->trace_id_low;
		context->parent_span_id = server->span_id;
		context->flags = server->flags;
	} else {
		context->trace_id_high = random_u64();
		context->trace_id_low = random_u64();
		context->parent_span_id = 0;
		context->flags = 1;
	}
	context->span_id = random_u64();
	context->valid = 1;
	__builtin_memset(context->reserved, 0, sizeof(context->reserved));
}

/* The client span's ids for the request at `request`, made by goroutine `goid` (new_client_context). Kept
 * under the request's Header map until roundTrip returns, for the probe that writes the request
 * (go_nethttp_inject_traceparent, go_nethttp_http2_encode_headers). Re-entry after stack growth keeps the
 * ids of the first entry. */
static __always_inline void decide_client_context(__u32 tgid, __u64 goid, __u64 parent_goid, __u64 request,
						  const struct go_nethttp_offsets *offsets,
						  struct go_nethttp_span_context *context)
{
	struct go_nethttp_goroutine_key goroutine = { .tgid = tgid, .goid = goid };
	struct go_nethttp_header_key outgoing = { .tgid = tgid };
	bpf_probe_read_user(&outgoing.header, sizeof(outgoing.header), (void *)(request + offsets->request_header));
	__u64 *pending = bpf_map_lookup_elem(&go_nethttp_client_headers, &goroutine);
	if (pending && *pending == outgoing.header) {
		struct go_nethttp_span_context *first = bpf_map_lookup_elem(&go_nethttp_outgoing, &outgoing);
		if (first) {
			*context = *first;
			return;
		}
	}
	new_client_context(tgid, goid, parent_goid, context);
	if (!outgoing.header)
		return;
	bpf_map_update_elem(&go_nethttp_outgoing, &outgoing, context, BPF_ANY);
	bpf_map_update_elem(&go_nethttp_client_headers, &goroutine, &outgoing.header, BPF_ANY);
}

/* func (t *Transport) roundTrip(req *Request) (*Response, error), Go ABIInternal (go1.17+, amd64):
 * t in RAX, req in RBX, the current g in R14. Entry and stack-growth re-entry both land here; the
 * Swift side keeps the first start of a goroutine's pending call. */
SEC("uprobe")
int go_nethttp_round_trip(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_nethttp_offsets *offsets = bpf_map_lookup_elem(&go_nethttp_offsets, &tgid);
	if (!offsets || !tracer_pid_allowed(tgid))
		return 0;
	struct go_nethttp_client_start_event *event = tracer_reserve(sizeof(*event));
	if (!event)
		return 0;
	tracer_fill_header(&event->header, GO_NETHTTP_EVENT_CLIENT_START);
	event->goid = event->parent_goid = 0;
	bpf_probe_read_user(&event->goid, sizeof(event->goid), (void *)(ctx->r14 + offsets->g_goid));
	if (offsets->g_parent_goid)
		bpf_probe_read_user(&event->parent_goid, sizeof(event->parent_goid), (void *)(ctx->r14 + offsets->g_parent_goid));
	__u64 request = ctx->bx, url = 0;
	__u8 ignored = 0;
	event->reserved = 0;
	event->method_length = read_go_string((void *)(request + offsets->request_method), event->method,
					      GO_NETHTTP_METHOD_CAPTURE, &ignored);
	bpf_probe_read_user(&url, sizeof(url), (void *)(request + offsets->request_url));
	if (url) {
		event->scheme_length = read_go_string((void *)(url + offsets->url_scheme), event->scheme,
						      GO_NETHTTP_SCHEME_CAPTURE, &ignored);
		event->host_length = read_go_string((void *)(url + offsets->url_host), event->host,
						    GO_NETHTTP_HOST_CAPTURE, &ignored);
		event->path_length = read_go_string((void *)(url + offsets->url_path), event->path,
						    GO_NETHTTP_PATH_CAPTURE, &event->path_truncated);
		event->query_length = read_go_string((void *)(url + offsets->url_raw_query), event->query,
						     GO_NETHTTP_QUERY_CAPTURE, &event->query_truncated);
	} else {
		event->scheme_length = event->host_length = event->path_length = event->query_length = 0;
		event->path_truncated = event->query_truncated = 0;
	}
	struct go_nethttp_span_context context = {};
	if (go_nethttp_propagate && offsets->propagate)
		decide_client_context(tgid, event->goid, event->parent_goid, request, offsets, &context);
	event->context = context;
	tracer_submit(ctx, event, sizeof(*event));
	return 0;
}

/* The call of goroutine `goid` returned: its request is written, nothing more to inject. */
static __always_inline void forget_client_context(__u32 tgid, __u64 goid)
{
	struct go_nethttp_goroutine_key goroutine = { .tgid = tgid, .goid = goid };
	__u64 *header = bpf_map_lookup_elem(&go_nethttp_client_headers, &goroutine);
	if (!header)
		return;
	struct go_nethttp_header_key outgoing = { .tgid = tgid, .header = *header };
	bpf_map_delete_elem(&go_nethttp_outgoing, &outgoing);
	bpf_map_delete_elem(&go_nethttp_client_headers, &goroutine);
}

/* At each RET of roundTrip: *Response in RAX, the error interface (itab, data) in RBX, RCX. */
SEC("uprobe")
int go_nethttp_round_trip_return(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_nethttp_offsets *offsets = bpf_map_lookup_elem(&go_nethttp_offsets, &tgid);
	if (!offsets || !tracer_pid_allowed(tgid))
		return 0;
	__u64 goid = 0;
	bpf_probe_read_user(&goid, sizeof(goid), (void *)(ctx->r14 + offsets->g_goid));
	if (go_nethttp_propagate && offsets->propagate)
		forget_client_context(tgid, goid);
	struct go_nethttp_client_end_event *event = tracer_reserve(sizeof(*event));
	if (!event)
		return 0;
	tracer_fill_header(&event->header, GO_NETHTTP_EVENT_CLIENT_END);
	event->goid = goid;
	__u64 response = ctx->ax;
	event->status_code = 0;
	if (response)
		bpf_probe_read_user(&event->status_code, sizeof(event->status_code),
				    (void *)(response + offsets->response_status_code));
	event->failed = ctx->bx != 0;
	__builtin_memset(event->reserved, 0, sizeof(event->reserved));
	tracer_submit(ctx, event, sizeof(*event));
	return 0;
}

static __always_inline void count_propagation(__u32 slot)
{
	tracer_count(&go_nethttp_propagation_counts, slot);
}

static __always_inline char hex_character(__u64 nibble)
{
	nibble &= 0xf;
	return nibble < 10 ? '0' + nibble : 'a' + nibble - 10;
}

/* Writes the 16 hex digits of `value` (most significant first) to `out`. */
static __always_inline void format_hex64(__u64 value, char *out)
{
	for (int i = 15; i >= 0; i--) {
		out[i] = hex_character(value);
		value >>= 4;
	}
}

/* func (t *transferWriter) writeHeader(w io.Writer, trace *httptrace.ClientTrace) error: t in RAX, the
 * writer interface (itab, data) in RBX, RCX. Loaded only with context propagation. net/http.(*Request).write
 * calls it right after the request line, Host and User-Agent went into the bufio.Writer that
 * persistConn.writeLoop passed (pc.bw); a request whose Header map roundTrip recorded gets a
 * "Traceparent:" line appended there. Nothing is written unless the writer's buffer has room and already
 * starts with an HTTP request line (which also confirms the layout read). */
SEC("uprobe")
int go_nethttp_inject_traceparent(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_nethttp_offsets *offsets = bpf_map_lookup_elem(&go_nethttp_offsets, &tgid);
	if (!go_nethttp_propagate || !offsets || !(offsets->propagate & GO_NETHTTP_PROPAGATE_HTTP1) || !tracer_pid_allowed(tgid))
		return 0;
	struct go_nethttp_header_key outgoing = { .tgid = tgid };
	if (bpf_probe_read_user(&outgoing.header, sizeof(outgoing.header), (void *)(ctx->ax + offsets->transfer_writer_header)))
		return 0;
	struct go_nethttp_span_context *context = bpf_map_lookup_elem(&go_nethttp_outgoing, &outgoing);
	if (!context)
		return 0;
	__u64 writer = ctx->cx;
	struct { __u64 pointer; __s64 length; __s64 capacity; } buffer = {};
	__s64 used = 0;
	__u8 head[8] = {};
	if (bpf_probe_read_user(&buffer, sizeof(buffer), (void *)(writer + offsets->bufio_writer_buf)) ||
	    bpf_probe_read_user(&used, sizeof(used), (void *)(writer + offsets->bufio_writer_n)) ||
	    used < 16 || buffer.length > buffer.capacity || used + GO_NETHTTP_TRACEPARENT_LINE > buffer.length ||
	    bpf_probe_read_user(head, sizeof(head), (void *)buffer.pointer) || !is_request_line(head)) {
		count_propagation(GO_NETHTTP_PROPAGATION_SKIPPED);
		return 0;
	}
	char line[GO_NETHTTP_TRACEPARENT_LINE] = "Traceparent: 00-";
	format_hex64(context->trace_id_high, &line[16]);
	format_hex64(context->trace_id_low, &line[32]);
	line[48] = '-';
	format_hex64(context->span_id, &line[49]);
	line[65] = '-';
	line[66] = hex_character(context->flags >> 4);
	line[67] = hex_character(context->flags);
	line[68] = '\r';
	line[69] = '\n';
	if (bpf_probe_write_user((void *)(buffer.pointer + used), line, sizeof(line)))
		return 0;
	used += GO_NETHTTP_TRACEPARENT_LINE;
	bpf_probe_write_user((void *)(writer + offsets->bufio_writer_n), &used, sizeof(used));
	count_propagation(GO_NETHTTP_PROPAGATION_INJECTED);
	return 0;
}

/* A request's HEADERS frame to be written by one goroutine, and where it will be: the framer that writes it
 * and the buffered writer it goes into, with the offsets of their fields in this binary. */
struct http2_armed_request {
	struct go_nethttp_span_context context;
	__u64 framer;
	__u64 framer_wbuf;   /* offset of the framer's wbuf */
	__u64 writer;
	__u64 writer_buf;    /* offset of the writer's buffer ([]byte) */
	__u64 writer_used;   /* offset of the writer's count of buffered bytes (int) */
};

/* (TGID, goid) -> the HEADERS frame that goroutine writes next (propagation only): armed where the request's
 * header block is encoded, used up by the framer's WriteHeaders. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_nethttp_goroutine_key);
	__type(value, struct http2_armed_request);
} go_nethttp_http2_armed SEC(".maps");

/* (TGID, []hpack.HeaderField array) -> client span ids of a grpc-go call, from the caller's goroutine
 * (createHeaderFields) to the loopyWriter goroutine that encodes those fields (propagation only). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_nethttp_header_key);
	__type(value, struct go_nethttp_span_context);
} go_nethttp_grpc_calls SEC(".maps");

/* The goroutine running this uprobe's function (Go ABIInternal: the current g in R14). */
static __always_inline __u64 probed_goid(const struct pt_regs *ctx, const struct go_nethttp_offsets *offsets)
{
	__u64 goid = 0;
	bpf_probe_read_user(&goid, sizeof(goid), (void *)(ctx->r14 + offsets->g_goid));
	return goid;
}

/* The offsets of a traced process whose requests of kind `bit` (GO_NETHTTP_PROPAGATE_*) get a traceparent. */
static __always_inline struct go_nethttp_offsets *propagating(__u32 tgid, __u64 bit)
{
	if (!go_nethttp_propagate)
		return 0;
	struct go_nethttp_offsets *offsets = bpf_map_lookup_elem(&go_nethttp_offsets, &tgid);
	if (!offsets || !(offsets->propagate & bit) || !tracer_pid_allowed(tgid))
		return 0;
	return offsets;
}

/* Reads the pointer at `address`; 0 when unreadable. */
static __always_inline __u64 read_pointer(__u64 address)
{
	__u64 pointer = 0;
	bpf_probe_read_user(&pointer, sizeof(pointer), (void *)address);
	return pointer;
}

/* func (cc *ClientConn) encodeHeaders(req *Request, addGzipHeader bool, trailers string, contentLength int64)
 * ([]byte, error), net/http's bundled http2ClientConn or golang.org/x/net/http2's: cc in RAX, req in RBX. The
 * goroutine that encodes a request's header block writes its HEADERS frame next, with cc.fr into cc.bw; when
 * roundTrip decided ids for the request (go_nethttp_outgoing, by its Header map), that frame is armed. */
static __always_inline void arm_http2_request(struct pt_regs *ctx, __u32 tgid, const struct go_nethttp_offsets *offsets,
					      __u64 conn_fr, __u64 conn_bw, __u64 framer_wbuf)
{
	struct go_nethttp_header_key outgoing = { .tgid = tgid };
	if (bpf_probe_read_user(&outgoing.header, sizeof(outgoing.header), (void *)(ctx->bx + offsets->request_header)))
		return;
	struct go_nethttp_span_context *context = bpf_map_lookup_elem(&go_nethttp_outgoing, &outgoing);
	if (!context)
		return;
	struct http2_armed_request armed = {
		.context = *context,
		.framer = read_pointer(ctx->ax + conn_fr),
		.framer_wbuf = framer_wbuf,
		.writer = read_pointer(ctx->ax + conn_bw),
		.writer_buf = offsets->bufio_writer_buf,
		.writer_used = offsets->bufio_writer_n,
	};
	struct go_nethttp_goroutine_key goroutine = { .tgid = tgid, .goid = probed_goid(ctx, offsets) };
	bpf_map_update_elem(&go_nethttp_http2_armed, &goroutine, &armed, BPF_ANY);
}

/* net/http.(*http2ClientConn).encodeHeaders entry: arm_http2_request. */
SEC("uprobe")
int go_nethttp_http2_encode_headers(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_nethttp_offsets *offsets = propagating(tgid, GO_NETHTTP_PROPAGATE_HTTP2);
	if (offsets)
		arm_http2_request(ctx, tgid, offsets, offsets->http2_client_conn_fr, offsets->http2_client_conn_bw,
				  offsets->http2_framer_wbuf);
	return 0;
}

/* golang.org/x/net/http2.(*ClientConn).encodeHeaders entry: arm_http2_request. */
SEC("uprobe")
int go_nethttp_x_http2_encode_headers(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_nethttp_offsets *offsets = propagating(tgid, GO_NETHTTP_PROPAGATE_X_HTTP2);
	if (offsets)
		arm_http2_request(ctx, tgid, offsets, offsets->x_http2_client_conn_fr, offsets->x_http2_client_conn_bw,
				  offsets->x_http2_framer_wbuf);
	return 0;
}

/* A goroutine and the one that started it (go1.21+; 0 when unknown). */
struct goroutine_lineage {
	__u64 goid;
	__u64 parent_goid;
};

/* (TGID, []hpack.HeaderField array) -> the goroutine that makes that grpc-go call, from createHeaderFields to
 * the loopyWriter goroutine that opens the call's stream (GO_NETHTTP_STREAMS_GRPC_CLIENT). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_nethttp_header_key);
	__type(value, struct goroutine_lineage);
} go_nethttp_grpc_callers SEC(".maps");

/* (TGID, server connection object) -> the goroutine that reads that connection's frames, for the handlers
 * of its streams. LRU: a closed connection's entry ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_nethttp_header_key);
	__type(value, __u64);
} go_nethttp_stream_readers SEC(".maps");

/* The offsets of a traced process that reports the stream owners of `bits` (GO_NETHTTP_STREAMS_*). */
static __always_inline struct go_nethttp_offsets *reporting_streams(__u32 tgid, __u64 bits)
{
	struct go_nethttp_offsets *offsets = bpf_map_lookup_elem(&go_nethttp_offsets, &tgid);
	if (!offsets || !(offsets->streams & bits) || !tracer_pid_allowed(tgid))
		return 0;
	return offsets;
}

/* The goroutine running this uprobe's function, and its creator. */
static __always_inline struct goroutine_lineage probed_lineage(const struct pt_regs *ctx, const struct go_nethttp_offsets *offsets)
{
	struct goroutine_lineage lineage = { .goid = probed_goid(ctx, offsets) };
	if (offsets->g_parent_goid)
		bpf_probe_read_user(&lineage.parent_goid, sizeof(lineage.parent_goid), (void *)(ctx->r14 + offsets->g_parent_goid));
	return lineage;
}

static __always_inline void emit_stream(struct pt_regs *ctx, struct goroutine_lineage owner, __u64 mover_goid, __u32 stream_id, __u8 role)
{
	struct go_nethttp_stream_event *event = tracer_reserve(sizeof(*event));
	if (!event)
		return;
	tracer_fill_header(&event->header, GO_NETHTTP_EVENT_STREAM);
	event->goid = owner.goid;
	event->parent_goid = owner.parent_goid;
	event->mover_goid = mover_goid;
	event->stream_id = stream_id;
	event->role = role;
	__builtin_memset(event->reserved, 0, sizeof(event->reserved));
	tracer_submit(ctx, event, sizeof(*event));
}

/* At each RET of func (t *http2Client) createHeaderFields(ctx context.Context, callHdr *CallHdr)
 * ([]hpack.HeaderField, error) (grpc-go internal/transport), in the calling goroutine: the call's fields in
 * RAX (array), RBX (length), the error in RDI, RSI. Files the calling goroutine under the fields' array, which
 * NewStream hands to the loopyWriter goroutine; with propagation, also the client span's ids it decides. */
SEC("uprobe")
int go_nethttp_grpc_header_fields(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_nethttp_offsets *offsets = bpf_map_lookup_elem(&go_nethttp_offsets, &tgid);
	if (!offsets || !ctx->ax || ctx->di || !tracer_pid_allowed(tgid))
		return 0;
	struct goroutine_lineage caller = probed_lineage(ctx, offsets);
	struct go_nethttp_header_key call = { .tgid = tgid, .header = ctx->ax };
	if (offsets->streams & GO_NETHTTP_STREAMS_GRPC_CLIENT)
		bpf_map_update_elem(&go_nethttp_grpc_callers, &call, &caller, BPF_ANY);
	if (!go_nethttp_propagate || !(offsets->propagate & GO_NETHTTP_PROPAGATE_GRPC))
		return 0;
	struct go_nethttp_span_context context = {};
	new_client_context(tgid, caller.goid, caller.parent_goid, &context);
	bpf_map_update_elem(&go_nethttp_grpc_calls, &call, &context, BPF_ANY);
	return 0;
}

/* func (l *loopyWriter) originateStream(str *outStream) error (grpc-go internal/transport, client side only), in
 * the loopyWriter goroutine right before it writes a call's HEADERS: str in RBX. The stream's first queued item
 * is its *headerFrame (str.itl.head.it), whose fields name the calling goroutine (createHeaderFields): that
 * goroutine makes stream str.id of the connection this goroutine writes. */
SEC("uprobe")
int go_nethttp_grpc_originate_stream(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_nethttp_offsets *offsets = reporting_streams(tgid, GO_NETHTTP_STREAMS_GRPC_CLIENT);
	if (!offsets)
		return 0;
	__u64 list = read_pointer(ctx->bx + offsets->grpc_out_stream_itl);
	__u64 node = list ? read_pointer(list + offsets->grpc_item_list_head) : 0;
	/* An interface{} is (type, data): the data word is the *headerFrame. */
	__u64 frame = node ? read_pointer(node + offsets->grpc_item_node_it + 8) : 0;
	struct go_nethttp_header_key call = { .tgid = tgid, .header = frame ? read_pointer(frame + offsets->grpc_header_frame_hf) : 0 };
	struct goroutine_lineage *caller = call.header ? bpf_map_lookup_elem(&go_nethttp_grpc_callers, &call) : 0;
	__u32 stream_id = 0;
	if (!caller || bpf_probe_read_user(&stream_id, sizeof(stream_id), (void *)(ctx->bx + offsets->grpc_out_stream_id)))
		return 0;
	emit_stream(ctx, *caller, probed_goid(ctx, offsets), stream_id, GO_NETHTTP_STREAM_CALLED);
	bpf_map_delete_elem(&go_nethttp_grpc_callers, &call);
	return 0;
}

/* Entry of the function a server connection's frames are read in for the connection's life -- Go's HTTP/2
 * servers' (*serverConn).readFrames, grpc-go's
 * (*http2Server).HandleStreams -- with the connection object in RAX: names this reader goroutine to the
 * handlers of the connection's streams. */
SEC("uprobe")
int go_nethttp_stream_reader(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_nethttp_offsets *offsets = reporting_streams(tgid, GO_NETHTTP_STREAMS_HTTP2_SERVERS | GO_NETHTTP_STREAMS_GRPC_SERVER);
	if (!offsets)
		return 0;
	struct go_nethttp_header_key connection = { .tgid = tgid, .header = ctx->ax };
	__u64 goid = probed_goid(ctx, offsets);
	bpf_map_update_elem(&go_nethttp_stream_readers, &connection, &goid, BPF_ANY);
	return 0;
}

/* This goroutine handles the stream whose id is at `stream_id_at` of server connection `connection` (reader
 * goroutine 0 when its reader started before the probe: user space then matches by stream id alone). */
static __always_inline void stream_served(struct pt_regs *ctx, __u32 tgid, const struct go_nethttp_offsets *offsets,
					  __u64 connection, __u64 stream_id_at)
{
	struct go_nethttp_header_key key = { .tgid = tgid, .header = connection };
	__u64 *reader = bpf_map_lookup_elem(&go_nethttp_stream_readers, &key);
	__u32 stream_id = 0;
	if (bpf_probe_read_user(&stream_id, sizeof(stream_id), (void *)stream_id_at) || !stream_id)
		return;
	struct goroutine_lineage handler = { .goid = probed_goid(ctx, offsets) };
	emit_stream(ctx, handler, reader ? *reader : 0, stream_id, GO_NETHTTP_STREAM_SERVED);
}

/* func (sc *serverConn) runHandler(rw *responseWriter, req *Request, handler func(ResponseWriter, *Request)) of
 * Go's HTTP/2 server `server` (http2_servers[server]), in the goroutine the connection's serve loop starts for a
 * request's handler: sc in RAX, rw in RBX; the stream is rw.rws.stream. */
static __always_inline int http2_handler(struct pt_regs *ctx, const __u32 server)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_nethttp_offsets *offsets = reporting_streams(tgid, 1 << server);
	if (!offsets)
		return 0;
	const struct go_nethttp_http2_server_fields *fields = &offsets->http2_servers[server];
	__u64 state = read_pointer(ctx->bx + fields->response_writer_rws);
	__u64 stream = state ? read_pointer(state + fields->response_writer_state_stream) : 0;
	if (stream)
		stream_served(ctx, tgid, offsets, ctx->ax, stream + fields->stream_id);
	return 0;
}

SEC("uprobe")
int go_nethttp_http2_run_handler(struct pt_regs *ctx)
{
	return http2_handler(ctx, 0);
}

SEC("uprobe")
int go_nethttp_x_http2_run_handler(struct pt_regs *ctx)
{
	return http2_handler(ctx, 1);
}

SEC("uprobe")
int go_nethttp_internal_http2_run_handler(struct pt_regs *ctx)
{
	return http2_handler(ctx, 2);
}

/* func (s *Server) handleStream(t transport.ServerTransport, stream *transport.Stream, trInfo *traceInfo)
 * (grpc-go), in the goroutine the server starts for a stream (or a server worker): t's data word -- the
 * *http2Server whose HandleStreams reads the connection -- in RCX, stream in RDI. */
SEC("uprobe")
int go_nethttp_grpc_handle_stream(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_nethttp_offsets *offsets = reporting_streams(tgid, GO_NETHTTP_STREAMS_GRPC_SERVER);
	if (offsets && ctx->di)
		stream_served(ctx, tgid, offsets, ctx->cx, ctx->di + offsets->grpc_stream_id);
	return 0;
}

/* func (l *loopyWriter) writeHeader(streamID uint32, endStream bool, hf []hpack.HeaderField, onWrite func())
 * error (grpc-go internal/transport): l in RAX, hf's array in RDI. The fields of a call createHeaderFields
 * filed arm the HEADERS frame this goroutine writes next, with l.framer.fr into l.framer.writer (a server's
 * response headers find nothing). */
SEC("uprobe")
int go_nethttp_grpc_write_header(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_nethttp_offsets *offsets = propagating(tgid, GO_NETHTTP_PROPAGATE_GRPC);
	if (!offsets)
		return 0;
	struct go_nethttp_header_key call = { .tgid = tgid, .header = ctx->di };
	struct go_nethttp_span_context *context = bpf_map_lookup_elem(&go_nethttp_grpc_calls, &call);
	if (!context)
		return 0;
	__u64 framer = read_pointer(ctx->ax + offsets->grpc_loopy_framer);
	struct http2_armed_request armed = {
		.context = *context,
		.framer = framer ? read_pointer(framer + offsets->grpc_framer_fr) : 0,
		.framer_wbuf = offsets->x_http2_framer_wbuf,
		.writer = framer ? read_pointer(framer + offsets->grpc_framer_writer) : 0,
		.writer_buf = offsets->grpc_buf_writer_buf,
		.writer_used = offsets->grpc_buf_writer_offset,
	};
	bpf_map_delete_elem(&go_nethttp_grpc_calls, &call);
	struct go_nethttp_goroutine_key goroutine = { .tgid = tgid, .goid = probed_goid(ctx, offsets) };
	bpf_map_update_elem(&go_nethttp_http2_armed, &goroutine, &armed, BPF_ANY);
	return 0;
}

/* Bytes of an HTTP/2 frame header (RFC 9113 4.1), and the frame payload every peer must accept (the
 * initial SETTINGS_MAX_FRAME_SIZE). */
#define HTTP2_FRAME_HEADER 9
#define HTTP2_DEFAULT_MAX_FRAME 16384

/* A Go slice header. */
struct go_slice {
	__u64 pointer;
	__s64 length;
	__s64 capacity;
};

static __always_inline int same_frame_header(const __u8 *a, const __u8 *b)
{
	for (int i = 0; i < HTTP2_FRAME_HEADER; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

/* At each RET of func (f *Framer) WriteHeaders(p HeadersFrameParam) error (net/http's bundled http2Framer
 * and golang.org/x/net/http2's), when this goroutine's HEADERS frame is armed (the arming is used up either
 * way): the frame is still in f.wbuf (its length filled in by endWrite) and was copied to the end of the
 * buffered writer, not yet flushed. A traceparent field is appended to its header block there: the 69 bytes
 * written past the writer's buffered bytes, the frame's length grown in its copy, then the writer's count.
 * Only a frame that is the writer's last bytes, a HEADERS frame that ends its header block, not padded, of a
 * client (odd) stream, staying within the default frame size and with room in the buffer gets it. */
SEC("uprobe")
int go_nethttp_http2_headers_written(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_nethttp_offsets *offsets = propagating(tgid, GO_NETHTTP_PROPAGATE_HTTP2 | GO_NETHTTP_PROPAGATE_X_HTTP2 |
								      GO_NETHTTP_PROPAGATE_GRPC);
	if (!offsets)
		return 0;
	struct go_nethttp_goroutine_key goroutine = { .tgid = tgid, .goid = probed_goid(ctx, offsets) };
	struct http2_armed_request *found = bpf_map_lookup_elem(&go_nethttp_http2_armed, &goroutine);
	if (!found)
		return 0;
	struct http2_armed_request armed = *found;
	bpf_map_delete_elem(&go_nethttp_http2_armed, &goroutine);
	struct go_slice wbuf = {}, buffer = {};
	__s64 used = 0;
	__u8 frame[HTTP2_FRAME_HEADER] = {}, buffered[HTTP2_FRAME_HEADER] = {};
	if (!armed.framer || !armed.writer ||
	    bpf_probe_read_user(&wbuf, sizeof(wbuf), (void *)(armed.framer + armed.framer_wbuf)) ||
	    wbuf.length < HTTP2_FRAME_HEADER || wbuf.length - HTTP2_FRAME_HEADER + GO_NETHTTP_TRACEPARENT_FIELD > HTTP2_DEFAULT_MAX_FRAME ||
	    bpf_probe_read_user(frame, sizeof(frame), (void *)wbuf.pointer) ||
	    frame[3] != 0x1 /* HEADERS */ || !(frame[4] & 0x4) /* END_HEADERS */ || (frame[4] & 0x8) /* PADDED */ ||
	    !(frame[8] & 1) /* a client-initiated stream */ ||
	    bpf_probe_read_user(&buffer, sizeof(buffer), (void *)(armed.writer + armed.writer_buf)) ||
	    bpf_probe_read_user(&used, sizeof(used), (void *)(armed.writer + armed.writer_used)) ||
	    used < wbuf.length || used + GO_NETHTTP_TRACEPARENT_FIELD > buffer.length || buffer.length > buffer.capacity ||
	    bpf_probe_read_user(buffered, sizeof(buffered), (void *)(buffer.pointer + used - wbuf.length)) ||
	    !same_frame_header(frame, buffered)) {
		count_propagation(GO_NETHTTP_PROPAGATION_SKIPPED);
		return 0;
	}
	char field[GO_NETHTTP_TRACEPARENT_FIELD] = { 0x00, 11, 't', 'r', 'a', 'c', 'e', 'p', 'a', 'r', 'e', 'n', 't', 55,
						      '0', '0', '-' };
	format_hex64(armed.context.trace_id_high, &field[17]);
	format_hex64(armed.context.trace_id_low, &field[33]);
	field[49] = '-';
	format_hex64(armed.context.span_id, &field[50]);
	field[66] = '-';
	field[67] = hex_character(armed.context.flags >> 4);
	field[68] = hex_character(armed.context.flags);
	__u64 payload = wbuf.length - HTTP2_FRAME_HEADER + GO_NETHTTP_TRACEPARENT_FIELD;
	__u8 length[3] = { payload >> 16, payload >> 8, payload };
	__u64 frame_start = buffer.pointer + used - wbuf.length;
	__s64 grown = used + GO_NETHTTP_TRACEPARENT_FIELD;
	/* The field goes past the buffered bytes first (harmless if the rest fails); the length and the count
	 * then change together, the length put back if the count cannot be written. */
	if (bpf_probe_write_user((void *)(buffer.pointer + used), field, sizeof(field)) ||
	    bpf_probe_write_user((void *)frame_start, length, sizeof(length)))
		return 0;
	if (bpf_probe_write_user((void *)(armed.writer + armed.writer_used), &grown, sizeof(grown))) {
		bpf_probe_write_user((void *)frame_start, frame, sizeof(length));
		return 0;
	}
	count_propagation(GO_NETHTTP_PROPAGATION_INJECTED);
	struct go_nethttp_context_event *event = tracer_reserve(sizeof(*event));
	if (!event)
		return 0;
	tracer_fill_header(&event->header, GO_NETHTTP_EVENT_INJECTED);
	event->goid = goroutine.goid;
	event->context = armed.context;
	tracer_submit(ctx, event, sizeof(*event));
	return 0;
}
