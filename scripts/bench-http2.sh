#!/usr/bin/env bash
# HTTP/2 parser cost (issue 13): Debian's nghttpd serving a small file in cleartext (h2c) under h2load, with no
# agent and with the `tracer` binary as shipped (release, static Swift runtime) tracing nghttpd, side by side
# in one run: rounds alternate no agent / agent; medians. Reports h2load's req/s (ratio traced/untraced),
# nghttpd's spans against the requests, the agent's drops, and the agent's CPU per span (its utime + stime
# while the load ran, over the spans it made).
# Usage (root): scripts/bench-http2.sh [--rounds N] [--requests N] [--clients C] [--streams M] [--tracer PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
rounds=5 requests=100000 clients=2 streams=10 tracer=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --streams) streams=$2; shift 2 ;;
    --tracer) tracer=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
source scripts/lib-bench.sh
bench_setup "apt-get install nghttp2-server nghttp2-client" /usr/sbin/nghttpd /usr/bin/h2load

mkdir "$work/www" && echo hello > "$work/www/index.html"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nghttpd --no-tls -d "$work/www" "$port" > /dev/null 2>&1 & pids+=($!); server_pid=$!
url="http://127.0.0.1:$port/index.html"
for _ in $(seq 1 100); do h2load -n 1 "$url" > /dev/null 2>&1 && break; sleep 0.1; done
h2load -n 1 "$url" 2>/dev/null | grep -q "1 succeeded" || { echo "nghttpd did not start on port $port" >&2; exit 1; }

h2load_run() { # -> "req/s succeeded"
  h2load -n "$requests" -c "$clients" -m "$streams" "$url" 2>/dev/null \
    | awk '/^finished in/ {rate=$4} /^requests:/ {ok=$8} END {print rate, ok}'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime
ticks=$(getconf CLK_TCK)

agent=""
start_agent() {
  "$tracer" --pid "$server_pid" --print none --log-level info 2> "$work/agent.log" &
  agent=$!
  for _ in $(seq 1 100); do grep -q "tracing:" "$work/agent.log" && break; sleep 0.1; done
  sleep 0.5
}
stop_agent() { kill -TERM "$agent"; wait "$agent" || true; agent=""; }

echo "h2load -n $requests -c $clients -m $streams against nghttpd (h2c); tracer $tracer; $rounds rounds; load $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A values
for round in $(seq 1 "$rounds"); do
  for mode in none agent; do
    [ "$mode" = agent ] && start_agent && before=$(cpu_ticks "$agent")
    read -r rate ok < <(h2load_run)
    values[rate_$mode]+="$rate "
    if [ "$mode" = agent ]; then
      sleep 0.5 # the agent drains what the load left in the ring
      after=$(cpu_ticks "$agent")
      stop_agent
      stopped=$(grep -o 'stopped: .*' "$work/agent.log")
      spans=$(echo "$stopped" | awk '{print $2}')
      values[cpu_$mode]+="$(echo "($after - $before) / $ticks * 1000000 / $spans" | bc -l) "
      echo "  round $round: $ok requests succeeded; agent $stopped; agent CPU $(echo "($after - $before) / $ticks" | bc -l | xargs printf '%.2f') s"
    fi
  done
done
m() { echo "${values[$1]}" | tr ' ' '\n' | grep -v '^$' | median; }
printf '%-52s %12s %12s %8s\n' "what (medians of $rounds rounds)" "no agent" "agent" "ratio"
printf '%-52s %12.0f %12.0f %8s\n' "nghttpd, h2load -c $clients -m $streams (req/s)" "$(m rate_none)" "$(m rate_agent)" \
  "$(echo "$(m rate_agent) / $(m rate_none)" | bc -l | xargs printf '%.3f')"
printf '%-52s %12s %12.2f\n' "agent CPU per span (µs)" "-" "$(m cpu_agent)"
echo "raw: $(for k in "${!values[@]}"; do printf '%s=[%s] ' "$k" "${values[$k]% }"; done)"
