#!/usr/bin/env bash
# The whole test suite: installs what is missing, then builds and runs every test. Privileged tests
# load real BPF programs; they skip without root unless TRACER_REQUIRE_BPF=1, which makes a skip a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
scripts/install-deps.sh
swift build --manifest-cache none --build-tests
swift test --manifest-cache none --skip-build
