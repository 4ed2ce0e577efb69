// SPDX-License-Identifier: GPL-2.0
/* The shared capture layer: every read and write of a TCP connection of a selected process, and the TLS
 * plaintext libssl moves for it, emitted as chunks (connection id, direction, goroutine, a prefix of the
 * bytes and the full length) for the protocol parsers in user space.
 *
 * One data path, four ways to reach it; user space loads the programs of one variant, cheapest first:
 *   socket tracepoints  sock:sock_send_length / sock_recv_length (Linux 6.3): fire on socket I/O only;
 *   fexit               tcp_sendmsg / tcp_recvmsg (BTF trampolines, Linux 5.17 for bpf_get_func_ret);
 *   kprobes             kprobe + kretprobe on tcp_sendmsg / tcp_recvmsg;
 *   syscall tracepoints sys_enter/sys_exit of the data syscalls: the last resort, since any program there
 *                       puts every task of the machine on the syscall slow path.
 * Each finds the socket (struct sock *) and the byte count; the user buffer is the argument of the syscall
 * in progress (its saved user registers). sock:inet_sock_set_state (Linux 4.16, as a BTF tracepoint) ends
 * connections in every variant.
 *
 * Connections are keyed by their struct sock * and given an id when first seen. User space may set a
 * verdict per id (capture_verdicts): connections no parser claims are then only counted. TLS: a socket
 * whose first bytes are a TLS record is marked and its bytes are never emitted; libssl's SSL_read/SSL_write
 * entry uprobes and uretprobe emit the plaintext under the same connection (the socket I/O that OpenSSL
 * does inside the call names it). */
#include "tracer_common.bpf.h"
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "capture.h"

char LICENSE[] SEC("license") = "GPL";

/* Anchors the shared structs in the object's BTF, so tests can compare them with Swift's layout. */
const struct capture_chunk_event *capture_chunk_anchor __attribute__((unused));
const struct capture_close_event *capture_close_anchor __attribute__((unused));
const struct capture_context_event *capture_context_anchor __attribute__((unused));
const struct capture_process *capture_process_anchor __attribute__((unused));
const struct capture_connection *capture_connection_anchor __attribute__((unused));

#define AF_INET_ 2
#define AF_INET6_ 10
#define IPPROTO_TCP_ 6
#define MSG_PEEK_ 2
#define S_IFMT_ 00170000
#define S_IFSOCK_ 0140000
#define TCP_FIN_WAIT1_ 4
#define TCP_CLOSE_ 7
#define TCP_LAST_ACK_ 9
#define NO_FD 0xffffffffu

/* struct sock * (or SSL * | 1) -> the connection. LRU: connections whose end was never seen age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct capture_connection);
} capture_connections SEC(".maps");

/* Connection id -> CAPTURE_VERDICT_*, written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} capture_verdicts SEC(".maps");

/* Bumped by user space after each verdict it writes: a captured connection looks its verdict up only when
 * this changed since it last did (an array read instead of a hash lookup per chunk). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} capture_verdict_epoch SEC(".maps");

/* Host TGID -> facts about the process (Go goroutine offsets). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct capture_process);
} capture_processes SEC(".maps");

/* Whether user space prepared the process for the capture (a protocol parser applies to it): the capture's
 * own PID filter, one lookup that also gives the process's facts. */
static __always_inline int is_prepared(__u32 tgid)
{
	return bpf_map_lookup_elem(&capture_processes, &tgid) != NULL;
}

/* Next connection id (ids start at 1). */
__u64 capture_next_id = 1;

/* ---- The data path ---- */

/* The goroutine running on this thread of a Go process: runtime.g at the FS base + the TLS offset
 * (task_struct.thread.fsbase), then runtime.g.goid. 0 when not Go or unreadable. */
static __always_inline __u64 current_goid(const struct capture_process *process)
{
	if (!process->go_g_tls_offset)
		return 0;
	__u64 fsbase = bpf_get_current_task_btf()->thread.fsbase; /* a BTF pointer: a plain load */
	__u64 g = 0, goid = 0;
	if (!fsbase || bpf_probe_read_user(&g, sizeof(g), (void *)(fsbase + process->go_g_tls_offset)) || !g)
		return 0;
	bpf_probe_read_user(&goid, sizeof(goid), (void *)(g + process->go_goid_offset));
	return goid;
}

/* The current task's network namespace (the inode number /proc/PID/ns/net names), 0 when unknown: read
 * here, a short-lived client's namespace is still known when user space links its requests. */
static __always_inline __u32 current_netns(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	return BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
}

/* Both ends of `sk` (struct sock_common), IPv4 as IPv4-mapped IPv6. */
static __always_inline void read_tuple(struct sock *sk, struct capture_tuple *tuple)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	tuple->family = family;
	tuple->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	tuple->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET_) {
		__u32 local = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 remote = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		tuple->local_address[10] = tuple->local_address[11] = 0xff;
		tuple->remote_address[10] = tuple->remote_address[11] = 0xff;
		__builtin_memcpy(&tuple->local_address[12], &local, 4);
		__builtin_memcpy(&tuple->remote_address[12], &remote, 4);
	} else if (family == AF_INET6_) {
		BPF_CORE_READ_INTO(&tuple->local_address, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&tuple->remote_address, sk, __sk_common.skc_v6_daddr);
	}
}

/* A zeroed connection to create entries from (too large for the BPF stack in older verifiers' eyes). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct capture_connection);
} capture_blank SEC(".maps");

/* The connection of `key`, created (with an id, and the tuple of `sk` when known) if it is new. */
static __always_inline struct capture_connection *connection_of(__u64 key, struct sock *sk, __u32 tgid)
{
	struct capture_connection *connection = bpf_map_lookup_elem(&capture_connections, &key);
	if (connection)
		return connection;
	/* A transfer on a socket that is already closed (after a reset) starts nothing: its end was seen. */
	if (sk && BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_CLOSE_)
		return NULL;
	__u32 zero = 0;
	struct capture_connection *blank = bpf_map_lookup_elem(&capture_blank, &zero);
	if (!blank)
		return NULL;
	__builtin_memset(blank, 0, sizeof(*blank));
	blank->id = __sync_fetch_and_add(&capture_next_id, 1);
	blank->tgid = tgid;
	if (sk)
		read_tuple(sk, &blank->tuple);
	bpf_map_update_elem(&capture_connections, &key, blank, BPF_NOEXIST);
	return bpf_map_lookup_elem(&capture_connections, &key);
}

/* Where a transfer's bytes are in user memory: one buffer, or an iovec array (readv/writev, or a msghdr's
 * for recvmsg/sendmsg) whose segments are read in order. */
struct capture_user_data {
	__u64 buffer;   /* the buffer, or 0 */
	__u64 segments; /* user address of struct iovec[], or 0 */
	__u64 segment_count;
};

/* Segments of an iovec array gathered into a chunk's prefix (later ones only count). */
#define CAPTURE_MAX_SEGMENTS 8

/* min(value, limit) for a size passed to a helper, clamped on the register the helper gets (Linux 6.1's
 * verifier otherwise sees an unbounded size after clang clamps a copy). */
static __always_inline __u32 at_most(__u64 value, const __u32 limit)
{
	__u64 bounded = value > limit ? limit : value;
	asm volatile("" : "+r"(bounded));
	return bounded > limit ? limit : bounded;
}

/* Room to gather iovec segments in before they are copied into a record (per CPU): a segment lands at an
 * offset below CAPTURE_MAX_DATA and is at most CAPTURE_MAX_DATA long. */
