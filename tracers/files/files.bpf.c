// SPDX-License-Identifier: GPL-2.0
/* File events for audit (libbpf-tools' opensnoop, plus creates, unlinks and renames): the syscall tracepoints
 * of the open, creat, unlink and rename families only (not raw_syscalls, which would run on every syscall).
 * At each sys_enter_* the arguments are kept per thread; at the matching sys_exit_* the path is read from the
 * process (the kernel has copied it by then) and, when it is under one of the configured prefixes, sent with
 * the result. The process filter (--pid, or the agent's selection) is the first thing each program checks.
 * Relative paths cannot be judged against a prefix here (the working directory is not at hand): they are
 * sent, and user space reports the directory they are relative to. */
#define KERNEL_TRACER_EVENTS
#include "kernel_tracer_selection.bpf.h"
#include "files.h"

char LICENSE[] SEC("license") = "GPL";

#define O_CREAT 0100
#define O_WRONLY 01
#define O_TRUNC 01000
#define AT_FDCWD -100

/* The configured path prefixes (set by user space before load, read-only after) and how many are in use;
 * 0: every path. */
const volatile __u32 files_prefix_count = 0;
const volatile struct files_prefix files_prefixes[FILES_PREFIX_MAX] = {};

/* A syscall between its enter and exit: what the exit needs to build the event. */
struct files_call {
	__u32 type;
	__u32 flags;
	__u32 mode;
	__s32 dirfd;
	__s32 new_dirfd;
	__u32 reserved;
	__u64 path;     /* user pointer */
	__u64 new_path; /* user pointer (rename) */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct files_call);
} files_calls SEC(".maps");

const struct files_event *files_event_anchor;
const struct files_prefix *files_prefix_anchor;
const struct kernel_event_header *files_header_anchor;

static __always_inline int entered(__u32 type, __u32 flags, __u32 mode, __s32 dirfd, const void *path, __s32 new_dirfd, const void *new_path)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!kernel_process_selected(id >> 32))
		return 0;
	__u32 tid = (__u32)id;
	struct files_call call = {
		.type = type, .flags = flags, .mode = mode, .dirfd = dirfd, .new_dirfd = new_dirfd,
		.path = (__u64)path, .new_path = (__u64)new_path,
	};
	if (bpf_map_update_elem(&files_calls, &tid, &call, BPF_ANY))
		kernel_count(KERNEL_STAT_STATE_OVERFLOW);
	return 0;
}

/* Whether `path` (of `length` bytes) is to be reported: no prefixes configured, a relative path, or one that
 * starts with a configured prefix. */
static __always_inline int wanted(const __u8 *path, __u32 length)
{
	if (files_prefix_count == 0 || length == 0 || path[0] != '/')
		return 1;
	for (__u32 index = 0; index < FILES_PREFIX_MAX; index++) {
		if (index >= files_prefix_count)
			break;
		const volatile struct files_prefix *prefix = &files_prefixes[index];
		__u32 prefix_length = prefix->length;
		if (prefix_length == 0 || prefix_length > length || prefix_length > sizeof(prefix->bytes))
			continue;
		int same = 1;
		for (__u32 at = 0; at < sizeof(prefix->bytes); at++) {
			if (at >= prefix_length)
				break;
			if (path[at] != prefix->bytes[at]) {
				same = 0;
				break;
			}
		}
		if (same)
			return 1;
	}
	return 0;
}

