import Foundation
import TestSupport
import XCTest

/// A collector that accepts the connection and never answers, while the agent gets SIGTERM: the agent still
/// exits 0 within its shutdown budget (10 s for spans, 2 s for the last metrics) and counts what it lost.
final class HangingCollectorTests: XCTestCase {
    private func start(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                       stdout: Pipe? = nil, stderr: Pipe? = nil) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = stdout ?? FileHandle.nullDevice
        process.standardError = stderr ?? FileHandle.nullDevice
        try process.run()
        addTeardownBlock { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        return process
    }

    private func firstLine(_ pipe: Pipe) -> String {
        var text = ""
        while !text.contains("\n") {
            let chunk = pipe.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func testSIGTERMWhileTheCollectorNeverAnswersExitsWithinTheShutdownBudget() throws {
        try requireBPF()
        let collectorOutput = Pipe()
        _ = try start("/usr/bin/python3", ["-u", "-c", """
            import socket
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
            print(s.getsockname()[1])
            held = []
            while True:
                held.append(s.accept()[0])
            """], stdout: collectorOutput)
        let collectorPort = try XCTUnwrap(Int(firstLine(collectorOutput)))
        let serverOutput = Pipe()
        let server = try start("/usr/bin/python3", ["-u", "-c", """
            import http.server
            s = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
            print(s.server_port)
            s.serve_forever()
            """], stdout: serverOutput)
        let serverPort = try XCTUnwrap(Int(firstLine(serverOutput)))

        let log = Pipe()
        let agent = try start(productsDirectory.appendingPathComponent("tracer").path, ["--pid", "\(server.processIdentifier)"],
                              environment: ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:\(collectorPort)", "OTEL_BSP_SCHEDULE_DELAY": "100"],
                              stderr: log)
        var text = ""
        XCTAssertTrue(waitUntil(timeout: 20) {
            text += String(decoding: log.fileHandleForReading.availableData, as: UTF8.self)
            return text.contains("SIGTERM stops")
        }, text)
        for path in ["/a", "/b", "/c"] { try TestSupport.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "http://127.0.0.1:\(serverPort)\(path)"]) }
        usleep(1_000_000) // the batch is sent, and hangs
        let stopped = ContinuousClock.now
        agent.terminate()
        agent.waitUntilExit()
        let took = ContinuousClock.now - stopped
        text += String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(agent.terminationStatus, 0, text)
        XCTAssertLessThan(took, .seconds(15), "10 s for spans (+ at most 1 s for the request in flight) + 2 s for metrics + teardown: \(text)")
        // Every span is accounted for: failed with its batch, or dropped from the queue at the deadline.
        var lost = 0
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ")
            if line.contains("OTLP export of "), line.contains("/v1/traces failed: "), let i = words.firstIndex(of: "of") {
                lost += Int(words[i + 1]) ?? 0
            } else if line.contains("OTLP shutdown timeout: dropped "), let i = words.firstIndex(of: "dropped") {
                lost += Int(words[i + 1]) ?? 0
            }
        }
        XCTAssertEqual(lost, 3, text)
        XCTAssertTrue(text.contains("stopped: 3 spans"), text)
    }
}