/* Per-CPU scratch for gathering segments. `gathered` lives here rather than in a register: read back
 * through the map it is an unknown scalar to the verifier, so the masked offset into `bytes` has clean
 * bounds (6.1's verifier otherwise explores dead branches where the offset's bounds contradict, and
 * refuses the pointer arithmetic). */
struct capture_gather {
	__u64 gathered;
	__u8 bytes[2 * CAPTURE_MAX_DATA];
	/* A tail that spans the last two segments: the end of the one before, then the last one's bytes. */
	__u8 tail[2 * CAPTURE_TAIL];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct capture_gather);
} capture_gather_room SEC(".maps");

/* Copies the first bytes of a `length`-byte transfer spread over iovec segments (as readv/writev and
 * recvmsg/sendmsg move them, in order) into event->data, up to `capacity`; and its last bytes into
 * event->tail when the last segment, or it and the one before (memcached ends a value with a 5-byte `END\r\n`
 * segment), hold them. Returns the bytes copied into data. */
static __always_inline __u32 gather_segments(struct capture_chunk_event *event, const struct capture_user_data *from,
					     __u64 length, const __u32 capacity, __u32 *tail)
{
	__u32 zero = 0;
	struct capture_gather *room = bpf_map_lookup_elem(&capture_gather_room, &zero);
	if (!room)
		return 0;
	__u64 want = length < capacity ? length : capacity;
	volatile __u64 *gathered = &room->gathered; /* bytes of the transfer in room, from its start */
	__u64 seen = 0;                             /* bytes of the transfer in the segments before this one */
	struct iovec previous = {};                 /* the segment before this one, and the bytes it moved */
	__u64 previous_used = 0;
	*gathered = 0;
	for (int i = 0; i < CAPTURE_MAX_SEGMENTS; i++) {
		struct iovec segment = {};
		if (i >= from->segment_count || seen >= length ||
		    bpf_probe_read_user(&segment, sizeof(segment), (void *)(from->segments + i * sizeof(segment))))
			break;
		__u64 used = segment.iov_len < length - seen ? segment.iov_len : length - seen;
		__u64 start = *gathered;
		if (start == seen && start < want) {
			__u32 size = at_most(used < want - start ? used : want - start, CAPTURE_MAX_DATA);
			if (bpf_probe_read_user(&room->bytes[*gathered & (CAPTURE_MAX_DATA - 1)], size, segment.iov_base))
				break;
			*gathered = start + size;
		}
		seen += used;
		if (seen == length && length > want) {
			if (used >= CAPTURE_TAIL) {
				if (bpf_probe_read_user(event->tail, CAPTURE_TAIL, segment.iov_base + used - CAPTURE_TAIL) == 0)
					*tail = CAPTURE_TAIL;
			} else if (used > 0 && previous_used >= CAPTURE_TAIL) {
				/* room->tail: the previous segment's last 8 bytes, then this one's `used` (< 8); the tail is
				 * the 8 bytes ending there. */
				__u32 last = used & (CAPTURE_TAIL - 1);
				if (bpf_probe_read_user(room->tail, CAPTURE_TAIL, previous.iov_base + previous_used - CAPTURE_TAIL) == 0 &&
				    bpf_probe_read_user(&room->tail[CAPTURE_TAIL], last, segment.iov_base) == 0 &&
				    bpf_probe_read_kernel(event->tail, CAPTURE_TAIL, &room->tail[last]) == 0)
					*tail = CAPTURE_TAIL;
			}
		}
		previous = segment;
		previous_used = used;
	}
	__u32 captured = at_most(*gathered, capacity);
	if (bpf_probe_read_kernel(event->data, captured, room->bytes))
		return 0;
	return captured;
}

#include "capture_propagation.bpf.h"

/* Who moved a chunk's bytes and when, for bytes emitted later than they moved (a Go TLS Read's plaintext,
 * taken at a later call); a chunk without one is the current task's, now. */
struct chunk_origin {
	__u64 pid_tgid;
	__u64 goid;
	__u64 at_ns;
};

/* Emits a chunk whose data holds up to `capacity` (a constant) bytes of the transfer at `from`. */
static __always_inline void emit_chunk(void *ctx, const struct capture_process *process,
				       struct capture_connection *connection, __u32 fd, __u8 direction, __u8 source,
				       __u8 flags, const struct capture_user_data *from, __u64 length, const __u32 capacity,
				       const struct chunk_origin *origin)
{
	struct capture_chunk_event *event = tracer_reserve(sizeof(*event) + capacity);
	if (!event)
		return;
	tracer_fill_header(&event->header, CAPTURE_EVENT_CHUNK);
	event->connection = connection->id;
	if (origin) {
		event->header.tid = (__u32)origin->pid_tgid;
		event->header.timestamp_ns = origin->at_ns;
		event->goid = origin->goid;
	} else {
		event->goid = current_goid(process);
	}
	event->follows = process->follows;
	event->netns = current_netns();
	event->length = length;
	event->fd = fd;
	event->direction = direction;
	event->source = source;
	event->flags = flags | connection->flags;
	event->tuple = connection->tuple;
	__u32 captured = 0, tail = 0;
	if (from->buffer) {
		captured = at_most(length, capacity);
		if (bpf_probe_read_user(event->data, captured, (void *)from->buffer))
			captured = 0;
		/* The last bytes only when data does not already end with them (one user read fewer mostly). */
		if (length > captured) {
			tail = at_most(length, CAPTURE_TAIL);
			if (bpf_probe_read_user(event->tail, tail, (void *)(from->buffer + length - tail)))
				tail = 0;
		}
	} else if (from->segments) {
		captured = gather_segments(event, from, length, capacity, &tail);
	}
	event->captured = captured;
	event->tail_captured = tail;
	tracer_submit(ctx, event, sizeof(*event) + capacity);
}

/* Whether the connection's bytes are still wanted: user space's verdict, looked up again only when the
 * verdict epoch moved since this connection last looked. */
static __always_inline int captured(struct capture_connection *connection)
{
	if (connection->verdict != CAPTURE_VERDICT_CAPTURE)
		return 0;
	__u32 zero = 0;
	__u64 *epoch = bpf_map_lookup_elem(&capture_verdict_epoch, &zero);
	if (!epoch || *epoch == connection->verdict_epoch)
		return 1;
	connection->verdict_epoch = *epoch;
	__u8 *verdict = bpf_map_lookup_elem(&capture_verdicts, &connection->id);
	if (verdict)
		connection->verdict = *verdict;
	return connection->verdict == CAPTURE_VERDICT_CAPTURE;
}

/* Where the first bytes of a `length`-byte transfer at `from` are in user memory (its buffer, or its first
 * iovec segment), and how many of them are there (*contiguous); 0 when it named none. */
static __always_inline __u64 first_bytes(const struct capture_user_data *from, __u64 length, __u64 *contiguous)
{
	*contiguous = length;
	if (from->buffer)
		return from->buffer;
	struct iovec segment = {};
	if (!from->segments || !from->segment_count || bpf_probe_read_user(&segment, sizeof(segment), (void *)from->segments))
		return 0;
	if (segment.iov_len < length)
		*contiguous = segment.iov_len;
	return (__u64)segment.iov_base;
}

/* Whether the transfer at `from` starts with a TLS record: content type handshake..heartbeat (20-24),
 * then version 3.x. */
static __always_inline int starts_tls_record(const struct capture_user_data *from, __u64 length)
{
	__u8 head[3] = {};
	__u64 contiguous;
	__u64 buffer = first_bytes(from, length, &contiguous);
	if (length < 5 || !buffer || contiguous < sizeof(head) || bpf_probe_read_user(head, sizeof(head), (void *)buffer))
		return 0;
	return head[0] >= 20 && head[0] <= 24 && head[1] == 3 && head[2] <= 4;
}

