/* Event of the self-test programs (bpf/selftest.bpf.c): used by the runtime's tests,
 * `tracer features --self-test` and the benchmarks. */
#ifndef TRACER_SELFTEST_H
#define TRACER_SELFTEST_H

#include "tracer_common.h"

#define SELFTEST_EVENT_TRACEPOINT 1
#define SELFTEST_EVENT_UPROBE 2
#define SELFTEST_EVENT_URETPROBE 3
#define SELFTEST_EVENT_UPROBE_MULTI 4
#define SELFTEST_EVENT_FLOOD 5

struct selftest_event {
	struct tracer_event_header header;
	__u64 cookie;   /* bpf_get_attach_cookie(): which attach point fired */
	__u64 value;    /* first argument (uprobe) or return value (uretprobe) */
	__u64 sequence; /* position within one flood */
	__u8 comm[16];
};
_Static_assert(sizeof(struct selftest_event) == 64, "selftest_event layout");

#endif
