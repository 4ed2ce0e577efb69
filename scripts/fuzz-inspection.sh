#!/usr/bin/env bash
# Fuzzes the inspection parsers (ELF via libelf, Go build info, Go pclntab, DWARF via libdw, capstone RET
# search) with libFuzzer: builds Fuzz/InspectionFuzz with -sanitize=fuzzer,address into .build-fuzz,
# seeds a corpus from freshly built C and Go binaries, and runs.
#
# Usage: scripts/fuzz-inspection.sh [RUNS] [extra libFuzzer flags...]   (RUNS defaults to 1000000)
# A crash leaves crash-<sha1> in .build-fuzz/; replay it with the non-fuzzing build:
#   swift run InspectionFuzz .build-fuzz/crash-<sha1>
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1000000}"
shift || true
out=.build-fuzz
swift build -c release --product InspectionFuzz --build-path "$out" \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -use-ld=lld >&2
bin="$(swift build -c release --build-path "$out" --show-bin-path)/InspectionFuzz"

seeds="$out/seeds"
corpus="$out/corpus"
mkdir -p "$seeds" "$corpus"
if [ -z "$(ls -A "$corpus")" ]; then
    cat > "$seeds/probe.c" <<'C'
int probe(int x) { if (x > 3) return x * 2; return x + 1; }
int main(int argc, char **argv) { return probe(argc); }
C
    cc -O2 -g -o "$seeds/c-pie" "$seeds/probe.c"
    cc -O2 -no-pie -fno-pie -o "$seeds/c-nopie" "$seeds/probe.c"
    mkdir -p "$seeds/go"
    printf 'module example.com/seed\n\ngo 1.19\n' > "$seeds/go/go.mod"
    printf 'package main\n\nimport "os"\n\nfunc main() { os.Exit(len(os.Args)) }\n' > "$seeds/go/main.go"
    (cd "$seeds/go" && CGO_ENABLED=0 GOFLAGS=-mod=mod GOPROXY=off go build -ldflags='-s -w' -o ../go-seed .)
    objcopy -O binary --only-section=.go.buildinfo "$seeds/go-seed" "$seeds/buildinfo"
    objcopy -O binary --only-section=.gopclntab "$seeds/go-seed" "$seeds/pclntab"
    # The first byte selects the parser: 0 ELF, 1 build info, 2 pclntab.
    for f in c-pie c-nopie; do { printf '\000'; cat "$seeds/$f"; } > "$corpus/elf-$f"; done
    { printf '\001'; cat "$seeds/buildinfo"; } > "$corpus/buildinfo"
    { printf '\002'; head -c 60000 "$seeds/pclntab"; } > "$corpus/pclntab"
fi
exec "$bin" -runs="$runs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/" "$@" "$corpus"