/* An SSL_read/SSL_write(_ex) call between its entry uprobe and its uretprobe, keyed by pid_tgid. */
struct capture_ssl_call {
	__u64 ssl;
	__u64 buffer;
	__u64 count_pointer; /* size_t *readbytes / *written of the _ex variants, 0 otherwise */
	__u64 socket;        /* the struct sock * the call's socket I/O used, 0 until seen */
	__u8 direction;
	__u8 reserved[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct capture_ssl_call);
} capture_ssl_calls SEC(".maps");

/* SSL * -> the struct sock * last seen under it, for SSL_read calls served from OpenSSL's buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, __u64);
} capture_ssl_sockets SEC(".maps");

/* A goroutine of a Go process: Go TLS calls are kept per goroutine, which may resume on another thread
 * after blocking in the socket. */
struct capture_goroutine_key {
	__u32 tgid;
	__u32 reserved;
	__u64 goid;
};

/* Per goroutine, its crypto/tls Read of a connection whose socket is not known yet (until its socket I/O names
 * it), or its handshake (buffer 0, until its RET); `ssl` holds the *tls.Conn. LRU: a call whose I/O or RET
 * never comes ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct capture_goroutine_key);
	__type(value, struct capture_ssl_call);
} capture_go_tls_calls SEC(".maps");

/* A *tls.Conn of a process (heap addresses repeat across Go processes, so the TGID is part of it). */
struct capture_go_conn_key {
	__u32 tgid;
	__u32 reserved;
	__u64 conn;
};

/* *tls.Conn -> the struct sock * its socket I/O used, for Reads served from crypto/tls's own buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct capture_go_conn_key);
	__type(value, __u64);
} capture_go_tls_sockets SEC(".maps");

/* A crypto/tls Write whose connection's socket was not known at its entry: the handshake it runs names the
 * socket, and its RET emits the write's plaintext (Write itself has no RET probe). */
struct go_tls_pending_write {
	__u64 conn;
	__u64 buffer;
	__u64 length;
};

/* Per goroutine, its last Write that waits for its socket. LRU: a Write on a connection whose handshake
 * was before the agent waits in vain until the goroutine's next one replaces it or it ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct capture_goroutine_key);
	__type(value, struct go_tls_pending_write);
} capture_go_tls_pending_writes SEC(".maps");

/* A crypto/tls Write of goroutine `goroutine` waits for its socket (its connection's handshake came before the
 * agent): this send of `socket` names it, and the connection is TLS. That write's plaintext is not emitted (its
 * entry is gone); the connection's next writes are, at their entry. */
static __always_inline int go_tls_write_named(const struct capture_goroutine_key *goroutine, __u64 socket)
{
	struct go_tls_pending_write *pending = bpf_map_lookup_elem(&capture_go_tls_pending_writes, goroutine);
	if (!pending)
		return 0;
	struct capture_go_conn_key conn = { .tgid = goroutine->tgid, .conn = pending->conn };
	bpf_map_update_elem(&capture_go_tls_sockets, &conn, &socket, BPF_ANY);
	bpf_map_delete_elem(&capture_go_tls_pending_writes, goroutine);
	return 1;
}

/* The Read of `goroutine` on *tls.Conn `conn` moved bytes of `socket` (a connection whose handshake was before
 * the agent): that names the connection's socket, and the goroutine's call has served its purpose (nothing else
 * takes it out: Read's RET, where probed, takes only the plaintext). */
static __always_inline void go_tls_read_named(const struct capture_goroutine_key *goroutine, __u64 conn, __u64 socket)
{
	struct capture_go_conn_key key = { .tgid = goroutine->tgid, .conn = conn };
	bpf_map_update_elem(&capture_go_tls_sockets, &key, &socket, BPF_ANY);
	bpf_map_delete_elem(&capture_go_tls_calls, goroutine);
}

/* `connection` carries TLS records in `direction`: its socket bytes are never emitted, and a receive's time is
 * kept as the time of the plaintext Reads take from it. */
static __always_inline void tls_records(struct capture_connection *connection, __u8 direction)
{
	connection->flags |= CAPTURE_FLAG_TLS;
	if (direction == CAPTURE_DIRECTION_RECEIVE)
		connection->received_ns = bpf_ktime_get_ns();
}

/* Bytes crossed `sk` (a TCP socket) in `direction` for the current task of `process` (a prepared process,
 * host TGID `tgid`): `length` transferred, from or into the user memory `from` (empty when it named none).
 * `decides`: the program is a network-propagation variant, which decides the ids of the server requests it
 * receives (a constant). */
static __always_inline void transfer(void *ctx, struct capture_process *process, __u32 tgid, struct sock *sk,
				    __u8 direction, __u32 fd, const struct capture_user_data *from, __u64 length,
				    const int decides)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!sk || length == 0)
		return;
	__u64 key = (__u64)sk;
	struct capture_connection *connection = connection_of(key, sk, tgid);
	if (!connection)
		return;
	if (direction == CAPTURE_DIRECTION_SEND)
		__sync_fetch_and_add(&connection->bytes_sent, length);
	else
		__sync_fetch_and_add(&connection->bytes_received, length);
	struct capture_injection injection;
	int injected = direction == CAPTURE_DIRECTION_SEND && propagates(process) && sent_by_thread(connection->id, key, &injection);
	struct capture_ssl_call *call = bpf_map_lookup_elem(&capture_ssl_calls, &pid_tgid);
	/* The Go TLS call the current goroutine is in, if any. */
	struct capture_goroutine_key goroutine = { .tgid = tgid };
	if (!call && process->go_tls) {
		goroutine.goid = current_goid(process);
		call = goroutine.goid ? bpf_map_lookup_elem(&capture_go_tls_calls, &goroutine) : NULL;
	}
	if (call) {
		/* TLS records under SSL_read/SSL_write or a Go TLS call: the plaintext comes from the call */
		call->socket = key;
		if (goroutine.goid && call->buffer)
			go_tls_read_named(&goroutine, call->ssl, key);
		tls_records(connection, direction);
		return;
	}
	if ((goroutine.goid && direction == CAPTURE_DIRECTION_SEND && go_tls_write_named(&goroutine, key)) ||
	    (connection->flags & CAPTURE_FLAG_TLS)) {
		tls_records(connection, direction);
		return;
	}
	if (!captured(connection))
		return;
	int has_bytes = from->buffer || from->segments;
	if (has_bytes && connection->bytes_sent + connection->bytes_received == length && starts_tls_record(from, length)) {
		tls_records(connection, direction); /* a handshake: nothing of it is readable here */
		return;
	}
	__u8 flags = has_bytes ? 0 : CAPTURE_FLAG_NO_BUFFER;
	if (injected)
		announce_injection(ctx, connection->id, &injection);
	if (decides && direction == CAPTURE_DIRECTION_RECEIVE && has_bytes && propagates(process)) {
		__u64 contiguous;
		__u64 head = first_bytes(from, length, &contiguous);
		if (head)
			decide_server_span(ctx, connection->id, (const void *)head, contiguous);
	}
	if (!has_bytes || length <= CAPTURE_CLASS_SMALL)
		emit_chunk(ctx, process, connection, fd, direction, CAPTURE_SOURCE_SOCKET, flags, from, length, CAPTURE_CLASS_SMALL, NULL);
	else if (length <= CAPTURE_CLASS_MEDIUM)
		emit_chunk(ctx, process, connection, fd, direction, CAPTURE_SOURCE_SOCKET, flags, from, length, CAPTURE_CLASS_MEDIUM, NULL);
	else
		emit_chunk(ctx, process, connection, fd, direction, CAPTURE_SOURCE_SOCKET, flags, from, length, CAPTURE_MAX_DATA, NULL);
}

