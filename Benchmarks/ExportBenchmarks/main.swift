import Foundation
import OTLPExport
import Telemetry

/// Synthetic HTTP server spans with 10 attributes, sharing one resource and scope.
func makeSpans(_ n: Int) -> [Span] {
    let resource = Resource(attributes: [
        "service.name": "bench", "process.pid": 4242, "host.name": "bench-host",
        "process.executable.name": "server",
    ])
    let scope = InstrumentationScope(name: "tracer/http", version: "0.1.0")
    let methods = ["GET", "POST", "PUT", "DELETE"]
    return (0..<n).map { i in
        let attributes: Attributes = [
            "http.request.method": .string(methods[i % 4]), "url.path": .string("/users/\(i)"),
            "http.route": "/users/{id}", "http.response.status_code": 200, "server.address": "10.0.0.1",
            "server.port": 8080, "client.address": "10.0.0.2", "client.port": .int(Int64(40000 + i % 1000)),
            "network.protocol.version": "1.1", "url.scheme": "http",
        ]
        let start: UInt64 = 1_700_000_000_000_000_000 + UInt64(i) * 1000
        return Span(
            name: "GET /users/{id}", kind: .server, traceID: .random(), spanID: .random(), parentSpanID: .random(),
            startTimeUnixNano: start, endTimeUnixNano: start + 2_500_000, status: .unset,
            attributes: attributes, resource: resource, scope: scope)
    }
}

func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// Instructions per span under callgrind: `valgrind --tool=callgrind ExportBenchmarks encode-count 20`.
func countEncode(rounds: Int) {
    let spans = makeSpans(512)
    var writer = ProtobufWriter(capacity: 1 << 20)
    for _ in 0..<rounds {
        writer.reset()
        OTLPTraceProtobufEncoder.encode(spans, into: &writer)
    }
    print("encoded \(rounds) x 512 spans, \(writer.count) bytes/batch")
}

/// The same for the OTLP/JSON encoder: `ExportBenchmarks json-count N`.
func countJSON(rounds: Int) {
    let spans = makeSpans(512)
    var json: [UInt8] = []
    for _ in 0..<rounds {
        json.removeAll(keepingCapacity: true)
        OTLPTraceJSONEncoder.encode(spans, into: &json)
    }
    print("encoded \(rounds) x 512 spans, \(json.count) bytes/batch")
}

func benchEncode() {
    let spans = makeSpans(512)
    var writer = ProtobufWriter(capacity: 1 << 20)
    for _ in 0..<200 {  // warm-up
        writer.reset()
        OTLPTraceProtobufEncoder.encode(spans, into: &writer)
    }
    var best = Double.infinity
    for _ in 0..<5 {
        let rounds = 2000
        let t0 = now()
        for _ in 0..<rounds {
            writer.reset()
            OTLPTraceProtobufEncoder.encode(spans, into: &writer)
        }
        let perSpan = Double(now() - t0) / Double(rounds * spans.count)
        best = min(best, perSpan)
    }
    print(String(format: "protobuf encode: %.1f ns/span (10 attributes, batch 512, %d bytes/batch, best of 5)", best, writer.count))
    var json: [UInt8] = []
    json.reserveCapacity(1 << 20)
    let t0 = now()
    for _ in 0..<200 {
        json.removeAll(keepingCapacity: true)
        OTLPTraceJSONEncoder.encode(spans, into: &json)
    }
    print(String(format: "json encode: %.1f ns/span", Double(now() - t0) / Double(200 * spans.count)))
}

/// A loopback HTTP/1.1 server that answers every request with an empty 200 at once (keep-alive), so the
/// end-to-end benchmark measures the exporter, not a collector.
final class NullCollector: @unchecked Sendable {
    let port: Int

    init() {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        listen(fd, 8)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { continue }
                Thread { Self.serve(client) }.start()
            }
        }.start()
    }

    static func serve(_ client: Int32) {
        let response = Array("HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n".utf8)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var pending: [UInt8] = []
        var bodyLeft = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if n <= 0 { close(client); return }
            var chunk = buffer[0..<n]
            while !chunk.isEmpty {
                if bodyLeft > 0 {
                    let take = min(bodyLeft, chunk.count)
                    bodyLeft -= take
                    chunk = chunk.dropFirst(take)
                    if bodyLeft == 0 { _ = response.withUnsafeBytes { send(client, $0.baseAddress, $0.count, 0) } }
                    continue
                }
                pending += chunk
                chunk = []
                guard let end = pending.firstRange(of: [13, 10, 13, 10]) else { break }
                let head = String(decoding: pending[..<end.lowerBound], as: UTF8.self).lowercased()
                let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                    .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
                chunk = pending[end.upperBound...]
                pending = []
                bodyLeft = length
                if length == 0 { _ = response.withUnsafeBytes { send(client, $0.baseAddress, $0.count, 0) } }
            }
        }
    }
}

func residentKiB() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
}

/// Spans/s through the whole exporter (queue, batching, encoding, libcurl, HTTP) to `NullCollector`,
/// with the producer keeping the queue full.
func benchEndToEnd(seconds: Double, protocol_: OTLPProtocol = .httpProtobuf, compression: OTLPCompression = .none) {
    let collector = NullCollector()
    var settings = ExportSettings()
    settings.tracesURL = "http://127.0.0.1:\(collector.port)/v1/traces"
    settings.maxQueueSpans = 8192
    settings.maxQueueBytes = 64 << 20
    settings.maxBatchSpans = 512
    settings.scheduleDelay = .milliseconds(100)
    settings.protocol_ = protocol_
    settings.compression = compression
    let exporter = OTLPTraceExporter(settings: settings)
    let spans = makeSpans(512)
    let rssBefore = residentKiB()
    let start = now()
    let end = start + UInt64(seconds * 1e9)
    var offered = 0
    while now() < end {
        exporter.consume(spans)
        offered += spans.count
        if exporter.stats.spansDropped.load(ordering: .relaxed) > 0 { usleep(200) }  // queue full: let it drain
    }
    let exported = exporter.stats.spansExported.load(ordering: .relaxed)
    let elapsed = Double(now() - start) / 1e9
    exporter.shutdown(timeout: .seconds(10))
    print(String(format: "end to end: %.0f spans/s exported (%d in %.1f s, 1 exporter thread, batch 512, %@, %@); "
        + "offered %d, dropped (queue full) %d, failed %d; RSS %d -> %d KiB",
        Double(exported) / elapsed, exported, elapsed, protocol_.rawValue, compression.rawValue, offered, exporter.stats.spansDropped.load(ordering: .relaxed),
        exporter.stats.spansFailed.load(ordering: .relaxed), rssBefore, residentKiB()))
}

let arguments = CommandLine.arguments.dropFirst()
switch arguments.first {
case "encode-count": countEncode(rounds: Int(arguments.dropFirst().first ?? "") ?? 20)
case "json-count": countJSON(rounds: Int(arguments.dropFirst().first ?? "") ?? 5)
case "encode": benchEncode()
case "e2e":  // e2e [seconds] [http/protobuf|http/json] [none|gzip]
    let options = Array(arguments.dropFirst())
    benchEndToEnd(
        seconds: options.first.flatMap(Double.init) ?? 5,
        protocol_: options.count > 1 ? OTLPProtocol(rawValue: options[1]) ?? .httpProtobuf : .httpProtobuf,
        compression: options.count > 2 ? OTLPCompression(rawValue: options[2]) ?? .none : .none)
default:
    benchEncode()
    benchEndToEnd(seconds: 5)
}
