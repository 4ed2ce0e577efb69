// SPDX-License-Identifier: GPL-2.0
/* HTTP/1.x exchanges from socket-level syscall tracepoints, and their TLS plaintext from libssl uprobes.
 *
 * Each data syscall (read/write, recvfrom/sendto, readv/writev, recvmsg/sendmsg) saves its arguments at
 * sys_enter, keyed by thread, and handles the bytes at sys_exit. A connection (host TGID + fd, LRU hash)
 * becomes interesting when bytes that start like an HTTP request cross it: read means the process is the
 * server, written means it is the client. Its state machine captures a prefix of the request (also over
 * several reads), the response's status line, the byte counts and the times, and emits one http_event
 * per exchange: when the next request starts, when the process goes back to the request direction
 * (a server reads again after its response), when another response starts (pipelining: the event names
 * which request of the capture it answers), or at close().
 *
 * SSL_read/SSL_write(_ex) entry uprobes save the plaintext buffer per thread; the uretprobe feeds the
 * plaintext into the same state machine. The socket syscall that OpenSSL makes inside the call names the
 * fd (SSL_get_fd is not callable from BPF), and the syscall's own bytes (TLS records) are skipped. */
#include "../../bpf/tracer_common.bpf.h"
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "http.h"

char LICENSE[] SEC("license") = "GPL";

/* Anchors the event struct in the object's BTF, so tests can compare it with Swift's layout. */
const struct http_event *http_event_anchor __attribute__((unused));

#define DIR_READ 0
#define DIR_WRITE 1
#define DIR_CONNECT 2

#define PHASE_IDLE 0
#define PHASE_REQUEST 1
#define PHASE_RESPONSE 2

#define LOOKS_NOTHING 0
#define LOOKS_REQUEST 1
#define LOOKS_RESPONSE 2

#define S_IFMT_ 00170000
#define S_IFSOCK_ 0140000
#define AF_INET_ 2
#define AF_INET6_ 10
#define IPPROTO_TCP_ 6
#define EINPROGRESS_ 115

/* Fds above this are pseudo fds of TLS connections whose socket was never seen in a syscall. */
#define HTTP_PSEUDO_FD 0x80000000u

struct http_conn_key {
	__u32 tgid;
	__u32 fd;
};

/* Per-connection state: the event under construction, plus room that lets the verifier prove an append
 * at a variable offset stays inside the value (appends are clamped to request[] at run time). */
struct http_conn {
	struct http_event event;
	__u64 sk;       /* the struct sock * of the connection, 0 for TLS without a known socket */
	__u8 phase;
	__u8 pad[7];
	__u8 spill[HTTP_REQUEST_CAPTURE];
};

/* Arguments of a data syscall between its sys_enter and sys_exit, keyed by pid_tgid. */
struct http_args {
	__u64 buf;      /* the user buffer (first iovec segment for readv/writev/recvmsg/sendmsg) */
	__u64 capacity; /* its length */
	__u32 fd;
	__u8 dir;       /* DIR_* */
	__u8 in_ssl;    /* made inside SSL_read/SSL_write: its bytes are TLS records */
	__u8 pad[2];
};

/* An SSL_read/SSL_write(_ex) call between its entry uprobe and its uretprobe, keyed by pid_tgid. */
struct http_ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 count_ptr; /* size_t *readbytes / *written of the _ex variants, 0 otherwise */
	__u32 fd;
	__u8 dir;
	__u8 has_fd;
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct http_conn_key);
	__type(value, struct http_conn);
} http_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct http_args);
} http_args SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct http_ssl_call);
} http_ssl_calls SEC(".maps");

