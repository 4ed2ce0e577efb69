/* A set of selected processes for the kernel tracers that run on syscall tracepoints (tracers/files, fds,
 * syscalls): with kernel_follow_selection set, only the TGIDs in kernel_selected_tgids are traced (the
 * agent keeps the set equal to its selected processes); else the `--pid` filter of kernel_tracer.bpf.h
 * applies. Checked at a program's first instruction, so an unselected process leaves at once. */
#ifndef TRACER_KERNEL_TRACER_SELECTION_BPF_H
#define TRACER_KERNEL_TRACER_SELECTION_BPF_H

#include "kernel_tracer.bpf.h"

/* Non-zero: trace the TGIDs of kernel_selected_tgids only (set by user space before load). */
const volatile __u32 kernel_follow_selection = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} kernel_selected_tgids SEC(".maps");

static __always_inline int kernel_process_selected(__u32 tgid)
{
	if (kernel_follow_selection)
		return bpf_map_lookup_elem(&kernel_selected_tgids, &tgid) != NULL;
	return kernel_tgid_selected(tgid);
}

#endif
