/* SPDX-License-Identifier: GPL-2.0 */
/* Network propagation for the capture layer (bpf/capture.bpf.c includes it; only with
 * capture_network_propagation, which `--context-propagation network` sets): a `traceparent` inserted into the
 * plaintext HTTP/1 requests that selected non-Go processes send, with no write into any process.
 *
 *   sockops (cgroup2 root)  at connect() in the connecting task (BPF_SOCK_OPS_TCP_CONNECT_CB) marks the
 *                           sockets of selected processes; once established (ACTIVE_ESTABLISHED_CB) they
 *                           join capture_propagation_sockets. Connections older than the agent never do.
 *   sk_msg (on that map)    runs in the sending task for every sendmsg/sendfile of those sockets: follows
 *                           the request framing (Content-Length) and, at the start of a request head that
 *                           carries no traceparent, inserts one after the request line
 *                           (bpf_msg_push_data). Anything it cannot frame leaves the rest of the
 *                           connection alone.
 *   the data hooks          a receive that starts an HTTP/1 request decides the server span's ids (its
 *                           parent from the request's traceparent) and the receiving thread serves it
 *                           until it answers on that connection; the inserted ids' client span is the
 *                           child of what the sending thread serves. Both reach user space as
 *                           CAPTURE_EVENT_CONTEXT just before their chunk, so the spans carry the ids that
 *                           went over the wire.
 * Go processes are left to the Go tracer: their requests are written by another goroutine than the one
 * that serves the call's parent. */

const volatile __u8 capture_network_propagation = 0;

/* Ids the kernel decided for one span. */
struct capture_span_ids {
	__u8 trace_id[16];
	__u8 span_id[8];
	__u8 parent_span_id[8];
};

/* The request a thread is serving (pid_tgid ->): its server span, the connection it came on (answered
 * there, it is over), and whether another request was still open on the thread when it came (an event
 * loop: no call is parented then). */
struct capture_serving {
	struct capture_span_ids ids;
	__u64 connection;
	__u8 ambiguous;
	__u8 reserved[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct capture_serving);
} capture_serving_threads SEC(".maps");

/* An inserted traceparent (pid_tgid ->), from the sk_msg program to the send hook of the same sendmsg. */
struct capture_injection {
	struct capture_span_ids ids;
	__u64 socket; /* struct sock * */
	__u8 flags;   /* CAPTURE_CONTEXT_* */
	__u8 reserved[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct capture_injection);
} capture_injections SEC(".maps");

/* Per socket (sk storage): whether a selected process opened it, and where its outgoing requests stand. */
struct capture_request_framing {
	__u64 body_remaining; /* bytes of the current request's body still to go */
	__u8 selected;        /* connect() ran in a selected process */
	__u8 unframed;        /* the stream is not followed any more: nothing more is inserted */
	__u8 reserved[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct capture_request_framing);
} capture_request_framings SEC(".maps");

/* The sockets the sk_msg program runs for (socket cookie ->); a socket leaves it when it closes. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} capture_propagation_sockets SEC(".maps");

/* CAPTURE_PROPAGATION_* counts, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CAPTURE_PROPAGATION_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} capture_propagation_counts SEC(".maps");

static __always_inline void count_propagation(__u32 counter)
{
	tracer_count(&capture_propagation_counts, counter);
}

/* ---- Reading an HTTP/1 request head (RFC 9112 section 2-3): the request line, then header lines up to an
 * empty line. Run byte by byte with bpf_loop (Linux 5.17) over a per-CPU copy of the first bytes. ---- */

#define HEAD_WINDOW CAPTURE_MAX_DATA
#define HEAD_MASK (2 * HEAD_WINDOW - 1)

struct capture_head {
	__u8 bytes[2 * HEAD_WINDOW]; /* the first `length` bytes; the rest is room for masked reads */
	__u32 length;
	__u32 line_start;
	__u32 request_line_end; /* just past the request line's LF; 0: no request line */
	__u32 head_end;         /* just past the empty line; 0: not within `length` */
	__u32 traceparent;      /* where a traceparent header's value starts; 0: none */
	__u8 not_request;       /* the first line is no HTTP/1 request line */
	__u8 unframed;          /* Transfer-Encoding or Upgrade: the body's end cannot be followed */
	__u8 reserved[2];
	__u64 content_length;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct capture_head);
} capture_head_room SEC(".maps");

