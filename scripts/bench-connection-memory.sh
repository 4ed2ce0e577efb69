#!/usr/bin/env bash
# What an idle connection costs the agent (issue 13): the agent (release, as shipped) traces a server; a client
# opens N connections to it, makes one exchange on each (so a parser claimed it and holds its state: the Redis
# and memcached streams, HTTP/1's request parser, HTTP/2's HPACK tables with one dynamic entry each) and keeps them
# open, idle. The agent's resident memory (VmRSS) grows by what it keeps per connection: tracker entry, parser
# state, same-host linking entries. Reported per connection, against the same N connections with no agent
# (the baseline for the server's own growth is not the agent's: only the agent's RSS is read).
# Usage (root): scripts/bench-connection-memory.sh [--connections N] [--tracer PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
connections=2000 tracer=""
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) connections=$2; shift 2 ;;
    --tracer) tracer=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
source scripts/lib-bench.sh
bench_setup "apt-get install redis-server memcached nginx-light nghttp2-server" \
  /usr/bin/redis-server /usr/bin/memcached /usr/sbin/nginx /usr/sbin/nghttpd /usr/bin/python3
ulimit -n $((connections * 2 + 1024))

# The client: N connections, one exchange each, then idle until stdin closes. $1 protocol, $2 port.
cat > "$work/client.py" <<'EOF'
import socket, sys
protocol, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
requests = {
    "redis": (b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"),
    "memcached": (b"get missing\r\n", b"END\r\n"),
    "http/1": (b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n", b"\r\n\r\n"),
}
def frame(kind, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
def h2_request(index):
    # :method GET, :scheme http, :path / (static table), :authority as a literal with incremental indexing
    # (a dynamic-table entry per connection), no Huffman.
    authority = b"bench-%d" % index
    block = bytes([0x82, 0x86, 0x84, 0x41, len(authority)]) + authority
    return (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 0x05, 1, block))
held = []
for index in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    if protocol == "http/2":
        s.sendall(h2_request(index))
        data = b""
        while True:  # until the response's HEADERS/DATA with END_STREAM on stream 1
            data += s.recv(65536)
            done, at = False, 0
            while at + 9 <= len(data):
                length = int.from_bytes(data[at:at + 3], "big")
                if at + 9 + length > len(data): break
                kind, flags, stream = data[at + 3], data[at + 4], int.from_bytes(data[at + 5:at + 9], "big") & 0x7FFFFFFF
                if stream == 1 and kind in (0, 1) and flags & 1: done = True
                at += 9 + length
            if done: break
        s.sendall(frame(4, 0x01, 0, b""))  # SETTINGS ack
    else:
        request, end = requests[protocol]
        s.sendall(request)
        data = b""
        while end not in data: data += s.recv(65536)
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
EOF

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# One server per protocol, on ports the kernel hands out.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --maxclients $((connections + 100)) > /dev/null & pids+=($!); redis_pid=$!
memcached_port=$(free_port)
memcached -u root -l 127.0.0.1 -p "$memcached_port" -U 0 -t 2 -c $((connections + 100)) & pids+=($!); memcached_pid=$!
nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections $((connections + 100)); }
http {
  access_log off;
  keepalive_timeout 600s;
  keepalive_requests 100000;
  server { listen 127.0.0.1:$nginx_port; location / { return 200 "ok"; } }
}
EOF
nginx -c "$work/nginx/nginx.conf" -g "daemon off;" & pids+=($!); nginx_pid=$!
nghttpd_port=$(free_port)
mkdir -p "$work/h2"; echo ok > "$work/h2/index.html"
nghttpd --no-tls -d "$work/h2" "$nghttpd_port" > /dev/null 2>&1 & pids+=($!); nghttpd_pid=$!
sleep 1

printf '%-10s %12s %14s %14s %16s\n' protocol connections "agent before" "agent after" "per connection"
for case in "redis $redis_port $redis_pid" "memcached $memcached_port $memcached_pid" "http/1 $nginx_port $nginx_pid" "http/2 $nghttpd_port $nghttpd_pid"; do
  read -r protocol port pid <<< "$case"
  "$tracer" --pid "$pid" --print none --log-level info 2> "$work/agent.log" > /dev/null &
  agent=$!
  for _ in $(seq 1 100); do grep -q "tracing:" "$work/agent.log" && break; sleep 0.1; done
  sleep 1
  before=$(rss_kib "$agent")
  mkfifo "$work/hold"
  python3 "$work/client.py" "$protocol" "$port" "$connections" < "$work/hold" > "$work/client.out" & client=$!
  exec 9> "$work/hold"
  for _ in $(seq 1 600); do grep -q ready "$work/client.out" 2>/dev/null && break; sleep 0.1; done
  sleep 1 # the reader drains every 20 ms
  after=$(rss_kib "$agent")
  printf '%-10s %12d %11d KiB %11d KiB %12d bytes\n' "$protocol" "$connections" "$before" "$after" $(( (after - before) * 1024 / connections ))
  exec 9>&-
  wait "$client" || true
  rm -f "$work/hold"
  kill -TERM "$agent"; wait "$agent" || true
  grep -o "stopped: .*" "$work/agent.log" | sed 's/^/  /'
done
