import Foundation
import OTLPExport
import Telemetry
import TestSupport
import XCTest

/// The exporter against the Python receiver built on opentelemetry-proto: what it decodes, and the fault cases
/// of the OTLP/HTTP spec.
final class ExporterReceiverTests: XCTestCase {
    func assertDecoded(_ received: [[String: Any]], _ sent: [Span], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(received.count, sent.count, "span count", file: file, line: line)
        let byID = Dictionary(uniqueKeysWithValues: received.map { ($0["spanId"] as? String ?? "", $0) })
        for span in sent {
            guard let got = byID[span.spanID.hex] else {
                XCTFail("span \(span.spanID) missing", file: file, line: line)
                continue
            }
            XCTAssertEqual(got["name"] as? String, span.name, file: file, line: line)
            XCTAssertEqual(got["kind"] as? Int, Int(span.kind.rawValue), file: file, line: line)
            XCTAssertEqual(got["traceId"] as? String, span.traceID.hex, file: file, line: line)
            XCTAssertEqual(got["parentSpanId"] as? String, span.parentSpanID.isValid ? span.parentSpanID.hex : "", file: file, line: line)
            XCTAssertEqual((got["startTimeUnixNano"] as? NSNumber)?.uint64Value, span.startTimeUnixNano, file: file, line: line)
            XCTAssertEqual((got["endTimeUnixNano"] as? NSNumber)?.uint64Value, span.endTimeUnixNano, file: file, line: line)
            let status = got["status"] as? [String: Any]
            XCTAssertEqual(status?["code"] as? Int, Int(span.status.code), file: file, line: line)
            XCTAssertEqual(status?["message"] as? String, span.status.message, file: file, line: line)
            let attributes = got["attributes"] as? [String: Any] ?? [:]
            XCTAssertEqual(attributes.count, span.attributes.count, file: file, line: line)
            XCTAssertEqual(attributes["url.path"] as? String, span.attributes["url.path"]?.stringValue, file: file, line: line)
            XCTAssertEqual((attributes["index"] as? NSNumber)?.int64Value, span.attributes["index"]?.intValue, file: file, line: line)
            XCTAssertEqual(attributes["ratio"] as? Double, 0.5, file: file, line: line)
            XCTAssertEqual(attributes["cached"] as? Bool, true, file: file, line: line)
            XCTAssertEqual(attributes["tags"] as? [String], ["a", "b"], file: file, line: line)
            XCTAssertEqual(attributes["ports"] as? [Int], [80, 443], file: file, line: line)
            let resource = got["resource"] as? [String: Any] ?? [:]
            XCTAssertEqual(resource["service.name"] as? String, span.resource.serviceName, file: file, line: line)
            XCTAssertEqual((resource["process.pid"] as? NSNumber)?.int64Value, span.resource.attributes["process.pid"]?.intValue, file: file, line: line)
            let scope = got["scope"] as? [String: Any]
            XCTAssertEqual(scope?["name"] as? String, span.scope.name, file: file, line: line)
            XCTAssertEqual(scope?["version"] as? String, span.scope.version, file: file, line: line)
        }
    }

    func roundTrip(_ protocol_: OTLPProtocol, _ compression: OTLPCompression) throws {
        let receiver = try OTLPReceiver()
        var settings = testSettings(receiver)
        settings.protocol_ = protocol_
        settings.compression = compression
        let exporter = OTLPTraceExporter(settings: settings)
        let spans = sampleSpans(40)
        exporter.consume(spans)
        XCTAssertTrue(exporter.flush(timeout: .seconds(10)))
        let received = try receiver.received()
        XCTAssertTrue(received.requests.allSatisfy { $0["error"] == nil }, "decode errors: \(received.requests)")
        XCTAssertEqual(received.requests.first?["contentType"] as? String, protocol_.contentType)
        XCTAssertEqual(received.requests.first?["encoding"] as? String, compression == .gzip ? "gzip" : "")
        assertDecoded(received.spans, spans)
        XCTAssertEqual(exporter.stats.spansExported.load(ordering: .relaxed), 40)
        exporter.shutdown(timeout: .seconds(5))
    }

    func testProtobufRoundTrip() throws { try roundTrip(.httpProtobuf, .none) }