/* SSL* -> the fd last seen under it, for SSL_read calls served from OpenSSL's buffer (no syscall). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} http_ssl_fds SEC(".maps");

/* struct sock * -> the connection that uses it, so sock:inet_sock_set_state (which knows only the sock,
 * and may run in softirq context) can end the connection's exchange. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct http_conn_key);
} http_sock_owners SEC(".maps");

/* A zeroed http_conn to create entries from (too large for the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct http_conn);
} http_conn_zero SEC(".maps");

#define WORD(a, b, c, d) ((__u32)(a) | (__u32)(b) << 8 | (__u32)(c) << 16 | (__u32)(d) << 24)

/* Whether the first bytes of `buf` start an HTTP/1.x request or response. */
static __always_inline int looks_like(__u64 buf, __u64 len)
{
	if (len < 5)
		return LOOKS_NOTHING;
	__u8 head[5] = {};
	if (bpf_probe_read_user(head, sizeof(head), (const void *)buf) < 0)
		return LOOKS_NOTHING;
	__u32 word = WORD(head[0], head[1], head[2], head[3]);
	switch (word) {
	case WORD('G', 'E', 'T', ' '):
	case WORD('P', 'O', 'S', 'T'):
	case WORD('P', 'U', 'T', ' '):
	case WORD('H', 'E', 'A', 'D'):
	case WORD('D', 'E', 'L', 'E'):
	case WORD('P', 'A', 'T', 'C'):
	case WORD('O', 'P', 'T', 'I'):
	case WORD('C', 'O', 'N', 'N'):
	case WORD('T', 'R', 'A', 'C'):
		return LOOKS_REQUEST;
	case WORD('H', 'T', 'T', 'P'):
		return head[4] == '/' ? LOOKS_RESPONSE : LOOKS_NOTHING;
	}
	return LOOKS_NOTHING;
}

/* The struct sock behind `fd` of the current task when it is a TCP socket (task->files->fdt->fd[fd],
 * an S_IFSOCK inode, sk_protocol IPPROTO_TCP), else NULL. CO-RE reads only. */
static __always_inline struct sock *tcp_sock_of(__u32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) < 0 || !file)
		return NULL;
	umode_t mode = BPF_CORE_READ(file, f_inode, i_mode);
	if ((mode & S_IFMT_) != S_IFSOCK_)
		return NULL;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP_)
		return NULL;
	return sk;
}

