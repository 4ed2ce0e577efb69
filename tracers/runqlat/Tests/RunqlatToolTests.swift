import Foundation
import TestSupport
import TracerFramework
@testable import Tracers
import XCTest

/// `tracer tool runqlat` as a user runs it (the built binary), on CPU contention the test makes: busy
/// threads of one process pinned to one CPU, started only once the tracers are attached, so every switch
/// of theirs happens while both `tracer` and Debian's libbpf-tools `runqlat` (0.26, tp_btf hooks: it runs
/// on this kernel) watch.
final class RunqlatToolTests: XCTestCase {
    /// Threads of one process, all pinned to CPU 0, that spin for the given seconds once a byte arrives on
    /// standard input (so the tracers can attach first). `contend THREADS SECONDS`.
    static let contention = """
        #define _GNU_SOURCE
        #include <pthread.h>
        #include <sched.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <time.h>
        #include <unistd.h>

        static double seconds;
        static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
        static void *spin(void *unused) { double end = now() + seconds; volatile unsigned long n = 0; while (now() < end) n++; return NULL; }

        int main(int argc, char **argv) {
            int threads = atoi(argv[1]);
            seconds = atof(argv[2]);
            cpu_set_t cpus;
            CPU_ZERO(&cpus);
            CPU_SET(0, &cpus);
            if (sched_setaffinity(0, sizeof(cpus), &cpus)) { perror("sched_setaffinity"); return 1; }
            printf("ready\\n");
            fflush(stdout);
            char go;
            if (read(0, &go, 1) != 1) return 1;
            pthread_t thread[64];
            for (int i = 0; i < threads && i < 64; i++) pthread_create(&thread[i], NULL, spin, NULL);
            for (int i = 0; i < threads && i < 64; i++) pthread_join(thread[i], NULL);
            return 0;
        }
        """

    var tracerPath: String { productsDirectory.appendingPathComponent("tracer").path }

    private func contention(in directory: URL) throws -> URL {
        try compileC(Self.contention, name: "contend", in: directory, flags: ["-pthread"])
    }

    private func jsonLines(_ text: String) -> [[String: Any]] {
        text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// Log2 rows of a libbpf-tools histogram (`  low -> high  : count  |***|`): (high, count).
    private func libbpfRows(_ text: String) -> [(high: Int, count: Int)] {
        text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { return nil }
            let range = parts[0].split(separator: "->").map { $0.trimmingCharacters(in: .whitespaces) }
            guard range.count == 2, let high = Int(range[1]),
                  let count = Int(parts[1].split(separator: "|").first?.trimmingCharacters(in: .whitespaces) ?? "") else { return nil }
            return (high, count)
        }
    }

    func testContendedThreadsSwitchesAndDelaysMatchLibbpfToolsRunqlat() throws {
        try requireBPF()
        try requireExecutable("/usr/sbin/runqlat", package: "libbpf-tools")
        let directory = try temporaryDirectory(self)
        let threads = 3
        let contend = try BackgroundCommand(try contention(in: directory).path, [String(threads), "2"])
        XCTAssertTrue(contend.waitFor("ready"), contend.stderr)
        let ours = try BackgroundCommand(tracerPath, ["tool", "runqlat", "--pid", String(contend.pid), "--json"])
        // Line-buffered (stdbuf), so its "Tracing..." line says when it has attached.
        let theirs = try BackgroundCommand("/usr/bin/stdbuf", ["-oL", "/usr/sbin/runqlat", "-p", String(contend.pid)])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        XCTAssertTrue(theirs.waitFor("Hit Ctrl-C"), theirs.stdout + theirs.stderr)
        contend.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertEqual(contend.waitForExit(timeout: 30), 0, contend.stderr)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        XCTAssertEqual(theirs.stop(), 0, theirs.stderr)

        let histogram = try XCTUnwrap(jsonLines(ours.stdout).first, ours.stdout + ours.stderr)
        XCTAssertEqual(histogram["tool"] as? String, "runqlat")
        XCTAssertEqual(histogram["name"] as? String, "tracer.runqlat.delay")
        XCTAssertEqual(histogram["unit"] as? String, "us")
        XCTAssertNotNil(histogram["labels"] as? [String: Any])
        let buckets = try XCTUnwrap(histogram["buckets"] as? [[String: Any]])
        let rows = buckets.map { (high: $0["le"] as? Int ?? -1, count: $0["count"] as? Int ?? -1) }
        XCTAssertEqual(rows.first?.high, 1, "\(rows)")
        let total = rows.reduce(0) { $0 + $1.count }
        XCTAssertEqual(histogram["count"] as? Int, total)
        // 3 threads sharing one CPU for 2 s take turns of a few ms: hundreds of switches-in after a wait,
        // most of them waits of at least a millisecond (a turn of each of the other two threads).
        XCTAssertGreaterThan(total, 100, "\(rows)")
        let slow = rows.filter { $0.high >= 2047 }.reduce(0) { $0 + $1.count }
        XCTAssertGreaterThan(Double(slow), 0.5 * Double(total), "most waits ≥ 1 ms: \(rows)")

        let reference = libbpfRows(theirs.stdout)
        let referenceTotal = reference.reduce(0) { $0 + $1.count }
        let referenceSlow = reference.filter { $0.high >= 2047 }.reduce(0) { $0 + $1.count }
        print("runqlat comparison: tracer \(total) switches-in, \(slow) waits ≥ 1 ms; libbpf-tools \(referenceTotal), \(referenceSlow)")
        XCTAssertGreaterThan(referenceTotal, 100, theirs.stdout)
        // The same switches, seen by two programs on the same hooks: totals within 10 %, the share of
        // waits ≥ 1 ms within 10 points.
        XCTAssertLessThanOrEqual(abs(Double(total - referenceTotal)), 0.1 * Double(referenceTotal), "ours \(rows), libbpf-tools \(reference)")
        XCTAssertLessThanOrEqual(abs(Double(slow) / Double(total) - Double(referenceSlow) / Double(referenceTotal)), 0.1,
                                 "ours \(rows), libbpf-tools \(reference)")
    }

