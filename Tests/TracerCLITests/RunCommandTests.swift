import Foundation
import Synchronization
import TestSupport
import XCTest

/// `tracer` with selection flags, through the built binary: errors at start, the start-up lines, and a
/// clean stop on SIGTERM.
final class RunCommandTests: XCTestCase {
    func testAMissingPIDIsAOneLineErrorAtStart() throws {
        let result = try runProduct("tracer", ["--pid", "2147483000"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.hasPrefix("Error: --pid 2147483000: no such process\n"), result.stderr)
    }

    func testBadFlagValuesAreOneLineErrors() throws {
        for (arguments, expected) in [
            (["--open-port", "http"], "--open-port: invalid port or port range 'http'"),
            (["--language", "cobol"], "--language: unknown language 'cobol'"),
            (["--exe", "*/x", "--print", "xml"], "--print: expected text, json or none"),
            (["--exe", "*/x", "--log-level", "loud"], "--log-level: expected trace"),
        ] {
            let result = try runProduct("tracer", arguments)
            XCTAssertNotEqual(result.status, 0, "\(arguments)")
            XCTAssertTrue(result.stderr.split(separator: "\n").first?.contains(expected) ?? false, "\(arguments): \(result.stderr)")
        }
    }

    func testAnInvalidConfigFileNamesTheFileAndTheProblem() throws {
        let directory = try temporaryDirectory(self)
        let config = directory.appendingPathComponent("tracer.yaml")
        try "discovery:\n  instrument:\n    - exe_pth: '*/api'\n".write(to: config, atomically: true, encoding: .utf8)
        let result = try runProduct("tracer", ["--config", config.path])
        XCTAssertNotEqual(result.status, 0)
        let firstLine = String(result.stderr.split(separator: "\n").first ?? "")
        XCTAssertTrue(firstLine.contains("\(config.path): unknown key 'exe_pth' at discovery.instrument[0]"), result.stderr)

        let missing = try runProduct("tracer", ["--config", directory.appendingPathComponent("nope.yaml").path])
        XCTAssertTrue(missing.stderr.contains("nope.yaml: no such file"), missing.stderr)
    }

    func testTracesASelectedProcessAndStopsCleanlyOnSIGTERM() throws {
        try requireBPF()
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["60"]
        try sleeper.run()
        addTeardownBlock { sleeper.terminate() }

        let agent = Process()
        agent.executableURL = productsDirectory.appendingPathComponent("tracer")
        agent.arguments = ["--pid", "\(sleeper.processIdentifier)", "--print", "json"]
        let stderr = Pipe(), stdout = Pipe()
        agent.standardError = stderr
        agent.standardOutput = stdout
        let log = Mutex("")
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            log.withLock { $0 += text }
        }
        try agent.run()
        XCTAssertTrue(waitUntil(timeout: 20) { log.withLock { $0.contains("SIGTERM stops") } }, log.withLock { $0 })
        let started = log.withLock { $0 }
        XCTAssertTrue(started.contains("for pid \(sleeper.processIdentifier)"), started)
        XCTAssertTrue(started.contains("/bin/sleep") || started.contains("/usr/bin/sleep"), started)
        XCTAssertTrue(started.contains("1 processes selected now"), started)

        agent.terminate() // SIGTERM
        agent.waitUntilExit()
        stderr.fileHandleForReading.readabilityHandler = nil
        XCTAssertEqual(agent.terminationStatus, 0, log.withLock { $0 })
        XCTAssertEqual(agent.terminationReason, .exit)
        XCTAssertTrue(log.withLock { $0.contains("stopped:") }, log.withLock { $0 })
        let output = String(decoding: stdout.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(output.split(separator: "\n").allSatisfy { $0.hasPrefix("{\"name\":") }, "stdout carries only spans: \(output)")
    }
}