/* Copies the addresses and ports of `sk` (struct sock_common) into the event. */
static __always_inline void fill_addresses(struct http_event *event, struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	event->family = family;
	event->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	event->peer_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET_) {
		bpf_core_read(event->local_addr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(event->peer_addr, 4, &sk->__sk_common.skc_daddr);
	} else if (family == AF_INET6_) {
		bpf_core_read(event->local_addr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(event->peer_addr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

/* Hands the finished (or abandoned) exchange of `conn` (of process `tgid`) to user space and makes the
 * connection idle. */
static __always_inline void emit(void *ctx, struct http_conn *conn, __u32 tgid)
{
	__u8 phase = conn->phase;
	conn->phase = PHASE_IDLE;
	if (phase == PHASE_IDLE)
		return;
	struct http_event *event = tracer_reserve(sizeof(*event));
	if (!event)
		return;
	bpf_probe_read_kernel(event, sizeof(*event), &conn->event);
	tracer_fill_header(&event->header, HTTP_EVENT_EXCHANGE);
	event->header.pid = tgid; /* the emitting context may be another process (softirq) */
	if (phase == PHASE_REQUEST)
		event->flags |= HTTP_FLAG_NO_RESPONSE;
	tracer_submit(ctx, event, sizeof(*event));
}

static __always_inline struct http_conn *create_conn(struct http_conn_key *key, __u8 flags)
{
	__u32 zero = 0;
	struct http_conn *blank = bpf_map_lookup_elem(&http_conn_zero, &zero);
	if (!blank)
		return NULL;
	blank->event.flags = flags;
	bpf_map_update_elem(&http_conns, key, blank, BPF_ANY);
	blank->event.flags = 0;
	return bpf_map_lookup_elem(&http_conns, key);
}

/* The request direction of a connection: a server reads requests, a client writes them. */
static __always_inline __u8 request_dir(struct http_conn *conn)
{
	return conn->event.role == HTTP_ROLE_SERVER ? DIR_READ : DIR_WRITE;
}

/* Appends up to the rest of request[] from user memory. */
static __always_inline void append_request(struct http_conn *conn, __u64 buf, __u64 len)
{
	__u32 offset = conn->event.request_len;
	if (offset >= HTTP_REQUEST_CAPTURE)
		return;
	__u32 room = HTTP_REQUEST_CAPTURE - offset;
	__u32 n = len < room ? (__u32)len : room;
	offset &= HTTP_REQUEST_CAPTURE - 1;
	/* Keeps the bound check on `n` itself: Linux 6.1's verifier cannot bound `len` from `len < room`
	 * when `room` is not a constant, and clang would otherwise drop the check as redundant. */
	asm volatile("" : "+r"(n));
	if (n == 0 || n > HTTP_REQUEST_CAPTURE)
		return;
	if (bpf_probe_read_user(&conn->event.request[offset], n, (const void *)buf) == 0)
		conn->event.request_len = offset + n;
}

/* Keeps the first bytes of a response (its status line); counting restarts with it. */
static __always_inline void capture_response(struct http_conn *conn, __u64 buf, __u64 len)
{
	conn->event.response_bytes = 0;
	conn->event.response_len = 0;
	__u32 n = len < HTTP_RESPONSE_CAPTURE ? (__u32)len : HTTP_RESPONSE_CAPTURE;
	if (n > 0 && bpf_probe_read_user(conn->event.response, n & (2 * HTTP_RESPONSE_CAPTURE - 1), (const void *)buf) == 0)
		conn->event.response_len = n;
}

/* The state machine: `len` bytes at `buf` (a prefix of `total` transferred bytes) crossed connection
 * `fd` of the current process in direction `dir`. `tls` is set for plaintext from the libssl uprobes. */
static __always_inline void handle_data(void *ctx, __u32 fd, __u8 dir, __u64 buf, __u64 len, __u64 total, __u8 tls,
					struct sock *known_sk)
{
	struct http_conn_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = fd };
	struct http_conn *conn = bpf_map_lookup_elem(&http_conns, &key);
	if (conn && (conn->event.flags & HTTP_FLAG_TLS) && !tls)
		return; /* plaintext of this connection comes from the libssl uprobes */
	int looks = looks_like(buf, len);
	if (conn && known_sk && conn->sk != (__u64)known_sk) {
		/* the fd now names another socket (its old connection's close was not seen) */
		emit(ctx, conn, key.tgid);
		conn = NULL;
	}
	if (!conn) {
		if (looks != LOOKS_REQUEST)
			return;
		struct sock *sk = known_sk ? known_sk : (fd < HTTP_PSEUDO_FD ? tcp_sock_of(fd) : NULL);
		if (!tls && !sk)
			return;
		conn = create_conn(&key, 0);
		if (!conn)
			return;
		if (sk) {
			__u64 owner = (__u64)sk;
			conn->sk = owner;
			bpf_map_update_elem(&http_sock_owners, &owner, &key, BPF_ANY);
		}
	}
	if (tls)
		conn->event.flags |= HTTP_FLAG_TLS;
	__u64 now = bpf_ktime_get_ns();

	if (looks == LOOKS_REQUEST && conn->phase != PHASE_REQUEST) {
		emit(ctx, conn, key.tgid); /* a previous exchange on this keep-alive connection ends here */
		struct http_event *event = &conn->event;
		event->role = dir == DIR_READ ? HTTP_ROLE_SERVER : HTTP_ROLE_CLIENT;
		event->flags &= HTTP_FLAG_TLS | HTTP_FLAG_ACCEPTED | HTTP_FLAG_CONNECTED;
		event->fd = fd;
		event->start_ns = now;
		event->end_ns = now;
		event->request_bytes = total;
		event->response_bytes = 0;
		event->request_len = 0;
		event->response_len = 0;
		event->pipeline_index = 0;
		struct sock *sk = known_sk ? known_sk : (fd < HTTP_PSEUDO_FD ? tcp_sock_of(fd) : NULL);
		if (sk)
			fill_addresses(event, sk);
		conn->phase = PHASE_REQUEST;
		append_request(conn, buf, len);
		return;
	}
	if (conn->phase == PHASE_IDLE)
		return;
	if (dir == request_dir(conn)) {
		if (conn->phase == PHASE_REQUEST) {
			/* more of the request: headers split over reads, or the body */
			conn->event.request_bytes += total;
			append_request(conn, buf, len);
		} else {
			emit(ctx, conn, key.tgid); /* not a request start: the exchange is over, ignore these bytes */
		}
		return;
	}
	if (conn->phase == PHASE_REQUEST) {
		conn->phase = PHASE_RESPONSE;
		capture_response(conn, buf, len);
	} else if (looks == LOOKS_RESPONSE) {
		if (conn->event.response_len > 9 && conn->event.response[9] == '1') {
			/* after an interim 1xx (100 Continue) comes the final response */
			capture_response(conn, buf, len);
		} else {
			/* a second response: the previous one is complete and this one answers the next request
			 * the capture holds (pipelining); it began being served when the previous one ended */
			__u64 previous_end = conn->event.end_ns;
			emit(ctx, conn, key.tgid);
			conn->phase = PHASE_RESPONSE;
			conn->event.pipeline_index += 1;
			conn->event.start_ns = previous_end;
			capture_response(conn, buf, len);
		}
	}
	conn->event.response_bytes += total;
	conn->event.end_ns = now;
}

/* When a process turns back to the request direction of a connection whose response it has seen
 * (a server reads again, a client writes again), that exchange is complete. */
static __always_inline void end_if_turning(void *ctx, __u32 fd, __u8 dir)
{
	struct http_conn_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = fd };
	struct http_conn *conn = bpf_map_lookup_elem(&http_conns, &key);
	if (conn && conn->phase == PHASE_RESPONSE && dir == request_dir(conn))
		emit(ctx, conn, key.tgid);
}

/* sys_enter of a data syscall: keeps the arguments for sys_exit. Selected processes only. */
static __always_inline int save_args(void *ctx, __u32 fd, __u8 dir, __u64 buf, __u64 capacity)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!tracer_pid_allowed(pid_tgid >> 32))
		return 0;
	struct http_args args = { .buf = buf, .capacity = capacity, .fd = fd, .dir = dir };
	struct http_ssl_call *call = bpf_map_lookup_elem(&http_ssl_calls, &pid_tgid);
	if (call) {
		call->fd = fd;
		call->has_fd = 1;
		args.in_ssl = 1;
	}
	end_if_turning(ctx, fd, dir);
	bpf_map_update_elem(&http_args, &pid_tgid, &args, BPF_ANY);
	return 0;
}

