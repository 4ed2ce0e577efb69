import Foundation
import TestSupport
import XCTest

/// `tracer tool fds` as a user runs it (the built binary), on two C programs the test starts once the tracer
/// is attached: one that leaks a descriptor every 100 ms, one that opens and closes three every 100 ms. No
/// libbpf-tool counts descriptors; the programs' own counts are the truth.
final class FDsToolTests: XCTestCase {
    /// `fdwork leak|steady ROUNDS`: on a byte from standard input, ROUNDS times every 100 ms opens /dev/null
    /// once and keeps it (leak) or opens it three times and closes the three (steady), and one open of a
    /// missing file; prints "done" and waits for a second byte.
    static let workload = """
        #include <fcntl.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <unistd.h>

        int main(int argc, char **argv) {
            int leak = strcmp(argv[1], "leak") == 0, rounds = atoi(argv[2]);
            printf("ready\\n");
            fflush(stdout);
            char go;
            if (read(0, &go, 1) != 1) return 1;
            for (int round = 0; round < rounds; round++) {
                if (leak) {
                    if (open("/dev/null", O_RDONLY) < 0) return 2;
                } else {
                    int fds[3];
                    for (int i = 0; i < 3; i++) if ((fds[i] = open("/dev/null", O_RDONLY)) < 0) return 2;
                    for (int i = 0; i < 3; i++) close(fds[i]);
                }
                if (open("/nonexistent/fdwork", O_RDONLY) >= 0) return 3;
                usleep(100000);
            }
            printf("done\\n");
            fflush(stdout);
            if (read(0, &go, 1) != 1) return 1;
            return 0;
        }
        """

    var tracerPath: String { productsDirectory.appendingPathComponent("tracer").path }

    private func jsonLines(_ text: String) -> [[String: Any]] {
        text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    private func total(_ field: String, of pid: Int32, in events: [[String: Any]]) -> Int {
        events.filter { $0["pid"] as? Int == Int(pid) }.reduce(0) { $0 + ($1[field] as? Int ?? 0) }
    }

    func testALeakingProcessIsSuspectedAndASteadyOneIsNotWithExactOpenCloseCounts() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let binary = try compileC(Self.workload, name: "fdwork", in: directory).path
        let rounds = 25
        let leaker = try BackgroundCommand(binary, ["leak", String(rounds)])
        let steady = try BackgroundCommand(binary, ["steady", String(rounds)])
        XCTAssertTrue(leaker.waitFor("ready") && steady.waitFor("ready"))
        // Machine-wide: both processes (and whatever else opens files now) in one run.
        let ours = try BackgroundCommand(tracerPath, ["tool", "fds", "--interval", "0.4", "--leak-intervals", "3", "--json"])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        XCTAssertTrue(ours.stderr.contains("hooks: tracepoints syscalls:sys_exit_{openat,openat2,open,creat,close}"), ours.stderr)
        XCTAssertTrue(ours.stderr.contains("cost: syscall tracepoints"), ours.stderr)
        leaker.input.fileHandleForWriting.write(Data("g".utf8))
        steady.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertTrue(leaker.waitFor("done") && steady.waitFor("done"))
        // Every open and close reported once the intervals after the last round are read.
        XCTAssertTrue(waitUntil(timeout: 5) {
            let events = self.jsonLines(ours.stdout)
            return self.total("opens", of: leaker.pid, in: events) >= rounds && self.total("closes", of: steady.pid, in: events) >= 3 * rounds
        }, ours.stdout)
        let events = jsonLines(ours.stdout)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        leaker.input.fileHandleForWriting.write(Data("g".utf8))
        steady.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertEqual(leaker.waitForExit(), 0)
        XCTAssertEqual(steady.waitForExit(), 0)

        XCTAssertEqual(total("opens", of: leaker.pid, in: events), rounds)
        XCTAssertEqual(total("closes", of: leaker.pid, in: events), 0)
        XCTAssertEqual(total("open_errors", of: leaker.pid, in: events), rounds)
        XCTAssertEqual(total("opens", of: steady.pid, in: events), 3 * rounds)
        XCTAssertEqual(total("closes", of: steady.pid, in: events), 3 * rounds)
        XCTAssertEqual(total("open_errors", of: steady.pid, in: events), rounds)

        let leakerEvents = events.filter { $0["pid"] as? Int == Int(leaker.pid) }
        let steadyEvents = events.filter { $0["pid"] as? Int == Int(steady.pid) }
        XCTAssertTrue(leakerEvents.allSatisfy { $0["event"] as? String == "fd_count" && $0["comm"] as? String == "fdwork" }, "\(leakerEvents)")
        // The leaker's count climbs by about 4 per 0.4 s interval: suspected after three growing intervals.
        // Both started with the same descriptors; read once both were idle, the leaker holds `rounds` more.
        let steadyLast = try XCTUnwrap(steadyEvents.last?["open_fds"] as? Int, "\(steadyEvents)")
        XCTAssertEqual(leakerEvents.last?["open_fds"] as? Int, steadyLast + rounds, "\(leakerEvents)")
        XCTAssertTrue(leakerEvents.contains { $0["leak_suspected"] as? Bool == true }, "\(leakerEvents)")
        XCTAssertGreaterThanOrEqual(leakerEvents.compactMap { $0["growing_intervals"] as? Int }.max() ?? 0, 3, "\(leakerEvents)")
        XCTAssertFalse(steadyEvents.isEmpty, ours.stdout)
        XCTAssertTrue(steadyEvents.allSatisfy { $0["leak_suspected"] as? Bool == false }, "\(steadyEvents)")
    }

