#!/usr/bin/env bash
# Fuzzes the database parsers of captured bytes (SQL summaries, query-text sanitizing, the Redis RESP parser
# behind the capture layer's ConnectionTracker) with libFuzzer: builds Fuzz/DatabaseFuzz with
# -sanitize=fuzzer,address into .build-fuzz-database, seeds a corpus with real Redis exchanges, and runs.
#
# Usage: scripts/fuzz-database.sh [RUNS] [extra libFuzzer flags...]   (RUNS defaults to 1000000)
# A crash leaves crash-<sha1> in .build-fuzz-database/; replay it with the non-fuzzing build:
#   swift run DatabaseFuzz .build-fuzz-database/crash-<sha1>
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1000000}"
shift || true
out=.build-fuzz-database
ASAN_OPTIONS=detect_leaks=0 swift build -c release --product DatabaseFuzz --build-path "$out" \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -use-ld=lld >&2
bin="$(swift build -c release --build-path "$out" --show-bin-path)/DatabaseFuzz"

corpus="$out/corpus"
mkdir -p "$corpus"
if [ -z "$(ls -A "$corpus")" ]; then
    # Records (control byte, length byte, bytes: see Fuzz/DatabaseFuzz): client commands (bit 0 clear),
    # replies (bit 0 set), a reply split over reads, a pipeline, MULTI/EXEC, a 2^62 bulk length, RESP3.
    python3 - "$corpus" <<'PY'
import sys
def rec(control, data=b""):
    return bytes([control, len(data)]) + data
d = sys.argv[1]
open(d + "/select", "wb").write(rec(0, b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n") + rec(1, b"+OK\r\n"))
open(d + "/pipeline", "wb").write(rec(0, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    + rec(1, b"+OK\r\n$5\r\nhel") + rec(1, b"lo\r\n") + rec(2))
open(d + "/multi", "wb").write(rec(0, b"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n*1\r\n$4\r\nEXEC\r\n")
    + rec(1, b"+OK\r\n+QUEUED\r\n*1\r\n:1\r\n"))
open(d + "/huge", "wb").write(rec(0, b"*2\r\n$3\r\nGET\r\n$4611686018427387904\r\nk\r\n") + rec(1, b"-ERR too big\r\n"))
open(d + "/resp3", "wb").write(rec(0, b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n") + rec(1, b"%1\r\n+server\r\n+redis\r\n>2\r\n+a\r\n+b\r\n")
    + rec(0 | (1 << 5), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\n") + rec(1, b"!3\r\nERR\r\n"))
open(d + "/sql", "wb").write(b"SELECT \"a\" FROM t WHERE x = 'it''s' AND y = $1::int AND z = 1.5e3 -- c\n")
PY
fi
exec "$bin" -runs="$runs" -max_len=2048 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/" "$@" "$corpus"
