#!/usr/bin/env bash
# The agent's own CPU per span, two `tracer` builds side by side: a redis-server on a free port traced by each
# build in turn (`--pid`, `--print none`), one `redis-benchmark -c 2 -t get,set -n N` run per round (two spans'
# worth of work per request: GET and SET each make one server span), and the agent's utime+stime from
# /proc/PID/stat around the run, divided by the spans it made. Rounds alternate the builds; medians.
# Usage (root): scripts/bench-agent-cpu-per-span.sh --baseline PATH [--tracer PATH] [--rounds N] [--requests N]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=8 requests=100000 tracer="" baseline=""
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) baseline=$2; shift 2 ;;
    --tracer) tracer=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$baseline" ] || { echo "--baseline PATH: the tracer build to compare with (an executable)" >&2; exit 2; }
source scripts/lib-bench.sh
bench_setup "apt-get install redis-server" /usr/bin/redis-server /usr/bin/redis-benchmark /usr/bin/redis-cli

port=$((20000 + RANDOM % 20000))
bench_cleanup_extra() { redis-cli -p "$port" shutdown nosave > /dev/null 2>&1 || true; }
ticks=$(getconf CLK_TCK)

# One round: the agent CPU per span (µs) of build $1.
round() {
  redis-server --port "$port" --save "" --appendonly no --daemonize yes --dir "$work" > /dev/null
  sleep 0.5
  local server agent u0 s0 u1 s1
  server=$(pgrep -f "redis-server .*:$port" | head -1)
  "$1" --pid "$server" --print none > "$work/agent.log" 2>&1 &
  agent=$!
  sleep 2
  redis-benchmark -p "$port" -c 2 -t get,set -n 5000 -q > /dev/null # warm-up: connections and parsers exist
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$agent/stat")
  redis-benchmark -p "$port" -c 2 -t get,set -n "$requests" -q > /dev/null
  sleep 0.5
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$agent/stat")
  kill -INT "$agent"
  wait "$agent" 2>/dev/null || true
  redis-cli -p "$port" shutdown nosave > /dev/null 2>&1 || true
  grep -q " 0 dropped in user space, 0 dropped in the kernel" "$work/agent.log" || echo "  drops: $(tail -1 "$work/agent.log")" >&2
  echo "scale=3; ($u1 + $s1 - $u0 - $s0) * 1000000 / $ticks / (2 * $requests)" | bc
}

echo "agent CPU per span: $(basename "$tracer") vs baseline $baseline, $rounds rounds, redis-benchmark -c 2 -t get,set -n $requests; load $(cut -d' ' -f1-3 /proc/loadavg)"
base=() new=()
for i in $(seq "$rounds"); do
  b=$(round "$baseline"); n=$(round "$tracer")
  echo "  round $i: baseline $b µs, tracer $n µs"
  base+=("$b"); new+=("$n")
done
printf 'median agent CPU per span (µs): baseline %s, tracer %s\n' \
  "$(printf '%s\n' "${base[@]}" | median)" "$(printf '%s\n' "${new[@]}" | median)"
