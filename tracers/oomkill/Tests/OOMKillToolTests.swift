import Foundation
import TestSupport
import XCTest

/// `tracer tool oomkill` as a user runs it (the built binary), on an OOM kill the test causes: a process in
/// a memory cgroup limited to 32 MiB touches memory until the kernel kills it. Debian's libbpf-tools
/// `oomkill` cannot run on this kernel (it needs a kprobe on oom_kill_process), so the event is checked
/// against the kernel's own record of the kill (its "Killed process" log line) and the workload's truth.
final class OOMKillToolTests: XCTestCase {
    /// Waits for a byte on standard input, then touches memory 1 MiB at a time until it is killed.
    static let hog = """
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <unistd.h>

        int main(void) {
            printf("ready\\n");
            fflush(stdout);
            char go;
            if (read(0, &go, 1) != 1) return 1;
            for (;;) {
                char *block = malloc(1 << 20);
                if (!block) return 2;
                memset(block, 1, 1 << 20);
            }
        }
        """

    static let limitBytes = 32 << 20

    var tracerPath: String { productsDirectory.appendingPathComponent("tracer").path }

    /// A memory cgroup limited to `limitBytes` (cgroup v1 `memory.limit_in_bytes`, or v2 `memory.max`),
    /// removed when the test ends; returns its directory.
    private func limitedMemoryCgroup(named name: String) throws -> URL {
        let (parent, limitFile): (String, String)
        if FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/memory.limit_in_bytes") || FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/cgroup.procs") {
            (parent, limitFile) = ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else if ((try? String(contentsOfFile: "/sys/fs/cgroup/cgroup.subtree_control", encoding: .utf8)) ?? "").contains("memory") {
            (parent, limitFile) = ("/sys/fs/cgroup", "memory.max")
        } else {
            try prerequisiteMissing("memory cgroup", "no cgroup v1 memory hierarchy at /sys/fs/cgroup/memory and no cgroup v2 memory controller at /sys/fs/cgroup")
        }
        let directory = URL(fileURLWithPath: parent).appendingPathComponent(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        addTeardownBlock { _ = waitUntil(timeout: 10) { rmdir(directory.path) == 0 || errno == ENOENT } }
        try String(Self.limitBytes).write(to: directory.appendingPathComponent(limitFile), atomically: false, encoding: .utf8)
        return directory
    }

    private func jsonLines(_ text: String) -> [[String: Any]] {
        text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// The kernel's log line for the kill of `pid`: `Killed process PID (COMM) total-vm:NkB, anon-rss:NkB, ...`.
    private func kernelRecord(ofKilled pid: Int32) throws -> [String: Int] {
        let log = try TestSupport.run("/usr/bin/dmesg", [])
        guard let line = log.split(separator: "\n").last(where: { $0.contains("Killed process \(pid) (") }) else { return [:] }
        var figures: [String: Int] = [:]
        for part in line.split(whereSeparator: { $0 == " " || $0 == "," }) {
            let pair = part.split(separator: ":", maxSplits: 1)
            if pair.count == 2, pair[1].hasSuffix("kB"), let value = Int(pair[1].dropLast(2)) { figures[String(pair[0])] = value }
        }
        return figures
    }

    func testAMemoryLimitedProcessIsReportedWithItsCgroupAndTheKernelsFigures() throws {
        try requireBPF()
        try requireExecutable("/usr/bin/dmesg", package: "util-linux")
        let directory = try temporaryDirectory(self)
        let cgroupName = "tracer-oomkill-\(getpid())"
        let cgroup = try limitedMemoryCgroup(named: cgroupName)
        let hog = try BackgroundCommand(try compileC(Self.hog, name: "memhog", in: directory).path, [])
        XCTAssertTrue(hog.waitFor("ready"), hog.stderr)
        try String(hog.pid).write(to: cgroup.appendingPathComponent("cgroup.procs"), atomically: false, encoding: .utf8)

        let ours = try BackgroundCommand(tracerPath, ["tool", "oomkill", "--json", "--count", "1"])
        // Filtered to another process (init): must stay silent while the hog is killed.
        let filtered = try BackgroundCommand(tracerPath, ["tool", "oomkill", "--pid", "1", "--json"])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        XCTAssertTrue(filtered.waitFor("Ctrl-C to end"), filtered.stderr)
        XCTAssertTrue(ours.stderr.contains("hooks: tracepoint oom:mark_victim"), ours.stderr)

        hog.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertEqual(hog.waitForExit(timeout: 30), SIGKILL, "the hog was not OOM-killed: \(hog.stderr)")
        XCTAssertEqual(hog.process.terminationReason, .uncaughtSignal)
        XCTAssertEqual(ours.waitForExit(timeout: 10), 0, "no event within 10 s of the kill: \(ours.stdout) \(ours.stderr)")
        XCTAssertEqual(filtered.stop(), 0, filtered.stderr)

        let events = jsonLines(ours.stdout)
        XCTAssertEqual(events.count, 1, ours.stdout)
        let event = try XCTUnwrap(events.first, ours.stdout)
        XCTAssertEqual(event["tool"] as? String, "oomkill")
        XCTAssertEqual(event["event"] as? String, "oom_kill")
        XCTAssertEqual(event["pid"] as? Int, Int(hog.pid), ours.stdout)
        XCTAssertEqual(event["comm"] as? String, "memhog", ours.stdout)
        // The hog's own allocation ran out of memory, so it is also the task that triggered the kill.
        XCTAssertEqual(event["trigger_pid"] as? Int, Int(hog.pid), ours.stdout)
        XCTAssertEqual(event["trigger_comm"] as? String, "memhog", ours.stdout)
        XCTAssertEqual(event["memory_cgroup"] as? String, cgroupName, ours.stdout)
        XCTAssertEqual(event["uid"] as? Int, Int(getuid()), ours.stdout)
        let anonymous = try XCTUnwrap(event["anon_rss_kib"] as? Int, ours.stdout)
        XCTAssertGreaterThan(anonymous, Self.limitBytes / 1024 * 3 / 4, "most of the 32 MiB limit is the hog's anonymous memory: \(ours.stdout)")
        XCTAssertLessThanOrEqual(anonymous, Self.limitBytes / 1024, ours.stdout)
        let kernel = try kernelRecord(ofKilled: hog.pid)
        guard !kernel.isEmpty else {
            try prerequisiteMissing("kernel log", "dmesg has no 'Killed process \(hog.pid)' line (kernel log restricted or rotated)")
        }
        XCTAssertEqual(event["total_vm_kib"] as? Int, kernel["total-vm"], "\(ours.stdout)\nkernel: \(kernel)")
        XCTAssertEqual(event["anon_rss_kib"] as? Int, kernel["anon-rss"], "\(ours.stdout)\nkernel: \(kernel)")
        XCTAssertEqual(event["file_rss_kib"] as? Int, kernel["file-rss"], "\(ours.stdout)\nkernel: \(kernel)")
        XCTAssertEqual(event["shmem_rss_kib"] as? Int, kernel["shmem-rss"], "\(ours.stdout)\nkernel: \(kernel)")

        XCTAssertEqual(filtered.stdout, "", "a kill of another process passed the --pid 1 filter")
        XCTAssertTrue(ours.stderr.contains("events 1"), ours.stderr)
        XCTAssertTrue(ours.stderr.contains("events.dropped 0"), ours.stderr)
    }

    func testTextOutputIsOneLinePerKill() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let cgroupName = "tracer-oomkill-text-\(getpid())"
        let cgroup = try limitedMemoryCgroup(named: cgroupName)
        let hog = try BackgroundCommand(try compileC(Self.hog, name: "memhog", in: directory).path, [])
        XCTAssertTrue(hog.waitFor("ready"), hog.stderr)
        try String(hog.pid).write(to: cgroup.appendingPathComponent("cgroup.procs"), atomically: false, encoding: .utf8)
        let ours = try BackgroundCommand(tracerPath, ["tool", "oomkill", "--count", "1", "--pid", String(hog.pid)])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        hog.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertEqual(hog.waitForExit(timeout: 30), SIGKILL, hog.stderr)
        XCTAssertEqual(ours.waitForExit(timeout: 10), 0, ours.stderr)
        let lines = ours.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, ours.stdout)
        let line = try XCTUnwrap(lines.first.map(String.init))
        XCTAssertNotNil(line.range(of: #"^\d\d:\d\d:\d\d oom_kill pid=\#(hog.pid) comm=memhog trigger_pid=\#(hog.pid) trigger_comm=memhog memory_cgroup=\#(cgroupName) "#,
                                   options: .regularExpression), line)
    }