/* First segment of a user struct iovec array. */
static __always_inline int save_iov_args(void *ctx, __u32 fd, __u8 dir, __u64 iov_ptr)
{
	struct iovec iov = {};
	if (!iov_ptr || bpf_probe_read_user(&iov, sizeof(iov), (const void *)iov_ptr) < 0)
		return 0;
	return save_args(ctx, fd, dir, (__u64)iov.iov_base, iov.iov_len);
}

/* sys_enter_read, sys_enter_recvfrom: (fd, buf, count, ...) */
SEC("tracepoint/syscalls/sys_enter_read")
int http_enter_read(struct trace_event_raw_sys_enter *ctx)
{
	return save_args(ctx, ctx->args[0], DIR_READ, ctx->args[1], ctx->args[2]);
}

/* sys_enter_write, sys_enter_sendto: (fd, buf, count, ...) */
SEC("tracepoint/syscalls/sys_enter_write")
int http_enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return save_args(ctx, ctx->args[0], DIR_WRITE, ctx->args[1], ctx->args[2]);
}

/* sys_enter_readv: (fd, iov, iovcnt) */
SEC("tracepoint/syscalls/sys_enter_readv")
int http_enter_readv(struct trace_event_raw_sys_enter *ctx)
{
	if (!tracer_pid_allowed(bpf_get_current_pid_tgid() >> 32) || ctx->args[2] == 0)
		return 0;
	return save_iov_args(ctx, ctx->args[0], DIR_READ, ctx->args[1]);
}

/* sys_enter_writev: (fd, iov, iovcnt) */
SEC("tracepoint/syscalls/sys_enter_writev")
int http_enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	if (!tracer_pid_allowed(bpf_get_current_pid_tgid() >> 32) || ctx->args[2] == 0)
		return 0;
	return save_iov_args(ctx, ctx->args[0], DIR_WRITE, ctx->args[1]);
}

