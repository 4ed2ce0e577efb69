#!/usr/bin/env bash
# Fuzzes the database parsers of captured bytes (SQL summaries, query-text sanitizing, the Redis RESP,
# PostgreSQL, MySQL, memcached and NATS protocol parsers behind the capture layer's ConnectionTracker) with libFuzzer: builds Fuzz/DatabaseFuzz with
# -sanitize=fuzzer,address into .build-fuzz-database, seeds a corpus with Redis, PostgreSQL, MySQL, memcached and
# NATS exchanges, and runs.
#
# Usage: scripts/fuzz-database.sh [RUNS] [extra libFuzzer flags...]   (RUNS defaults to 1000000)
# A crash leaves crash-<sha1> in .build-fuzz-database/; replay it with the non-fuzzing build:
#   swift run DatabaseFuzz .build-fuzz-database/crash-<sha1>
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1000000}"
shift || true
out=.build-fuzz-database
# --manifest-cache none: the manifest finds the tracer folders (and their Tests to leave out) when it is evaluated.
ASAN_OPTIONS=detect_leaks=0 swift build -c release --manifest-cache none --product DatabaseFuzz --build-path "$out" \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -use-ld=lld >&2
bin="$(swift build -c release --manifest-cache none --build-path "$out" --show-bin-path)/DatabaseFuzz"

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
if [ ! -e "$corpus/pg-simple" ]; then
    # PostgreSQL (protocol 3.0): SSLRequest refused, StartupMessage, a simple Query of several statements with
    # its replies, a pipelined extended batch with an error mid-batch, a length below 4, an uncaptured row.
    python3 - "$corpus" <<'PY'
import struct, sys
def rec(control, data=b""):
    return bytes([control, len(data)]) + data
def msg(t, body):
    return t + struct.pack(">I", len(body) + 4) + body
def cstr(*values):
    return b"".join(v + b"\0" for v in values)
startup_body = struct.pack(">I", 196608) + cstr(b"user", b"app", b"database", b"shop") + b"\0"
connect = (rec(0, struct.pack(">II", 8, 80877103)) + rec(1, b"N") + rec(0, struct.pack(">I", len(startup_body) + 4) + startup_body)
    + rec(1, msg(b"R", struct.pack(">I", 0)) + msg(b"Z", b"I")))
d = sys.argv[1]
open(d + "/pg-simple", "wb").write(connect + rec(0, msg(b"Q", cstr(b"CREATE TABLE t (a int); INSERT INTO t VALUES (1); SELECT a FROM t")))
    + rec(1, msg(b"C", cstr(b"CREATE TABLE")) + msg(b"C", cstr(b"INSERT 0 1"))[:7]) + rec(1, msg(b"C", cstr(b"INSERT 0 1"))[7:])
    + rec(1 | (2 << 5), msg(b"D", b"\0\1" + struct.pack(">I", 300) + b"x" * 20)[:30]) + rec(1, msg(b"C", cstr(b"SELECT 1")) + msg(b"Z", b"I")))
batch = (msg(b"P", cstr(b"s1", b"SELECT a FROM t WHERE a = $1") + b"\0\0") + msg(b"B", cstr(b"", b"s1") + b"\0" * 6)
    + msg(b"E", cstr(b"") + b"\0" * 4) + msg(b"B", cstr(b"", b"s1") + b"\0" * 6) + msg(b"E", cstr(b"") + b"\0" * 4) + msg(b"S", b""))
error = msg(b"E", b"SERROR\0C22P02\0Mbad\0\0")
open(d + "/pg-extended", "wb").write(connect + rec(0, batch) + rec(1, msg(b"1", b"") + msg(b"2", b"") + error + msg(b"Z", b"I")) + rec(2))
open(d + "/pg-short", "wb").write(connect + rec(0, b"Q" + struct.pack(">I", 3) + b"SELECT 1\0") + rec(1, msg(b"Z", b"I")))
PY
fi
if [ ! -e "$corpus/pg-pgx" ]; then
    # PostgreSQL as pgx sends it: a statement prepared alone (Parse, Describe, Sync), then bound and executed;
    # a second prepare that the server refuses (ErrorResponse, no Execute ever sent).
    python3 - "$corpus" <<'PY'
