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
# One plain closing line with the XCTest totals ("Executed N tests, with F failures").
summary=$(grep -E "^[[:space:]]*Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -n 1)
executed=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
failed=$(echo "$summary" | sed -E 's/.*with ([0-9]+) failures?.*/\1/')
if [ -n "$summary" ]; then
  echo "tests: $((executed - failed)) passed, $failed failed"
fi
exit $status
