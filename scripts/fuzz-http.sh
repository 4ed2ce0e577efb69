#!/usr/bin/env bash
# Fuzzes the HTTP tracer's parsers of captured bytes (request line and headers, status line, query
# redaction, response framing) and its whole event decoder with libFuzzer: builds Fuzz/HTTPFuzz with
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
    # A whole http_event: 104 bytes of header and fields (family AF_INET, role server, flags accepted),
    # then the request and response captures.
    python3 - "$corpus/event" <<'PY'
import struct, sys
req = b"GET /a/b?password=x HTTP/1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n"
resp = b"HTTP/1.1 500 Internal Server Error\r\n"
head = struct.pack("<IIIIQQQQQIHH16s16sBBBBHH", 100, 1, 1, 0, 5, 1000, 2000, len(req), len(resp), 3, 8080, 40000,
                   bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]), 2, 1, 2, 0, len(req), len(resp))
open(sys.argv[1], "wb").write(head + req.ljust(512, b"\0") + resp[:64].ljust(64, b"\0"))
PY
fi
exec "$bin" -runs="$runs" -max_len=2048 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/" "$@" "$corpus"