static __always_inline __u8 head_byte(struct capture_head *head, __u32 at)
{
	return head->bytes[at & HEAD_MASK];
}

/* The little 8-byte word at `at` of the head (an unaligned load). */
static __always_inline __u64 head_word(struct capture_head *head, __u32 at)
{
	__u64 word;
	__builtin_memcpy(&word, &head->bytes[at & (HEAD_WINDOW - 1)], 8);
	return word;
}

/* Whether the line at `start` (of `length` bytes, CR included) is header `name` (lower case, with the
 * colon), compared without case. */
static __always_inline int header_named(struct capture_head *head, __u32 start, __u32 length, const char *name, const __u32 size)
{
	if (length < size)
		return 0;
	for (__u32 i = 0; i < size; i++) {
		__u8 byte = head_byte(head, start + i);
		if (byte >= 'A' && byte <= 'Z')
			byte += 'a' - 'A';
		if (byte != (__u8)name[i])
			return 0;
	}
	return 1;
}

/* Whether the request line ending at `end` (its LF) ends with " HTTP/1.x\r". */
static __always_inline int request_line_ends_well(struct capture_head *head, __u32 end)
{
	const __u64 version = 0x2e312f5054544820ULL; /* " HTTP/1." as a little-endian word */
	return end >= 16 && head_byte(head, end - 1) == '\r' && head_word(head, end - 10) == version;
}

/* bpf_loop's context: a pointer on the caller's stack (the verifier wants a stack pointer there). */
struct capture_head_scan {
	struct capture_head *head;
};

/* A line of the head ended with the LF at `at`: the request line, a header that matters, or the empty line.
 * Returns 1 when the scan is over. */
static __always_inline int line_ended(struct capture_head *head, __u32 at)
{
	__u32 start = head->line_start;
	__u32 length = at - start;
	head->line_start = at + 1;
	if (!head->request_line_end) {
		if (start != 0 || !request_line_ends_well(head, at)) {
			head->not_request = 1;
			return 1;
		}
		head->request_line_end = at + 1;
		return 0;
	}
	if (length <= 1) { /* "\r": the empty line */
		head->head_end = at + 1;
		return 1;
	}
	if (header_named(head, start, length, "traceparent:", 12)) {
		head->traceparent = start + 12;
	} else if (header_named(head, start, length, "content-length:", 15)) {
		__u64 value = 0;
		for (__u32 i = 15; i < 15 + 20 && i < length; i++) {
			__u8 byte = head_byte(head, start + i);
			if (byte >= '0' && byte <= '9')
				value = value * 10 + (byte - '0');
			else if (byte != ' ' && byte != '\t')
				break;
		}
		head->content_length = value;
	} else if (header_named(head, start, length, "transfer-encoding:", 18) || header_named(head, start, length, "upgrade:", 8)) {
		head->unframed = 1;
	}
	return 0;
}

/* bpf_loop callback: 8 bytes of the head, looked at one by one only when they hold an LF (the zero-byte
 * test on the word XOR LFs: most words of a head hold none). */
static long scan_head_word(__u64 index, void *context)
{
	struct capture_head *head = ((struct capture_head_scan *)context)->head;
	__u32 at = index * 8;
	if (!head || at >= head->length || at >= HEAD_WINDOW)
		return 1;
	__u64 word = head_word(head, at) ^ 0x0a0a0a0a0a0a0a0aULL;
	if (!((word - 0x0101010101010101ULL) & ~word & 0x8080808080808080ULL))
		return 0;
#pragma clang loop unroll(disable)
	for (__u32 k = 0; k < 8; k++) {
		if (at + k >= head->length)
			return 1;
		if (head_byte(head, at + k) == '\n' && line_ended(head, at + k))
			return 1;
	}
	return 0;
}

/* Whether the head's first bytes are a request method (upper-case letters) and a space. */
static __always_inline int starts_with_method(struct capture_head *head)
{
	for (__u32 i = 0; i < 8; i++) {
		__u8 byte = head_byte(head, i);
		if (byte == ' ')
			return i >= 3;
		if (byte < 'A' || byte > 'Z')
			return 0;
	}
	return 0;
}

/* Copies the first bytes of a transfer into the per-CPU head room: `length` bytes at `bytes`, user memory
 * (a receive's buffer) or kernel memory (an sk_msg's data). NULL when they do not start with a request method:
 * most transfers are no request head, and cost one 8-byte copy. */