    /// `--pid`: only that process is reported, every interval even when it is idle.
    func testAPIDFilterReportsOnlyThatProcess() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let binary = try compileC(Self.workload, name: "fdwork", in: directory).path
        let traced = try BackgroundCommand(binary, ["steady", "5"])
        let other = try BackgroundCommand(binary, ["leak", "5"])
        XCTAssertTrue(traced.waitFor("ready") && other.waitFor("ready"))
        let ours = try BackgroundCommand(tracerPath, ["tool", "fds", "--pid", String(traced.pid), "--interval", "0.3", "--json", "--count", "4"])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        traced.input.fileHandleForWriting.write(Data("g".utf8))
        other.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertEqual(ours.waitForExit(timeout: 10), 0, ours.stderr)
        let events = jsonLines(ours.stdout)
        XCTAssertEqual(events.count, 4, ours.stdout)
        XCTAssertTrue(events.allSatisfy { $0["pid"] as? Int == Int(traced.pid) }, ours.stdout)
        for process in [traced, other] {
            process.input.fileHandleForWriting.write(Data("gg".utf8))
            XCTAssertEqual(process.waitForExit(), 0)
        }
    }

    /// Room for one process: machine-wide, at most one of the two is reported; the other's calls are counted.
    func testProcessesPastTheLimitAreCountedAsOverflow() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let binary = try compileC(Self.workload, name: "fdwork", in: directory).path
        let first = try BackgroundCommand(binary, ["steady", "5"]), second = try BackgroundCommand(binary, ["steady", "5"])
        XCTAssertTrue(first.waitFor("ready") && second.waitFor("ready"))
        let ours = try BackgroundCommand(tracerPath, ["tool", "fds", "--max-keys", "1", "--interval", "0.3", "--json"])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        first.input.fileHandleForWriting.write(Data("g".utf8))
        second.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertTrue(first.waitFor("done") && second.waitFor("done"))
        Thread.sleep(forTimeInterval: 0.5)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        for process in [first, second] {
            process.input.fileHandleForWriting.write(Data("g".utf8))
            XCTAssertEqual(process.waitForExit(), 0)
        }
        // Whichever of the two (or another process of the machine) took the one slot keeps it while alive.
        let reported = Set(jsonLines(ours.stdout).compactMap { $0["pid"] as? Int }).intersection([Int(first.pid), Int(second.pid)])
        XCTAssertLessThanOrEqual(reported.count, 1, ours.stdout)
        let overflow = try XCTUnwrap(toolCounter("state.overflow", in: ours.stderr), ours.stderr)
        XCTAssertGreaterThan(overflow, 0, ours.stderr)
    }

    func testBadInputIsAOneLineError() throws {
        let missing = try runProduct("tracer", ["tool", "fds", "--pid", "999999999"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertEqual(missing.stderr, "tracer tool: fds: no process with PID 999999999\n")
        let intervals = try runProduct("tracer", ["tool", "fds", "--leak-intervals", "1"])
        XCTAssertEqual(intervals.status, 1)
        XCTAssertEqual(intervals.stderr, "tracer tool: fds: --leak-intervals must be at least 2, not 1\n")
    }
}