    /// Per-process histograms with room for one key: the second contending process's samples go to the
    /// overflow histogram, which is printed and counted.
    func testKeysPastTheLimitGoToTheCountedOverflowHistogram() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let binary = try contention(in: directory).path
        let first = try BackgroundCommand(binary, ["2", "1"]), second = try BackgroundCommand(binary, ["2", "1"])
        XCTAssertTrue(first.waitFor("ready") && second.waitFor("ready"))
        let ours = try BackgroundCommand(tracerPath, ["tool", "runqlat", "--per-process", "--max-keys", "1", "--json"])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        first.input.fileHandleForWriting.write(Data("g".utf8))
        second.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertEqual(first.waitForExit(timeout: 30), 0)
        XCTAssertEqual(second.waitForExit(timeout: 30), 0)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        let histograms = jsonLines(ours.stdout)
        XCTAssertEqual(histograms.filter { $0["overflow"] == nil }.count, 1, ours.stdout)
        let overflow = try XCTUnwrap(histograms.first { $0["overflow"] as? Bool == true }, ours.stdout)
        XCTAssertGreaterThan(overflow["count"] as? Int ?? 0, 0)
        let counted = ours.stderr.split(separator: "\n").last { $0.contains("histogram.overflow") } ?? ""
        XCTAssertFalse(counted.contains("histogram.overflow 0,"), String(counted))
        XCTAssertTrue(counted.contains("histogram.overflow "), ours.stderr)
    }

    /// `--per-cgroup`: the contending process moved into a cgroup of its own (v2 hierarchy) has a histogram
    /// labelled with that cgroup's path.
    func testPerCgroupHistogramsNameTheCgroupPath() throws {
        try requireBPF()
        guard let mount = Cgroup2.mountPoint() else { try prerequisiteMissing("cgroup2", "no cgroup2 filesystem mounted") }
        let directory = try temporaryDirectory(self)
        let binary = try contention(in: directory).path
        let name = "tracer-runqlat-\(getpid())"
        let cgroup = mount + "/" + name
        try FileManager.default.createDirectory(atPath: cgroup, withIntermediateDirectories: false)
        defer { rmdir(cgroup) }
        let workload = try BackgroundCommand(binary, ["3", "1"])
        XCTAssertTrue(workload.waitFor("ready"))
        try "\(workload.pid)\n".write(toFile: cgroup + "/cgroup.procs", atomically: false, encoding: .utf8)
        let ours = try BackgroundCommand(tracerPath, ["tool", "runqlat", "--per-cgroup", "--json"])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        workload.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertEqual(workload.waitForExit(timeout: 30), 0)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        let histograms = jsonLines(ours.stdout)
        let mine = try XCTUnwrap(histograms.first { ($0["labels"] as? [String: Any])?["cgroup.path"] as? String == "/" + name }, ours.stdout)
        XCTAssertGreaterThan(mine["count"] as? Int ?? 0, 100, "three threads spinning on one CPU for a second switch often")
        XCTAssertGreaterThan(histograms.count, 1, "other cgroups have their own histograms")
        let both = try runProduct("tracer", ["tool", "runqlat", "--per-cgroup", "--per-process", "--count", "1"])
        XCTAssertNotEqual(both.status, 0)
        XCTAssertTrue(both.stderr.contains("--per-process or --per-cgroup, not both"), both.stderr)
    }

    func testUnknownPIDAndToolAreOneLineErrors() throws {
        let missing = try runProduct("tracer", ["tool", "runqlat", "--pid", "999999999"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertEqual(missing.stderr, "tracer tool: runqlat: no process with PID 999999999\n")
        let unknown = try runProduct("tracer", ["tool", "nosuchtool"])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.hasPrefix("Error: unknown tool nosuchtool: one of runqlat"), unknown.stderr)
    }
}
