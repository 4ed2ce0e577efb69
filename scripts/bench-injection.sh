#!/usr/bin/env bash
# Cost of network-level traceparent injection (issue 15): a traced Python ThreadingHTTPServer proxy whose every
# request makes one HTTP/1.1 call to a traced Go hello backend, under `wrk -t1 -c4`, with the agent
# (`tracer` as shipped) run with `--context-propagation network` and without it, in alternating rounds of one run.
# Two proxies: one keeps a backend connection per thread (keep-alive: the sk_msg program per request), one opens
# a new connection per call with urllib (the sockops program and the SOCKHASH insert per request too).
# Prints median throughputs and their ratio (goal: >= 0.95), and, with BPF statistics on
# (sysctl kernel.bpf_stats_enabled), the agent's sk_msg, sk_skb and sockops programs' runs and BPF time per proxied request
# (bpftool prog show: run_cnt, run_time_ns), and the requests the agent injected (its /metrics counter).
# Usage (root): scripts/bench-injection.sh [--rounds N] [--seconds S] [--tracer PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 seconds=5 tracer=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --tracer) tracer=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
source scripts/lib-bench.sh
trap 'echo "bench-injection: line $LINENO failed: $BASH_COMMAND" >&2' ERR
bench_setup "apt-get install golang-go wrk bpftool jq curl" /usr/bin/go /usr/bin/wrk /usr/sbin/bpftool /usr/bin/jq /usr/bin/curl
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
agent=""
bench_cleanup_extra() {
  [ -z "$agent" ] || kill "$agent" 2>/dev/null || true
  sysctl -qw kernel.bpf_stats_enabled="$stats_before"
}
sysctl -qw kernel.bpf_stats_enabled=1

bench_go_hello
backend_pid=$hello_pid backend_port=$hello_port

# argv: backend port, "keep-alive" (one backend connection per server thread) or "new" (urllib, one per call).
cat > "$work/proxy.py" <<'PY'
import http.client, http.server, socketserver, sys, threading, urllib.request
backend, mode = int(sys.argv[1]), sys.argv[2]
local = threading.local()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_GET(self):
        if mode == "keep-alive":
            if not hasattr(local, "backend"):
                local.backend = http.client.HTTPConnection("127.0.0.1", backend)
            local.backend.request("GET", "/hello")
            body = local.backend.getresponse().read()
        else:
            with urllib.request.urlopen("http://127.0.0.1:%d/hello" % backend) as response:
                body = response.read()
        # one write: a head and a body in two would meet Nagle and delayed ACKs (40 ms)
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
class Server(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
declare -A proxy_pid proxy_port
for mode in keep-alive new; do
  python3 "$work/proxy.py" "$backend_port" "$mode" > "$work/$mode.port" 2> "$work/$mode.err" & pids+=($!); proxy_pid[$mode]=$!
  for _ in $(seq 1 100); do [ -s "$work/$mode.port" ] && break; sleep 0.1; done
  proxy_port[$mode]=$(head -n1 "$work/$mode.port")
  [ "$(curl -s --max-time 5 "http://127.0.0.1:${proxy_port[$mode]}/")" = hello ] || { echo "the $mode proxy does not answer" >&2; exit 1; }
done
metrics_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

start_agent() { # $1: none|network
  local propagation=()
  [ "$1" = network ] && propagation=(--context-propagation network)
  "$tracer" --pid "${proxy_pid[keep-alive]}" --pid "${proxy_pid[new]}" --pid "$backend_pid" "${propagation[@]}" \
    --print none --prometheus-port "$metrics_port" --log-level info 2> "$work/agent.log" &
  agent=$!
  for _ in $(seq 1 100); do grep -q "tracing:" "$work/agent.log" && break; sleep 0.1; done
  sleep 0.3
  # With injection: wait until a new backend connection is injected (the processes are selected in the kernel).
  if [ "$1" = network ]; then
    for _ in $(seq 1 50); do
      curl -s --max-time 5 -o /dev/null "http://127.0.0.1:${proxy_port[new]}/" || true
      [ "$(injected)" -gt 0 ] && break
      sleep 0.2
    done
  fi
}
stop_agent() { kill -TERM "$agent"; wait "$agent" || true; agent=""; }
# "NS RUNS" of the agent's own sk_msg, sk_skb and sock_ops programs so far (found by the program ids in its
# descriptors' fdinfo: another agent with its own programs may be running on the machine).
injection_bpf() {
  local ids
  ids=$(cat /proc/"$agent"/fdinfo/* 2>/dev/null | awk '/^prog_id:/ {print $2}' | sort -un | jq -s -c .)
  bpftool prog show -j | jq -r --argjson ids "$ids" '[.[] | select(.id as $id | $ids | index($id))
    | select(.type == "sk_msg" or .type == "sk_skb" or .type == "sock_ops")] | "\(map(.run_time_ns // 0) | add // 0) \(map(.run_cnt // 0) | add // 0)"'
}
injected() { { curl -s --max-time 10 "http://127.0.0.1:$metrics_port/metrics" || true; } | awk '/^tracer_capture_propagation_injected_total/ {n += $NF} END {print n + 0}'; }
wrk_run() { wrk -t1 -c4 -d"${seconds}s" "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {rate=$2} /requests in/ {n=$1} END {print rate, n}'; }

echo "injection cost: tracer $(basename "$tracer"), $rounds rounds, wrk -t1 -c4 ${seconds}s, load $(cut -d' ' -f1-3 /proc/loadavg)"
start_agent network; { grep -iE "propagation|sk_msg|sockops|cgroup" "$work/agent.log" || true; } | sed 's/^.*\] /  /' | head -5; stop_agent
declare -A values
for round in $(seq 1 "$rounds"); do
  for propagation in none network; do
    start_agent "$propagation"
    for mode in keep-alive new; do
      read -r ns0 runs0 < <(injection_bpf); injected0=$(injected)
      read -r rate n < <(wrk_run "${proxy_port[$mode]}")
      read -r ns1 runs1 < <(injection_bpf); injected1=$(injected)
      values[${mode}_$propagation]+="$rate "
      if [ "$propagation" = network ]; then
        values[${mode}_runs]+="$(echo "($runs1 - $runs0) / $n" | bc -l) "
        values[${mode}_ns]+="$(echo "($ns1 - $ns0) / $n" | bc -l) "
        values[${mode}_injected]+="$(echo "($injected1 - $injected0) / $n" | bc -l) "
      fi
    done
    stop_agent
  done
done
m() { echo "${values[$1]}" | tr ' ' '\n' | grep -v '^$' | median; }
printf '%-58s %10s %10s %7s %10s %10s %10s\n' "proxy → Go backend (medians of $rounds rounds)" "traced" "+network" "ratio" "runs/req" "BPF ns/req" "inj./req"
for mode in keep-alive new; do
  printf '%-58s %10.0f %10.0f %7.3f %10.2f %10.0f %10.2f\n' "Python proxy, $mode backend connection (req/s)" \
    "$(m "${mode}_none")" "$(m "${mode}_network")" "$(echo "$(m "${mode}_network") / $(m "${mode}_none")" | bc -l)" \
    "$(m "${mode}_runs")" "$(m "${mode}_ns")" "$(m "${mode}_injected")"
done
echo "raw: $(for k in "${!values[@]}"; do printf '%s=[%s] ' "$k" "${values[$k]% }"; done)"
