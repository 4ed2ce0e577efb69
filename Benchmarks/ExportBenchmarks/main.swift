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

let arguments = CommandLine.arguments.dropFirst()
switch arguments.first {
case "encode-count": countEncode(rounds: Int(arguments.dropFirst().first ?? "") ?? 20)
default: benchEncode()
}
