/* Layouts shared by the file-event tracer (files.bpf.c) and Swift (tracers/files). */
#ifndef TRACER_FILES_H
#define TRACER_FILES_H

#include "../../bpf/kernel_tracer.h"

/* Event types (kernel_event_header.type). */
#define FILES_EVENT_OPEN 1   /* open, openat, openat2 without O_CREAT */
#define FILES_EVENT_CREATE 2 /* creat, or an open with O_CREAT */
#define FILES_EVENT_UNLINK 3 /* unlink, unlinkat (rmdir as unlinkat with AT_REMOVEDIR) */
#define FILES_EVENT_RENAME 4 /* rename, renameat, renameat2 */

#define FILES_PATH_MAX 256
#define FILES_PREFIX_MAX 8

/* One file event, sent at the syscall's exit. Paths are as the process gave them (relative to `dirfd`
 * or the working directory when they do not start with '/'), cut at FILES_PATH_MAX - 1 bytes. */
struct files_event {
	struct kernel_event_header header;
	__s64 result;      /* the syscall's return value: a file descriptor, 0, or -errno */
	__u32 flags;       /* open: O_* flags; unlinkat: AT_REMOVEDIR; renameat2: RENAME_* flags */
	__u32 mode;        /* open with O_CREAT/O_TMPFILE, creat: the mode asked for */
	__s32 dirfd;       /* the directory fd relative paths start from (AT_FDCWD = -100); rename: the old one */
	__s32 new_dirfd;   /* rename: the new path's directory fd */
	__u16 path_length; /* bytes of `path` (no NUL) */
	__u16 new_path_length;
	__u32 reserved;
	__u8 path[FILES_PATH_MAX];
	__u8 new_path[FILES_PATH_MAX]; /* rename: the new path */
};
_Static_assert(sizeof(struct files_event) == 584, "files_event layout");

/* One configured path prefix (map files_prefixes). */
struct files_prefix {
	__u32 length;
	__u8 bytes[FILES_PATH_MAX - 4];
};
_Static_assert(sizeof(struct files_prefix) == 256, "files_prefix layout");

#endif
