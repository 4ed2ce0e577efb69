/* Functions the benchmarks put uprobes on, in the benchmark binary itself. */
#ifndef TRACER_BENCH_TARGETS_H
#define TRACER_BENCH_TARGETS_H

#include <stdint.h>

#define TRACER_BENCH_TARGET_COUNT 50

/* Calls target `index` `times` times; returns a sum so the calls cannot be optimised away. */
uint64_t tracer_bench_call(int index, uint64_t times);

/* Address of target `index`, to find its file offset through /proc/self/maps. */
const void *tracer_bench_target_address(int index);

#endif
