/* Events of bpf/process_watcher.bpf.c: process lifecycle seen by the kernel's sched tracepoints. */
#ifndef TRACER_PROCESS_WATCHER_H
#define TRACER_PROCESS_WATCHER_H

#include "tracer_common.h"

#define PROCESS_EVENT_EXEC 900 /* header.pid called execve() successfully */
#define PROCESS_EVENT_FORK 901 /* header.pid (a traced process) created task child_pid */
#define PROCESS_EVENT_EXIT 902 /* header.pid (a traced process) exited */

struct process_event {
	struct tracer_event_header header;
	__u32 child_pid; /* FORK: the new task's id (a thread or a process: user space checks) */
	__u32 parent_pid; /* EXEC: the parent's TGID */
};
_Static_assert(sizeof(struct process_event) == 32, "process_event layout");

#endif
