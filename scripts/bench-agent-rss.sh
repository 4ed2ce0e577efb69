#!/usr/bin/env bash
# Agent memory, idle, with 10 traced processes (issue 4: RSS <= 30 MB), next to a baseline run of the same
# binary that selects nothing. Needs root, tracefs, python3. Usage: scripts/bench-agent-rss.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
settle=${1:-5}
# As shipped (deploy/Dockerfile): release, Swift runtime linked statically.
swift build --manifest-cache none -c release --static-swift-stdlib --product tracer --scratch-path .build-static >/dev/null
tracer=.build-static/release/tracer
servers=()
cleanup() { kill "${servers[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for port in $(seq 18301 18310); do
  python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1 &
  servers+=($!)
done
sleep 1

rss_of() { # command line... → "VmRSS VmHWM" in MiB after $settle seconds idle
  "$@" --print none --log-level warning >/dev/null 2>&1 &
  local pid=$!
  sleep "$settle"
  awk '/^VmRSS|^VmHWM/ { printf "%s %.1f MiB  ", $1, $2 / 1024 }' "/proc/$pid/status"
  kill -TERM "$pid"; wait "$pid" || true
}

echo "baseline (selects nothing):          $(rss_of "$tracer" --exe '/nonexistent/*')"
echo "10 Python HTTP servers traced, idle:  $(rss_of "$tracer" --open-port 18301-18310)"
echo "target: VmRSS <= 30 MiB with 10 traced processes"
