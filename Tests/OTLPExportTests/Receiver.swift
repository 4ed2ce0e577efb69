import Foundation
import OTLPExport
import Telemetry
import TestSupport
import XCTest

/// Runs `receiver/otlp_receiver.py` (needs `pip install opentelemetry-proto`) on 127.0.0.1 and talks to its
/// control endpoints. Tests skip when the Python package is missing, unless `TRACER_REQUIRE_OTLP_RECEIVER=1`
/// (CI), where that is a failure.
final class OTLPReceiver {
    let process = Process()
    let port: Int
    private let control: CurlTransport

    static let scriptPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("receiver/otlp_receiver.py").path

    static func requireAvailable() throws {
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        check.arguments = ["python3", "-c", "import opentelemetry.proto.collector.trace.v1.trace_service_pb2"]
        check.standardError = FileHandle.nullDevice
        try check.run()
        check.waitUntilExit()
        if check.terminationStatus != 0 {
            try prerequisiteMissing("OTLP receiver", "python3 with opentelemetry-proto is missing (pip install opentelemetry-proto)",
                                    requiredBy: "TRACER_REQUIRE_OTLP_RECEIVER")
        }
    }

    /// Starts the receiver; with `startAfter`, it listens on `port` only after that many seconds.
    init(port: Int = 0, startAfter: Double = 0, tlsArguments: [String] = []) throws {
        try Self.requireAvailable()
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.scriptPath, "--port", String(port), "--start-after", String(startAfter)] + tlsArguments
        process.standardOutput = pipe
        try process.run()
        if startAfter > 0 {
            self.port = port
        } else {
            var line = ""
            while !line.hasSuffix("\n") {
                let chunk = pipe.fileHandleForReading.availableData
                if chunk.isEmpty { try prerequisiteMissing("OTLP receiver", "receiver exited before listening", requiredBy: "TRACER_REQUIRE_OTLP_RECEIVER") }
                line += String(decoding: chunk, as: UTF8.self)
            }
            guard line.hasPrefix("PORT "), let p = Int(line.dropFirst(5).trimmingCharacters(in: .whitespacesAndNewlines))
            else { try prerequisiteMissing("OTLP receiver", "receiver printed '\(line)'", requiredBy: "TRACER_REQUIRE_OTLP_RECEIVER") }
            self.port = p
        }
        var settings = ExportSettings()
        settings.protocol_ = .httpJSON
        control = CurlTransport(settings: settings)
    }

    deinit {
        process.terminate()
        process.waitUntilExit()
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    @discardableResult func post(_ command: String, _ json: Any = [String: Any]()) throws -> [String: Any] {
        let body = try JSONSerialization.data(withJSONObject: json)
        let outcome = body.withUnsafeBytes {
            control.post(url: baseURL + "/control/" + command, body: $0, contentType: "application/json", timeout: .seconds(10))
        }
        guard case .response(200, let bytes, _) = outcome else {
            try prerequisiteMissing("OTLP receiver", "receiver control \(command) failed: \(outcome)", requiredBy: "TRACER_REQUIRE_OTLP_RECEIVER")
        }
        return try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] ?? [:]
    }

    /// Queues scripted answers for `path`.
    func script(_ responses: [[String: Any]], path: String = "/v1/traces") throws {
        try post("script", ["path": path, "responses": responses])
    }

    func received() throws -> (requests: [[String: Any]], spans: [[String: Any]], metrics: [[String: Any]]) {
        let doc = try post("received")
        return (
            doc["requests"] as? [[String: Any]] ?? [], doc["traces"] as? [[String: Any]] ?? [],
            doc["metrics"] as? [[String: Any]] ?? []
        )
    }

    /// The log records received so far (`/v1/logs`), as the receiver decoded them.
    func receivedLogs() throws -> [[String: Any]] {
        try post("received")["logs"] as? [[String: Any]] ?? []
    }
}

/// Spans of two processes and two tracer scopes, with every attribute type.
func sampleSpans(_ count: Int, service: String = "shop") -> [Span] {
    let resourceA = Resource(attributes: ["service.name": .string(service), "process.pid": 101])
    let resourceB = Resource(attributes: ["service.name": "billing", "process.pid": 202])
    let http = InstrumentationScope(name: "tracer/http", version: "0.1.0")
    let sql = InstrumentationScope(name: "tracer/sql")
    return (0..<count).map { i in
        var attributes: Attributes = [
            "http.request.method": "GET", "url.path": .string("/users/\(i)"), "http.response.status_code": 200,
            "ratio": 0.5, "cached": true, "tags": .stringArray(["a", "b"]), "ports": .intArray([80, 443]),
        ]
        attributes["index"] = .int(Int64(i))
        return Span(
            name: "GET /users/{id}", kind: i % 2 == 0 ? .server : .client, traceID: .random(), spanID: .random(),
            parentSpanID: i % 3 == 0 ? .invalid : .random(), startTimeUnixNano: 1_700_000_000_000_000_000 + UInt64(i),
            endTimeUnixNano: 1_700_000_000_002_000_000 + UInt64(i),
            status: i % 4 == 1 ? .error(message: "boom \(i)") : .unset, attributes: attributes,
            resource: i % 2 == 0 ? resourceA : resourceB, scope: i % 5 == 0 ? sql : http)
    }
}

/// Settings aimed at the receiver with test-sized delays.
func testSettings(_ receiver: OTLPReceiver?, port: Int? = nil) -> ExportSettings {
    var settings = ExportSettings()
    let base = "http://127.0.0.1:\(port ?? receiver?.port ?? 9)"
    settings.tracesURL = base + "/v1/traces"
    settings.metricsURL = base + "/v1/metrics"
    settings.logsURL = base + "/v1/logs"
    settings.scheduleDelay = .milliseconds(50)
    settings.timeout = .seconds(5)
    settings.retry = RetryPolicy(initialBackoff: .milliseconds(100), maxBackoff: .milliseconds(400), maxElapsed: .seconds(20))
    return settings
}
