import Foundation
import Glibc
import Telemetry
import TracerFramework
import Tracers

/// The NATS parser's user-space cost (issue 13), as the agent runs it: capture events through the connection
/// tracker, the NATS parser and the messaging span builder, on this thread; no kernel.
/// `swift run -c release NATSBenchmark [messages] [rounds]`:
/// - CPU: `messages` publishes (PUB written) and deliveries (MSG read; every fourth an HPUB/HMSG with a
///   `traceparent` header) on 8 client connections, one capture event each; best round of this thread's CPU time
///   per span;
/// - memory: 10 000 idle client connections (INFO read, CONNECT and SUB written, nothing more), the
///   growth of this process's resident memory (`/proc/self/statm`) per connection, the tracker's entry and the
///   connection's addresses included.

let messages = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 200_000
let rounds = CommandLine.arguments.dropFirst(2).first.flatMap(Int.init) ?? 5
let tuple = CaptureEvents.tuple(local: [127, 0, 0, 1], localPort: 40_000, remote: [127, 0, 0, 1], remotePort: 4222)
let info = Array("INFO {\"server_id\":\"N\",\"version\":\"2.9.10\",\"headers\":true,\"max_payload\":1048576}\r\n".utf8)
let headers = "NATS/1.0\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"
let body = String(repeating: "b", count: 64)
let publish = Array("PUB orders.created  64\r\n\(body)\r\n".utf8)
let delivery = Array("MSG orders.created 1 64\r\n\(body)\r\n".utf8)
let headedPublish = Array("HPUB orders.created \(headers.utf8.count) \(headers.utf8.count + 64)\r\n\(headers)\(body)\r\n".utf8)
let headedDelivery = Array("HMSG orders.created 1 \(headers.utf8.count) \(headers.utf8.count + 64)\r\n\(headers)\(body)\r\n".utf8)

func threadCPUNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

var events: [[UInt8]] = []
for connection in 1...8 {
    events.append(CaptureEvents.chunk(connection: UInt64(connection), pid: 1, direction: .receive, data: info, timestamp: 1, tuple: tuple))
}
for index in 0..<messages {
    let connection = UInt64(index % 8 + 1), time = UInt64(index) * 1000 + 10
    let headed = index % 4 == 3
    let deliver = index % 2 == 1
    let data = deliver ? (headed ? headedDelivery : delivery) : (headed ? headedPublish : publish)
    events.append(CaptureEvents.chunk(connection: connection, pid: 1, direction: deliver ? .receive : .send, data: data, timestamp: time, tuple: tuple))
}
let tracer = NATSTracer()
let parser = tracer.parser!
let resource = Resource(attributes: [SemanticConventions.serviceName: "bench"])
let scope = InstrumentationScope(name: "bench")
var best = Double.infinity, spans = 0
for _ in 0..<rounds {
    let tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: [parser]) }, countOnly: { _ in })
    var built: [Span] = []
    built.reserveCapacity(messages)
    var exchanges: [Exchange] = []
    let start = threadCPUNanoseconds()
    for event in events {
        event.withUnsafeBytes { tracker.handle($0, into: &exchanges) }
        for case .messaging(let exchange) in exchanges {
            built.append(MessagingSpans.span(exchange, resource: resource, scope: scope) { $0 })
        }
        exchanges.removeAll(keepingCapacity: true)
    }
    best = min(best, Double(threadCPUNanoseconds() - start))
    spans = built.count
}
print("NATS decode (\(events.count) capture events, \(spans) spans, best of \(rounds), thread CPU): "
      + "\(String(format: "%.0f", best / Double(max(spans, 1)))) ns per span; malformed \(tracer.statistics.malformed.load(ordering: .relaxed))")

// Memory per idle connection.
let idle = 10_000
let connect = Array("CONNECT {\"verbose\":false,\"headers\":true,\"lang\":\"python3\"}\r\nPING\r\n".utf8)
let subscribe = Array("SUB orders.created  1\r\n".utf8)
var idleEvents: [[UInt8]] = []
for connection in 1...idle {
    let id = UInt64(connection)
    idleEvents.append(CaptureEvents.chunk(connection: id, pid: 1, direction: .receive, data: info, timestamp: 1, tuple: tuple))
    idleEvents.append(CaptureEvents.chunk(connection: id, pid: 1, direction: .send, data: connect, timestamp: 2, tuple: tuple))
    idleEvents.append(CaptureEvents.chunk(connection: id, pid: 1, direction: .send, data: subscribe, timestamp: 3, tuple: tuple))
}
var exchanges: [Exchange] = []
exchanges.reserveCapacity(16)
let tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: [parser]) }, countOnly: { _ in })
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