    /// Length prefixes of every size class (a span under 128 bytes, one over 16 KiB, strings of 0–40 bytes,
    /// non-ASCII) survive the one-pass encoder.
    func testProtobufEdgeSizesDecode() throws {
        let receiver = try OTLPReceiver()
        let exporter = OTLPTraceExporter(settings: testSettings(receiver))
        let scope = InstrumentationScope(name: "")
        var big = Attributes()
        big["blob"] = .string(String(repeating: "x", count: 20_000))
        for n in 0...40 { big["k\(n)"] = .string(String(repeating: "é", count: n / 2) + String(repeating: "a", count: n % 2)) }
        big["neg"] = -1
        big["dbl"] = .doubleArray([1.5, -0.0])
        big["bools"] = .boolArray([true, false])
        let spans = [
            Span(name: "", kind: .internal_, traceID: .random(), spanID: .random(), startTimeUnixNano: 0, endTimeUnixNano: 0,
                 resource: .empty, scope: scope),
            Span(name: "big", kind: .producer, traceID: .random(), spanID: .random(), startTimeUnixNano: 1, endTimeUnixNano: 2,
                 attributes: big, resource: .empty, scope: scope),
        ]
        exporter.consume(spans)
        XCTAssertTrue(exporter.flush(timeout: .seconds(10)))
        let received = try receiver.received()
        XCTAssertTrue(received.requests.allSatisfy { $0["error"] == nil }, "\(received.requests)")
        XCTAssertEqual(received.spans.count, 2)
        let got = try XCTUnwrap(received.spans.first { $0["name"] as? String == "big" })
        let attributes = try XCTUnwrap(got["attributes"] as? [String: Any])
        XCTAssertEqual((attributes["blob"] as? String)?.count, 20_000)
        for n in 0...40 {
            XCTAssertEqual(attributes["k\(n)"] as? String, String(repeating: "é", count: n / 2) + String(repeating: "a", count: n % 2))
        }
        XCTAssertEqual(attributes["neg"] as? Int, -1)
        XCTAssertEqual(attributes["dbl"] as? [Double], [1.5, -0.0])
        XCTAssertEqual(attributes["bools"] as? [Bool], [true, false])
        XCTAssertEqual(received.spans.first { $0["name"] as? String == "" }?["kind"] as? Int, 1)
        exporter.shutdown(timeout: .seconds(5))
    }
    func testProtobufGzipRoundTrip() throws { try roundTrip(.httpProtobuf, .gzip) }
    func testJSONRoundTrip() throws { try roundTrip(.httpJSON, .none) }
    func testJSONGzipRoundTrip() throws { try roundTrip(.httpJSON, .gzip) }

    func testResourceAttributesFromSettingsAreLayeredUnderSpanResource() throws {
        let receiver = try OTLPReceiver()
        var settings = testSettings(receiver)
        settings.resourceAttributes = ["deployment.environment.name": "test", "service.name": "from-env"]
        let exporter = OTLPTraceExporter(settings: settings)
        exporter.consume(sampleSpans(2))
        XCTAssertTrue(exporter.flush(timeout: .seconds(10)))
        let spans = try receiver.received().spans
        XCTAssertEqual(spans.count, 2)
        for span in spans {
            let resource = span["resource"] as? [String: Any] ?? [:]
            XCTAssertEqual(resource["deployment.environment.name"] as? String, "test")
            XCTAssertNotEqual(resource["service.name"] as? String, "from-env", "the process's own service.name wins")
        }
        exporter.shutdown(timeout: .seconds(5))
    }

    func testConfiguredHeadersAreSent() throws {
        let receiver = try OTLPReceiver()
        var settings = testSettings(receiver)
        settings.headers = try ExportSettingsLayer.parseKeyValueList("api-key=s%3Dcret,x-tenant=blue", setting: "test")
        let exporter = OTLPTraceExporter(settings: settings)
        exporter.consume(sampleSpans(1))
        XCTAssertTrue(exporter.flush(timeout: .seconds(10)))
        let headers = try XCTUnwrap(try receiver.received().requests.first?["headers"] as? [String: String])
        XCTAssertEqual(headers["api-key"], "s=cret")
        XCTAssertEqual(headers["x-tenant"], "blue")
        XCTAssertEqual(headers["content-type"], "application/x-protobuf")
        exporter.shutdown(timeout: .seconds(5))
    }

