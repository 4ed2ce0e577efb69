# Shared by the scripts/bench-*.sh that run the `tracer` binary as shipped side by side with a baseline
# (sourced, after the script parsed its arguments; `tracer` is the --tracer path or empty).
#   bench_setup HINT TOOL...  checks each tool (one line naming the missing one, and HINT: how to install it),
#                             mounts tracefs when missing, builds the release `tracer` unless one was given, and
#                             makes $work (a temporary directory) and $pids (background processes): both are
#                             cleaned up at exit, after the script's own `bench_cleanup_extra` if it defines one.
#   bench_go_hello            builds (once) and starts a Go net/http server answering "hello" on 127.0.0.1 (a port
#                             the kernel picks): sets $hello_pid and $hello_port, and adds it to $pids.
#   median                    the median of the numbers on stdin, one per line.

bench_setup() {
  local hint=$1 tool
  shift
  for tool in "$@"; do
    [ -x "$tool" ] || { echo "missing $tool ($hint)" >&2; exit 1; }
  done
  [ -d /sys/kernel/tracing/events ] || mount -t tracefs tracefs /sys/kernel/tracing
  if [ -z "$tracer" ]; then
    PATH="/opt/swift/usr/bin:$PATH" swift build --manifest-cache none -c release --static-swift-stdlib --product tracer >&2
    tracer=.build/release/tracer
  fi
  work=$(mktemp -d)
  chmod 755 "$work"
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if declare -F bench_cleanup_extra > /dev/null; then bench_cleanup_extra; fi
  sleep 0.3
  rm -rf "$work"
}

bench_go_hello() {
  if [ ! -x "$work/hello" ]; then
    cat > "$work/hello.go" <<'GO'
package main

import (
	"fmt"
	"net"
	"net/http"
)

func main() {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	http.Serve(listener, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello") }))
}
GO
    (cd "$work" && GO111MODULE=off GOCACHE="$work/cache" go build -o hello hello.go)
  fi
  rm -f "$work/hello.port"
  "$work/hello" > "$work/hello.port" & pids+=($!); hello_pid=$!
  for _ in $(seq 1 100); do [ -s "$work/hello.port" ] && break; sleep 0.1; done
  hello_port=$(head -n1 "$work/hello.port")
}

median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