static __always_inline struct capture_head *copy_head(const void *bytes, __u64 length, const int user)
{
	__u32 zero = 0;
	struct capture_head *head = bpf_map_lookup_elem(&capture_head_room, &zero);
	if (!head || length < 16)
		return NULL;
	if ((user ? bpf_probe_read_user(head->bytes, 8, bytes) : bpf_probe_read_kernel(head->bytes, 8, bytes)) ||
	    !starts_with_method(head))
		return NULL;
	__u32 size = at_most(length, HEAD_WINDOW);
	if (user ? bpf_probe_read_user(head->bytes, size, bytes) : bpf_probe_read_kernel(head->bytes, size, bytes))
		return NULL;
	head->length = size;
	head->line_start = head->request_line_end = head->head_end = head->traceparent = 0;
	head->not_request = head->unframed = 0;
	head->content_length = 0;
	return head;
}

/* The request line and header lines of a head, with bpf_loop (Linux 5.17): only the programs of network
 * propagation run it (they are loaded only then; older verifiers refuse a bpf_loop callback even where it
 * never runs). */
static __always_inline struct capture_head *scan_head(struct capture_head *head)
{
	struct capture_head_scan scan = { .head = head };
	bpf_loop(HEAD_WINDOW / 8, scan_head_word, &scan, 0);
	return head->not_request || !head->request_line_end ? NULL : head;
}

static __always_inline int hex_value(__u8 byte)
{
	if (byte >= '0' && byte <= '9')
		return byte - '0';
	if (byte >= 'a' && byte <= 'f')
		return byte - 'a' + 10;
	return -1;
}

/* `count` bytes from the lower-case hex at `at` of the head; 0 when a digit is not one. */
static __always_inline int read_hex(struct capture_head *head, __u32 at, __u8 *into, const __u32 count)
{
	for (__u32 i = 0; i < count; i++) {
		int high = hex_value(head_byte(head, at + 2 * i)), low = hex_value(head_byte(head, at + 2 * i + 1));
		if (high < 0 || low < 0)
			return 0;
		into[i] = high << 4 | low;
	}
	return 1;
}

/* The W3C trace context in the head's traceparent value ("00-" trace "-" parent "-" flags): its trace id
 * and span id (the parent of the request's span). 0 when there is none or it is not valid. */
static __always_inline int read_traceparent(struct capture_head *head, struct capture_span_ids *ids)
{
	__u32 at = head->traceparent;
	if (!at)
		return 0;
	for (int i = 0; i < 4 && (head_byte(head, at) == ' ' || head_byte(head, at) == '\t'); i++)
		at++;
	if (at + 55 > head->length || head_byte(head, at) != '0' || head_byte(head, at + 1) != '0' ||
	    head_byte(head, at + 2) != '-' || head_byte(head, at + 35) != '-' || head_byte(head, at + 52) != '-')
		return 0;
	if (!read_hex(head, at + 3, ids->trace_id, 16) || !read_hex(head, at + 36, ids->parent_span_id, 8))
		return 0;
	__u64 trace_high, trace_low, parent;
	__builtin_memcpy(&trace_high, ids->trace_id, 8);
	__builtin_memcpy(&trace_low, &ids->trace_id[8], 8);
	__builtin_memcpy(&parent, ids->parent_span_id, 8);
	return (trace_high | trace_low) != 0 && parent != 0;
}

static __always_inline void random_bytes(__u8 *into, const __u32 words)
{
	for (__u32 i = 0; i < words; i++) {
		__u32 value = bpf_get_prandom_u32() | (i == 0); /* never all zero */
		__builtin_memcpy(into + 4 * i, &value, 4);
	}
}

/* Writes `ids` as a traceparent line (CAPTURE_TRACEPARENT_LINE bytes, sampled). */
static __always_inline void write_traceparent_line(__u8 *line, const struct capture_span_ids *ids)
{
	static const char digits[] = "0123456789abcdef";
	__builtin_memcpy(line, "traceparent: 00-", 16);
	for (int i = 0; i < 16; i++) {
		line[16 + 2 * i] = digits[ids->trace_id[i] >> 4];
		line[17 + 2 * i] = digits[ids->trace_id[i] & 15];
	}
	line[48] = '-';
	for (int i = 0; i < 8; i++) {
		line[49 + 2 * i] = digits[ids->span_id[i] >> 4];
		line[50 + 2 * i] = digits[ids->span_id[i] & 15];
	}
	__builtin_memcpy(&line[65], "-01\r\n", 5);
}

/* ---- The data hooks' side ---- */

