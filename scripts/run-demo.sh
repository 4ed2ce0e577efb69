#!/usr/bin/env bash
# One command for a fresh Debian 12 machine with Swift: install what is missing, build tracer in release
# mode, and run it (as root) so it reports what this kernel supports and how to select what to trace.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
scripts/install-deps.sh
swift build --manifest-cache none -c release --product tracer
exec .build/release/tracer "$@"