    /// `tracer --kernel-tracers runqlat,oomkill` next to span tracing: the kill is printed with the spans and
    /// exported as a log record, runqlat's histogram and both tracers' counters are OTLP metrics and on
    /// `/metrics`.
    func testTheAgentRunsKernelTracersAndExportsTheirEventsAndHistograms() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let receiverScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Tests/OTLPExportTests/receiver/otlp_receiver.py").path
        let receiver = try BackgroundCommand("/usr/bin/env", ["python3", receiverScript, "--port", "0"])
        guard receiver.waitFor("PORT "), let receiverPort = receiver.stdout.split(separator: " ").last.flatMap({ Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) else {
            try prerequisiteMissing("OTLP receiver", "the OTLP receiver did not start (pip install opentelemetry-proto): \(receiver.stderr)",
                                    requiredBy: "TRACER_REQUIRE_OTLP_RECEIVER")
        }
        addTeardownBlock { receiver.stop(signal: SIGTERM) }
        func received() -> [String: Any] {
            guard let text = try? TestSupport.run("/usr/bin/curl", ["-sf", "-X", "POST", "-d", "{}", "http://127.0.0.1:\(receiverPort)/control/received"]) else { return [:] }
            return (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
        }

        let cgroupName = "tracer-oomkill-agent-\(getpid())"
        let cgroup = try limitedMemoryCgroup(named: cgroupName)
        let hog = try BackgroundCommand(try compileC(Self.hog, name: "memhog", in: directory).path, [])
        XCTAssertTrue(hog.waitFor("ready"), hog.stderr)
        try String(hog.pid).write(to: cgroup.appendingPathComponent("cgroup.procs"), atomically: false, encoding: .utf8)

        let prometheusPort = unusedTCPPort()
        // The hog is selected too: its kill's log record carries its resource, as its spans would.
        let agent = try BackgroundCommand(tracerPath, ["--kernel-tracers", "runqlat,oomkill", "--print", "json", "--otlp-endpoint", "http://127.0.0.1:\(receiverPort)",
                                                       "--prometheus-port", String(prometheusPort), "--pid", String(hog.pid)])
        XCTAssertTrue(agent.waitFor("tracing: "), agent.stderr)
        XCTAssertTrue(agent.stderr.contains("kernel tracer runqlat: hooks: tp_btf"), agent.stderr)
        XCTAssertTrue(agent.stderr.contains("kernel tracer oomkill: hooks: tracepoint oom:mark_victim"), agent.stderr)
        hog.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertEqual(hog.waitForExit(timeout: 30), SIGKILL, hog.stderr)
        XCTAssertTrue(agent.waitFor("\"event\":\"oom_kill\""), agent.stdout)

        var page = ""
        XCTAssertTrue(waitUntil(timeout: 10) {
            page = (try? TestSupport.run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(prometheusPort)/metrics"])) ?? ""
            return page.contains("tracer_runqlat_delay_bucket") && page.contains("tracer_oomkill_events_total")
        }, page)
        XCTAssertEqual(agent.stop(signal: SIGTERM), 0, agent.stderr)
        XCTAssertTrue(agent.stderr.contains("exporting kernel tracer events as log records to http://127.0.0.1:\(receiverPort)/v1/logs"), agent.stderr)

        let printed = jsonLines(agent.stdout).filter { $0["tool"] as? String == "oomkill" }
        XCTAssertEqual(printed.count, 1, agent.stdout)
        XCTAssertEqual(printed.first?["pid"] as? Int, Int(hog.pid), agent.stdout)
        XCTAssertEqual(printed.first?["memory_cgroup"] as? String, cgroupName, agent.stdout)

        let export = received()
        let records = (export["logs"] as? [[String: Any]] ?? []).filter {
            ($0["attributes"] as? [String: Any])?["event.name"] as? String == "tracer.oomkill.oom_kill"
        }
        XCTAssertEqual(records.count, 1, "\(export["logs"] ?? [])")
        let attributes = records.first?["attributes"] as? [String: Any] ?? [:]
        XCTAssertEqual(attributes["process.pid"] as? Int, Int(hog.pid), "\(attributes)")
        XCTAssertEqual(attributes["process.executable.name"] as? String, "memhog", "\(attributes)")
        XCTAssertEqual(attributes["memory_cgroup"] as? String, cgroupName, "\(attributes)")
        XCTAssertGreaterThan(attributes["anon_rss_kib"] as? Int ?? 0, Self.limitBytes / 1024 / 2, "\(attributes)")
        XCTAssertEqual((records.first?["scope"] as? [String: Any])?["name"] as? String, "tracer/kernel")
        let resource = records.first?["resource"] as? [String: Any] ?? [:]
        XCTAssertEqual(resource["service.name"] as? String, "memhog", "the selected process's resource: \(resource)")
        XCTAssertEqual(resource["process.pid"] as? Int, Int(hog.pid), "\(resource)")

        let metrics = export["metrics"] as? [[String: Any]] ?? []
        let delays = metrics.filter { $0["name"] as? String == "tracer.runqlat.delay" }
        let latest = try XCTUnwrap(delays.last, "no tracer.runqlat.delay metric: \(metrics.compactMap { $0["name"] })")
        XCTAssertEqual(latest["type"] as? String, "histogram")
        XCTAssertEqual(latest["unit"] as? String, "us")
        let point = try XCTUnwrap((latest["points"] as? [[String: Any]])?.first)
        XCTAssertEqual((point["explicitBounds"] as? [Double])?.prefix(4), [1, 3, 7, 15])
        XCTAssertEqual((point["bucketCounts"] as? [Any])?.count, 32)
        XCTAssertGreaterThan(point["count"] as? Int ?? 0, 0, "the machine switched tasks while traced: \(point)")
        let kills = metrics.last { $0["name"] as? String == "tracer.oomkill.events.delivered" }
        XCTAssertEqual((kills?["points"] as? [[String: Any]])?.first?["value"] as? Int, 1, "\(kills ?? [:])")
    }
}
