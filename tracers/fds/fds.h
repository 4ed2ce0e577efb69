/* Layouts shared by the file-descriptor tracer (fds.bpf.c) and Swift (tracers/fds). */
#ifndef TRACER_FDS_H
#define TRACER_FDS_H

#include "../../bpf/kernel_tracer.h"

/* Per-process counts since the tracer started (map fds_counts, key: host TGID). */
struct fds_counts {
	__u64 opens;        /* open, openat, openat2, creat that returned a descriptor */
	__u64 open_errors;  /* the same calls that failed */
	__u64 closes;       /* close that returned 0 */
	__u64 close_errors; /* close that failed (EBADF: a descriptor that was not open) */
};
_Static_assert(sizeof(struct fds_counts) == 32, "fds_counts layout");

#endif
