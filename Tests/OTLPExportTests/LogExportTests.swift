import Foundation
import OTLPExport
import Telemetry
import XCTest

/// The OTLP logs exporter: `ExportLogsServiceRequest` bodies (protobuf and OTLP/JSON) decoded by the official
/// `opentelemetry-proto` package through the receiver's own decoder, and delivery through the shared batching
/// and retry machinery to the receiver's `/v1/logs`.
final class LogExportTests: XCTestCase {
    /// Records of two resources and two scopes whose bodies use every `AnyValue` kind, nested, with strings
    /// long enough to need 3-byte lengths.
    func sampleRecords() -> [LogRecord] {
        let agent = Resource(attributes: ["service.name": "tracer"])
        let other = Resource(attributes: ["service.name": "other", "host.name": "h"])
        let objects = InstrumentationScope(name: "tracer/object")
        let test = InstrumentationScope(name: "tracer/test", version: "1")
        let long = String(repeating: "é", count: 9_000)
        return (0..<6).map { i in
            let body: LogValue = .map([
                LogEntry("pid", .int(Int64(1000 + i))),
                LogEntry("comm", .string("dd-\(i)")),
                LogEntry("neg", .int(-7)),
                LogEntry("ratio", .double(0.25)),
                LogEntry("ok", .bool(i % 2 == 0)),
                LogEntry("raw", .bytes([0, 1, 0xFF])),
                LogEntry("empty", .string("")),
                LogEntry("slots", .array([.int(1), .int(2), .map([LogEntry("deep", .string("x"))])])),
                LogEntry("cred", .map([LogEntry("uid", .int(0)), LogEntry("gid", .int(5))])),
                LogEntry("long", .string(i == 3 ? long : "short")),
            ])
            return LogRecord(
                timeUnixNano: i == 0 ? 1_700_000_000_000_000_001 : 0, observedTimeUnixNano: 1_700_000_000_000_000_100 + UInt64(i),
                severity: i == 5 ? .warn : .info, severityText: i == 5 ? "WARN" : "INFO", body: body,
                attributes: ["tracer.object.name": "execsnoop", "tracer.object.record_type": "event"],
                resource: i % 2 == 0 ? agent : other, scope: i < 4 ? objects : test)
        }
    }

