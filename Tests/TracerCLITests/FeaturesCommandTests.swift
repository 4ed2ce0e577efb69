import Foundation
import TestSupport
import XCTest

/// `tracer`, `tracer features` and flag errors, through the built binary.
final class FeaturesCommandTests: XCTestCase {
    private struct Report: Decodable {
        struct Feature: Decodable {
            let id: String
            let available: Bool
            let minimumKernel: String
            let detail: String
        }
        let kernelRelease: String
        let features: [Feature]
    }

    func testFeaturesJSONReportsThisKernel() throws {
        try requireBPF()
        let result = try runProduct("tracer", ["features", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let report = try JSONDecoder().decode(Report.self, from: Data(result.stdout.utf8))
        let available = Dictionary(uniqueKeysWithValues: report.features.map { ($0.id, $0.available) })
        for id in ["btf", "ring_buffer", "uprobe", "uprobe_multi", "tracepoint"] {
            XCTAssertEqual(available[id], true, "\(id): \(report.features.first { $0.id == id }?.detail ?? "missing")")
        }
        if ProcessInfo.processInfo.environment["TRACER_EXPECT_NO_KPROBES"] == "1" {
            XCTAssertEqual(available["kprobe"], false)
            XCTAssertEqual(available["fentry"], false)
        }
        XCTAssertTrue(report.features.allSatisfy { !$0.minimumKernel.isEmpty && !$0.detail.isEmpty })
        XCTAssertFalse(report.kernelRelease.isEmpty)
    }

    func testFeaturesTableNamesEveryFeature() throws {
        try requireBPF()
        let result = try runProduct("tracer", ["features"])
        XCTAssertEqual(result.status, 0, result.stderr)
        for title in ["BPF ring buffer", "uprobe_multi links", "kprobes", "fentry/fexit", "CAP_BPF", "tracefs", "Kernel lockdown"] {
            XCTAssertTrue(result.stdout.contains(title), "missing \(title) in:\n\(result.stdout)")
        }
    }

    func testNoArgumentsSaysWhetherTheMachineIsReady() throws {
        try requireBPF()
        let result = try runProduct("tracer", [])
        XCTAssertEqual(result.status, 0, result.stdout + result.stderr)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        XCTAssertEqual(lines.first, "tracer on Linux \(release)", result.stdout)
        // The verdict is the last line, and "not ready to trace:" (followed by the blockers) must not pass.
        XCTAssertTrue(lines.last?.hasPrefix("ready to trace. ") ?? false, result.stdout)
        XCTAssertFalse(lines.contains { $0.hasPrefix("not ready") || $0.hasPrefix("  - ") }, result.stdout)
    }

    func testUnknownFlagIsAOneLineErrorWithNonZeroExit() throws {
        let result = try runProduct("tracer", ["--no-such-flag"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.split(separator: "\n").first?.contains("Unknown option '--no-such-flag'") ?? false, result.stderr)
    }

    func testHelpShowsExamples() throws {
        let result = try runProduct("tracer", ["--help"])
        XCTAssertEqual(result.status, 0)
        XCTAssertTrue(result.stdout.contains("Examples:"), result.stdout)
        XCTAssertTrue(result.stdout.contains("tracer --pid 1234"), result.stdout)
        XCTAssertTrue(result.stdout.contains("tracer features [--json]"), result.stdout)
    }
}
