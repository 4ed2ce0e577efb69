import Foundation
import TestSupport
import XCTest

/// `tracer tool syscalls` as a user runs it (the built binary), on a C program that makes a known number of
/// syscalls once the tracers are attached, next to Debian's libbpf-tools `syscount` (0.26, raw_syscalls
/// tracepoints: it runs on this kernel).
final class SyscallsToolTests: XCTestCase {
    /// `sysloop N`: on a byte from standard input, N getppid() and N opens of a missing file (ENOENT), then
    /// prints "done" and waits for a second byte.
    static let workload = """
        #include <fcntl.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <sys/syscall.h>
        #include <unistd.h>

        int main(int argc, char **argv) {
            int n = atoi(argv[1]);
            printf("ready\\n");
            fflush(stdout);
            char go;
            if (read(0, &go, 1) != 1) return 1;
            for (int i = 0; i < n; i++) syscall(SYS_getppid);
            for (int i = 0; i < n; i++) if (open("/nonexistent/sysloop", O_RDONLY) >= 0) return 2;
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

    /// syscount's rows (`NAME COUNT [TIME]`): name → (count, total µs or 0).
    private func syscountRows(_ text: String) -> [String: (count: Int, micros: Double)] {
        var rows: [String: (Int, Double)] = [:]
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ")
            guard words.count >= 2, let count = Int(words[1]) else { continue }
            rows[String(words[0])] = (count, words.count >= 3 ? Double(words[2]) ?? 0 : 0)
        }
        return rows
    }

    private func histogram(_ histograms: [[String: Any]], name: String, syscall: String, error: String? = nil) -> [String: Any]? {
        histograms.first {
            let labels = $0["labels"] as? [String: Any] ?? [:]
            return $0["name"] as? String == name && labels["syscall.name"] as? String == syscall && labels["error.type"] as? String == error
        }
    }

    private func startWorkload(_ calls: Int) throws -> BackgroundCommand {
        let directory = try temporaryDirectory(self)
        let workload = try BackgroundCommand(try compileC(Self.workload, name: "sysloop", in: directory).path, [String(calls)])
        XCTAssertTrue(workload.waitFor("ready"), workload.stderr)
        return workload
    }

    func testCountsErrorsAndLatencyMatchSyscountAndTheWorkload() throws {
        try requireBPF()
        try requireExecutable("/usr/sbin/syscount", package: "libbpf-tools")
        let calls = 2000
        let workload = try startWorkload(calls)
        let ours = try BackgroundCommand(tracerPath, ["tool", "syscalls", "--pid", String(workload.pid), "--json"])
        let latency = try BackgroundCommand("/usr/bin/stdbuf", ["-oL", "/usr/sbin/syscount", "-p", String(workload.pid), "-L", "-T", "50"])
        let failures = try BackgroundCommand("/usr/bin/stdbuf", ["-oL", "/usr/sbin/syscount", "-p", String(workload.pid), "-x", "-T", "50"])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        XCTAssertTrue(latency.waitFor("Ctrl+C to quit") && failures.waitFor("Ctrl+C to quit"), latency.stdout + latency.stderr)
        XCTAssertTrue(ours.stderr.contains("hooks: tp_btf sys_enter, sys_exit; cost: sys_enter/sys_exit make every syscall of every process"), ours.stderr)
        workload.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertTrue(workload.waitFor("done"), workload.stderr)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        XCTAssertEqual(latency.stop(), 0, latency.stderr)
        XCTAssertEqual(failures.stop(), 0, failures.stderr)
        workload.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertEqual(workload.waitForExit(), 0)

        let histograms = jsonLines(ours.stdout)
        let getppid = try XCTUnwrap(histogram(histograms, name: "tracer.syscalls.duration", syscall: "getppid"), ours.stdout)
        let openat = try XCTUnwrap(histogram(histograms, name: "tracer.syscalls.duration", syscall: "openat"), ours.stdout)
        let enoent = try XCTUnwrap(histogram(histograms, name: "tracer.syscalls.error.duration", syscall: "openat", error: "ENOENT"), ours.stdout)
        XCTAssertEqual(getppid["unit"] as? String, "ns")
        // The workload's truth: exactly `calls` of each, every open failing with ENOENT, getppid never failing.
        XCTAssertEqual(getppid["count"] as? Int, calls, ours.stdout)
        XCTAssertEqual(openat["count"] as? Int, calls, ours.stdout)
        XCTAssertEqual(enoent["count"] as? Int, calls, ours.stdout)
        XCTAssertNil(histogram(histograms, name: "tracer.syscalls.error.duration", syscall: "getppid"), ours.stdout)
        let buckets = (getppid["buckets"] as? [[String: Any]] ?? []).reduce(0) { $0 + ($1["count"] as? Int ?? 0) }
        XCTAssertEqual(buckets, calls)

        let reference = syscountRows(latency.stdout), referenceFailures = syscountRows(failures.stdout)
        XCTAssertEqual(reference["getppid"]?.count, calls, latency.stdout)
        XCTAssertEqual(reference["openat"]?.count, calls, latency.stdout)
        XCTAssertEqual(referenceFailures["openat"]?.count, calls, failures.stdout)
        XCTAssertNil(referenceFailures["getppid"], failures.stdout)
        // Mean latency: both measure the same calls between the same two tracepoints (each also times the
        // other's programs, in some order): within a factor of 2.
        for (name, ourHistogram) in [("getppid", getppid), ("openat", openat)] {
            let ourMean = Double(ourHistogram["sum"] as? Int ?? 0) / Double(calls)
            let theirMean = (reference[name]?.micros ?? 0) * 1000 / Double(calls)
            print("syscalls vs syscount: \(name) mean \(Int(ourMean)) ns vs \(Int(theirMean)) ns")
            XCTAssertGreaterThan(theirMean, 0, latency.stdout)
            XCTAssertLessThan(max(ourMean, theirMean) / max(min(ourMean, theirMean), 1), 2, "\(name): ours \(ourMean) ns, syscount \(theirMean) ns")
        }
    }

    /// Per process and syscall, with room for one key: the workload's other syscalls go to the counted
    /// overflow histogram.
    func testKeysPastTheLimitGoToTheCountedOverflowHistogram() throws {
        try requireBPF()
        let workload = try startWorkload(100)
        let ours = try BackgroundCommand(tracerPath, ["tool", "syscalls", "--pid", String(workload.pid), "--per-process", "--max-keys", "1", "--json"])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        workload.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertTrue(workload.waitFor("done"), workload.stderr)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        workload.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertEqual(workload.waitForExit(), 0)
        let histograms = jsonLines(ours.stdout)
        let keyed = histograms.filter { $0["overflow"] == nil && $0["name"] as? String == "tracer.syscalls.duration" }
        XCTAssertEqual(keyed.count, 1, ours.stdout)
        let labels = keyed.first?["labels"] as? [String: Any] ?? [:]
        XCTAssertEqual(labels["process.pid"] as? Int, Int(workload.pid), ours.stdout)
        XCTAssertEqual(labels["process.executable.name"] as? String, "sysloop", ours.stdout)
        let overflow = try XCTUnwrap(histograms.first { $0["overflow"] as? Bool == true }, ours.stdout)
        XCTAssertGreaterThan(overflow["count"] as? Int ?? 0, 0)
        let counters = ours.stderr.split(separator: "\n").last { $0.contains("histogram.overflow") } ?? ""
        XCTAssertTrue(counters.contains("histogram.overflow "), ours.stderr)
        XCTAssertFalse(counters.contains("histogram.overflow 0,"), String(counters))
    }

    func testMachineWideAndAVanishedPIDAreOneLineErrors() throws {
        let machineWide = try runProduct("tracer", ["tool", "syscalls"])
        XCTAssertEqual(machineWide.status, 1)
        XCTAssertEqual(machineWide.stderr,
                       "tracer tool: syscalls: give --pid (or run it in the agent with selected processes): it is not run for every process of the machine\n")
        let missing = try runProduct("tracer", ["tool", "syscalls", "--pid", "999999999"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertEqual(missing.stderr, "tracer tool: syscalls: no process with PID 999999999\n")
    }

    /// `tracer --pid P --kernel-tracers syscalls,files,fds`: the three follow the agent's selection; the
    /// syscall histograms are on /metrics with exact counts, the file and FD events are printed.
    func testTheAgentRunsThemForItsSelectedProcesses() throws {
        try requireBPF()
        let calls = 300
        let workload = try startWorkload(calls)
        let prometheusPort = unusedTCPPort()
        let agent = try BackgroundCommand(tracerPath, ["--pid", String(workload.pid), "--kernel-tracers", "syscalls,files,fds", "--print", "json",
                                                       "--prometheus-port", String(prometheusPort), "--path-prefix", "/nonexistent/"])
        XCTAssertTrue(agent.waitFor("kernel tracers syscalls,files,fds: tracing 1 selected process", timeout: 20), agent.stderr)
        XCTAssertTrue(agent.stderr.contains("kernel tracer syscalls: hooks: tp_btf sys_enter, sys_exit; cost:"), agent.stderr)
        XCTAssertTrue(agent.stderr.contains("traces the selected processes only"), agent.stderr)
        workload.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertTrue(workload.waitFor("done"), workload.stderr)
        func count(_ page: String, _ syscall: String) -> Int? {
            page.split(separator: "\n").first { $0.hasPrefix("tracer_syscalls_duration_count{") && $0.contains("syscall_name=\"\(syscall)\"") }
                .flatMap { Int($0.split(separator: " ").last ?? "") }
        }
        var page = ""
        XCTAssertTrue(waitUntil(timeout: 10) {
            page = (try? TestSupport.run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(prometheusPort)/metrics"])) ?? ""
            return count(page, "getppid") == calls && count(page, "openat") == calls
        }, page.split(separator: "\n").filter { $0.contains("syscalls") }.joined(separator: "\n"))
        XCTAssertTrue(page.contains("tracer_syscalls_error_duration_count{"), page)
        XCTAssertTrue(waitUntil(timeout: 5) {
            self.jsonLines(agent.stdout).filter { $0["tool"] as? String == "fds" }.reduce(0) { $0 + ($1["open_errors"] as? Int ?? 0) } >= calls
        }, agent.stdout)
        XCTAssertEqual(agent.stop(signal: SIGTERM), 0, agent.stderr)
        workload.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertEqual(workload.waitForExit(), 0)
        let printed = jsonLines(agent.stdout)
        let opens = printed.filter { $0["tool"] as? String == "files" && $0["file.path"] as? String == "/nonexistent/sysloop" }
        XCTAssertEqual(opens.count, calls, "\(printed.filter { $0["tool"] as? String == "files" }.count) file events")
        XCTAssertEqual(printed.filter { $0["tool"] as? String == "files" }.count, calls, "--path-prefix /nonexistent/: no other paths")
        XCTAssertTrue(opens.allSatisfy { $0["pid"] as? Int == Int(workload.pid) && $0["error.type"] as? String == "ENOENT" })
        let fds = printed.filter { $0["tool"] as? String == "fds" }
        XCTAssertTrue(fds.allSatisfy { $0["pid"] as? Int == Int(workload.pid) }, "only the selected process: \(fds)")
        XCTAssertEqual(fds.reduce(0) { $0 + ($1["open_errors"] as? Int ?? 0) }, calls, "\(fds)")
    }
}