import struct, sys
def rec(control, data=b""):
    return bytes([control, len(data)]) + data
def msg(t, body):
    return t + struct.pack(">I", len(body) + 4) + body
def cstr(*values):
    return b"".join(v + b"\0" for v in values)
startup_body = struct.pack(">I", 196608) + cstr(b"user", b"app", b"database", b"shop") + b"\0"
connect = rec(0, struct.pack(">I", len(startup_body) + 4) + startup_body) + rec(1, msg(b"R", struct.pack(">I", 0)) + msg(b"Z", b"I"))
prepare = lambda name, sql: msg(b"P", cstr(name, sql) + b"\0\0") + msg(b"D", b"S" + cstr(name)) + msg(b"S", b"")
run = msg(b"B", cstr(b"", b"c1") + b"\0" * 6) + msg(b"D", b"P\0") + msg(b"E", cstr(b"") + b"\0" * 4) + msg(b"S", b"")
open(sys.argv[1] + "/pg-pgx", "wb").write(connect + rec(0, prepare(b"c1", b"SELECT a FROM t WHERE a = $1"))
    + rec(1, msg(b"1", b"") + msg(b"t", b"\0\1\0\0\0\x17") + msg(b"n", b"") + msg(b"Z", b"I")) + rec(0, run)
    + rec(1, msg(b"2", b"") + msg(b"C", cstr(b"SELECT 0")) + msg(b"Z", b"I")) + rec(0, prepare(b"c2", b"SELECT * FROM missing"))
    + rec(1, msg(b"E", b"SERROR\0C42P01\0Mmissing\0\0")) + rec(1, msg(b"Z", b"I")))
PY
fi
if [ ! -e "$corpus/my-text" ]; then
    # MySQL/MariaDB: a greeting read first (the client's side), the handshake response, OK; text result sets with
    # EOFs, an ERR, COM_INIT_DB, COM_PING, prepared statements with CLIENT_DEPRECATE_EOF (PREPARE_OK, binary rows,
    # an OK terminator), pipelined executes, a multi-result query, a 16 MiB packet, a result beyond the capture.
    python3 - "$corpus" <<'PY'
import struct, sys
def rec(control, data=b""):
    return bytes([control, len(data)]) + data
