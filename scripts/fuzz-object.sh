#!/usr/bin/env bash
# Fuzzes what `tracer object run|pack` reads from a file it is given: the JSON package (base64, zlib, declared
# size, meta), libbpf's ELF/BTF parsing of the object, and the BTF walk, defaults, meta generation/validation
# and record decoding built on it. Builds Fuzz/ObjectFuzz with -sanitize=fuzzer,address into
# .build-fuzz-object, seeds a corpus with small real objects (compiled here with the toolchain clang, DWARF
# stripped, BTF kept) and packages of them, and runs.
#
# Usage: scripts/fuzz-object.sh [RUNS] [extra libFuzzer flags...]   (RUNS defaults to 1000000)
# A crash leaves crash-<sha1> in .build-fuzz-object/; replay it with the non-fuzzing build:
#   swift run ObjectFuzz .build-fuzz-object/crash-<sha1>
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1000000}"
shift || true
out=.build-fuzz-object
ASAN_OPTIONS=detect_leaks=0 swift build -c release --product ObjectFuzz --build-path "$out" \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -use-ld=lld >&2
bin="$(swift build -c release --build-path "$out" --show-bin-path)/ObjectFuzz"
tracer_bin="$(swift build --show-bin-path)/tracer"

corpus="$out/corpus"
mkdir -p "$corpus"
if [ -z "$(ls -A "$corpus")" ]; then
    clang="$(dirname "$(command -v swift)")/clang"
    seeds="$out/seeds"
    mkdir -p "$seeds"
    cat > "$seeds/events.bpf.c" <<'C'
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
enum kind { K_A = 1, K_B = 2 };
struct inner { __u16 a; __u8 b[3]; };
struct event { __u32 pid; enum kind kind; struct inner in; char comm[16]; __u64 bits : 5, more : 11; };
const struct event *unused_event __attribute__((unused));
const volatile __u32 target_pid = 7;
const volatile char name[8] = "x";
struct hist { __u32 slots[8]; };
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, struct hist); } hist SEC(".maps");
SEC("tracepoint/sched/sched_process_exec")
int on_exec(void *ctx) { struct event e = {}; e.pid = target_pid; bpf_ringbuf_output(&events, &e, sizeof(e), 0); return 0; }
char LICENSE[] SEC("license") = "GPL";
C
    "$clang" -target bpf -O2 -g -D__TARGET_ARCH_x86 -idirafter /usr/include -I bpf -c "$seeds/events.bpf.c" -o "$seeds/events.bpf.o"
    "$(dirname "$(command -v swift)")/llvm-objcopy" --strip-debug "$seeds/events.bpf.o" "$corpus/events.bpf.o"
    if [ -x "$tracer_bin" ]; then
        "$tracer_bin" object pack "$corpus/events.bpf.o" -o "$corpus/events.json" >&2
    fi
    printf '{"bpf_object":"eJzLSM3JyQcABiwCFQ==","bpf_object_size":5,"meta":{"bpf_skel":{}}}' > "$corpus/tiny.json"
fi
exec "$bin" -runs="$runs" -max_len=16384 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/" "$@" "$corpus"