    func testResponseBodyReadIsCapped() throws {
        let receiver = try OTLPReceiver()
        try receiver.script([["status": 200, "bodyBytes": 6_000_000]])
        var settings = testSettings(receiver)
        settings.maxResponseBytes = 4 << 20
        let transport = CurlTransport(settings: settings)
        let body: [UInt8] = []
        let outcome = body.withUnsafeBytes {
            transport.post(url: settings.tracesURL, body: $0, contentType: "application/x-protobuf", timeout: .seconds(10))
        }
        guard case .response(200, let got, _) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(got.count, 4 << 20, "at most 4 MiB kept")
    }

    func testDownAtStartThenUpDeliversEverything() throws {
        let port = unusedTCPPort()
        let receiver = try OTLPReceiver(port: port, startAfter: 1.5)
        let exporter = OTLPTraceExporter(settings: testSettings(nil, port: port))
        let spans = sampleSpans(10)
        exporter.consume(spans)
        XCTAssertTrue(exporter.flush(timeout: .seconds(15)))
        assertDecoded(try receiver.received().spans, spans)
        XCTAssertGreaterThan(exporter.stats.retries.load(ordering: .relaxed), 0, "connection refused was retried")
        XCTAssertEqual(exporter.stats.spansFailed.load(ordering: .relaxed), 0)
        exporter.shutdown(timeout: .seconds(5))
    }

    func testThree503sAreRetried() throws {
        let receiver = try OTLPReceiver()
        try receiver.script([["status": 503], ["status": 503], ["status": 503]])
        let exporter = OTLPTraceExporter(settings: testSettings(receiver))
        let spans = sampleSpans(5)
        exporter.consume(spans)
        XCTAssertTrue(exporter.flush(timeout: .seconds(15)))
        let received = try receiver.received()
        XCTAssertEqual(received.requests.map { "\($0["answer"]!)" }, ["503", "503", "503", "200"])
        assertDecoded(received.spans, spans)
        XCTAssertEqual(exporter.stats.retries.load(ordering: .relaxed), 3)
        XCTAssertEqual(exporter.stats.spansExported.load(ordering: .relaxed), 5)
        exporter.shutdown(timeout: .seconds(5))
    }

    func test429HonoursRetryAfter() throws {
        let receiver = try OTLPReceiver()
        try receiver.script([["status": 429, "retryAfter": "2"]])
        let exporter = OTLPTraceExporter(settings: testSettings(receiver))
        exporter.consume(sampleSpans(3))
        XCTAssertTrue(exporter.flush(timeout: .seconds(15)))
        let requests = try receiver.received().requests
        XCTAssertEqual(requests.count, 2)
        let gap = (requests[1]["time"] as! Double) - (requests[0]["time"] as! Double)
        XCTAssertGreaterThanOrEqual(gap, 1.9, "waited Retry-After: 2 (backoff alone would be ~0.1 s)")
        XCTAssertEqual(exporter.stats.spansExported.load(ordering: .relaxed), 3)
        exporter.shutdown(timeout: .seconds(5))
    }

    func test400IsNotRetriedAndCounted() throws {
        let receiver = try OTLPReceiver()
        try receiver.script([["status": 400]])
        let exporter = OTLPTraceExporter(settings: testSettings(receiver))
        exporter.consume(sampleSpans(4))
        XCTAssertTrue(exporter.flush(timeout: .seconds(10)))
        Thread.sleep(forTimeInterval: 0.5)  // a wrong retry would show up here
        XCTAssertEqual(try receiver.received().requests.count, 1)
        XCTAssertEqual(exporter.stats.spansFailed.load(ordering: .relaxed), 4)
        XCTAssertEqual(exporter.stats.retries.load(ordering: .relaxed), 0)
        exporter.shutdown(timeout: .seconds(5))
    }