static __always_inline int save_msg_args(void *ctx, __u32 fd, __u8 dir, __u64 msg_ptr)
{
	if (!tracer_pid_allowed(bpf_get_current_pid_tgid() >> 32) || !msg_ptr)
		return 0;
	struct user_msghdr msg = {};
	if (bpf_probe_read_user(&msg, sizeof(msg), (const void *)msg_ptr) < 0 || msg.msg_iovlen == 0)
		return 0;
	return save_iov_args(ctx, fd, dir, (__u64)msg.msg_iov);
}

/* sys_enter_recvmsg: (fd, msg, flags) */
SEC("tracepoint/syscalls/sys_enter_recvmsg")
int http_enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	return save_msg_args(ctx, ctx->args[0], DIR_READ, ctx->args[1]);
}

/* sys_enter_sendmsg: (fd, msg, flags) */
SEC("tracepoint/syscalls/sys_enter_sendmsg")
int http_enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return save_msg_args(ctx, ctx->args[0], DIR_WRITE, ctx->args[1]);
}

/* sys_exit of every data syscall and of connect: the return value is the byte count. */
SEC("tracepoint/syscalls/sys_exit_read")
int http_exit_data(struct trace_event_raw_sys_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct http_args *saved = bpf_map_lookup_elem(&http_args, &pid_tgid);
	if (!saved)
		return 0;
	struct http_args args = *saved;
	bpf_map_delete_elem(&http_args, &pid_tgid);
	long ret = ctx->ret;
	if (args.dir == DIR_CONNECT) {
		if (ret == 0 || ret == -EINPROGRESS_) {
			struct http_conn_key key = { .tgid = pid_tgid >> 32, .fd = args.fd };
			create_conn(&key, HTTP_FLAG_CONNECTED);
		}
		return 0;
	}
	if (ret <= 0)
		return 0;
	if (args.in_ssl) {
		/* TLS records; mark the connection so plaintext (kTLS) never comes from here */
		struct http_conn_key key = { .tgid = pid_tgid >> 32, .fd = args.fd };
		struct http_conn *conn = bpf_map_lookup_elem(&http_conns, &key);
		if (conn)
			conn->event.flags |= HTTP_FLAG_TLS;
		return 0;
	}
	__u64 len = (__u64)ret < args.capacity ? (__u64)ret : args.capacity;
	handle_data(ctx, args.fd, args.dir, args.buf, len, ret, 0, NULL);
	return 0;
}

/* sys_enter_connect: (fd, addr, addrlen) */
SEC("tracepoint/syscalls/sys_enter_connect")
int http_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!tracer_pid_allowed(pid_tgid >> 32))
		return 0;
	struct http_args args = { .fd = ctx->args[0], .dir = DIR_CONNECT };
	bpf_map_update_elem(&http_args, &pid_tgid, &args, BPF_ANY);
	return 0;
}

/* sys_exit_accept, sys_exit_accept4: a new server-side connection (a fresh state for a reused fd). */
SEC("tracepoint/syscalls/sys_exit_accept4")
int http_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	long fd = ctx->ret;
	if (fd < 0 || !tracer_pid_allowed(pid_tgid >> 32))
		return 0;
	struct http_conn_key key = { .tgid = pid_tgid >> 32, .fd = fd };
	create_conn(&key, HTTP_FLAG_ACCEPTED);
	return 0;
}

/* sys_enter_close: the connection's pending exchange ends; its state goes. */
SEC("tracepoint/syscalls/sys_enter_close")
int http_enter_close(struct trace_event_raw_sys_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!tracer_pid_allowed(pid_tgid >> 32))
		return 0;
	struct http_conn_key key = { .tgid = pid_tgid >> 32, .fd = ctx->args[0] };
	struct http_conn *conn = bpf_map_lookup_elem(&http_conns, &key);
	if (!conn)
		return 0;
	emit(ctx, conn, key.tgid);
	bpf_map_delete_elem(&http_conns, &key);
	return 0;
}

/* ---- Socket tracepoints (Linux 6.4+): fire for socket I/O only, so other processes and other files pay
 * nothing, and no syscall tracepoint puts every task on the syscall tracing slow path. ---- */