/* Emits a CAPTURE_EVENT_CONTEXT record reserved by the caller. */
static __always_inline void submit_context(void *ctx, struct capture_context_event *event, __u64 connection, __u8 direction,
					   __u8 flags, __u32 injected, const struct capture_span_ids *ids)
{
	tracer_fill_header(&event->header, CAPTURE_EVENT_CONTEXT);
	event->connection = connection;
	__builtin_memcpy(event->trace_id, ids->trace_id, 16);
	__builtin_memcpy(event->span_id, ids->span_id, 8);
	__builtin_memcpy(event->parent_span_id, ids->parent_span_id, 8);
	event->injected = injected;
	event->direction = direction;
	event->flags = flags;
	event->reserved[0] = event->reserved[1] = 0;
	tracer_submit(ctx, event, sizeof(*event));
}

/* Whether network propagation follows `process` (selected, not Go). */
static __always_inline int propagates(const struct capture_process *process)
{
	return capture_network_propagation && !tracer_use_perf_buffer && !process->go_g_tls_offset;
}

/* A receive of `connection` whose first `length` bytes are at user address `bytes`: when they start an
 * HTTP/1 request, decides its server span's ids (its parent from the request's traceparent), makes the
 * receiving thread serve it, and announces them; called before the chunk is emitted, so they are read first. */
static __always_inline void decide_server_span(void *ctx, __u64 connection, const void *bytes, __u64 length)
{
	struct capture_head *head = copy_head(bytes, length, 1);
	if (!head || !scan_head(head))
		return;
	struct capture_serving serving = { .connection = connection };
	__u8 flags = 0;
	if (read_traceparent(head, &serving.ids))
		flags = CAPTURE_CONTEXT_TRACEPARENT;
	else {
		__builtin_memset(&serving.ids, 0, sizeof(serving.ids));
		random_bytes(serving.ids.trace_id, 4);
	}
	random_bytes(serving.ids.span_id, 2);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	serving.ambiguous = bpf_map_lookup_elem(&capture_serving_threads, &pid_tgid) != NULL;
	bpf_map_update_elem(&capture_serving_threads, &pid_tgid, &serving, BPF_ANY);
	struct capture_context_event *event = bpf_ringbuf_reserve(&tracer_events, sizeof(*event), 0);
	if (!event) {
		tracer_count_drop();
		return;
	}
	submit_context(ctx, event, connection, CAPTURE_DIRECTION_RECEIVE, flags, 0, &serving.ids);
}

/* A send of the current thread on `connection` (struct sock * `socket`): answering the request the thread
 * serves ends it. Returns whether the sk_msg program inserted a traceparent into this send (then in
 * `injection`, to announce before its chunk). */
static __always_inline int sent_by_thread(__u64 connection, __u64 socket, struct capture_injection *injection)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct capture_serving *serving = bpf_map_lookup_elem(&capture_serving_threads, &pid_tgid);
	if (serving && serving->connection == connection)
		bpf_map_delete_elem(&capture_serving_threads, &pid_tgid);
	struct capture_injection *found = bpf_map_lookup_elem(&capture_injections, &pid_tgid);
	if (!found)
		return 0;
	*injection = *found;
	bpf_map_delete_elem(&capture_injections, &pid_tgid);
	return injection->socket == socket;
}

/* Announces an inserted traceparent just before the chunk of the send that carried it. */
static __always_inline void announce_injection(void *ctx, __u64 connection, const struct capture_injection *injection)
{
	struct capture_context_event *event = bpf_ringbuf_reserve(&tracer_events, sizeof(*event), 0);
	if (!event) {
		tracer_count_drop();
		return;
	}
	submit_context(ctx, event, connection, CAPTURE_DIRECTION_SEND, injection->flags, CAPTURE_TRACEPARENT_LINE, &injection->ids);
}

/* ---- sockops and sk_msg ---- */