    func test413SplitsTheBatch() throws {
        let receiver = try OTLPReceiver()
        try receiver.script([["status": 413, "ifSpansOver": 5]])
        var settings = testSettings(receiver)
        settings.scheduleDelay = .seconds(30)  // one batch, sent by flush
        let exporter = OTLPTraceExporter(settings: settings)
        let spans = sampleSpans(8)
        exporter.consume(spans)
        XCTAssertTrue(exporter.flush(timeout: .seconds(10)))
        let received = try receiver.received()
        XCTAssertEqual(received.requests.map { $0["items"] as? Int }, [8, 4, 4])
        assertDecoded(received.spans, spans)
        XCTAssertEqual(exporter.stats.spansExported.load(ordering: .relaxed), 8)
        exporter.shutdown(timeout: .seconds(5))
    }

    func testPartialSuccessIsRecordedNotRetried() throws {
        let receiver = try OTLPReceiver()
        try receiver.script([["status": 200, "rejected": 2, "message": "2 spans too old"]])
        let exporter = OTLPTraceExporter(settings: testSettings(receiver))
        exporter.consume(sampleSpans(6))
        XCTAssertTrue(exporter.flush(timeout: .seconds(10)))
        XCTAssertEqual(try receiver.received().requests.count, 1)
        XCTAssertEqual(exporter.stats.spansRejected.load(ordering: .relaxed), 2)
        XCTAssertEqual(exporter.stats.spansExported.load(ordering: .relaxed), 4)
        exporter.shutdown(timeout: .seconds(5))
    }

    static func openFileDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
    }

    static func threads() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? -1
    }

    func testReceiverThatNeverAnswersTimesOutWithoutThreadOrFDGrowth() throws {
        let receiver = try OTLPReceiver()
        try receiver.script(Array(repeating: ["hang": 20], count: 12))
        var settings = testSettings(receiver)
        settings.timeout = .milliseconds(300)
        settings.retry = RetryPolicy(initialBackoff: .milliseconds(50), maxBackoff: .milliseconds(100), maxElapsed: .milliseconds(700))
        let exporter = OTLPTraceExporter(settings: settings)
        exporter.consume(sampleSpans(2))
        XCTAssertTrue(exporter.flush(timeout: .seconds(10)))
        let fds = Self.openFileDescriptors()
        let threads = Self.threads()
        for _ in 0..<3 {
            exporter.consume(sampleSpans(2))
            XCTAssertTrue(exporter.flush(timeout: .seconds(10)))
        }
        XCTAssertEqual(exporter.stats.spansFailed.load(ordering: .relaxed), 8, "every timed-out span counted")
        XCTAssertEqual(exporter.stats.spansExported.load(ordering: .relaxed), 0)
        XCTAssertLessThanOrEqual(Self.openFileDescriptors(), fds + 1, "no FD growth (one reused connection)")
        XCTAssertLessThanOrEqual(Self.threads(), threads, "no thread growth")
        exporter.shutdown(timeout: .seconds(2))
    }

    func testShutdownFlushesQueuedSpansAndDropsLaterOnes() throws {
        let receiver = try OTLPReceiver()
        var settings = testSettings(receiver)
        settings.scheduleDelay = .seconds(60)  // only shutdown sends
        let exporter = OTLPTraceExporter(settings: settings)
        let spans = sampleSpans(30)
        exporter.consume(spans)
        let start = ContinuousClock.now
        exporter.shutdown(timeout: .seconds(10))
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(5))
        assertDecoded(try receiver.received().spans, spans)
        exporter.consume(sampleSpans(3))
        XCTAssertEqual(exporter.stats.spansDropped.load(ordering: .relaxed), 3, "spans after shutdown are counted")
    }

    func testShutdownTimeoutBoundsRetriesAndCountsTheRest() throws {
        let receiver = try OTLPReceiver()
        try receiver.script(Array(repeating: ["status": 503], count: 100))
        var settings = testSettings(receiver)
        settings.scheduleDelay = .seconds(60)
        settings.maxBatchSpans = 5
        let exporter = OTLPTraceExporter(settings: settings)
        exporter.consume(sampleSpans(20))
        let start = ContinuousClock.now
        exporter.shutdown(timeout: .seconds(1))
        XCTAssertLessThan(ContinuousClock.now - start, .milliseconds(2500))
        let stats = exporter.stats
        XCTAssertEqual(
            stats.spansFailed.load(ordering: .relaxed) + stats.spansDropped.load(ordering: .relaxed), 20,
            "every span is failed or dropped, none silently lost")
    }
}