#if defined(__TARGET_ARCH_x86)
#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDFILE 40
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#else
#error "syscall numbers and registers of this architecture are not written yet"
#endif

/* Where the bytes of data syscall `nr` (arguments `fd_argument`, `buffer`, `count`) are; *fd the socket's
 * fd. Nothing when the syscall names no user buffer (sendfile, splice, io_uring). */
static __always_inline struct capture_user_data user_data(long nr, __u64 fd_argument, __u64 buffer, __u64 count, __u32 *fd)
{
	struct capture_user_data data = {};
	*fd = NO_FD;
	switch (nr) {
	case NR_READ:
	case NR_WRITE:
	case NR_RECVFROM:
	case NR_SENDTO:
		*fd = fd_argument;
		data.buffer = buffer;
		break;
	case NR_READV:
	case NR_WRITEV:
		*fd = fd_argument;
		data.segments = buffer;
		data.segment_count = count;
		break;
	case NR_RECVMSG:
	case NR_SENDMSG: {
		struct user_msghdr msg = {};
		*fd = fd_argument;
		if (bpf_probe_read_user(&msg, sizeof(msg), (const void *)buffer) == 0) {
			data.segments = (__u64)msg.msg_iov;
			data.segment_count = msg.msg_iovlen;
		}
		break;
	}
	case NR_SENDFILE:
		*fd = fd_argument;
		break;
	default:
		break;
	}
	return data;
}

/* Bytes crossed `sk` inside the syscall the current task is making: its arguments are in the task's saved
 * user registers (bpf_task_pt_regs, Linux 5.15). `length` is the kernel's result (> 0). */
static __always_inline void on_socket_io(void *ctx, struct sock *sk, __u8 direction, long length, const int decides)
{
	if (length <= 0 || !sk)
		return;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct capture_process *process = bpf_map_lookup_elem(&capture_processes, &tgid);
	if (!process)
		return; /* not selected: the common case, decided before anything else is read */
	/* bpf_task_pt_regs gives a BTF pointer: its fields are plain loads, no helper call each. */
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	long nr = regs->orig_ax;
	/* A peek (recvfrom's 4th or recvmsg's 3rd argument has MSG_PEEK) is read again later: not a transfer. */
	if ((nr == NR_RECVFROM && (regs->r10 & MSG_PEEK_)) || (nr == NR_RECVMSG && (regs->dx & MSG_PEEK_)))
		return;
	__u32 fd;
	struct capture_user_data data = user_data(nr, regs->di, regs->si, regs->dx, &fd);
	transfer(ctx, process, tgid, sk, direction, fd, &data, length, decides);
}

/* ---- Variant 1: socket tracepoints (Linux 6.3), as BTF tracepoints (tp_btf, Linux 5.5): typed arguments
 * and no trace record built per hit, which every socket send/receive of the machine would pay.
 * sock_sendmsg/sock_recvmsg report the socket and the result in the task's context; sendfile to a TCP
 * socket reports here too. ---- */

static __always_inline int socket_tracepoint(void *ctx, struct sock *sk, int ret, int flags, __u8 direction, const int decides)
{
	if (ret <= 0 || (flags & MSG_PEEK_) || sk->sk_protocol != IPPROTO_TCP_)
		return 0;
	on_socket_io(ctx, sk, direction, ret, decides);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(capture_sock_recv, struct sock *sk, int ret, int flags)
{
	return socket_tracepoint(ctx, sk, ret, flags, CAPTURE_DIRECTION_RECEIVE, 0);
}

/* The same with network propagation: server requests' ids decided here (bpf_loop, Linux 5.17). */
SEC("tp_btf/sock_recv_length")
int BPF_PROG(capture_sock_recv_propagating, struct sock *sk, int ret, int flags)
{
	return socket_tracepoint(ctx, sk, ret, flags, CAPTURE_DIRECTION_RECEIVE, 1);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(capture_sock_send, struct sock *sk, int ret, int flags)
{
	return socket_tracepoint(ctx, sk, ret, flags, CAPTURE_DIRECTION_SEND, 0);
}

/* ---- Variant 2: fexit on tcp_sendmsg / tcp_recvmsg (BTF trampolines, Linux 5.5; bpf_get_func_ret 5.17).
 * The TCP functions, not sock_sendmsg/sock_recvmsg: those are inlined into their callers in the same file
 * (sock_write_iter, sock_read_iter) on common kernel builds, where a trampoline never runs; tcp_* are
 * reached through the protocol's function pointers and cannot be. tcp_recvmsg lost an argument in 5.19,
 * so the result comes from bpf_get_func_ret, not from the argument list. ---- */

SEC("fexit/tcp_sendmsg")
int BPF_PROG(capture_fexit_sendmsg, struct sock *sk)
{
	__u64 ret = 0;
	bpf_get_func_ret(ctx, &ret);
	on_socket_io(ctx, sk, CAPTURE_DIRECTION_SEND, (int)ret, 0); /* an int: -EAGAIN is not 2^32 - 11 */
	return 0;
}

SEC("fexit/tcp_recvmsg")
int BPF_PROG(capture_fexit_recvmsg, struct sock *sk)
{
	__u64 ret = 0;
	bpf_get_func_ret(ctx, &ret);
	on_socket_io(ctx, sk, CAPTURE_DIRECTION_RECEIVE, (int)ret, 0);
	return 0;
}

/* ---- Variant 3: kprobes on tcp_sendmsg / tcp_recvmsg. The entry keeps the socket per thread until the
 * return. ---- */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, __u64);
} capture_kprobe_sockets SEC(".maps");

static __always_inline int kprobe_enter(struct sock *sk)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!is_prepared(pid_tgid >> 32))
		return 0;
	__u64 socket = (__u64)sk;
	bpf_map_update_elem(&capture_kprobe_sockets, &pid_tgid, &socket, BPF_ANY);
	return 0;
}

static __always_inline int kprobe_return(void *ctx, __u8 direction, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 *sk = bpf_map_lookup_elem(&capture_kprobe_sockets, &pid_tgid);
	if (!sk)
		return 0;
	struct sock *socket = (struct sock *)*sk;
	bpf_map_delete_elem(&capture_kprobe_sockets, &pid_tgid);
	on_socket_io(ctx, socket, direction, ret, 0);
	return 0;
}

/* int tcp_sendmsg(struct sock *sk, struct msghdr *msg, size_t size) */
SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(capture_kprobe_sendmsg, struct sock *sk)
{
	return kprobe_enter(sk);
}

SEC("kretprobe/tcp_sendmsg")
int BPF_KRETPROBE(capture_kretprobe_sendmsg, int ret)
{
	return kprobe_return(ctx, CAPTURE_DIRECTION_SEND, ret);
}

/* int tcp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len, [int nonblock before 5.19,] int flags, ...) */
SEC("kprobe/tcp_recvmsg")
int BPF_KPROBE(capture_kprobe_recvmsg, struct sock *sk)
{
	return kprobe_enter(sk);
}

SEC("kretprobe/tcp_recvmsg")
int BPF_KRETPROBE(capture_kretprobe_recvmsg, int ret)
{
	return kprobe_return(ctx, CAPTURE_DIRECTION_RECEIVE, ret);
}

/* ---- Variant 4: syscall tracepoints (the last resort). sys_enter keeps the arguments per thread; at
 * sys_exit the fd names the socket (task->files->fdt->fd[fd]). ---- */

struct capture_syscall {
	struct capture_user_data data;
	__u32 fd;
	__u8 direction;
	__u8 reserved[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct capture_syscall);
} capture_syscalls SEC(".maps");

