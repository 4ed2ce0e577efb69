import Foundation
import OTLPExport
import Telemetry
import XCTest

/// The span encoders' own mechanics: padded-varint length slots and the grow-and-retry path of a too-small
/// buffer (decoded with the official `opentelemetry-proto` Python package), and the JSON span writer's text.
final class ProtobufEncoderTests: XCTestCase {
    /// `ExportTraceServiceRequest` bytes → `json_format.MessageToDict` of the request (Python protobuf).
    func decodeWithPython(_ bytes: [UInt8]) throws -> [String: Any] {
        try OTLPReceiver.requireAvailable()
        let script = """
            import json, sys
            from google.protobuf.json_format import MessageToDict
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
            request = ExportTraceServiceRequest()
            request.ParseFromString(sys.stdin.buffer.read())
            print(json.dumps(MessageToDict(request)))
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(Data(bytes))
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "python could not parse the request")
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// Spans of every size class: one under 128 bytes (its 2-byte length slot is padded), the sample spans,
    /// and one over 16 KiB (its body is slid to fit a 3-byte length).
    func edgeSpans() -> [Span] {
        let scope = InstrumentationScope(name: "tracer/test")
        var big = Attributes()
        big["blob"] = .string(String(repeating: "y", count: 17_000))
        big["long.key." + String(repeating: "k", count: 130)] = .int(-5)
        return [
            Span(name: "s", kind: .internal_, traceID: .random(), spanID: .random(), startTimeUnixNano: 1, endTimeUnixNano: 2,
                 resource: .empty, scope: scope),
        ] + sampleSpans(12) + [
            Span(name: "big", kind: .consumer, traceID: .random(), spanID: .random(), startTimeUnixNano: 3, endTimeUnixNano: 4,
                 status: .ok, attributes: big, resource: Resource(attributes: ["service.name": "big"]), scope: scope),
        ]
    }

    func testPaddedLengthsAndGrowthDecodeWithOfficialPackage() throws {
        let spans = edgeSpans()
        var roomy = ProtobufWriter(capacity: 1 << 20)
        OTLPTraceProtobufEncoder.encode(spans, into: &roomy)
        var tiny = ProtobufWriter(capacity: 16)  // every span overflows first and is written again after growing
        OTLPTraceProtobufEncoder.encode(spans, into: &tiny)
        let bytes = roomy.bytes
        XCTAssertEqual(tiny.bytes, bytes)

        // ResourceSpans (field 1) of the first resource (span "s" alone): a 3-byte slot with redundant bytes;
        // then its empty Resource (field 1) in a 2-byte slot.
        XCTAssertEqual(bytes[0], 0x0A)
        XCTAssertEqual(bytes[1] & 0x80, 0x80)
        XCTAssertEqual(bytes[2] & 0x80, 0x80)
        XCTAssertEqual(bytes[3], 0x00, "padded 3-byte varint")
        XCTAssertEqual(bytes[4], 0x0A)
        XCTAssertEqual(bytes[6], 0x00, "padded 2-byte varint")

        let request = try decodeWithPython(bytes)
        let decoded = (request["resourceSpans"] as? [[String: Any]] ?? []).flatMap { rs in
            (rs["scopeSpans"] as? [[String: Any]] ?? []).flatMap { $0["spans"] as? [[String: Any]] ?? [] }
        }
        XCTAssertEqual(decoded.count, spans.count)
        let byName = Dictionary(grouping: decoded) { $0["name"] as? String ?? "" }
        XCTAssertEqual(byName["s"]?.count, 1)
        XCTAssertEqual(byName["GET /users/{id}"]?.count, 12)
        let big = try XCTUnwrap(byName["big"]?.first)
        let attributes = try XCTUnwrap(big["attributes"] as? [[String: Any]])
        XCTAssertEqual(((attributes.first?["value"] as? [String: Any])?["stringValue"] as? String)?.count, 17_000)
        XCTAssertEqual((attributes.last?["value"] as? [String: Any])?["intValue"] as? String, "-5")
        XCTAssertEqual((big["status"] as? [String: Any])?["code"] as? String, "STATUS_CODE_OK")
        for span in byName["GET /users/{id}"] ?? [] {
            XCTAssertEqual((span["attributes"] as? [[String: Any]])?.count, 8)
        }
    }

    /// The JSON span writer's escaping, numbers and growth: a JSON parser gets the strings back unchanged.
    func testJSONSpanTextParses() throws {
        let tricky = "q\"b\\s\n\r\t\u{01}\u{1F}é/</"
        var attributes: Attributes = ["k\"ey": .string(tricky), "neg": .int(.min), "pos": .int(.max), "f": false, "d": 2.5]
        attributes["long"] = .string(String(repeating: "\"", count: 5000))
        let span = Span(
            name: tricky, kind: .client, traceID: TraceID(high: 0x0123_4567_89ab_cdef, low: 0xfedc_ba98_7654_3210),
            spanID: SpanID(0xa), parentSpanID: SpanID(0xb), traceState: "t=1", flags: 257, startTimeUnixNano: 0,
            endTimeUnixNano: .max, status: .error(message: tricky), attributes: attributes, resource: .empty,
            scope: InstrumentationScope(name: "s"))
        var out: [UInt8] = []
        OTLPTraceJSONEncoder.encode([span], into: &out)
        let request = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out)) as? [String: Any])
        let got = try XCTUnwrap(
            (((request["resourceSpans"] as? [[String: Any]])?.first?["scopeSpans"] as? [[String: Any]])?.first?["spans"]
                as? [[String: Any]])?.first)
        XCTAssertEqual(got["name"] as? String, tricky)
        XCTAssertEqual(got["traceId"] as? String, "0123456789abcdeffedcba9876543210")
        XCTAssertEqual(got["spanId"] as? String, "000000000000000a")
        XCTAssertEqual(got["parentSpanId"] as? String, "000000000000000b")
        XCTAssertEqual(got["traceState"] as? String, "t=1")
        XCTAssertEqual(got["flags"] as? Int, 257)
        XCTAssertEqual(got["startTimeUnixNano"] as? String, "0")
        XCTAssertEqual(got["endTimeUnixNano"] as? String, String(UInt64.max))
        XCTAssertEqual((got["status"] as? [String: Any])?["message"] as? String, tricky)
        let values = Dictionary(uniqueKeysWithValues: (got["attributes"] as? [[String: Any]] ?? []).map {
            ($0["key"] as? String ?? "", $0["value"] as? [String: Any] ?? [:])
        })
        XCTAssertEqual(values["k\"ey"]?["stringValue"] as? String, tricky)
        XCTAssertEqual(values["neg"]?["intValue"] as? String, String(Int64.min))
        XCTAssertEqual(values["pos"]?["intValue"] as? String, String(Int64.max))
        XCTAssertEqual(values["f"]?["boolValue"] as? Bool, false)
        XCTAssertEqual(values["d"]?["doubleValue"] as? Double, 2.5)
        XCTAssertEqual((values["long"]?["stringValue"] as? String)?.count, 5000)
    }
}
