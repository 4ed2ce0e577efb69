#!/usr/bin/env bash
# The whole test suite: installs what is missing, then builds and runs every test. Privileged tests
# load real BPF programs; they skip without root unless TRACER_REQUIRE_BPF=1, which makes a skip a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
scripts/install-deps.sh
swift build --manifest-cache none --build-tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
swift test --manifest-cache none --skip-build --disable-swift-testing 2>&1 | tee "$log" || status=$?
# One plain closing line with the XCTest totals, skips counted: "tests: P passed, F failed, S skipped".
scripts/xctest-summary.sh < "$log" || [ "$status" -ne 0 ] || status=1
exit $status