/* The struct sock of a TCP socket, else NULL. */
static __always_inline struct sock *tcp_sock(struct socket *socket)
{
	struct sock *sk = BPF_CORE_READ(socket, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP_)
		return NULL;
	return sk;
}

/* The TCP struct sock behind `fd` of the current task, else NULL. */
static __always_inline struct sock *tcp_sock_of_fd(__u32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	umode_t mode = BPF_CORE_READ(file, f_inode, i_mode);
	if ((mode & S_IFMT_) != S_IFSOCK_)
		return NULL;
	struct socket *socket = BPF_CORE_READ(file, private_data);
	return tcp_sock(socket);
}

static __always_inline int syscall_enter(struct trace_event_raw_sys_enter *ctx, long nr, __u8 direction)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!is_prepared(pid_tgid >> 32))
		return 0;
	struct capture_syscall call = { .direction = direction };
	call.data = user_data(nr, ctx->args[0], ctx->args[1], ctx->args[2], &call.fd);
	bpf_map_update_elem(&capture_syscalls, &pid_tgid, &call, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_read")
int capture_enter_read(struct trace_event_raw_sys_enter *ctx)
{
	return syscall_enter(ctx, NR_READ, CAPTURE_DIRECTION_RECEIVE);
}

SEC("tracepoint/syscalls/sys_enter_write")
int capture_enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return syscall_enter(ctx, NR_WRITE, CAPTURE_DIRECTION_SEND);
}

SEC("tracepoint/syscalls/sys_enter_readv")
int capture_enter_readv(struct trace_event_raw_sys_enter *ctx)
{
	return syscall_enter(ctx, NR_READV, CAPTURE_DIRECTION_RECEIVE);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int capture_enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	return syscall_enter(ctx, NR_WRITEV, CAPTURE_DIRECTION_SEND);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int capture_enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	return syscall_enter(ctx, NR_RECVMSG, CAPTURE_DIRECTION_RECEIVE);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int capture_enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return syscall_enter(ctx, NR_SENDMSG, CAPTURE_DIRECTION_SEND);
}

SEC("tracepoint/syscalls/sys_enter_sendfile64")
int capture_enter_sendfile(struct trace_event_raw_sys_enter *ctx)
{
	return syscall_enter(ctx, NR_SENDFILE, CAPTURE_DIRECTION_SEND);
}

/* sys_exit of every data syscall: the return value is the byte count. */
static __always_inline int syscall_exit(struct trace_event_raw_sys_exit *ctx, const int decides)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct capture_syscall *saved = bpf_map_lookup_elem(&capture_syscalls, &pid_tgid);
	if (!saved)
		return 0;
	struct capture_syscall call = *saved;
	bpf_map_delete_elem(&capture_syscalls, &pid_tgid);
	if (ctx->ret <= 0 || call.fd == NO_FD)
		return 0;
	__u32 tgid = pid_tgid >> 32;
	struct capture_process *process = bpf_map_lookup_elem(&capture_processes, &tgid);
	if (process)
		transfer(ctx, process, tgid, tcp_sock_of_fd(call.fd), call.direction, call.fd, &call.data, ctx->ret, decides);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_read")
int capture_exit_data(struct trace_event_raw_sys_exit *ctx)
{
	return syscall_exit(ctx, 0);
}

/* The same with network propagation (bpf_loop, Linux 5.17). */
SEC("tracepoint/syscalls/sys_exit_read")
int capture_exit_data_propagating(struct trace_event_raw_sys_exit *ctx)
{
	return syscall_exit(ctx, 1);
}

/* ---- Every variant: the end of a connection. May run in softirq context: the connection names its
 * process. A connection ends for user space when its process closes it (FIN_WAIT1 or LAST_ACK) or when
 * it is gone (CLOSE, also after a reset); its entry goes at CLOSE. ---- */

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(capture_sock_state, const struct sock *sk, int oldstate, int state)
{
	if (sk->sk_protocol != IPPROTO_TCP_ || (state != TCP_FIN_WAIT1_ && state != TCP_LAST_ACK_ && state != TCP_CLOSE_))
		return 0;
	__u64 key = (__u64)sk;
	struct capture_connection *connection = bpf_map_lookup_elem(&capture_connections, &key);
	if (!connection)
		return 0;
	if (!(connection->flags & CAPTURE_FLAG_CLOSING)) {
		connection->flags |= CAPTURE_FLAG_CLOSING;
		struct capture_close_event *event = tracer_reserve(sizeof(*event));
		if (event) {
			tracer_fill_header(&event->header, CAPTURE_EVENT_CLOSE);
			event->header.pid = connection->tgid;
			event->connection = connection->id;
			event->bytes_sent = connection->bytes_sent;
			event->bytes_received = connection->bytes_received;
			event->verdict = connection->verdict;
			event->flags = connection->flags;
			__builtin_memset(event->reserved, 0, sizeof(event->reserved));
			tracer_submit(ctx, event, sizeof(*event));
		}
	}
	if (state == TCP_CLOSE_) {
		bpf_map_delete_elem(&capture_verdicts, &connection->id);
		bpf_map_delete_elem(&capture_connections, &key);
	}
	return 0;
}

/* ---- Every variant: processes. A child a prepared process forks is prepared from its first instruction
 * (its image is the parent's until it execs), so the first bytes of a connection handed to a forked worker
 * (a Postgres backend, a pre-fork server's child) are not lost while user space selects it; user space
 * replaces the entry when it prepares the child, and removes it if it does not select it. An exec clears
 * the Go facts (they belong to the old image) until user space prepares the new one; an exit removes the
 * entry whoever forgot it. Forks, execs and exits are rare next to socket I/O: one lookup each. ---- */

/* Set before load: children of selected processes are selected too (the agent's default). */
const volatile __u8 capture_follow_forks = 0;

SEC("tp_btf/sched_process_fork")
int BPF_PROG(capture_process_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 child_tgid = child->tgid, parent_tgid = parent->tgid;
	if (!capture_follow_forks || child->pid != child_tgid || child_tgid == parent_tgid)
		return 0; /* a thread */
	struct capture_process *facts = bpf_map_lookup_elem(&capture_processes, &parent_tgid);
	if (facts) {
		struct capture_process inherited = *facts;
		if (!inherited.follows)
			inherited.follows = parent_tgid;
		bpf_map_update_elem(&capture_processes, &child_tgid, &inherited, BPF_NOEXIST);
	}
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(capture_process_exec)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct capture_process *facts = bpf_map_lookup_elem(&capture_processes, &tgid);
	if (facts)
		facts->go_g_tls_offset = 0;
	return 0;
}

/* Runs after do_exit() counted the task out of its thread group (signal->live). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(capture_process_exit)
{
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->signal->live.counter != 0)
		return 0; /* other threads of the process still run */
	__u32 tgid = task->tgid;
	bpf_map_delete_elem(&capture_processes, &tgid);
	return 0;
}

/* TLS plaintext of `count` bytes at call->buffer, on the connection of socket key `key`: the connection is
 * marked TLS (its socket bytes are never emitted) and the plaintext emitted as from `source`. */
