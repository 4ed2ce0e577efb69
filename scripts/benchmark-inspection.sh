#!/usr/bin/env bash
# Benchmarks inspection of a ~20 MB Go binary (symbols, build info, pclntab, DWARF field offsets, RET
# offsets of the go-nethttp probe targets): wall and CPU time per inspection, peak and retained RSS.
#
# The binary is `cmd/go` built with DWARF by the newest toolchain scripts/generate-go-offsets.sh installed
# (~23 MB with go1.27), else by Debian's go1.19 (~15 MB). Pass a path to benchmark another binary.
# Usage: scripts/benchmark-inspection.sh [BINARY] [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${1:-}"
iterations="${2:-20}"
if [ -z "$binary" ]; then
    toolchains_dir="${GO_TOOLCHAINS_DIR:-$HOME/.cache/tracer-go-toolchains}"
    go="$(ls -d "$toolchains_dir"/*/go/bin/go 2>/dev/null | sort -V | tail -1)"
    go="${go:-/usr/bin/go}"
    binary=".build/benchmark-go-$("$go" env GOVERSION)"
    if [ ! -x "$binary" ]; then
        echo "building cmd/go with $("$go" env GOVERSION)" >&2
        GOTOOLCHAIN=local GOFLAGS= GOPROXY=off "$go" build -o "$binary" cmd/go
    fi
fi
swift build -c release --product InspectionBenchmark >&2
"$(swift build -c release --show-bin-path)/InspectionBenchmark" "$binary" "$iterations"
