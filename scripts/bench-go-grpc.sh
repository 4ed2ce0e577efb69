#!/usr/bin/env bash
# Go gRPC tracing cost (issue 14), with the `tracer` binary as shipped running as its own process: a go1.19
# gRPC hello server (Debian's grpc-go 1.33, GOPATH mode; unary demo.Greeter/Hello over h2c) under a Go load
# client (CONCURRENCY goroutines calling Hello in a loop on one connection for S seconds), rounds alternating
# no agent / agent; medians of calls/s, server CPU per call and agent CPU per span, spans against calls, drops,
# and with BPF statistics on (sysctl kernel.bpf_stats_enabled) the agent's programs' runs per call.
# Usage (root): scripts/bench-go-grpc.sh [--rounds N] [--seconds S] [--concurrency C] [--tracer PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
rounds=5 seconds=5 concurrency=8 tracer=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --tracer) tracer=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
source scripts/lib-bench.sh
bench_setup "apt-get install golang-go golang-google-grpc-dev bpftool jq" /usr/bin/go /usr/sbin/bpftool /usr/bin/jq
[ -f /usr/share/gocode/src/google.golang.org/grpc/server.go ] || { echo "missing grpc-go (apt-get install golang-google-grpc-dev)" >&2; exit 1; }
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
bench_cleanup_extra() { sysctl -qw kernel.bpf_stats_enabled="$stats_before"; }

# The service: demo.Greeter/Hello (google.protobuf.StringValue in and out), its ServiceDesc written by hand.
mkdir "$work/server" "$work/load"
cat > "$work/server/main.go" <<'GO'
package main

import (
	"context"
	"fmt"
	"net"

	"github.com/golang/protobuf/ptypes/wrappers"
	"google.golang.org/grpc"
)

type greeter interface{}

func hello(_ interface{}, _ context.Context, decode func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	in := new(wrappers.StringValue)
	if err := decode(in); err != nil {
		return nil, err
	}
	return &wrappers.StringValue{Value: "hello " + in.Value}, nil
}

func main() {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	server := grpc.NewServer()
	server.RegisterService(&grpc.ServiceDesc{ServiceName: "demo.Greeter", HandlerType: (*greeter)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Hello", Handler: hello}}}, struct{}{})
	fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	panic(server.Serve(listener))
}
GO
# The load: CONCURRENCY goroutines calling Hello on one connection until SECONDS passed; prints
# "calls calls/s failures".
cat > "$work/load/main.go" <<'GO'
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/protobuf/ptypes/wrappers"
	"google.golang.org/grpc"
)

func main() {
	concurrency, _ := strconv.Atoi(os.Args[2])
	seconds, _ := strconv.ParseFloat(os.Args[3], 64)
	conn, err := grpc.Dial(os.Args[1], grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		panic(err)
	}
	var calls, failures int64
	start := time.Now()
	deadline := start.Add(time.Duration(seconds * float64(time.Second)))
	var group sync.WaitGroup
	for i := 0; i < concurrency; i++ {
		group.Add(1)
		go func() {
			defer group.Done()
			in, out := &wrappers.StringValue{Value: "load"}, new(wrappers.StringValue)
			for time.Now().Before(deadline) {
				if err := conn.Invoke(context.Background(), "/demo.Greeter/Hello", in, out); err != nil {
					atomic.AddInt64(&failures, 1)
				}
				atomic.AddInt64(&calls, 1)
			}
		}()
	}
	group.Wait()
	fmt.Printf("%d %.1f %d\n", calls, float64(calls)/time.Since(start).Seconds(), failures)
}
GO
for program in server load; do
  (cd "$work/$program" && GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE="$work/cache" go build -o "$work/$program.bin" main.go)
done
"$work/server.bin" > "$work/port" & pids+=($!); server=$!
for _ in $(seq 1 100); do [ -s "$work/port" ] && break; sleep 0.1; done
address="127.0.0.1:$(head -n1 "$work/port")"
"$work/load.bin" "$address" 1 0.2 > /dev/null # warm-up; checks that the server answers

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime in clock ticks
ticks=$(getconf CLK_TCK)
# run_cnt per program name, for the agent's programs loaded now (another agent on this machine would count too).
program_runs() {
  bpftool prog show -j | jq -r '.[] | select(.name | startswith("capture_") or startswith("go_nethttp_")) | "\(.name) \(.run_cnt // 0)"' | sort
}

agent=""
start_agent() {
  "$tracer" --pid "$server" --print none --log-level info 2> "$work/agent.log" &
  agent=$!
  for _ in $(seq 1 100); do grep -q "tracing:" "$work/agent.log" && break; sleep 0.1; done
  sleep 0.3
}
stop_agent() { kill -TERM "$agent"; wait "$agent" || true; agent=""; }

echo "go grpc: tracer $(basename "$tracer"), $rounds rounds, unary Hello, $concurrency concurrent calls on one connection, ${seconds}s; load $(cut -d' ' -f1-3 /proc/loadavg)"
sysctl -qw kernel.bpf_stats_enabled=1
declare -A values
for round in $(seq 1 "$rounds"); do
  for mode in none agent; do
    [ "$mode" = agent ] && start_agent && program_runs > "$work/runs.before" && agent_before=$(cpu "$agent")
    before=$(cpu "$server")
    read -r calls rate failures < <("$work/load.bin" "$address" "$concurrency" "$seconds")
    after=$(cpu "$server")
    values[rate_$mode]+="$rate "
    values[cpu_$mode]+="$(echo "($after - $before) / $ticks * 1000000 / $calls" | bc -l) "
    if [ "$mode" = agent ]; then
      sleep 0.5 # the agent drains what the load left in the ring
      agent_after=$(cpu "$agent")
      program_runs > "$work/runs.after"
      join "$work/runs.before" "$work/runs.after" | awk -v n="$calls" '$3 > $2 {printf "  round '"$round"' %-34s %6.2f runs per call\n", $1, ($3 - $2) / n}'
      stop_agent
      stopped=$(grep -o 'stopped: .*' "$work/agent.log")
      spans=$(echo "$stopped" | awk '{print $2}')
      values[agent_cpu]+="$(echo "($agent_after - $agent_before) / $ticks * 1000000 / $spans" | bc -l) "
      echo "  round $round: $calls calls ($failures failed), $spans spans; agent $stopped"
    fi
  done
done
m() { echo "${values[$1]}" | tr ' ' '\n' | grep -v '^$' | median; }
printf '%-46s %12s %12s %8s\n' "what (medians of $rounds rounds)" "no agent" "agent" "ratio"
printf '%-46s %12.0f %12.0f %8.3f\n' "Go gRPC unary Hello, $concurrency concurrent (calls/s)" "$(m rate_none)" "$(m rate_agent)" \
  "$(echo "$(m rate_agent) / $(m rate_none)" | bc -l)"
printf '%-46s %12.2f %12.2f %8.3f\n' "server CPU per call (µs)" "$(m cpu_none)" "$(m cpu_agent)" "$(echo "$(m cpu_agent) / $(m cpu_none)" | bc -l)"
printf '%-46s %12s %12.2f\n' "agent CPU per span (µs)" "-" "$(m agent_cpu)"
echo "raw: $(for k in "${!values[@]}"; do printf '%s=[%s] ' "$k" "${values[$k]% }"; done)"