    /// Decodes a request body with `otlp_receiver.decode`/`record` (official protobuf messages; JSON through
    /// the strict `json_format.ParseDict`) and returns the records the receiver would report.
    func decodeWithReceiver(_ body: [UInt8], contentType: String) throws -> [[String: Any]] {
        try OTLPReceiver.requireAvailable()
        let directory = URL(fileURLWithPath: OTLPReceiver.scriptPath).deletingLastPathComponent().path
        let script = """
            import json, sys
            sys.path.insert(0, \(String(reflecting: directory)))
            import otlp_receiver
            message = otlp_receiver.decode("/v1/logs", sys.stdin.buffer.read(), \(String(reflecting: contentType)))
            otlp_receiver.record("/v1/logs", message)
            print(json.dumps(otlp_receiver.LOGS))
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(Data(body))
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "the official package could not parse the request")
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
    }

    func assertDecoded(_ decoded: [[String: Any]], _ records: [LogRecord], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(decoded.count, records.count, file: file, line: line)
        for record in records {
            guard let body = record.body, case .map(let entries) = body, case .int(let pid) = entries[0].value,
                  let got = decoded.first(where: { ($0["body"] as? [String: Any])?["pid"] as? Int == Int(pid) })
            else { XCTFail("record missing: \(record)", file: file, line: line); continue }
            let gotBody = got["body"] as? [String: Any] ?? [:]
            XCTAssertEqual(gotBody["comm"] as? String, "dd-\(pid - 1000)", file: file, line: line)
            XCTAssertEqual(gotBody["neg"] as? Int, -7, file: file, line: line)
            XCTAssertEqual(gotBody["ratio"] as? Double, 0.25, file: file, line: line)
            XCTAssertEqual(gotBody["ok"] as? Bool, pid % 2 == 0, file: file, line: line)
            XCTAssertEqual(gotBody["raw"] as? String, "AAH/", "bytes_value, base64 in the report", file: file, line: line)
            XCTAssertEqual(gotBody["empty"] as? String, "", "an empty string is still set (oneof)", file: file, line: line)
            let slots = gotBody["slots"] as? [Any] ?? []
            XCTAssertEqual(slots.count, 3, file: file, line: line)
            XCTAssertEqual((slots.last as? [String: Any])?["deep"] as? String, "x", file: file, line: line)
            XCTAssertEqual(gotBody["cred"] as? [String: Int], ["uid": 0, "gid": 5], file: file, line: line)
            XCTAssertEqual((gotBody["long"] as? String)?.count, pid == 1003 ? 9_000 : 5, file: file, line: line)
            XCTAssertEqual(got["timeUnixNano"] as? UInt64, record.timeUnixNano, file: file, line: line)
            XCTAssertEqual(got["observedTimeUnixNano"] as? UInt64, record.observedTimeUnixNano, file: file, line: line)
            XCTAssertEqual(got["severityNumber"] as? Int, Int(record.severity.rawValue), file: file, line: line)
            XCTAssertEqual(got["severityText"] as? String, record.severityText, file: file, line: line)
            XCTAssertEqual(got["attributes"] as? [String: String],
                           ["tracer.object.name": "execsnoop", "tracer.object.record_type": "event"], file: file, line: line)
            XCTAssertEqual((got["resource"] as? [String: String])?["service.name"], record.resource.serviceName, file: file, line: line)
            XCTAssertEqual((got["scope"] as? [String: Any])?["name"] as? String, record.scope.name, file: file, line: line)
        }
    }

    func testLogRecordProtobufDecodesWithOfficialPackage() throws {
        let records = sampleRecords()
        var roomy = ProtobufWriter(capacity: 1 << 20)
        OTLPLogProtobufEncoder.encode(records, into: &roomy)
        var tiny = ProtobufWriter(capacity: 16)  // grows on the way
        OTLPLogProtobufEncoder.encode(records, into: &tiny)
        XCTAssertEqual(tiny.bytes, roomy.bytes)
        XCTAssertEqual(roomy.bytes.first, 0x0A, "ExportLogsServiceRequest.resource_logs is field 1")
        let decoded = try decodeWithReceiver(roomy.bytes, contentType: OTLPProtocol.httpProtobuf.contentType)
        assertDecoded(decoded, records)
        // Two resources → the records of each stay together, in order of first appearance.
        XCTAssertEqual(decoded.map { ($0["resource"] as? [String: String])?["service.name"] ?? "" },
                       ["tracer", "tracer", "tracer", "other", "other", "other"])
    }

    func testLogRecordJSONParsesWithOfficialPackage() throws {
        var records = sampleRecords()
        records[1].body = .string("q\"b\\s\n\u{01}é")
        records[2].body = nil
        var out: [UInt8] = []
        OTLPLogJSONEncoder.encode(records, into: &out)
        let decoded = try decodeWithReceiver(out, contentType: OTLPProtocol.httpJSON.contentType)
        XCTAssertEqual(decoded.count, records.count)
        XCTAssertTrue(decoded.contains { $0["body"] as? String == "q\"b\\s\n\u{01}é" }, "\(decoded)")
        XCTAssertEqual(decoded.filter { $0["body"] is NSNull }.count, 1, "a record without a body")
        assertDecoded(decoded.filter { $0["body"] is [String: Any] }, records.filter { if case .map = $0.body { true } else { false } })
    }

    func roundTrip(_ protocol_: OTLPProtocol, _ compression: OTLPCompression) throws {
        let receiver = try OTLPReceiver()
        try receiver.script([["status": 503], ["status": 200, "rejected": 1, "message": "one bad"]], path: "/v1/logs")
        var settings = testSettings(receiver)
        settings.protocol_ = protocol_
        settings.compression = compression
        let exporter = OTLPLogExporter(settings: settings)
        let records = sampleRecords()
        exporter.consume(records)
        XCTAssertTrue(exporter.flush(timeout: .seconds(15)))
        let requests = try receiver.received().requests.filter { $0["path"] as? String == "/v1/logs" }
        XCTAssertEqual(requests.map { $0["answer"] as? Int }, [503, 200], "retried after 503: \(requests)")
        XCTAssertTrue(requests.allSatisfy { $0["error"] == nil && $0["items"] as? Int == records.count }, "\(requests)")
        XCTAssertEqual(requests.first?["contentType"] as? String, protocol_.contentType)
        XCTAssertEqual(requests.first?["encoding"] as? String, compression == .gzip ? "gzip" : "")
        assertDecoded(try receiver.receivedLogs(), records)
        XCTAssertEqual(exporter.stats.retries.load(ordering: .relaxed), 1)
        XCTAssertEqual(exporter.stats.spansExported.load(ordering: .relaxed), records.count - 1)
        XCTAssertEqual(exporter.stats.spansRejected.load(ordering: .relaxed), 1, "partial_success.rejected_log_records")
        exporter.shutdown(timeout: .seconds(5))
        exporter.consume(records)
        XCTAssertEqual(exporter.stats.spansDropped.load(ordering: .relaxed), records.count, "after shutdown: dropped and counted")
    }

    func testProtobufLogsReachTheReceiverAfterARetry() throws { try roundTrip(.httpProtobuf, .none) }
    func testGzipJSONLogsReachTheReceiverAfterARetry() throws { try roundTrip(.httpJSON, .gzip) }

    func testLogsURLFromEndpointEnvironmentAndFile() throws {
        XCTAssertEqual(try ExportSettings.resolve().logsURL, "http://localhost:4318/v1/logs")
        var flags = ExportSettingsLayer()
        flags.endpoint = "http://collector:4318/"
        XCTAssertEqual(try ExportSettings.resolve(flags: flags).logsURL, "http://collector:4318/v1/logs")
        let environment = try ExportSettingsLayer.fromEnvironment([
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://logs:9/custom",
        ])
        XCTAssertEqual(try ExportSettings.resolve(environment: environment).logsURL, "http://logs:9/custom")
        XCTAssertEqual(try ExportSettings.resolve(environment: environment).tracesURL, "http://base:4318/v1/traces")
        var file = ExportSettingsLayer()
        file.logsEndpoint = "ftp://nope"
        XCTAssertThrowsError(try ExportSettings.resolve(file: file)) { error in
            XCTAssertEqual("\(error)", "invalid export setting logs endpoint: 'ftp://nope' must be an http:// or https:// URL")
        }
    }
}