def pkt(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload
def greeting(version, caps):
    return pkt(0, b"\x0a" + version + b"\0" + struct.pack("<I", 7) + b"A" * 8 + b"\0" + struct.pack("<H", caps & 0xffff)
               + b"\x2d" + struct.pack("<HH", 2, caps >> 16) + b"\x15" + b"\0" * 10 + b"B" * 12 + b"\0mysql_native_password\0")
def response(caps, db):
    return pkt(1, struct.pack("<II", caps, 1 << 24) + b"\x2d" + b"\0" * 23 + b"app\0" + b"\x14" + b"U" * 20 + db + b"\0")
def ok(seq, header=0, status=2):
    return pkt(seq, bytes([header, 0, 0]) + struct.pack("<HH", status, 0))
def eof(seq, status=2):
    return pkt(seq, b"\xfe\0\0" + struct.pack("<H", status))
def col(seq, name):
    lenenc = lambda s: bytes([len(s)]) + s
    return pkt(seq, lenenc(b"def") + lenenc(b"shop") + lenenc(b"t") + lenenc(b"t") + lenenc(name) + lenenc(name) + b"\x0c" + b"\0" * 12)
base = (1 << 9) | (1 << 15) | (1 << 3) | (1 << 19)
d = sys.argv[1]
connect = rec(1, greeting(b"5.5.5-10.11.6-MariaDB", base)) + rec(0, response(base, b"shop")) + rec(1, ok(2))
open(d + "/my-text", "wb").write(connect + rec(0, pkt(0, b"\x03SELECT a FROM t"))
    + rec(1, pkt(1, b"\x01") + col(2, b"a") + eof(3) + pkt(4, b"\x011") + eof(5))
    + rec(0, pkt(0, b"\x03SELECT * FROM missing")) + rec(1, pkt(1, b"\xff\x7a\x04#42S02no such table"))
    + rec(0, pkt(0, b"\x02other")) + rec(1, ok(1)) + rec(0, pkt(0, b"\x0e")) + rec(1, ok(1)))
dep = base | (1 << 24)
connect8 = rec(1, greeting(b"8.0.36", dep)) + rec(0, response(dep, b"shop")) + rec(1, ok(2))
execute = pkt(0, b"\x17" + struct.pack("<IBI", 5, 0, 1) + b"\0\x01\x03\0" + struct.pack("<I", 1))
binary = pkt(1, b"\x01") + col(2, b"a") + pkt(3, b"\0\0\x011") + ok(4, 0xfe)
open(d + "/my-prepared", "wb").write(connect8 + rec(0, pkt(0, b"\x16SELECT a FROM t WHERE a = ?"))
    + rec(1, pkt(1, b"\0" + struct.pack("<IHHBH", 5, 1, 1, 0, 0)) + col(2, b"?") + col(3, b"a"))
    + rec(0, execute + execute) + rec(1, binary + binary) + rec(0, pkt(0, b"\x19" + struct.pack("<I", 5)))
    + rec(0, pkt(0, b"\x03DELETE FROM t; SELECT 1")) + rec(1, ok(1, 0, 0x0a) + pkt(2, b"\x01") + col(3, b"1") + pkt(4, b"\x011") + ok(5, 0xfe)))
open(d + "/my-huge", "wb").write(connect + rec(0, pkt(0, b"\x03SELECT 1")) + rec(1 | (3 << 5), b"\xff\xff\xff\x01" + b"\xfb" * 20)
    + rec(0, pkt(0, b"\x03SELECT a FROM t")) + rec(1 | (2 << 5), pkt(1, b"\x01") + col(2, b"a") + eof(3) + pkt(4, b"\x10" + b"x" * 16)) + rec(2))
PY
fi
if [ ! -e "$corpus/mc-binary" ]; then
    # memcached (text protocol): a pipeline with a data block, VALUE blocks split over reads and beyond the capture,
    # noreply, an error, stats, meta commands (ms/mg with VA), a quiet one, an absurd data length; the binary
    # protocol: GetK with a split response, a quiet SetQ answered through Noop, Stat, an increment error.
    python3 - "$corpus" <<'PY'
import sys
def rec(control, data=b""):
    return bytes([control, len(data)]) + data
d = sys.argv[1]
open(d + "/mc-pipeline", "wb").write(rec(0, b"set k 0 0 5\r\nhello\r\nget k j\r\nincr n 1\r\n") + rec(1, b"STORED\r\nVALUE k 0 5\r\nhel")
    + rec(1, b"lo\r\nEND\r\nCLIENT_ERROR bad\r\n") + rec(0, b"delete k noreply\r\nstats\r\n") + rec(1, b"STAT pid 1\r\nEND\r\n")
    + rec(0, b"gets big\r\n") + rec(1 | (2 << 5), b"VALUE big 0 300 7\r\n" + b"v" * 20) + rec(1, b"END\r\n") + rec(2))
def binary(magic, opcode, key=b"", extras=b"", value=b"", status=0, opaque=0):
    body = extras + key + value
    return bytes([magic, opcode]) + len(key).to_bytes(2, "big") + bytes([len(extras), 0]) + status.to_bytes(2, "big") \
        + len(body).to_bytes(4, "big") + opaque.to_bytes(4, "big") + bytes(8) + body
open(d + "/mc-binary", "wb").write(rec(0, binary(0x80, 0x0c, b"k", opaque=1) + binary(0x80, 0x11, b"j", bytes(8), b"v", opaque=2)
    + binary(0x80, 0x0a, opaque=3)) + rec(1, binary(0x81, 0x0c, b"k", bytes(4), b"val", opaque=1)[:30])
    + rec(1, binary(0x81, 0x0c, b"k", bytes(4), b"val", opaque=1)[30:] + binary(0x81, 0x0a, opaque=3))
    + rec(0, binary(0x80, 0x10, opaque=4)) + rec(1, binary(0x81, 0x10, b"pid", b"", b"1", opaque=4) + binary(0x81, 0x10, opaque=4))
    + rec(0, binary(0x80, 0x05, b"n", bytes(20), opaque=5)) + rec(1, binary(0x81, 0x05, value=b"bad", status=6, opaque=5)))
open(d + "/mc-meta", "wb").write(rec(0, b"ms k 2 T0\r\nhi\r\nmg k v\r\nmn\r\n") + rec(1, b"HD\r\nVA 2\r\nhi\r\nMN\r\n")
    + rec(0, b"mg k v q\r\n") + rec(0, b"set k 0 0 4611686018427387904\r\nx\r\n"))
PY
fi
if [ ! -e "$corpus/nats-pubsub" ]; then
    # NATS (client protocol): INFO read first, CONNECT, SUB, PUB/HPUB pipelined with a payload split over writes,
    # MSG/HMSG deliveries with a traceparent header, a reply inbox; verbose +OK/-ERR; a 2^62 size, headers above
    # the payload, a payload beyond the capture; the server's side (INFO written first).
    python3 - "$corpus" <<'PY'
import sys
def rec(control, data=b""):
    return bytes([control, len(data)]) + data
d = sys.argv[1]
info = b'INFO {"server_id":"N","version":"2.9.10","headers":true,"max_payload":1048576}\r\n'
hdr = b"NATS/1.0\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"
open(d + "/nats-pubsub", "wb").write(rec(1, info) + rec(0, b'CONNECT {"verbose":false,"headers":true}\r\nPING\r\n') + rec(1, b"PONG\r\n")
    + rec(0, b"SUB orders  1\r\nPUB orders  5\r\nhello\r\nPUB service _INBOX.a.b 4\r\npi") + rec(0, b"ng\r\n")
    + rec(1, b"MSG orders 1 5\r\nhel") + rec(1, b"lo\r\nMSG _INBOX.a.b 2 4\r\npong\r\n")
    + rec(0, b"HPUB orders %d %d\r\n" % (len(hdr), len(hdr) + 2) + hdr + b"hi\r\n")
    + rec(1, b"HMSG orders 1 %d %d\r\n" % (len(hdr), len(hdr) + 2) + hdr + b"hi\r\n") + rec(2))
open(d + "/nats-verbose", "wb").write(rec(1, info) + rec(0, b'CONNECT {"verbose": true}\r\n') + rec(1, b"+OK\r\n")
    + rec(0, b"PUB a 1\r\nx\r\nPUB secret 1\r\ny\r\n") + rec(1, b"+OK\r\n-ERR 'Permissions Violation for Publish to \"secret\"'\r\n")
    + rec(1, b"-ERR 'Stale Connection'\r\n") + rec(0, b"PUB a 4611686018427387904\r\n") + rec(0, b"HPUB a 10 5\r\n")
    + rec(0 | (2 << 5), b"PUB big 300\r\n" + b"b" * 20) + rec(0, b"PUB a 0\r\n\r\n"))
open(d + "/nats-server", "wb").write(rec(0, info) + rec(1, b'CONNECT {"verbose":true}\r\n') + rec(0, b"+OK\r\n")
    + rec(1, b"PUB orders 2\r\nok\r\n") + rec(0, b"+OK\r\nMSG orders 1 2\r\nok\r\n") + rec(2))
PY
fi
exec "$bin" -runs="$runs" -max_len=2048 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/" "$@" "$corpus"