static __always_inline void emit_plaintext(void *ctx, __u32 tgid, __u64 key, const struct capture_ssl_call *call, __u64 count,
					   __u8 source, const int decides, const struct chunk_origin *read_by)
{
	struct capture_connection *connection = connection_of(key, NULL, tgid);
	if (!connection)
		return;
	connection->flags |= CAPTURE_FLAG_TLS;
	struct capture_process *process = bpf_map_lookup_elem(&capture_processes, &tgid);
	if (!process || !captured(connection))
		return;
	struct capture_user_data plaintext = { .buffer = call->buffer };
	if (decides && call->direction == CAPTURE_DIRECTION_RECEIVE && propagates(process))
		decide_server_span(ctx, connection->id, (const void *)call->buffer, count);
	/* A read taken later happened when its bytes arrived on the socket, or at its call if they were buffered. */
	struct chunk_origin origin = {};
	if (read_by) {
		origin = *read_by;
		if (connection->received_ns > origin.at_ns)
			origin.at_ns = connection->received_ns;
	}
	const struct chunk_origin *by = read_by ? &origin : NULL;
	if (count <= CAPTURE_CLASS_SMALL)
		emit_chunk(ctx, process, connection, NO_FD, call->direction, source, 0, &plaintext, count, CAPTURE_CLASS_SMALL, by);
	else if (count <= CAPTURE_CLASS_MEDIUM)
		emit_chunk(ctx, process, connection, NO_FD, call->direction, source, 0, &plaintext, count, CAPTURE_CLASS_MEDIUM, by);
	else
		emit_chunk(ctx, process, connection, NO_FD, call->direction, source, 0, &plaintext, count, CAPTURE_MAX_DATA, by);
}

/* ---- TLS plaintext from libssl (OpenSSL 1.1 and 3). Entry uprobes keep the plaintext buffer until the
 * uretprobe; an outer call wins over nested ones (BPF_NOEXIST). ---- */

static __always_inline int ssl_enter(__u64 ssl, __u64 buffer, __u64 count_pointer, __u8 direction)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!is_prepared(pid_tgid >> 32))
		return 0;
	struct capture_ssl_call call = { .ssl = ssl, .buffer = buffer, .count_pointer = count_pointer, .direction = direction };
	bpf_map_update_elem(&capture_ssl_calls, &pid_tgid, &call, BPF_NOEXIST);
	return 0;
}

/* int SSL_read(SSL *ssl, void *buf, int num) */
SEC("uprobe")
int BPF_KPROBE(capture_ssl_read, void *ssl, void *buf)
{
	return ssl_enter((__u64)ssl, (__u64)buf, 0, CAPTURE_DIRECTION_RECEIVE);
}

/* int SSL_write(SSL *ssl, const void *buf, int num) */
SEC("uprobe")
int BPF_KPROBE(capture_ssl_write, void *ssl, void *buf)
{
	return ssl_enter((__u64)ssl, (__u64)buf, 0, CAPTURE_DIRECTION_SEND);
}

/* int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes) */
SEC("uprobe")
int BPF_KPROBE(capture_ssl_read_ex, void *ssl, void *buf, __u64 num, __u64 *readbytes)
{
	return ssl_enter((__u64)ssl, (__u64)buf, (__u64)readbytes, CAPTURE_DIRECTION_RECEIVE);
}

/* int SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written) */
SEC("uprobe")
int BPF_KPROBE(capture_ssl_write_ex, void *ssl, void *buf, __u64 num, __u64 *written)
{
	return ssl_enter((__u64)ssl, (__u64)buf, (__u64)written, CAPTURE_DIRECTION_SEND);
}

/* The uretprobe of all four: the plaintext is in place now. */
static __always_inline int ssl_return(struct pt_regs *ctx, int ret, const int decides)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct capture_ssl_call *saved = bpf_map_lookup_elem(&capture_ssl_calls, &pid_tgid);
	if (!saved)
		return 0;
	struct capture_ssl_call call = *saved;
	bpf_map_delete_elem(&capture_ssl_calls, &pid_tgid);
	__u64 count = ret;
	if (ret <= 0 || (call.count_pointer && bpf_probe_read_user(&count, sizeof(count), (void *)call.count_pointer)) ||
	    count == 0)
		return 0;
	__u32 tgid = pid_tgid >> 32;
	__u64 key = call.socket;
	if (key) {
		bpf_map_update_elem(&capture_ssl_sockets, &call.ssl, &key, BPF_ANY);
	} else {
		__u64 *known = bpf_map_lookup_elem(&capture_ssl_sockets, &call.ssl);
		key = known ? *known : (call.ssl | 1);
	}
	emit_plaintext(ctx, tgid, key, &call, count, CAPTURE_SOURCE_LIBSSL, decides, NULL);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(capture_ssl_return, int ret) /* all four return int: -1 is 0xffffffff in RAX, not a 4 GiB read */
{
	return ssl_return(ctx, ret, 0);
}

/* The same with network propagation (bpf_loop, Linux 5.17). */
SEC("uretprobe")
int BPF_KRETPROBE(capture_ssl_return_propagating, int ret)
{
	return ssl_return(ctx, ret, 1);
}

/* ---- TLS plaintext from Go's crypto/tls, for Go 1.17+ on amd64 (register ABI: receiver and arguments in
 * RAX, RBX, RCX, ...). Uprobes at the entry of (*Conn).Read, Write and Close -- never uretprobes: Go moves
 * goroutine stacks -- and, until the process makes calls, no RET probes either: a RET is single-stepped by
 * the kernel (a second trap, ~20 us on a VM), an entry probe sits on an emulated jump. A write's plaintext is
 * complete at its entry. A Read's is taken at the connection's next call (or at the Read's RETs once the
 * process makes calls): Read hands out bytes of the decrypted record c.input (a
 * bytes.Reader) and nothing else touches it between calls, so how far c.input's read index moved, and
 * whether a new record (c.in.seq) came in, say what the Read returned, and the record still holds it.
 * The socket I/O under a call names the connection's socket, and so does the handshake's
 * (serverHandshake/clientHandshake are probed at entry and RET, once per connection).
 * User space sets capture_process.go_tls only where these probes apply. ---- */

/* The key of the current goroutine of `tgid`, a Go process whose crypto/tls plaintext is captured: 0 when it is
 * not one, or its goroutine is unknown; *process its facts. */
static __always_inline int go_tls_goroutine(__u32 tgid, struct capture_goroutine_key *key, struct capture_process **process)
{
	*process = bpf_map_lookup_elem(&capture_processes, &tgid);
	if (!*process || !(*process)->go_tls)
		return 0;
	key->tgid = tgid;
	key->goid = current_goid(*process);
	return key->goid != 0;
}

/* What a crypto/tls.Conn's Reads hand out: c.input's array, length and read index, c.in.seq (as a number), and
 * whether c.in.err is set. */
struct go_tls_input {
	__u64 array;
	__u64 length;
	__u64 consumed;
	__u64 sequence;
	__u64 failure; /* the error's type word: 0 while reads may go on */
};

static __always_inline int read_go_tls_input(const struct capture_process *process, __u64 conn, struct go_tls_input *input)
{
	if (bpf_probe_read_user(&input->array, 2 * sizeof(__u64), (void *)(conn + process->go_tls_input)) ||
	    bpf_probe_read_user(&input->consumed, sizeof(__u64), (void *)(conn + process->go_tls_consumed)) ||
	    bpf_probe_read_user(&input->sequence, sizeof(__u64), (void *)(conn + process->go_tls_sequence)) ||
	    bpf_probe_read_user(&input->failure, sizeof(__u64), (void *)(conn + process->go_tls_failure)))
		return -1;
	input->sequence = __builtin_bswap64(input->sequence);
	return 0;
}

/* A crypto/tls Read of one goroutine on one connection, whose plaintext is taken later. */
struct capture_go_read_key {
	__u32 tgid;
	__u32 reserved;
	__u64 conn;
	__u64 goid;
};

