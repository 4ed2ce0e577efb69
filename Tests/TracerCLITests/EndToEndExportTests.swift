import Foundation
import TestSupport
import XCTest

/// The whole path through the built binary: a Python HTTP server traced by `tracer`, spans and RED metrics
/// exported over OTLP/HTTP to the receiver built on the official opentelemetry-proto package, then
/// SIGTERM flushing and exiting 0.
final class EndToEndExportTests: XCTestCase {
    private static let receiverScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("OTLPExportTests/receiver/otlp_receiver.py").path

    /// Starts a process and reads its first stdout line (the receiver's `PORT n`, the server's banner).
    private func start(_ arguments: [String], environment: [String: String] = [:]) throws -> (Process, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        addTeardownBlock { process.terminate(); process.waitUntilExit() }
        var line = ""
        while !line.contains("\n") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += String(decoding: chunk, as: UTF8.self)
        }
        return (process, line)
    }

    private func receivedSpans(port: Int) throws -> [[String: Any]] {
        let text = try TestSupport.run("/usr/bin/curl", ["-sf", "-X", "POST", "-d", "{}", "http://127.0.0.1:\(port)/control/received"])
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        return object?["traces"] as? [[String: Any]] ?? []
    }

    func testTracedPythonServerSpansReachAnOTLPCollector() throws {
        try requireBPF()
        let (_, receiverLine) = try start(["python3", Self.receiverScript, "--port", "0"])
        guard receiverLine.hasPrefix("PORT "), let receiverPort = Int(receiverLine.dropFirst(5).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            try prerequisiteMissing("OTLP receiver", "the OTLP receiver did not start (pip install opentelemetry-proto): \(receiverLine)",
                                    requiredBy: "TRACER_REQUIRE_OTLP_RECEIVER")
        }
        let (server, serverLine) = try start(["python3", "-u", "-c", """
            import http.server, sys
            server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
            print(server.server_address[1], flush=True)
            server.serve_forever()
            """], environment: ["OTEL_SERVICE_NAME": "shop"])
        let port = try XCTUnwrap(Int(serverLine.trimmingCharacters(in: .whitespacesAndNewlines)), serverLine)

        let agent = Process()
        agent.executableURL = productsDirectory.appendingPathComponent("tracer")
        agent.arguments = ["--pid", "\(server.processIdentifier)", "--otlp-endpoint", "http://127.0.0.1:\(receiverPort)", "--log-level", "warning"]
        agent.environment = ProcessInfo.processInfo.environment.merging(["OTEL_BSP_SCHEDULE_DELAY": "200"]) { $1 }
        let stdout = Pipe()
        agent.standardOutput = stdout
        try agent.run()
        addTeardownBlock { if agent.isRunning { agent.terminate() } }
        // The agent is attached once a request made now shows up as a span.
        XCTAssertTrue(waitUntil(timeout: 20) {
            _ = try? TestSupport.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "http://127.0.0.1:\(port)/probe"])
            return ((try? self.receivedSpans(port: receiverPort)) ?? []).contains { ($0["attributes"] as? [String: Any])?["url.path"] as? String == "/probe" }
        })
        for path in ["/a?password=hunter2", "/missing"] {
            _ = try TestSupport.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "http://127.0.0.1:\(port)\(path)"])
        }
        agent.terminate() // SIGTERM: stop intake, flush, exit 0
        agent.waitUntilExit()
        XCTAssertEqual(agent.terminationStatus, 0)
        XCTAssertTrue(stdout.fileHandleForReading.readDataToEndOfFile().isEmpty, "nothing printed when exporting")

        let spans = try receivedSpans(port: receiverPort)
        let byPath = Dictionary(spans.compactMap { span -> (String, [String: Any])? in
            guard let attributes = span["attributes"] as? [String: Any], let path = attributes["url.path"] as? String else { return nil }
            return (path, span)
        }, uniquingKeysWith: { first, _ in first })
        let redacted = try XCTUnwrap(byPath["/a"], "\(spans)")
        let attributes = try XCTUnwrap(redacted["attributes"] as? [String: Any])
        XCTAssertEqual(attributes["url.query"] as? String, "password=REDACTED")
        XCTAssertEqual(attributes["http.request.method"] as? String, "GET")
        XCTAssertEqual(redacted["kind"] as? Int, 2, "SERVER")
        XCTAssertEqual((redacted["resource"] as? [String: Any])?["service.name"] as? String, "shop")
        let missing = try XCTUnwrap(byPath["/missing"])
        XCTAssertEqual((missing["attributes"] as? [String: Any])?["http.response.status_code"] as? Int, 404)
    }
}
