// SPDX-License-Identifier: GPL-2.0
/* Go net/http tracer.
 *
 * Server side: no uprobe at all. One raw tracepoint at syscall exit sees a Go server's HTTP/1.x traffic
 * at the socket: net/http.(*conn).serve reads the request head with read(2) (through bufio and
 * internal/poll.FD.Read), runs the handler, and flushes the response with write(2) — all in one goroutine.
 * A raw tracepoint (BPF_PROG_TYPE_RAW_TRACEPOINT, Linux 4.17) skips the per-hit perf buffer work of the
 * syscalls:sys_{enter,exit}_* tracepoints, and at exit the saved registers still hold the arguments, so
 * no map has to carry them from entry to exit.
 * The goroutine is identified without a uprobe: the current runtime.g pointer sits at a fixed offset from
 * the thread's FS base (runtime.tlsg), and runtime.g.goid gives its id.
 *
 * Client side: net/http.(*Transport).roundTrip, entry and every RET (never a uretprobe: Go moves stacks).
 * The caller's goroutine id ties a client call made by a handler to the server request it serves. */
#include "tracer_common.bpf.h"
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "go_nethttp.h"

char LICENSE[] SEC("license") = "GPL";

/* Anchors the event structs in the object's BTF (layout tests compare them with Swift's view). */
const struct go_nethttp_request_event *go_nethttp_request_anchor __attribute__((unused));
const struct go_nethttp_write_event *go_nethttp_write_anchor __attribute__((unused));
const struct go_nethttp_close_event *go_nethttp_close_anchor __attribute__((unused));
const struct go_nethttp_client_start_event *go_nethttp_client_start_anchor __attribute__((unused));
const struct go_nethttp_client_end_event *go_nethttp_client_end_anchor __attribute__((unused));

/* Host TGID -> struct offsets of that process (written before the process is allowed). A process
 * without an entry is not traced by this object. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct go_nethttp_offsets);
} go_nethttp_offsets SEC(".maps");

/* (TGID << 32 | fd) -> addresses of server connections that carried a request, until close(2).
 * LRU: connections of a process that exited without closing them age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct go_nethttp_addresses);
} go_nethttp_conns SEC(".maps");

/* (TGID << 32 | fd) -> the one byte that net/http.(*connReader).backgroundRead took from the next
 * request while the previous handler was finishing (the conn goroutine then reads the rest). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} go_nethttp_first_bytes SEC(".maps");

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

/* Local and remote address of socket `fd` of the current process (task->files->fdt->fd[fd] ->
 * struct socket -> struct sock_common). Returns 0 on success. */
static __always_inline int socket_addresses(__u32 fd, struct go_nethttp_addresses *addresses)
{
	__builtin_memset(addresses, 0, sizeof(*addresses));
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *table = BPF_CORE_READ(task, files, fdt);
	if (fd >= BPF_CORE_READ(table, max_fds))
		return -1;
	struct file **files = BPF_CORE_READ(table, fd);
	struct file *file = 0;
	if (bpf_probe_read_kernel(&file, sizeof(file), &files[fd]) || !file)
		return -1;
	struct socket *socket = BPF_CORE_READ(file, private_data);
	struct sock *sk = BPF_CORE_READ(socket, sk);
	if (!sk)
		return -1;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family == 2 /* AF_INET */) {
		addresses->local_address[10] = addresses->local_address[11] = 0xff;
		addresses->remote_address[10] = addresses->remote_address[11] = 0xff;
		__u32 local = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 remote = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(&addresses->local_address[12], &local, sizeof(local));
		__builtin_memcpy(&addresses->remote_address[12], &remote, sizeof(remote));
	} else if (family == 10 /* AF_INET6 */) {
		BPF_CORE_READ_INTO(&addresses->local_address, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&addresses->remote_address, sk, __sk_common.skc_v6_daddr);
	} else {
		return -1;
	}
	addresses->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	addresses->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	return 0;
}

/* Emits a request event whose data holds up to `capacity` (a constant) bytes of the read. */
static __always_inline void emit_request(void *ctx, const struct go_nethttp_offsets *offsets, __u64 key, __u32 fd,
					 __u64 buffer, long length, __u8 prefix, const __u32 capacity)
{
	struct go_nethttp_request_event *event = tracer_reserve(sizeof(*event) + capacity);
	if (!event)
		return;
	tracer_fill_header(&event->header, GO_NETHTTP_EVENT_REQUEST);
	event->goid = current_goid(offsets);
	event->fd = fd;
	event->length = length;
	event->prefix = prefix;
	event->reserved[0] = event->reserved[1] = event->reserved[2] = 0;
	struct go_nethttp_addresses *known = bpf_map_lookup_elem(&go_nethttp_conns, &key);
	if (known) {
		event->addresses = *known;
	} else {
		socket_addresses(fd, &event->addresses);
		bpf_map_update_elem(&go_nethttp_conns, &key, &event->addresses, BPF_ANY);
	}
	__u32 captured = length > capacity ? capacity : length;
	if (bpf_probe_read_user(event->data, captured, (void *)buffer))
		captured = 0;
	event->captured = captured;
	tracer_submit(ctx, event, sizeof(*event) + capacity);
}

/* read(2) returned `length` bytes into `buffer`: a request head (or the rest of one whose first byte the
 * background read took) becomes a request event. */