struct go_tls_pending_read {
	__u64 array;     /* c.input at its entry */
	__u64 consumed;
	__u64 sequence;
	__u64 capacity;  /* len(b) */
	__u64 pid_tgid;  /* the reader */
	__u64 entered_ns;
	struct go_tls_input end; /* c.input when another goroutine's Read of the connection began (end_known) */
	__u64 end_known;
};

/* Per goroutine and connection, its last Read until taken. LRU: one never taken ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct capture_go_read_key);
	__type(value, struct go_tls_pending_read);
} capture_go_tls_reads SEC(".maps");

/* Per *tls.Conn, the goroutine of its last Read, and the goroutine whose Read another goroutine's Read entry
 * ended without taking it (go_tls_take_reads). */
struct go_tls_readers_of {
	__u64 last;
	__u64 ended;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct capture_go_conn_key);
	__type(value, struct go_tls_readers_of);
} capture_go_tls_last_readers SEC(".maps");

/* Per goroutine, the *tls.Conn of its last Read. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct capture_goroutine_key);
	__type(value, __u64);
} capture_go_tls_readers SEC(".maps");

/* CAPTURE_GO_TLS_* counts, per CPU: Reads whose plaintext was lost. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CAPTURE_GO_TLS_LOSSES);
	__type(key, __u32);
	__type(value, __u64);
} capture_go_tls_losses SEC(".maps");

/* Emits what Read `key` returned: the bytes of c.input between where the Read began and the read index, in
 * the same record, or from a new record's start. c.input is `input` now; it is the Read's end unless another
 * goroutine's Read of the connection began since (then its entry kept the end). Taken once: the delete
 * decides between racing callers. */
static __always_inline void go_tls_take_read(void *ctx, const struct capture_go_read_key *key, const struct go_tls_input *input)
{
	struct go_tls_pending_read *pending = bpf_map_lookup_elem(&capture_go_tls_reads, key);
	if (!pending)
		return;
	struct go_tls_pending_read read = *pending;
	if (bpf_map_delete_elem(&capture_go_tls_reads, key))
		return;
	struct go_tls_input end = read.end_known ? read.end : *input;
	/* A record read after the end may have been decrypted over the bytes: not emitted, counted (an HTTP/2
	 * client whose preface and SETTINGS come in separate records). */
	if (read.end_known && input->sequence != end.sequence) {
		tracer_count(&capture_go_tls_losses, CAPTURE_GO_TLS_OVERWRITTEN);
		return;
	}
	/* One record more and a failure: that record was the alert (close_notify) or error that ended the Read, with
	 * nothing read (data and then an alert are two records); c.input still holds the last data. */
	if (end.sequence == read.sequence + 1 && end.failure)
		return;
	__u64 start = read.sequence == end.sequence && read.array == end.array ? read.consumed : 0;
	if (end.consumed <= start || end.consumed > end.length || end.consumed - start > read.capacity)
		return; /* nothing read (an error or EOF), or not a layout this can be */
	struct capture_go_conn_key conn = { .tgid = key->tgid, .conn = key->conn };
	__u64 *socket = bpf_map_lookup_elem(&capture_go_tls_sockets, &conn);
	if (!socket) {
		tracer_count(&capture_go_tls_losses, CAPTURE_GO_TLS_UNTIED); /* no socket seen for this connection yet */
		return;
	}
	struct capture_ssl_call call = { .ssl = key->conn, .buffer = end.array + start, .direction = CAPTURE_DIRECTION_RECEIVE };
	struct chunk_origin origin = { .pid_tgid = read.pid_tgid, .goid = key->goid, .at_ns = read.entered_ns };
	emit_plaintext(ctx, key->tgid, *socket, &call, end.consumed - start, CAPTURE_SOURCE_GO_TLS, 0, &origin);
}

/* At a Read's entry: the current goroutine's previous Read of the connection, and those of other goroutines, all
 * over (Reads of one connection do not overlap), in the order they were read:
 * - one an earlier Read entry ended without taking (below) is taken: its goroutine read no more (the
 *   goroutine that reads an HTTP/2 connection's preface, before the frame reader);
 * - the last reader's is taken by a goroutine that read the connection before it (net/http's connection
 *   goroutine, after its background read of one byte); one that did not (that background read, while the
 *   connection goroutine may still be writing the response) only keeps where it ended, for its own goroutine's
 *   next call, so a request's bytes and the response never race past each other.
 * Then the current goroutine is the last reader. */
static __always_inline void go_tls_take_reads(void *ctx, const struct capture_goroutine_key *goroutine, __u64 conn,
					      const struct go_tls_input *input)
{
	struct capture_go_conn_key connection = { .tgid = goroutine->tgid, .conn = conn };
	struct capture_go_read_key own = { .tgid = goroutine->tgid, .conn = conn, .goid = goroutine->goid };
	struct go_tls_readers_of readers = { .last = goroutine->goid };
	struct go_tls_readers_of *known = bpf_map_lookup_elem(&capture_go_tls_last_readers, &connection);
	if (!known) {
		go_tls_take_read(ctx, &own, input);
	} else {
		/* In the order they were read. */
		struct go_tls_readers_of before = *known;
		if (before.ended && before.ended != goroutine->goid) {
			struct capture_go_read_key ended = { .tgid = goroutine->tgid, .conn = conn, .goid = before.ended };
			struct go_tls_pending_read *pending = bpf_map_lookup_elem(&capture_go_tls_reads, &ended);
			if (pending && pending->end_known)
				go_tls_take_read(ctx, &ended, input);
		}
		go_tls_take_read(ctx, &own, input);
		if (before.last != goroutine->goid) {
			struct capture_go_read_key last = { .tgid = goroutine->tgid, .conn = conn, .goid = before.last };
			__u64 *read_before = bpf_map_lookup_elem(&capture_go_tls_readers, goroutine);
			struct go_tls_pending_read *pending;
			if (read_before && *read_before == conn) {
				go_tls_take_read(ctx, &last, input);
			} else if ((pending = bpf_map_lookup_elem(&capture_go_tls_reads, &last)) && !pending->end_known) {
				pending->end = *input;
				pending->end_known = 1;
				readers.ended = before.last;
			}
		}
	}
	bpf_map_update_elem(&capture_go_tls_last_readers, &connection, &readers, BPF_ANY);
}

/* func (c *Conn) Read(b []byte) (int, error): takes the connection's Reads that are over (go_tls_take_reads) and
 * keeps this one. */
SEC("uprobe")
int capture_go_tls_read(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct capture_goroutine_key goroutine = {};
	struct capture_process *process;
	if (!go_tls_goroutine(pid_tgid >> 32, &goroutine, &process))
		return 0;
	__u64 conn = ctx->ax;
	__u64 buffer = ctx->bx;
	long capacity = ctx->cx;
	asm volatile("" : "+r"(capacity)); /* one read of the context: clang would add to the ctx pointer */
	struct go_tls_input input;
	if (read_go_tls_input(process, conn, &input))
		return 0;
	struct capture_go_read_key own = { .tgid = goroutine.tgid, .conn = conn, .goid = goroutine.goid };
	go_tls_take_reads(ctx, &goroutine, conn, &input);
	bpf_map_update_elem(&capture_go_tls_readers, &goroutine, &conn, BPF_ANY);
	struct capture_go_conn_key connection = { .tgid = goroutine.tgid, .conn = conn };
	if (capacity <= 0)
		return 0;
	struct go_tls_pending_read read = { .array = input.array, .consumed = input.consumed, .sequence = input.sequence,
					    .capacity = capacity, .pid_tgid = pid_tgid, .entered_ns = bpf_ktime_get_ns() };
	bpf_map_update_elem(&capture_go_tls_reads, &own, &read, BPF_ANY);
	if (!bpf_map_lookup_elem(&capture_go_tls_sockets, &connection)) {
		/* Its socket I/O names the socket (a handshake this Read runs leaves this outer call in place). */
		struct capture_ssl_call call = { .ssl = conn, .buffer = buffer, .direction = CAPTURE_DIRECTION_RECEIVE };
		bpf_map_update_elem(&capture_go_tls_calls, &goroutine, &call, BPF_ANY);
	}
	return 0;
}

