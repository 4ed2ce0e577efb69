#include "bench_targets.h"

#define TARGET(n) \
	__attribute__((noinline, used)) uint64_t tracer_bench_target_##n(uint64_t x) \
	{ __asm__ volatile("" ::: "memory"); return x + n; }
#define TEN(d) TARGET(d##0) TARGET(d##1) TARGET(d##2) TARGET(d##3) TARGET(d##4) \
	TARGET(d##5) TARGET(d##6) TARGET(d##7) TARGET(d##8) TARGET(d##9)
TARGET(0) TARGET(1) TARGET(2) TARGET(3) TARGET(4) TARGET(5) TARGET(6) TARGET(7) TARGET(8) TARGET(9)
TEN(1) TEN(2) TEN(3) TEN(4)

#define ENTRY(n) tracer_bench_target_##n
#define TEN_ENTRIES(d) ENTRY(d##0), ENTRY(d##1), ENTRY(d##2), ENTRY(d##3), ENTRY(d##4), \
	ENTRY(d##5), ENTRY(d##6), ENTRY(d##7), ENTRY(d##8), ENTRY(d##9)
static uint64_t (*const targets[TRACER_BENCH_TARGET_COUNT])(uint64_t) = {
	ENTRY(0), ENTRY(1), ENTRY(2), ENTRY(3), ENTRY(4), ENTRY(5), ENTRY(6), ENTRY(7), ENTRY(8), ENTRY(9),
	TEN_ENTRIES(1), TEN_ENTRIES(2), TEN_ENTRIES(3), TEN_ENTRIES(4),
};

uint64_t tracer_bench_call(int index, uint64_t times)
{
	uint64_t sum = 0;
	for (uint64_t i = 0; i < times; i++)
		sum += targets[index](i);
	return sum;
}

const void *tracer_bench_target_address(int index)
{
	return (const void *)targets[index];
}