#if defined(__TARGET_ARCH_x86)
#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define SYSCALL_NR(regs) ((regs)->orig_ax)
#define SYSCALL_ARG1(regs) ((regs)->di)
#define SYSCALL_ARG2(regs) ((regs)->si)
#define SYSCALL_ARG3(regs) ((regs)->dx)
#else
#error "syscall numbers and registers of this architecture are not written yet"
#endif

#define MSG_PEEK_ 2
#define TCP_FIN_WAIT1_ 4
#define TCP_CLOSE_ 7
#define TCP_CLOSE_WAIT_ 8
#define TCP_LAST_ACK_ 9

/* sock:sock_send_length / sock:sock_recv_length (sock_sendmsg/sock_recvmsg): the socket and the byte
 * count; the fd and the user buffer are the arguments of the syscall in progress (its saved user
 * registers, bpf_task_pt_regs). Transfers the syscall does not describe (sendfile, io_uring, kernel
 * sockets) are skipped. */
static __always_inline int sock_data(struct trace_event_raw_sock_msg_length *ctx, __u8 dir)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (ctx->protocol != IPPROTO_TCP_ || !tracer_pid_allowed(pid_tgid >> 32))
		return 0;
	int ret = ctx->ret;
	if (ret < 0 || (ctx->flags & MSG_PEEK_))
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	long nr = SYSCALL_NR(regs);
	__u32 fd = SYSCALL_ARG1(regs);
	__u64 buf = SYSCALL_ARG2(regs), capacity = SYSCALL_ARG3(regs);
	switch (nr) {
	case NR_READ:
	case NR_WRITE:
	case NR_RECVFROM:
	case NR_SENDTO:
		break;
	case NR_READV:
	case NR_WRITEV: {
		struct iovec iov = {};
		if (capacity == 0 || bpf_probe_read_user(&iov, sizeof(iov), (const void *)buf) < 0)
			return 0;
		buf = (__u64)iov.iov_base;
		capacity = iov.iov_len;
		break;
	}
	case NR_RECVMSG:
	case NR_SENDMSG: {
		struct user_msghdr msg = {};
		struct iovec iov = {};
		if (bpf_probe_read_user(&msg, sizeof(msg), (const void *)buf) < 0 || msg.msg_iovlen == 0 ||
		    bpf_probe_read_user(&iov, sizeof(iov), msg.msg_iov) < 0)
			return 0;
		buf = (__u64)iov.iov_base;
		capacity = iov.iov_len;
		break;
	}
	default:
		return 0;
	}
	struct http_ssl_call *call = bpf_map_lookup_elem(&http_ssl_calls, &pid_tgid);
	if (call) {
		/* TLS records under SSL_read/SSL_write: the plaintext comes from the uprobes */
		call->fd = fd;
		call->has_fd = 1;
		struct http_conn_key key = { .tgid = pid_tgid >> 32, .fd = fd };
		struct http_conn *conn = bpf_map_lookup_elem(&http_conns, &key);
		if (conn)
			conn->event.flags |= HTTP_FLAG_TLS;
		return 0;
	}
	if (ret == 0) {
		end_if_turning(ctx, fd, dir); /* end of stream */
		return 0;
	}
	__u64 len = (__u64)ret < capacity ? (__u64)ret : capacity;
	handle_data(ctx, fd, dir, buf, len, ret, 0, (struct sock *)ctx->sk);
	return 0;
}

SEC("tracepoint/sock/sock_recv_length")
int http_sock_recv(struct trace_event_raw_sock_msg_length *ctx)
{
	return sock_data(ctx, DIR_READ);
}

SEC("tracepoint/sock/sock_send_length")
int http_sock_send(struct trace_event_raw_sock_msg_length *ctx)
{
	return sock_data(ctx, DIR_WRITE);
}

/* sock:inet_sock_set_state: a closing connection ends its pending exchange — when the process closes it
 * (FIN_WAIT1, LAST_ACK), when it is gone (CLOSE), or when the peer closes it (CLOSE_WAIT) after a server
 * sent its response (a client may still have the response to read then). At CLOSE its state goes.
 * May run in softirq context: the owner map names the process. */
