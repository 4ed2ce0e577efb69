import Foundation
import Synchronization
import Telemetry
import XCTest

final class IdentifierTests: XCTestCase {
    func testTraceIDHexAndBytesRoundTrip() throws {
        let id = try XCTUnwrap(TraceID(hex: "4BF92F3577B34DA6A3CE929D0E0E4736"))
        XCTAssertEqual(id.hex, "4bf92f3577b34da6a3ce929d0e0e4736")
        XCTAssertEqual(id.bytes.first, 0x4B)
        XCTAssertEqual(id.bytes.last, 0x36)
        XCTAssertEqual(TraceID(bytes: id.bytes), id)
        XCTAssertTrue(id.isValid)
        XCTAssertFalse(TraceID.invalid.isValid)
        XCTAssertNil(TraceID(hex: "4bf92f3577b34da6a3ce929d0e0e473"), "31 digits")
        XCTAssertNil(TraceID(hex: "zz f92f3577b34da6a3ce929d0e0e4736"))
    }

    func testSpanIDHexAndBytesRoundTrip() throws {
        let id = try XCTUnwrap(SpanID(hex: "00f067aa0ba902b7"))
        XCTAssertEqual(id.value, 0x00f0_67aa_0ba9_02b7)
        XCTAssertEqual(id.hex, "00f067aa0ba902b7")
        XCTAssertEqual(SpanID(bytes: id.bytes), id)
        XCTAssertFalse(SpanID.invalid.isValid)
        XCTAssertNil(SpanID(hex: "00f067aa0ba902b"))
    }

    func testRandomIDsAreValidAndDistinct() {
        let traces = Set((0..<1000).map { _ in TraceID.random() })
        let spans = Set((0..<1000).map { _ in SpanID.random() })
        XCTAssertEqual(traces.count, 1000)
        XCTAssertEqual(spans.count, 1000)
        XCTAssertTrue(traces.allSatisfy(\.isValid) && spans.allSatisfy(\.isValid))
    }
}

final class AttributesTests: XCTestCase {
    func testKeysAreUniqueAndOrderIsKept() {
        var a: Attributes = ["b": 1, "a": "x"]
        a["b"] = 2
        a["c"] = true
        XCTAssertEqual(a.map(\.key), ["b", "a", "c"])
        XCTAssertEqual(a["b"], 2)
        a["a"] = nil
        XCTAssertEqual(a.map(\.key), ["b", "c"])
        a.merge(["c": false, "d": 1.5])
        XCTAssertEqual(a["c"], false)
        XCTAssertEqual(a.count, 3)
    }

    func testResourceMergeAndEquality() {
        let r = Resource(attributes: ["service.name": "a", "process.pid": 1])
        let merged = r.merging(["service.name": "b"])
        XCTAssertEqual(merged.serviceName, "b")
        XCTAssertEqual(r, Resource(attributes: ["service.name": "a", "process.pid": 1]), "equal by attributes")
        XCTAssertNotEqual(r, merged)
    }
}

final class PrinterTests: XCTestCase {
    func span(parent: SpanID = .invalid, status: SpanStatus = .ok) -> Span {
        Span(
            name: "GET /users/{id}", kind: .server, traceID: TraceID(hex: "4bf92f3577b34da6a3ce929d0e0e4736")!,
            spanID: SpanID(hex: "00f067aa0ba902b7")!, parentSpanID: parent, startTimeUnixNano: 1_700_000_000_000_000_000,
            endTimeUnixNano: 1_700_000_000_012_345_678, status: status,
            attributes: ["http.request.method": "GET", "http.response.status_code": 200, "note": "a \"quoted\"\nline",
                         "ratio": 0.25, "tags": .stringArray(["x", "y"])],
            resource: Resource(attributes: ["service.name": "shop", "process.pid": 42]),
            scope: InstrumentationScope(name: "tracer/http"))
    }

    final class Lines: @unchecked Sendable {
        let lines = Mutex<[String]>([])
        var output: LineOutput { .closure { line in self.lines.withLock { $0.append(line) } } }
    }

    func testJSONLinesHaveTheDocumentedKeys() throws {
        let lines = Lines()
        let printer = JSONLinesSpanPrinter(output: lines.output)
        printer.consume([span(), span(parent: SpanID(hex: "1111111111111111")!, status: .error(message: "boom"))])
        let printed = lines.lines.withLock { $0 }
        XCTAssertEqual(printed.count, 2)
        let first = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(printed[0].utf8)) as? [String: Any])
        XCTAssertEqual(first["name"] as? String, "GET /users/{id}")
        XCTAssertEqual(first["kind"] as? String, "server")
        XCTAssertEqual(first["traceId"] as? String, "4bf92f3577b34da6a3ce929d0e0e4736")
        XCTAssertEqual(first["spanId"] as? String, "00f067aa0ba902b7")
        XCTAssertEqual(first["parentSpanId"] as? String, "")
        XCTAssertEqual((first["startTimeUnixNano"] as? NSNumber)?.uint64Value, 1_700_000_000_000_000_000)
        XCTAssertEqual((first["endTimeUnixNano"] as? NSNumber)?.uint64Value, 1_700_000_000_012_345_678)
        XCTAssertEqual(first["status"] as? String, "ok")
        let attributes = try XCTUnwrap(first["attributes"] as? [String: Any])
        XCTAssertEqual(attributes["http.response.status_code"] as? Int, 200)
        XCTAssertEqual(attributes["note"] as? String, "a \"quoted\"\nline")
        XCTAssertEqual(attributes["tags"] as? [String], ["x", "y"])
        XCTAssertEqual(attributes["ratio"] as? Double, 0.25)
        XCTAssertEqual((first["resource"] as? [String: Any])?["service.name"] as? String, "shop")
        let second = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(printed[1].utf8)) as? [String: Any])
        XCTAssertEqual(second["parentSpanId"] as? String, "1111111111111111")
        XCTAssertEqual(second["status"] as? String, "error")
        XCTAssertEqual(second["statusMessage"] as? String, "boom")
        printer.shutdown(timeout: .seconds(1))
        printer.consume([span()])
        XCTAssertEqual(lines.lines.withLock { $0.count }, 2, "nothing printed after shutdown")
    }

    func testTextLineIsReadable() {
        let line = TextSpanPrinter.format(span())
        XCTAssertTrue(line.hasPrefix("server GET /users/{id} 12.345ms ok trace=4bf92f3577b34da6a3ce929d0e0e4736 span=00f067aa0ba902b7 parent=-"), line)
        XCTAssertTrue(line.contains(" http.request.method=GET "), line)
        XCTAssertTrue(line.hasSuffix(" [service.name=shop process.pid=42]\n"), line)
    }
}
