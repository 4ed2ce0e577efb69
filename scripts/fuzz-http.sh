#!/usr/bin/env bash
# Fuzzes the HTTP parsers of captured bytes (request line and headers, status line, query redaction) and
# the capture layer's user-space entry point (ConnectionTracker with the HTTP/1 parser, fed sequences of
# capture events) with libFuzzer: builds Fuzz/HTTPFuzz with
# -sanitize=fuzzer,address into .build-fuzz-http, seeds a corpus with real requests and responses, and runs.
#
# Usage: scripts/fuzz-http.sh [RUNS] [extra libFuzzer flags...]   (RUNS defaults to 1000000)
# A crash leaves crash-<sha1> in .build-fuzz-http/; replay it with the non-fuzzing build:
#   swift run HTTPFuzz .build-fuzz-http/crash-<sha1>
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1000000}"
shift || true
out=.build-fuzz-http
# The BPF embed tool is built with the same flags; its Foundation.Process use trips LeakSanitizer.
ASAN_OPTIONS=detect_leaks=0 swift build -c release --product HTTPFuzz --build-path "$out" \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -use-ld=lld >&2
bin="$(swift build -c release --build-path "$out" --show-bin-path)/HTTPFuzz"

corpus="$out/corpus"
mkdir -p "$corpus"
if [ -z "$(ls -A "$corpus")" ]; then
    printf 'GET /hello?x=1&token=abc HTTP/1.1\r\nHost: 127.0.0.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n' > "$corpus/request"
    printf 'POST http://example.com/a#f HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc' > "$corpus/absolute"
    printf 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n' > "$corpus/response"
    printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n' > "$corpus/chunked"
    # Sequences of capture records (control byte, length byte, bytes: see Fuzz/HTTPFuzz): a keep-alive
    # server exchange on connection 0, a pipelined client exchange on connection 1, a sendfile-style
    # body without data, garbage, and a close.
    python3 - "$corpus" <<'PY'
import sys
def rec(control, data=b""):
    return bytes([control, len(data)]) + data
req = b"GET /a/b?password=x HTTP/1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n"
resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
open(sys.argv[1] + "/server", "wb").write(rec(0, req) + rec(1, resp) + rec(0, b"G") + rec(0, b"ET /c HTTP/1.1\r\n\r\n") + rec(1 | 2))
pipe = b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
open(sys.argv[1] + "/client", "wb").write(rec(8 | 1, pipe) + rec(8, b"HTTP/1.1 204 No\r\n\r\nHTTP/1.1 500 E\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
open(sys.argv[1] + "/sendfile", "wb").write(rec(0, req) + rec(1, b"HTTP/1.1 200 OK\r\nContent-Length: 3145728\r\n\r\n") + rec(1 | (3 << 5)))
# HTTP/2: a client preface, SETTINGS and a request (static :method GET, :scheme http, a Huffman :path, an
# indexed literal); the response with an indexed reference, DATA, and a gRPC trailer; a cut header block.
h2req = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]) \
    + bytes([0, 0, 14, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x44, 0x85, 0x62, 0x72, 0xd1, 0x41, 0xff, 0x40, 1, 0x61, 1, 0x62])
h2resp = bytes([0, 0, 2, 1, 4, 0, 0, 0, 1, 0x88, 0xbe]) + bytes([0, 0, 2, 0, 0, 0, 0, 0, 1]) + b"ok" \
    + bytes([0, 0, 15, 1, 5, 0, 0, 0, 1, 0, 11]) + b"grpc-status" + b"\x015"
open(sys.argv[1] + "/h2", "wb").write(rec(0, h2req) + rec(1, h2resp) + rec(1 | (1 << 5), bytes([0, 0, 200, 1, 4, 0, 0, 0, 3, 0x82])))
open(sys.argv[1] + "/garbage", "wb").write(rec(16, b"\x16\x03\x01\x00\x05hello") + rec(16 | 4, b"\x20\x03\x00\x00"))
PY
fi
exec "$bin" -runs="$runs" -max_len=2048 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/" "$@" "$corpus"