SEC("tracepoint/sock/inet_sock_set_state")
int http_sock_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	int state = ctx->newstate;
	if (ctx->protocol != IPPROTO_TCP_ ||
	    (state != TCP_FIN_WAIT1_ && state != TCP_CLOSE_WAIT_ && state != TCP_LAST_ACK_ && state != TCP_CLOSE_))
		return 0;
	__u64 owner = (__u64)ctx->skaddr;
	struct http_conn_key *found = bpf_map_lookup_elem(&http_sock_owners, &owner);
	if (!found)
		return 0;
	struct http_conn_key key = *found;
	struct http_conn *conn = bpf_map_lookup_elem(&http_conns, &key);
	if (conn && conn->sk != owner)
		conn = NULL; /* the fd was reused for another connection meanwhile */
	if (conn && (state != TCP_CLOSE_WAIT_ || (conn->event.role == HTTP_ROLE_SERVER && conn->phase == PHASE_RESPONSE)))
		emit(ctx, conn, key.tgid);
	if (state == TCP_CLOSE_) {
		bpf_map_delete_elem(&http_sock_owners, &owner);
		if (conn)
			bpf_map_delete_elem(&http_conns, &key);
	}
	return 0;
}

/* libssl entry probes: keep the plaintext buffer until the call returns. An outer call wins over
 * nested ones (BPF_NOEXIST). */
static __always_inline int ssl_enter(__u64 ssl, __u64 buf, __u64 count_ptr, __u8 dir)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!tracer_pid_allowed(pid_tgid >> 32))
		return 0;
	struct http_ssl_call call = { .ssl = ssl, .buf = buf, .count_ptr = count_ptr, .dir = dir };
	bpf_map_update_elem(&http_ssl_calls, &pid_tgid, &call, BPF_NOEXIST);
	return 0;
}

/* int SSL_read(SSL *ssl, void *buf, int num) */
SEC("uprobe")
int BPF_KPROBE(http_ssl_read, void *ssl, void *buf)
{
	return ssl_enter((__u64)ssl, (__u64)buf, 0, DIR_READ);
}

/* int SSL_write(SSL *ssl, const void *buf, int num) */
SEC("uprobe")
int BPF_KPROBE(http_ssl_write, void *ssl, void *buf)
{
	return ssl_enter((__u64)ssl, (__u64)buf, 0, DIR_WRITE);
}

/* int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes) */
SEC("uprobe")
int BPF_KPROBE(http_ssl_read_ex, void *ssl, void *buf, __u64 num, __u64 *readbytes)
{
	return ssl_enter((__u64)ssl, (__u64)buf, (__u64)readbytes, DIR_READ);
}

/* int SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written) */
SEC("uprobe")
int BPF_KPROBE(http_ssl_write_ex, void *ssl, void *buf, __u64 num, __u64 *written)
{
	return ssl_enter((__u64)ssl, (__u64)buf, (__u64)written, DIR_WRITE);
}

/* uretprobe of all four: the plaintext is in place now. */
SEC("uretprobe")
int BPF_KRETPROBE(http_ssl_return, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct http_ssl_call *saved = bpf_map_lookup_elem(&http_ssl_calls, &pid_tgid);
	if (!saved)
		return 0;
	struct http_ssl_call call = *saved;
	bpf_map_delete_elem(&http_ssl_calls, &pid_tgid);
	if (ret <= 0)
		return 0;
	__u64 count = ret;
	if (call.count_ptr) {
		if (bpf_probe_read_user(&count, sizeof(count), (const void *)call.count_ptr) < 0)
			return 0;
	}
	if (count == 0)
		return 0;
	__u32 fd;
	if (call.has_fd) {
		fd = call.fd;
		bpf_map_update_elem(&http_ssl_fds, &call.ssl, &fd, BPF_ANY);
	} else {
		__u32 *known = bpf_map_lookup_elem(&http_ssl_fds, &call.ssl);
		fd = known ? *known : (HTTP_PSEUDO_FD | ((__u32)(call.ssl >> 4) & 0x7fffffff));
	}
	handle_data(ctx, fd, call.dir, call.buf, count, count, 1, NULL);
	return 0;
}