SEC("sockops")
int capture_propagation_sockops(struct bpf_sock_ops *ops)
{
	if (!capture_network_propagation)
		return 1;
	struct bpf_sock *sk = ops->sk;
	if (!sk)
		return 1;
	if (ops->op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		/* connect() of the current task */
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;
		struct capture_process *process = bpf_map_lookup_elem(&capture_processes, &tgid);
		if (!process || process->go_g_tls_offset)
			return 1;
		struct capture_request_framing *framing =
			bpf_sk_storage_get(&capture_request_framings, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (framing)
			framing->selected = 1;
	} else if (ops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		/* may run in softirq context: the mark says whose it is */
		struct capture_request_framing *framing = bpf_sk_storage_get(&capture_request_framings, sk, 0, 0);
		if (!framing || !framing->selected)
			return 1;
		__u64 cookie = bpf_get_socket_cookie(ops);
		bpf_sock_hash_update(ops, &capture_propagation_sockets, &cookie, BPF_NOEXIST);
	}
	return 1;
}

/* The outgoing bytes of one sendmsg (or a part of a large one) of a socket in capture_propagation_sockets,
 * in the sending task. Always SK_PASS: a request is changed only by a whole inserted line, or not at all. */
SEC("sk_msg")
int capture_propagation_msg(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	if (!capture_network_propagation || !sk)
		return SK_PASS;
	struct capture_request_framing *framing = bpf_sk_storage_get(&capture_request_framings, sk, 0, 0);
	if (!framing || framing->unframed)
		return SK_PASS;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!is_prepared(pid_tgid >> 32))
		return SK_PASS; /* a process no longer selected (or another that got the socket) */
	__u64 size = msg->size;
	if (framing->body_remaining >= size) {
		framing->body_remaining -= size;
		return SK_PASS;
	}
	if (framing->body_remaining) {
		/* a request starts inside this message: not followed further */
		framing->unframed = 1;
		count_propagation(CAPTURE_PROPAGATION_SKIPPED);
		return SK_PASS;
	}
	__u32 window = at_most(size, HEAD_WINDOW);
	if (bpf_msg_pull_data(msg, 0, window, 0)) {
		framing->unframed = 1;
		count_propagation(CAPTURE_PROPAGATION_FAILED);
		return SK_PASS;
	}
	struct capture_head *head = copy_head(msg->data, window, 0);
	if (head)
		head = scan_head(head);
	if (!head || !head->head_end) {
		/* not HTTP/1, or a head split over several writes or longer than the window */
		framing->unframed = 1;
		if (head)
			count_propagation(CAPTURE_PROPAGATION_SKIPPED);
		return SK_PASS;
	}
	__u64 after_head = size - head->head_end;
	if (head->unframed || after_head > head->content_length)
		framing->unframed = 1; /* chunked, an upgrade, or pipelined requests: this one only */
	else
		framing->body_remaining = head->content_length - after_head;
	if (head->traceparent) {
		count_propagation(CAPTURE_PROPAGATION_SKIPPED);
		return SK_PASS;
	}

	struct capture_injection injection = { .flags = CAPTURE_CONTEXT_INJECTED };
	struct capture_serving *serving = bpf_map_lookup_elem(&capture_serving_threads, &pid_tgid);
	if (serving && !serving->ambiguous) {
		__builtin_memcpy(injection.ids.trace_id, serving->ids.trace_id, 16);
		__builtin_memcpy(injection.ids.parent_span_id, serving->ids.span_id, 8);
	} else {
		random_bytes(injection.ids.trace_id, 4);
	}
	random_bytes(injection.ids.span_id, 2);
	__u8 line[CAPTURE_TRACEPARENT_LINE];
	write_traceparent_line(line, &injection.ids);

	__u32 offset = head->request_line_end;
	if (offset >= HEAD_WINDOW || bpf_msg_push_data(msg, offset, CAPTURE_TRACEPARENT_LINE, 0)) {
		count_propagation(CAPTURE_PROPAGATION_FAILED);
		return SK_PASS;
	}
	/* the new bytes: writable once pulled into the linear window */
	__u8 *data = NULL;
	if (bpf_msg_pull_data(msg, offset, offset + CAPTURE_TRACEPARENT_LINE, 0) == 0)
		data = msg->data;
	if (!data || data + CAPTURE_TRACEPARENT_LINE > (__u8 *)msg->data_end) {
		bpf_msg_pop_data(msg, offset, CAPTURE_TRACEPARENT_LINE, 0);
		count_propagation(CAPTURE_PROPAGATION_FAILED);
		return SK_PASS;
	}
	__builtin_memcpy(data, line, CAPTURE_TRACEPARENT_LINE);
	struct tcp_sock *tcp = bpf_skc_to_tcp_sock(sk);
	injection.socket = (__u64)tcp;
	bpf_map_update_elem(&capture_injections, &pid_tgid, &injection, BPF_ANY);
	count_propagation(CAPTURE_PROPAGATION_INJECTED);
	return SK_PASS;
}
