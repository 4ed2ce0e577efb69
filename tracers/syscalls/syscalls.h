/* Layouts shared by the syscall latency tracer (syscalls.bpf.c) and Swift (tracers/syscalls). */
#ifndef TRACER_SYSCALLS_H
#define TRACER_SYSCALLS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Key of a syscall histogram (values: struct kernel_hist of nanoseconds). In syscalls_hists every call
 * counts; in syscalls_error_hists only the failed ones, one histogram per errno. */
struct syscalls_key {
	__u32 tgid;   /* host TGID with per-process keys, else 0 */
	__u32 number; /* syscall number of the running architecture */
	__u32 error;  /* syscalls_error_hists: the errno (positive); else 0 */
	__u32 reserved;
};
_Static_assert(sizeof(struct syscalls_key) == 16, "syscalls_key layout");

#endif
