#!/usr/bin/env bash
# One command for a fresh Debian 12 machine with Swift (as root): install what is missing, build tracer in
# release mode, then
#   - with arguments, run `tracer ARGS...` (e.g. scripts/run-demo.sh --pid 1234);
#   - without, a demo: start a small Go frontend that calls a Python backend, select both with `--exe`,
#     drive a few requests and print the spans as they arrive, then say how to trace your own process.
# TRACER_DEMO_BINARY=path uses that tracer binary and skips installing and building (the tests use it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
tracer=${TRACER_DEMO_BINARY:-}
if [ -z "$tracer" ]; then
  scripts/install-deps.sh
  swift build --manifest-cache none -c release --product tracer
  tracer=.build/release/tracer
fi
[ $# -eq 0 ] || exec "$tracer" "$@"

demo=$(mktemp -d /tmp/tracer-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$demo"
}
trap cleanup EXIT

# The backend: Python's http.server answering /price with JSON; it writes the port it got to a file.
cat > "$demo/demo-backend.py" <<'EOF'
import http.server, json, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"item": self.path.rsplit("/", 1)[-1], "price": 42}).encode()
        self.send_response(200 if self.path.startswith("/price/") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1], "w") as f:
    f.write(str(server.server_port))
server.serve_forever()
EOF

# The frontend: a Go net/http server whose /checkout handler calls the backend (one client call per request).
cat > "$demo/main.go" <<'EOF'
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

func main() {
	backend := os.Args[1]
	http.HandleFunc("/checkout/", func(w http.ResponseWriter, r *http.Request) {
		item := r.URL.Path[len("/checkout/"):]
		resp, err := http.Get("http://" + backend + "/price/" + item)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		price, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(w, "checked out %s: %s\n", item, price)
	})
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	os.WriteFile(os.Args[2], []byte(fmt.Sprint(listener.Addr().(*net.TCPAddr).Port)), 0o644)
	http.Serve(listener, nil)
}
EOF
echo "demo: building the Go frontend (go $(go env GOVERSION 2>/dev/null || echo '?'))..."
(cd "$demo" && GO111MODULE=off GOCACHE="${GOCACHE:-/tmp/tracer-demo-gocache}" go build -o demo-frontend main.go)

wait_for_file() {
  for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done
  echo "demo: $2 did not start" >&2
  exit 1
}
python3 "$demo/demo-backend.py" "$demo/backend.port" & pids+=($!)
wait_for_file "$demo/backend.port" "the Python backend"
backend=127.0.0.1:$(cat "$demo/backend.port")
"$demo/demo-frontend" "$backend" "$demo/frontend.port" & pids+=($!)
wait_for_file "$demo/frontend.port" "the Go frontend"
frontend=127.0.0.1:$(cat "$demo/frontend.port")
echo "demo: Go frontend on $frontend calls the Python backend on $backend"

# Spans go to this terminal as they arrive; the agent's log to a file (its attach lines are shown below).
selection=(--exe '*/demo-frontend' --exe '*/demo-backend.py')
echo "demo: $ tracer ${selection[*]}"
"$tracer" "${selection[@]}" 2> "$demo/tracer.log" & tracer_pid=$!
pids+=("$tracer_pid")
for _ in $(seq 300); do
  grep -q "SIGTERM stops" "$demo/tracer.log" 2>/dev/null && break
  kill -0 "$tracer_pid" 2>/dev/null || { cat "$demo/tracer.log" >&2; exit 1; }
  sleep 0.1
done
grep -q "SIGTERM stops" "$demo/tracer.log" || { echo "demo: tracer did not start:" >&2; cat "$demo/tracer.log" >&2; exit 1; }
sed -n 's/^.*\(attached [0-9]* probes.*\)$/demo: \1/p' "$demo/tracer.log"

echo "demo: driving requests (each checkout makes one client call to the backend)..."
for item in apple pear fig; do
  curl -s "http://$frontend/checkout/$item" > /dev/null
  sleep 0.2
done
curl -s "http://$backend/health" > /dev/null
sleep 1
kill -TERM "$tracer_pid"
wait "$tracer_pid" || true
grep -E "stopped:" "$demo/tracer.log" | sed 's/^.*\(stopped:.*\)$/demo: tracer \1/'
cat <<'EOF'
demo: the frontend's client span to /price is the child of its /checkout server span (same trace: Go
      goroutine ancestry); the backend's spans are their own traces, since nothing put a traceparent on
      the wire (see --context-propagation in README).

Trace your own process:
  tracer ps --exe '*/myservice'          what would be selected, why, and which tracers apply
  tracer --pid 1234                      a running process and its children (spans on stdout)
  tracer --exe '*/myservice' --print json
  tracer --open-port 8080                whatever listens on a port
  OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 tracer --exe '*/myservice'
  scripts/run-demo.sh --pid 1234         the same through this script (tracer with your arguments)
EOF
