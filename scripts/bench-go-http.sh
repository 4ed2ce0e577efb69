#!/usr/bin/env bash
# Go net/http tracer overhead (issue 5): a go1.19 hello-world server under `wrk -t1 -c2 -d10s`, untraced and
# traced in alternating rounds of one run; prints the throughput ratio, the server's CPU per request, agent
# CPU per 10 000 requests, spans against requests and BPF program runs per request.
# Usage (root): scripts/bench-go-http.sh [seconds per round = 10] [rounds = 3] [ring MiB = 64]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
for tool in /usr/bin/go /usr/bin/wrk; do
  [ -x "$tool" ] || { echo "missing $tool (apt-get install golang-go wrk)" >&2; exit 1; }
done
[ -d /sys/kernel/tracing/events ] || mount -t tracefs tracefs /sys/kernel/tracing
swift build --manifest-cache none -c release --product GoNetHTTPBenchmark >&2
exec .build/release/GoNetHTTPBenchmark "$@"
