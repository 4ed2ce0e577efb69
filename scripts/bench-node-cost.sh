#!/usr/bin/env bash
# What the agent costs the node (issue 12), with the `tracer` binary as shipped (release, static Swift
# runtime) running as its own process, side by side with no agent in one run:
#   1. an UNSELECTED process: `dd bs=1` (1-byte read+write syscalls) and an unselected redis-server under
#      redis-benchmark, while the agent traces a Go server and a Python server;
#   2. the selected Go hello server under `wrk -t1 -c2`: throughput and server CPU per request, traced/untraced;
#   3. the selected Python http.server under `wrk -t1 -c4`.
# Rounds alternate no agent / agent; medians. With --socket-hooks syscall-tracepoints the same table for
# kernels whose last resort is the syscall tracepoints.
# Usage (root): scripts/bench-node-cost.sh [--rounds N] [--seconds S] [--socket-hooks HOOKS] [--tracer PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
rounds=3 seconds=5 hooks=auto tracer=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --socket-hooks) hooks=$2; shift 2 ;;
    --tracer) tracer=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
source scripts/lib-bench.sh
bench_setup "apt-get install golang-go wrk redis-server" /usr/bin/go /usr/bin/wrk /usr/bin/redis-server /usr/bin/redis-benchmark

bench_go_hello
go_pid=$hello_pid go_port=$hello_port
python3 -c '
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):  # one write: a head and a body in two would meet Nagle and delayed ACKs (40 ms)
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
s = S(("127.0.0.1", 0), H); print(s.server_address[1], flush=True); s.serve_forever()' > "$work/py.port" & pids+=($!); py_pid=$!
redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no > /dev/null & pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG || { echo "redis-server did not start on port $redis_port" >&2; exit 1; }
for _ in $(seq 1 100); do [ -s "$work/py.port" ] && break; sleep 0.1; done
py_port=$(head -n1 "$work/py.port")
sleep 0.5

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime in clock ticks
ticks=$(getconf CLK_TCK)
dd_seconds() { local start end; start=$(date +%s.%N); dd if=/dev/zero of=/dev/null bs=1 count=1000000 2>/dev/null; end=$(date +%s.%N); echo "$end - $start" | bc -l; }
redis_rate() { redis-benchmark -p "$redis_port" -c 2 -n 100000 -t get -q 2>/dev/null | tr '\r' '\n' | awk '/requests per second/ {print $2}' | tail -n1; }
wrk_run() { # port connections -> "rate requests"
  wrk -t1 -c"$2" -d"${seconds}s" "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {rate=$2} /requests in/ {n=$1} END {print rate, n}'
}

agent=""
start_agent() {
  "$tracer" --pid "$go_pid" --pid "$py_pid" --socket-hooks "$hooks" --print none --log-level info 2> "$work/agent.log" &
  agent=$!
  for _ in $(seq 1 100); do grep -q "tracing:" "$work/agent.log" && break; sleep 0.1; done
  sleep 0.3
}
stop_agent() { kill -TERM "$agent"; wait "$agent" || true; agent=""; }

echo "node cost: tracer $(basename "$tracer") --socket-hooks $hooks, $rounds rounds, wrk ${seconds}s, load $(cut -d' ' -f1-3 /proc/loadavg)"
start_agent; grep -E "loaded tracer capture|capture layer" "$work/agent.log" | sed 's/^.*\] /  /'; stop_agent
declare -A values
for round in $(seq 1 "$rounds"); do
  for mode in none agent; do
    [ "$mode" = agent ] && start_agent
    values[dd_$mode]+="$(dd_seconds) "
    values[redis_$mode]+="$(redis_rate) "
    before=$(cpu "$go_pid"); read -r rate n < <(wrk_run "$go_port" 2); after=$(cpu "$go_pid")
    values[go_$mode]+="$rate "
    values[gocpu_$mode]+="$(echo "($after - $before) / $ticks * 1000000 / $n" | bc -l) "
    read -r rate n < <(wrk_run "$py_port" 4)
    values[py_$mode]+="$rate "
    if [ "$mode" = agent ]; then
      stop_agent
      grep -o "stopped: .*" "$work/agent.log" | sed "s/^/  round $round agent /"
    fi
  done
done
m() { echo "${values[$1]}" | tr ' ' '\n' | grep -v '^$' | median; }
ratio() { echo "$(m "$1_agent") / $(m "$1_none")" | bc -l | xargs printf '%.3f'; }
printf '%-52s %12s %12s %8s\n' "what (medians of $rounds rounds)" "no agent" "agent" "ratio"
printf '%-52s %12.3f %12.3f %8s\n' "unselected dd bs=1 count=1M (s, lower is better)" "$(m dd_none)" "$(m dd_agent)" "$(ratio dd)"
printf '%-52s %12.0f %12.0f %8s\n' "unselected redis-server GET (req/s)" "$(m redis_none)" "$(m redis_agent)" "$(ratio redis)"
printf '%-52s %12.0f %12.0f %8s\n' "traced Go hello server, wrk -c2 (req/s)" "$(m go_none)" "$(m go_agent)" "$(ratio go)"
printf '%-52s %12.2f %12.2f %8s\n' "traced Go server CPU per request (µs)" "$(m gocpu_none)" "$(m gocpu_agent)" "$(ratio gocpu)"
printf '%-52s %12.0f %12.0f %8s\n' "traced Python http.server, wrk -c4 (req/s)" "$(m py_none)" "$(m py_agent)" "$(ratio py)"
echo "raw: $(for k in "${!values[@]}"; do printf '%s=[%s] ' "$k" "${values[$k]% }"; done)"
