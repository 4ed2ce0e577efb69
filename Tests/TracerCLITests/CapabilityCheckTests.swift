import Foundation
import TestSupport
@testable import TracerCLI
import XCTest

/// The capability check at start: which capabilities each kernel needs, and the built `tracer` run with
/// capabilities really dropped (`setpriv` removes them from the bounding set, so the exec'd agent lacks them).
final class CapabilityCheckTests: XCTestCase {
    private func names(_ requirements: [CapabilityCheck.Requirement]) -> [String] { requirements.map(\.name) }

    func testRequiredCapabilitiesDependOnTheKernel() {
        let all = UInt64.max
        XCTAssertEqual(names(CapabilityCheck.missing(effective: all, kernel: (6, 18))), [])
        XCTAssertEqual(names(CapabilityCheck.missing(effective: 0, kernel: (6, 1))),
                       ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH", "CAP_CHECKPOINT_RESTORE"])
        XCTAssertEqual(names(CapabilityCheck.missing(effective: 0, kernel: (5, 8))),
                       ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"], "CAP_CHECKPOINT_RESTORE exists from 5.9")
        XCTAssertEqual(names(CapabilityCheck.missing(effective: 0, kernel: (5, 4))),
                       ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"], "before 5.8 only CAP_SYS_ADMIN loads programs")
        let sysAdminOnly: UInt64 = 1 << 21 | 1 << 19 | 1 << 2 | 1 << 40
        XCTAssertEqual(names(CapabilityCheck.missing(effective: sysAdminOnly, kernel: (6, 1))), [], "CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON")
    }

    /// Runs the built agent under `setpriv` with `dropped` removed from the bounding set.
    private func runWithout(_ dropped: [String], _ arguments: [String]) throws -> (status: Int32, stderr: String) {
        let bounding = dropped.map { "-\($0)" }.joined(separator: ",")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = ["--inh-caps=-all", "--bounding-set=\(bounding)", "--", productsDirectory.appendingPathComponent("tracer").path] + arguments
        let stderr = Pipe()
        process.standardError = stderr
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let errors = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: errors, as: UTF8.self))
    }

    func testMissingCapabilitiesAreListedAndEnforceCapsMakesThemFatal() throws {
        try requireBPF()
        let pid = "\(getpid())"
        let enforced = try runWithout(["bpf", "perfmon", "sys_admin"], ["--pid", pid, "--enforce-caps"])
        XCTAssertEqual(enforced.status, 3, enforced.stderr)
        let lines = enforced.stderr.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 3, enforced.stderr)
        XCTAssertTrue(lines[0].hasPrefix("tracer: missing CAP_BPF: no BPF program can be loaded"), lines[0])
        XCTAssertTrue(lines[1].hasPrefix("tracer: missing CAP_PERFMON: uprobes, kprobes and tracepoints cannot be attached"), lines[1])
        XCTAssertEqual(lines[2], "tracer: --enforce-caps: 2 capabilities missing, not starting")

        let warned = try runWithout(["bpf", "perfmon", "sys_admin"], ["--pid", pid])
        XCTAssertNotEqual(warned.status, 0, "without the capabilities loading fails later: \(warned.stderr)")
        XCTAssertNotEqual(warned.status, 3, warned.stderr)
        XCTAssertTrue(warned.stderr.hasPrefix("tracer: missing CAP_BPF: "), warned.stderr)
        XCTAssertFalse(warned.stderr.contains("--enforce-caps"), "without --enforce-caps the agent goes on: \(warned.stderr)")

        let oneMissing = try runWithout(["dac_read_search"], ["--pid", pid, "--enforce-caps"])
        XCTAssertEqual(oneMissing.status, 3, oneMissing.stderr)
        XCTAssertEqual(oneMissing.stderr.split(separator: "\n").map(String.init), [
            "tracer: missing CAP_DAC_READ_SEARCH: files the agent's user cannot read (under /proc/PID/root) cannot be inspected: such processes are skipped",
            "tracer: --enforce-caps: 1 capability missing, not starting",
        ])
    }

    func testWithEveryCapabilityNothingIsReported() throws {
        try requireBPF()
        let result = try runProduct("tracer", ["--pid", "2147483000", "--enforce-caps"])
        XCTAssertFalse(result.stderr.contains("missing CAP_"), result.stderr)
        XCTAssertTrue(result.stderr.hasPrefix("Error: --pid 2147483000: no such process"), "the check passed and start-up went on: \(result.stderr)")
    }
}
