#!/usr/bin/env bash
# Go HTTPS (crypto/tls) tracing cost (issue 14), with the `tracer` binary as shipped running as its own process:
# a go1.19 HTTPS hello server under `wrk -t1 -c2` over TLS (keep-alive), rounds alternating no agent / agent;
# medians of throughput and server CPU per request, spans against requests, and with BPF statistics on
# (sysctl kernel.bpf_stats_enabled) the capture programs' runs per request: the Go TLS uprobes (entry and RET
# of crypto/tls Read/Write) next to the socket hooks.
# Usage (root): scripts/bench-go-tls.sh [--rounds N] [--seconds S] [--tracer PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
rounds=3 seconds=5 tracer=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --tracer) tracer=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
source scripts/lib-bench.sh
bench_setup "apt-get install golang-go wrk openssl bpftool jq" /usr/bin/go /usr/bin/wrk /usr/bin/openssl /usr/sbin/bpftool /usr/bin/jq
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
bench_cleanup_extra() { sysctl -qw kernel.bpf_stats_enabled="$stats_before"; }

cat > "$work/hello.go" <<'GO'
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	panic(http.ServeTLS(listener, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello") }), os.Args[1], os.Args[2]))
}
GO
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" \
  -days 1 -subj /CN=127.0.0.1 2>/dev/null
(cd "$work" && GO111MODULE=off GOCACHE="$work/cache" go build -o hello hello.go)
"$work/hello" "$work/cert.pem" "$work/key.pem" > "$work/port" & pids+=($!); server=$!
for _ in $(seq 1 100); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(head -n1 "$work/port")

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime in clock ticks
ticks=$(getconf CLK_TCK)
# run_cnt per program name (programs of the capture object loaded now).
program_runs() { bpftool prog show -j | jq -r '.[] | select(.name | startswith("capture_")) | "\(.name) \(.run_cnt // 0) \(.run_time_ns // 0)"' | sort; }

agent=""
start_agent() {
  "$tracer" --pid "$server" --print none --log-level info 2> "$work/agent.log" &
  agent=$!
  for _ in $(seq 1 100); do grep -q "tracing:" "$work/agent.log" && break; sleep 0.1; done
  sleep 0.3
}
stop_agent() { kill -TERM "$agent"; wait "$agent" || true; agent=""; }

echo "go tls: tracer $(basename "$tracer"), $rounds rounds, wrk -t1 -c2 ${seconds}s over https, load $(cut -d' ' -f1-3 /proc/loadavg)"
sysctl -qw kernel.bpf_stats_enabled=1
declare -A values
for round in $(seq 1 "$rounds"); do
  for mode in none agent; do
    [ "$mode" = agent ] && start_agent && program_runs > "$work/runs.before"
    before=$(cpu "$server")
    read -r rate n < <(wrk -t1 -c2 -d"${seconds}s" "https://127.0.0.1:$port/" | awk '/Requests\/sec/ {rate=$2} /requests in/ {n=$1} END {print rate, n}')
    after=$(cpu "$server")
    values[rate_$mode]+="$rate "
    values[cpu_$mode]+="$(echo "($after - $before) / $ticks * 1000000 / $n" | bc -l) "
    if [ "$mode" = agent ]; then
      program_runs > "$work/runs.after"
      # name, runs and run time before, then after: the program's own time per run, apart from the probe's trap.
      join "$work/runs.before" "$work/runs.after" | awk -v n="$n" '$4 > $2 {printf "  round '"$round"' %-34s %6.2f runs per request, %6.0f ns per run\n", $1, ($4 - $2) / n, ($5 - $3) / ($4 - $2)}'
      stop_agent
      echo "  round $round: $n requests, agent $(grep -o "stopped: .*" "$work/agent.log")"
    fi
  done
done
m() { echo "${values[$1]}" | tr ' ' '\n' | grep -v '^$' | median; }
printf '%-46s %12s %12s %8s\n' "what (medians of $rounds rounds)" "no agent" "agent" "ratio"
printf '%-46s %12.0f %12.0f %8.3f\n' "Go HTTPS hello server, wrk -c2 (req/s)" "$(m rate_none)" "$(m rate_agent)" "$(echo "$(m rate_agent) / $(m rate_none)" | bc -l)"
printf '%-46s %12.2f %12.2f %8.3f\n' "server CPU per request (µs)" "$(m cpu_none)" "$(m cpu_agent)" "$(echo "$(m cpu_agent) / $(m cpu_none)" | bc -l)"