static __always_inline void on_read(void *ctx, __u32 tgid, __u32 fd, __u64 buffer, long length)
{
	if (length <= 0) /* most reads of a keep-alive connection return EAGAIN */
		return;
	struct go_nethttp_offsets *offsets = bpf_map_lookup_elem(&go_nethttp_offsets, &tgid);
	if (!offsets || !tracer_pid_allowed(tgid))
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
	__u8 prefix = 0;
	if (!is_request_line(head)) {
		__u8 *first = bpf_map_lookup_elem(&go_nethttp_first_bytes, &key);
		if (!first)
			return;
		__u8 joined[8] = { *first, head[0], head[1], head[2], head[3], head[4], head[5], head[6] };
		bpf_map_delete_elem(&go_nethttp_first_bytes, &key);
		if (!is_request_line(joined))
			return;
		prefix = joined[0];
	}
	if (length <= GO_NETHTTP_CAPTURE_CLASS_SMALL)
		emit_request(ctx, offsets, key, fd, buffer, length, prefix, GO_NETHTTP_CAPTURE_CLASS_SMALL);
	else if (length <= GO_NETHTTP_CAPTURE_CLASS_MEDIUM)
		emit_request(ctx, offsets, key, fd, buffer, length, prefix, GO_NETHTTP_CAPTURE_CLASS_MEDIUM);
	else
		emit_request(ctx, offsets, key, fd, buffer, length, prefix, GO_NETHTTP_REQUEST_CAPTURE);
}

/* Emits a write event whose data holds up to `capacity` (a constant) bytes of the write's start. */
static __always_inline void emit_write(void *ctx, __u32 fd, __u64 buffer, __u64 length, const __u32 capacity)
{
	struct go_nethttp_write_event *event = tracer_reserve(sizeof(*event) + capacity);
	if (!event)
		return;
	tracer_fill_header(&event->header, GO_NETHTTP_EVENT_WRITE);
	event->fd = fd;
	event->length = length;
	__u32 captured = length > capacity ? capacity : length;
	if (bpf_probe_read_user(event->data, captured, (void *)buffer))
		captured = 0;
	event->captured = captured;
	__u32 tail = length > GO_NETHTTP_TAIL_CAPTURE ? GO_NETHTTP_TAIL_CAPTURE : length;
	if (bpf_probe_read_user(event->tail, tail, (void *)(buffer + length - tail)))
		tail = 0;
	event->tail_captured = tail;
	tracer_submit(ctx, event, sizeof(*event) + capacity);
}

/* write(2) sent `length` bytes from `buffer` on a connection that carried a request. */
static __always_inline void on_write(void *ctx, __u32 tgid, __u32 fd, __u64 buffer, long length)
{
	__u64 key = (__u64)tgid << 32 | fd;
	if (length <= 0 || !bpf_map_lookup_elem(&go_nethttp_conns, &key) || !tracer_pid_allowed(tgid))
		return;
	if (length <= GO_NETHTTP_CAPTURE_CLASS_SMALL)
		emit_write(ctx, fd, buffer, length, GO_NETHTTP_CAPTURE_CLASS_SMALL);
	else
		emit_write(ctx, fd, buffer, length, GO_NETHTTP_RESPONSE_CAPTURE);
}

/* close(2) of a connection that carried a request. */
static __always_inline void on_close(void *ctx, __u32 tgid, __u32 fd)
{
	__u64 key = (__u64)tgid << 32 | fd;
	if (bpf_map_delete_elem(&go_nethttp_conns, &key) || !tracer_pid_allowed(tgid))
		return;
	struct go_nethttp_close_event *event = tracer_reserve(sizeof(*event));
	if (!event)
		return;
	tracer_fill_header(&event->header, GO_NETHTTP_EVENT_CLOSE);
	event->fd = fd;
	event->reserved = 0;
	tracer_submit(ctx, event, sizeof(*event));
}

/* Every syscall exit (raw tracepoint sys_exit: struct pt_regs *regs, long ret). Only read(2), write(2)
 * and close(2) of x86-64 go further; the arguments are read from the saved user registers. */
SEC("raw_tp/sys_exit")
int go_nethttp_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	long ret = (long)ctx->args[1];
	long number = BPF_CORE_READ(regs, orig_ax);
	if (number != 0 /* read */ && number != 1 /* write */ && number != 3 /* close */)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 fd = (__u32)BPF_CORE_READ(regs, di);
	if (number == 3) {
		if (ret == 0)
			on_close(ctx, tgid, fd);
		return 0;
	}
	__u64 buffer = BPF_CORE_READ(regs, si);
	if (number == 0)
		on_read(ctx, tgid, fd, buffer, ret);
	else
		on_write(ctx, tgid, fd, buffer, ret);
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
	__u32 length = string.length > capacity ? capacity : (__u32)string.length;
	*truncated = string.length > capacity;
	if (bpf_probe_read_user(destination, length, (void *)string.pointer))
		return 0;
	return length;
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
	event->goid = 0;
	bpf_probe_read_user(&event->goid, sizeof(event->goid), (void *)(ctx->r14 + offsets->g_goid));
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
	tracer_submit(ctx, event, sizeof(*event));
	return 0;
}

/* At each RET of roundTrip: *Response in RAX, the error interface (itab, data) in RBX, RCX. */
SEC("uprobe")
int go_nethttp_round_trip_return(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_nethttp_offsets *offsets = bpf_map_lookup_elem(&go_nethttp_offsets, &tgid);
	if (!offsets || !tracer_pid_allowed(tgid))
		return 0;
	struct go_nethttp_client_end_event *event = tracer_reserve(sizeof(*event));
	if (!event)
		return 0;
	tracer_fill_header(&event->header, GO_NETHTTP_EVENT_CLIENT_END);
	event->goid = 0;
	bpf_probe_read_user(&event->goid, sizeof(event->goid), (void *)(ctx->r14 + offsets->g_goid));
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