static __always_inline int exited(long result)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!kernel_process_selected(id >> 32))
		return 0;
	__u32 tid = (__u32)id;
	struct files_call *pending = bpf_map_lookup_elem(&files_calls, &tid);
	if (!pending)
		return 0;
	struct files_call call = *pending;
	bpf_map_delete_elem(&files_calls, &tid);
	struct files_event *event = kernel_event_reserve(sizeof(*event), call.type);
	if (!event)
		return 0;
	event->result = result;
	event->flags = call.flags;
	event->mode = call.mode;
	event->dirfd = call.dirfd;
	event->new_dirfd = call.new_dirfd;
	event->reserved = 0;
	long read = bpf_probe_read_user_str(event->path, sizeof(event->path), (const void *)call.path);
	event->path_length = read > 0 ? read - 1 : 0;
	if (read <= 0)
		event->path[0] = 0;
	event->new_path_length = 0;
	event->new_path[0] = 0;
	int keep = wanted(event->path, event->path_length);
	if (call.type == FILES_EVENT_RENAME) {
		read = bpf_probe_read_user_str(event->new_path, sizeof(event->new_path), (const void *)call.new_path);
		event->new_path_length = read > 0 ? read - 1 : 0;
		if (read <= 0)
			event->new_path[0] = 0;
		keep = keep || wanted(event->new_path, event->new_path_length);
	}
	if (!keep) {
		bpf_ringbuf_discard(event, BPF_RB_NO_WAKEUP);
		return 0;
	}
	kernel_event_submit(event);
	return 0;
}

static __always_inline __u32 open_type(__u32 flags)
{
	return flags & O_CREAT ? FILES_EVENT_CREATE : FILES_EVENT_OPEN;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int files_enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	__u32 flags = ctx->args[2];
	return entered(open_type(flags), flags, ctx->args[3], ctx->args[0], (const void *)ctx->args[1], 0, 0);
}

/* openat2(dirfd, path, struct open_how *how, size): flags and mode are the first two __u64 of open_how. */
SEC("tracepoint/syscalls/sys_enter_openat2")
int files_enter_openat2(struct trace_event_raw_sys_enter *ctx)
{
	__u64 how[2] = {};
	bpf_probe_read_user(how, sizeof(how), (const void *)ctx->args[2]);
	return entered(open_type(how[0]), how[0], how[1], ctx->args[0], (const void *)ctx->args[1], 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_open")
int files_enter_open(struct trace_event_raw_sys_enter *ctx)
{
	__u32 flags = ctx->args[1];
	return entered(open_type(flags), flags, ctx->args[2], AT_FDCWD, (const void *)ctx->args[0], 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_creat")
int files_enter_creat(struct trace_event_raw_sys_enter *ctx)
{
	return entered(FILES_EVENT_CREATE, O_CREAT | O_WRONLY | O_TRUNC, ctx->args[1], AT_FDCWD, (const void *)ctx->args[0], 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_unlinkat")
int files_enter_unlinkat(struct trace_event_raw_sys_enter *ctx)
{
	return entered(FILES_EVENT_UNLINK, ctx->args[2], 0, ctx->args[0], (const void *)ctx->args[1], 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_unlink")
int files_enter_unlink(struct trace_event_raw_sys_enter *ctx)
{
	return entered(FILES_EVENT_UNLINK, 0, 0, AT_FDCWD, (const void *)ctx->args[0], 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_renameat2")
int files_enter_renameat2(struct trace_event_raw_sys_enter *ctx)
{
	return entered(FILES_EVENT_RENAME, ctx->args[4], 0, ctx->args[0], (const void *)ctx->args[1], ctx->args[2], (const void *)ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_enter_renameat")
int files_enter_renameat(struct trace_event_raw_sys_enter *ctx)
{
	return entered(FILES_EVENT_RENAME, 0, 0, ctx->args[0], (const void *)ctx->args[1], ctx->args[2], (const void *)ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_enter_rename")
int files_enter_rename(struct trace_event_raw_sys_enter *ctx)
{
	return entered(FILES_EVENT_RENAME, 0, 0, AT_FDCWD, (const void *)ctx->args[0], AT_FDCWD, (const void *)ctx->args[1]);
}

/* One exit program serves every syscall above: a thread is inside at most one syscall at a time. */
SEC("tracepoint/syscalls/sys_exit_openat")
int files_exit(struct trace_event_raw_sys_exit *ctx)
{
	return exited(ctx->ret);
}
