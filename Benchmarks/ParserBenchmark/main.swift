import Foundation
import Glibc
import OTLPExport
import Telemetry
import TracerFramework
import Tracers

/// A protocol parser's user-space cost (issues 12, 13), as the agent runs it: capture events through the
/// connection tracker, the parser, the span builder of its family (`Exchange.span`) and the RED metrics sink
/// the agent always has; on this thread, no kernel. `swift run -c release ParserBenchmark PROTOCOL [operations] [rounds]`:
/// - `redis`: redis-server's side of `redis-benchmark -t get,set` (a command read, its reply written);
/// - `http`: an HTTP/1.1 server's keep-alive `GET /hello?id=N` and its 200 response;
/// - `nats`: publishes (PUB written) and deliveries (MSG read; every fourth an HPUB/HMSG with a `traceparent`
///   header), and the growth of resident memory per idle NATS connection (`/proc/self/statm`; 10 000
///   connections that read INFO and wrote CONNECT and SUB);
/// - `postgres`: a Postgres server's side of `pgbench -S` (simple-query `SELECT … WHERE aid = N`, one row);
/// - `memcached`: a memcached server's side of `memcaslap` (text protocol; 9 gets, half of them hits, to 1 set).
/// Operations go round-robin over 8 connections, one capture event per read or write. Printed: the best
/// round's thread CPU time per span.

let arguments = Array(CommandLine.arguments.dropFirst())
let protocolName = arguments.first ?? ""
let operations = arguments.dropFirst().first.flatMap(Int.init) ?? 200_000
let rounds = arguments.dropFirst(2).first.flatMap(Int.init) ?? 5
let connections = 8

func threadCPUNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// One workload: the parser, the events of `operations` operations, and connection set-up events.
struct Workload {
    let parser: any ProtocolParser
    let port: UInt16
    let setUp: [(CaptureChunk.Direction, [UInt8])]
    /// The events of operation `index`: direction and bytes.
    let operation: (Int) -> [(CaptureChunk.Direction, [UInt8])]
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

let natsInfo = bytes("INFO {\"server_id\":\"N\",\"version\":\"2.9.10\",\"headers\":true,\"max_payload\":1048576}\r\n")
let workload: Workload
switch protocolName {
case "redis":
    let set = bytes("*3\r\n$3\r\nSET\r\n$16\r\nkey:__rand_int__\r\n$3\r\nxxx\r\n"), get = bytes("*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n")
    let ok = bytes("+OK\r\n"), value = bytes("$3\r\nxxx\r\n")
    workload = Workload(parser: RedisTracer().parser!, port: 6379, setUp: []) { index in
        index % 2 == 0 ? [(.receive, set), (.send, ok)] : [(.receive, get), (.send, value)]
    }
case "http":
    let response = bytes("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nDate: Mon, 07 Dec 2026 21:00:00 GMT\r\n\r\nhello")
    workload = Workload(parser: HTTPTracer().parser!, port: 8080, setUp: []) { index in
        [(.receive, bytes("GET /hello?id=\(index % 100) HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n")),
         (.send, response)]
    }
case "nats":
    let headers = "NATS/1.0\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"
    let body = String(repeating: "b", count: 64)
    let publish = bytes("PUB orders.created  64\r\n\(body)\r\n"), delivery = bytes("MSG orders.created 1 64\r\n\(body)\r\n")
    let headedPublish = bytes("HPUB orders.created \(headers.utf8.count) \(headers.utf8.count + 64)\r\n\(headers)\(body)\r\n")
    let headedDelivery = bytes("HMSG orders.created 1 \(headers.utf8.count) \(headers.utf8.count + 64)\r\n\(headers)\(body)\r\n")
    workload = Workload(parser: NATSTracer().parser!, port: 4222, setUp: [(.receive, natsInfo)]) { index in
        let headed = index % 4 == 3
        return index % 2 == 1 ? [(.receive, headed ? headedDelivery : delivery)] : [(.send, headed ? headedPublish : publish)]
    }
case "postgres":
    /// A backend message: type byte, big-endian length (itself included), body.
    func message(_ type: Character, _ body: [UInt8]) -> [UInt8] {
        let length = UInt32(body.count + 4)
        return [type.asciiValue!] + withUnsafeBytes(of: length.bigEndian) { Array($0) } + body
    }
    func int16(_ value: UInt16) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }
    func int32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }
    let startupBody = int32(196_608) + bytes("user\0postgres\0database\0bench\0\0")
    let startup = int32(UInt32(startupBody.count + 4)) + startupBody
    let ready = message("Z", bytes("I"))
    let greeting = message("R", int32(0)) + message("S", bytes("server_version\015.5\0")) + message("K", int32(42) + int32(7)) + ready
    let rows = message("T", int16(1) + bytes("abalance\0") + int32(16_400) + int16(3) + int32(23) + int16(4) + int32(0xFFFF_FFFF) + int16(0))
        + message("D", int16(1) + int32(1) + bytes("0")) + message("C", bytes("SELECT 1\0")) + ready
    workload = Workload(parser: PostgresTracer().parser!, port: 5432, setUp: [(.receive, startup), (.send, greeting)]) { index in
        [(.receive, message("Q", bytes("SELECT abalance FROM pgbench_accounts WHERE aid = \(index % 100_000 + 1);\0"))), (.send, rows)]
    }