/* Takes the current goroutine's last Read of *tls.Conn `conn`, if any. */
static __always_inline void go_tls_take_own_read(void *ctx, const struct capture_process *process,
						 const struct capture_goroutine_key *goroutine, __u64 conn)
{
	struct capture_go_read_key own = { .tgid = goroutine->tgid, .conn = conn, .goid = goroutine->goid };
	struct go_tls_input input;
	if (bpf_map_lookup_elem(&capture_go_tls_reads, &own) && !read_go_tls_input(process, conn, &input))
		go_tls_take_read(ctx, &own, &input);
}

/* Every RET of Read, attached only once the process makes calls: the Read's plaintext now, so it precedes
 * anything its goroutine does next (the call a handler makes must find the request it serves). */
SEC("uprobe")
int capture_go_tls_read_return(struct pt_regs *ctx)
{
	struct capture_goroutine_key goroutine = {};
	struct capture_process *process;
	if (!go_tls_goroutine(bpf_get_current_pid_tgid() >> 32, &goroutine, &process))
		return 0;
	__u64 *reading = bpf_map_lookup_elem(&capture_go_tls_readers, &goroutine);
	if (reading)
		go_tls_take_own_read(ctx, process, &goroutine, *reading);
	return 0;
}

/* func (c *Conn) Write(b []byte) (int, error): the plaintext is complete at the entry (RBX, RCX: the slice's
 * array and length), emitted now when the connection's socket is known -- before the peer can read it, so
 * same-host linking is in time -- else when the handshake this Write runs names the socket. This goroutine's
 * last Read of the connection is taken first, so a server's request precedes its response. */
SEC("uprobe")
int capture_go_tls_write(struct pt_regs *ctx)
{
	struct capture_goroutine_key goroutine = {};
	struct capture_process *process;
	if (!go_tls_goroutine(bpf_get_current_pid_tgid() >> 32, &goroutine, &process))
		return 0;
	struct capture_go_conn_key conn = { .tgid = goroutine.tgid, .conn = ctx->ax };
	__u64 buffer = ctx->bx;
	long length = ctx->cx;
	asm volatile("" : "+r"(length));
	if (length <= 0)
		return 0;
	go_tls_take_own_read(ctx, process, &goroutine, conn.conn);
	/* A Read of this goroutine that is over without socket I/O (served from what crypto/tls buffered) names
	 * no socket: its call must not name this goroutine's next one. */
	struct capture_ssl_call *read = bpf_map_lookup_elem(&capture_go_tls_calls, &goroutine);
	if (read && read->buffer)
		bpf_map_delete_elem(&capture_go_tls_calls, &goroutine);
	__u64 *socket = bpf_map_lookup_elem(&capture_go_tls_sockets, &conn);
	if (socket) {
		/* The connection is marked TLS, so the write's socket I/O emits nothing. */
		struct capture_ssl_call call = { .ssl = conn.conn, .buffer = buffer, .direction = CAPTURE_DIRECTION_SEND };
		emit_plaintext(ctx, goroutine.tgid, *socket, &call, length, CAPTURE_SOURCE_GO_TLS, 0, NULL);
	} else {
		struct go_tls_pending_write pending = { .conn = conn.conn, .buffer = buffer, .length = length };
		bpf_map_update_elem(&capture_go_tls_pending_writes, &goroutine, &pending, BPF_ANY);
	}
	return 0;
}

/* func (c *Conn) Close() error: this goroutine's last Read of the connection and the other readers' (a response
 * read just before closing). */
SEC("uprobe")
int capture_go_tls_close(struct pt_regs *ctx)
{
	struct capture_goroutine_key goroutine = {};
	struct capture_process *process;
	if (!go_tls_goroutine(bpf_get_current_pid_tgid() >> 32, &goroutine, &process))
		return 0;
	__u64 conn = ctx->ax;
	struct go_tls_input input;
	if (read_go_tls_input(process, conn, &input))
		return 0;
	struct capture_go_read_key own = { .tgid = goroutine.tgid, .conn = conn, .goid = goroutine.goid };
	go_tls_take_read(ctx, &own, &input);
	struct capture_go_conn_key connection = { .tgid = goroutine.tgid, .conn = conn };
	struct go_tls_readers_of *readers = bpf_map_lookup_elem(&capture_go_tls_last_readers, &connection);
	if (readers) {
		struct capture_go_read_key last = { .tgid = goroutine.tgid, .conn = conn, .goid = readers->last };
		struct capture_go_read_key ended = { .tgid = goroutine.tgid, .conn = conn, .goid = readers->ended };
		if (ended.goid && ended.goid != goroutine.goid)
			go_tls_take_read(ctx, &ended, &input);
		if (last.goid != goroutine.goid)
			go_tls_take_read(ctx, &last, &input);
	}
	bpf_map_delete_elem(&capture_go_tls_last_readers, &connection);
	return 0;
}

/* func (c *Conn) serverHandshake(ctx context.Context) error, and clientHandshake: once per connection. An
 * outer Read's call stays in place (it gets the socket). */
SEC("uprobe")
int capture_go_tls_handshake(struct pt_regs *ctx)
{
	struct capture_goroutine_key goroutine = {};
	struct capture_process *process;
	if (!go_tls_goroutine(bpf_get_current_pid_tgid() >> 32, &goroutine, &process))
		return 0;
	struct capture_ssl_call call = { .ssl = ctx->ax, .direction = CAPTURE_DIRECTION_RECEIVE };
	struct capture_ssl_call *outer = bpf_map_lookup_elem(&capture_go_tls_calls, &goroutine);
	if (!outer || outer->ssl != call.ssl)
		bpf_map_update_elem(&capture_go_tls_calls, &goroutine, &call, BPF_ANY);
	return 0;
}

/* Every RET of serverHandshake/clientHandshake: the connection's socket, if its I/O was seen (and the plaintext
 * of the Write it ran in). */
SEC("uprobe")
int capture_go_tls_handshake_return(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct capture_goroutine_key key = {};
	struct capture_process *process;
	if (!go_tls_goroutine(tgid, &key, &process))
		return 0;
	struct capture_ssl_call *saved = bpf_map_lookup_elem(&capture_go_tls_calls, &key);
	if (!saved || saved->buffer)
		return 0; /* an outer Read keeps its call */
	struct capture_go_conn_key conn = { .tgid = tgid, .conn = saved->ssl };
	__u64 socket = saved->socket;
	bpf_map_delete_elem(&capture_go_tls_calls, &key);
	if (!socket)
		return 0;
	bpf_map_update_elem(&capture_go_tls_sockets, &conn, &socket, BPF_ANY);
	/* The Write this handshake ran in (a client's first), now that its socket is known. */
	struct go_tls_pending_write *pending = bpf_map_lookup_elem(&capture_go_tls_pending_writes, &key);
	if (!pending || pending->conn != conn.conn)
		return 0;
	struct capture_ssl_call write = { .ssl = pending->conn, .buffer = pending->buffer, .direction = CAPTURE_DIRECTION_SEND };
	__u64 length = pending->length;
	bpf_map_delete_elem(&capture_go_tls_pending_writes, &key);
	emit_plaintext(ctx, tgid, socket, &write, length, CAPTURE_SOURCE_GO_TLS, 0, NULL);
	return 0;
}