case "memcached":
    let stored = bytes("STORED\r\n"), miss = bytes("END\r\n")
    workload = Workload(parser: MemcachedTracer().parser!, port: 11211, setUp: []) { index in
        let key = "key:\(String(index % 10_000).padding(toLength: 10, withPad: "0", startingAt: 0))"
        if index % 10 == 9 { return [(.receive, bytes("set \(key) 0 0 3\r\nxxx\r\n")), (.send, stored)] }
        return index % 2 == 0 ? [(.receive, bytes("get \(key)\r\n")), (.send, bytes("VALUE \(key) 0 3\r\nxxx\r\nEND\r\n"))]
                              : [(.receive, bytes("get \(key)\r\n")), (.send, miss)]
    }
default:
    FileHandle.standardError.write(Data("usage: ParserBenchmark redis|http|nats|postgres|memcached [operations] [rounds]\n".utf8))
    exit(2)
}

let tuple = CaptureEvents.tuple(local: [127, 0, 0, 1], localPort: workload.port, remote: [127, 0, 0, 1], remotePort: 40_000)
var events: [[UInt8]] = []
/// A capture event of `connection`, 500 ns after the one before.
func event(_ connection: Int, _ direction: CaptureChunk.Direction, _ data: [UInt8], at time: inout UInt64) -> [UInt8] {
    time += 500
    return CaptureEvents.chunk(connection: UInt64(connection), pid: 1, direction: direction, data: data, timestamp: time, tuple: tuple)
}
var time: UInt64 = 10
for connection in 1...connections {
    for (direction, data) in workload.setUp { events.append(event(connection, direction, data, at: &time)) }
}
for index in 0..<operations {
    for (direction, data) in workload.operation(index) { events.append(event(index % connections + 1, direction, data, at: &time)) }
}

/// The best of `rounds` runs of `events` through a fresh tracker: thread CPU nanoseconds, and the spans made.
/// Not main-actor code: the closures the tracker calls would check their executor at every call.
nonisolated func measure(_ events: [[UInt8]], parser: any ProtocolParser, rounds: Int) -> (best: Double, spans: Int) {
    let resource = Resource(attributes: [SemanticConventions.serviceName: "bench"])
    let scope = InstrumentationScope(name: "bench")
    let parsers = ConnectionTracker.ProcessParsers(parsers: [parser])
    var best = Double.infinity, spans = 0
    for _ in 0..<rounds {
        let tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in parsers }, countOnly: { _ in })
        let metrics = REDMetrics()
        var exchanges: [Exchange] = [], built: [Span] = []
        let start = threadCPUNanoseconds()
        spans = 0
        // Like the agent: exchanges of a batch of events, then their spans, then the sinks.
        for batch in stride(from: 0, to: events.count, by: 64) {
            for event in events[batch..<min(batch + 64, events.count)] { event.withUnsafeBytes { tracker.handle($0, into: &exchanges) } }
            exchanges.withUnsafeMutableBufferPointer { $0.reverse() } // as the agent does: moved out in order
            while let exchange = exchanges.popLast() { built.append(exchange.span(resource: resource, scope: scope) { $0 }) }
            metrics.consume(built)
            spans += built.count
            exchanges.removeAll(keepingCapacity: true)
            built.removeAll(keepingCapacity: true)
        }
        best = min(best, Double(threadCPUNanoseconds() - start))
    }
    return (best, spans)
}
let (best, spans) = measure(events, parser: workload.parser, rounds: rounds)
print("\(protocolName) (\(events.count) capture events, \(spans) spans, best of \(rounds), thread CPU): "
      + "\(String(format: "%.0f", best / Double(max(spans, 1)))) ns per span")

guard protocolName == "nats" else { exit(0) }
// Memory per idle NATS connection.
let idle = 10_000
let connect = bytes("CONNECT {\"verbose\":false,\"headers\":true,\"lang\":\"python3\"}\r\nPING\r\n")
let subscribe = bytes("SUB orders.created  1\r\n")
var idleEvents: [[UInt8]] = []
for connection in 1...idle {
    idleEvents.append(event(connection, .receive, natsInfo, at: &time))
    idleEvents.append(event(connection, .send, connect, at: &time))
    idleEvents.append(event(connection, .send, subscribe, at: &time))
}
var exchanges: [Exchange] = []
exchanges.reserveCapacity(16)
let tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: [workload.parser]) }, countOnly: { _ in })
/// Resident bytes of this process (proc(5) `/proc/self/statm`, second field, in pages).
func residentBytes() -> Int {
    let fields = ((try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? "").split(separator: " ")
    return (fields.count > 1 ? Int(fields[1]) ?? 0 : 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
}
let before = residentBytes()
for event in idleEvents { event.withUnsafeBytes { tracker.handle($0, into: &exchanges) } }
let after = residentBytes()
print("NATS idle connections: \(idle), \(after > before ? (after - before) / idle : 0) resident bytes per connection (tracker entry included)")
withExtendedLifetime(tracker) {}
