import Foundation
import TestSupport
import XCTest

/// `tracer tool biolatency` as a user runs it (the built binary), on block I/O the test makes on a loop
/// device of its own (a file on this machine's disk, `losetup --direct-io=on`): 2000 direct 4 KiB writes
/// then 2000 direct 4 KiB reads with `dd`, started only once both `tracer` and Debian's libbpf-tools
/// `biolatency` (0.26, tp_btf hooks: it runs on this kernel) have attached. Per-disk histograms keep the
/// other I/O of the machine out of the comparison: only the loop device's histograms are compared.
final class BiolatencyToolTests: XCTestCase {
    static let requests = 2000

    var tracerPath: String { productsDirectory.appendingPathComponent("tracer").path }

    /// A 64 MiB file attached as a loop device doing direct I/O on it, with I/O scheduler `scheduler`;
    /// detached when the test ends.
    private func loopDevice(in directory: URL, scheduler: String = "none") throws -> (path: String, name: String) {
        try requireExecutable("/sbin/losetup", package: "mount")
        let file = directory.appendingPathComponent("disk.img")
        XCTAssertTrue(FileManager.default.createFile(atPath: file.path, contents: nil))
        try FileHandle(forWritingTo: file).truncate(atOffset: 64 << 20)
        let path: String
        do {
            path = try TestSupport.run("/sbin/losetup", ["--find", "--show", "--direct-io=on", file.path]).trimmingCharacters(in: .whitespacesAndNewlines)
        } catch {
            try prerequisiteMissing("loop device", "losetup failed: \(error)")
        }
        let name = URL(fileURLWithPath: path).lastPathComponent
        // A loop device keeps its I/O scheduler across detach and attach: set it, and put back `none`.
        let schedulerFile = URL(fileURLWithPath: "/sys/block/\(name)/queue/scheduler")
        addTeardownBlock {
            try? Data("none".utf8).write(to: schedulerFile)
            _ = try? TestSupport.run("/sbin/losetup", ["--detach", path])
        }
        try Data(scheduler.utf8).write(to: schedulerFile)
        return (path, name)
    }

    /// 2000 direct 4 KiB writes, then 2000 direct 4 KiB reads, on `device`.
    private func directWritesThenReads(_ device: String) throws {
        try TestSupport.run("/usr/bin/dd", ["if=/dev/zero", "of=\(device)", "bs=4k", "count=\(Self.requests)", "oflag=direct"])
        try TestSupport.run("/usr/bin/dd", ["if=\(device)", "of=/dev/null", "bs=4k", "count=\(Self.requests)", "iflag=direct"])
    }

    private func jsonLines(_ text: String) -> [[String: Any]] {
        text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// Our histograms of disk `name`, by `disk.io.direction`: upper bound of each log2 slot → count.
    private func ourHistograms(_ output: String, disk name: String) -> [String: [Int: Int]] {
        var result: [String: [Int: Int]] = [:]
        for histogram in jsonLines(output) where histogram["overflow"] == nil {
            guard let labels = histogram["labels"] as? [String: Any], labels["system.device"] as? String == name,
                  let direction = labels["disk.io.direction"] as? String, let buckets = histogram["buckets"] as? [[String: Any]] else { continue }
            for bucket in buckets {
                result[direction, default: [:]][bucket["le"] as? Int ?? -1, default: 0] += bucket["count"] as? Int ?? 0
            }
        }
        return result
    }

    /// The histogram libbpf-tools `biolatency -D` printed under `disk = NAME`: upper bound → count.
    private func libbpfHistogram(_ text: String, disk name: String) -> [Int: Int] {
        var rows: [Int: Int] = [:]
        var inDisk = false
        for line in text.split(separator: "\n") {
            if line.hasPrefix("disk = ") {
                inDisk = line.dropFirst("disk = ".count).trimmingCharacters(in: .whitespaces) == name
                continue
            }
            guard inDisk else { continue }
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let range = parts[0].split(separator: "->").map { $0.trimmingCharacters(in: .whitespaces) }
            guard range.count == 2, let high = Int(range[1]),
                  let count = Int(parts[1].split(separator: "|").first?.trimmingCharacters(in: .whitespaces) ?? "") else { continue }
            rows[high, default: 0] += count
        }
        return rows
    }

    private func merged(_ histograms: [[Int: Int]]) -> [Int: Int] {
        histograms.reduce(into: [:]) { total, histogram in total.merge(histogram, uniquingKeysWith: +) }
    }

    private func total(_ histogram: [Int: Int]) -> Int { histogram.values.reduce(0, +) }

    /// Samples that would have to move between buckets to turn one histogram into the other.
    private func moved(_ ours: [Int: Int], _ theirs: [Int: Int]) -> Int {
        Set(ours.keys).union(theirs.keys).reduce(0) { $0 + abs((ours[$1] ?? 0) - (theirs[$1] ?? 0)) } / 2
    }

    /// What one traced workload produced: the loop device, each tool's output, the reads and writes
    /// the kernel completed on the device meanwhile (`/sys/block/NAME/stat`, fields 1 and 5), and the runs
    /// of our hooks the kernel skipped (`hooks.missed`: the program already ran on that CPU, any disk).
    struct Run {
        let disk: String
        let ours: String
        let theirs: String
        let completedReads: Int
        let completedWrites: Int
        let missed: Int
    }

    /// Reads and writes completed on disk `name` so far (`/sys/block/NAME/stat`, fields 1 and 5).
    private func completedRequests(_ name: String) throws -> (reads: Int, writes: Int) {
        let fields = try String(contentsOfFile: "/sys/block/\(name)/stat", encoding: .utf8).split(separator: " ").compactMap { Int($0) }
        XCTAssertGreaterThanOrEqual(fields.count, 5)
        return (fields[0], fields[4])
    }

    /// Runs the workload on a fresh loop device while `tracer tool biolatency --per-disk --json` with
    /// `ourArguments` and libbpf-tools `biolatency -D` with `theirArguments` watch; returns both outputs.
    private func traceWorkload(ourArguments: [String], theirArguments: [String], scheduler: String = "none")
        throws -> Run {
        try requireBPF()
        try requireExecutable("/usr/sbin/biolatency", package: "libbpf-tools")
        let loop = try loopDevice(in: try temporaryDirectory(self), scheduler: scheduler)
        let ours = try BackgroundCommand(tracerPath, ["tool", "biolatency", "--per-disk", "--json"] + ourArguments)
        // Line-buffered (stdbuf), so its "Tracing..." line says when it has attached.
        let theirs = try BackgroundCommand("/usr/bin/stdbuf", ["-oL", "/usr/sbin/biolatency", "-D"] + theirArguments)
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        XCTAssertTrue(theirs.waitFor("Hit Ctrl-C"), theirs.stdout + theirs.stderr)
        let before = try completedRequests(loop.name)
        try directWritesThenReads(loop.path)
        let after = try completedRequests(loop.name)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        XCTAssertEqual(theirs.stop(), 0, theirs.stderr)
        XCTAssertTrue(ours.stderr.contains("hooks: tp_btf block_rq_insert, block_rq_issue, block_rq_complete"), ours.stderr)
        XCTAssertEqual(toolCounter("state.overflow", in: ours.stderr), 0, ours.stderr)
        let missed = try XCTUnwrap(toolCounter("hooks.missed", in: ours.stderr), ours.stderr)
        return Run(disk: loop.name, ours: ours.stdout, theirs: theirs.stdout,
                   completedReads: after.reads - before.reads, completedWrites: after.writes - before.writes, missed: Int(missed))
    }

    /// Checks the loop device's histograms against the workload: the kernel completed 2000 writes and at
    /// least 2000 reads (udev may probe the device); ours count none more, and each at most 0.5 % fewer
    /// besides what the same hooks cost libbpf-tools (its shortfall against the kernel's count: a few runs in
    /// twenty, on a loaded machine, lost 1 to 6 reads, once in CI 32, from both tools' histograms alike, with
    /// no hook run skipped) and the hook runs the kernel skipped for us (`hooks.missed`). Against libbpf-tools'
    /// histogram: totals within 1 %, at most 5 % of the samples in another bucket (the two programs read the
    /// clock a few hundred nanoseconds apart, which moves the samples lying that close to a bucket boundary;
    /// up to 66 of 4000 seen when the latencies crowd around 32 µs). Returns our histograms.
    @discardableResult
    private func compare(_ run: Run, label: String) throws -> [String: [Int: Int]] {
        XCTAssertEqual(run.completedWrites, Self.requests)
        XCTAssertGreaterThanOrEqual(run.completedReads, Self.requests)
        let ours = ourHistograms(run.ours, disk: run.disk)
        let writes = try XCTUnwrap(ours["write"], run.ours), reads = try XCTUnwrap(ours["read"], run.ours)
        let allOurs = merged(Array(ours.values)), theirs = libbpfHistogram(run.theirs, disk: run.disk)
        let (ourTotal, theirTotal) = (total(allOurs), total(theirs))
        let theirShortfall = max(0, run.completedReads + run.completedWrites - theirTotal)
        print("biolatency comparison (\(label)) on \(run.disk): kernel \(run.completedReads + run.completedWrites) requests, hooks.missed \(run.missed), "
              + "tracer \(ourTotal) \(allOurs.filter { $0.value > 0 }.sorted { $0.key < $1.key }), "
              + "libbpf-tools \(theirTotal) \(theirs.filter { $0.value > 0 }.sorted { $0.key < $1.key }), \(moved(allOurs, theirs)) in another bucket")
        for (histogram, completed) in [(writes, run.completedWrites), (reads, run.completedReads)] {
            let message = "kernel: \(completed); ours \(histogram); hooks.missed \(run.missed); libbpf-tools short by \(theirShortfall)"
            XCTAssertLessThanOrEqual(total(histogram), completed, message)
            XCTAssertGreaterThanOrEqual(Double(total(histogram)), 0.995 * Double(completed) - Double(run.missed + theirShortfall), message)
        }
        XCTAssertTrue(writes.keys.allSatisfy { $0 > 0 && ($0 + 1) & $0 == 0 }, "log2 upper bounds 2^n − 1: \(writes)")
        // The reference itself saw nearly all of the workload.
        XCTAssertGreaterThanOrEqual(Double(theirTotal), 0.98 * Double(2 * Self.requests), run.theirs)
        XCTAssertLessThanOrEqual(abs(Double(ourTotal - theirTotal)), 0.01 * Double(theirTotal), "ours \(allOurs), libbpf-tools \(theirs)\n\(run.theirs)")
        XCTAssertLessThanOrEqual(Double(moved(allOurs, theirs)), 0.05 * Double(theirTotal), "ours \(allOurs), libbpf-tools \(theirs)")
        return ours
    }

    func testDirectIOOnALoopDeviceMatchesLibbpfToolsBiolatency() throws {
        try compare(try traceWorkload(ourArguments: [], theirArguments: []), label: "device time")
    }

    /// With an I/O scheduler on the loop device requests are inserted into its queue before they are issued:
    /// `--queued` measures from the insert, like `biolatency -Q`. (The queue wait of these one-at-a-time
    /// requests is about 1 µs, within the noise of a comparison with a second tracer's device time, so
    /// what this checks is agreement with `biolatency -Q` on the same requests.)
    func testQueuedTimeMatchesLibbpfToolsQueuedTime() throws {
        try compare(try traceWorkload(ourArguments: ["--queued"], theirArguments: ["-Q"], scheduler: "mq-deadline"), label: "queued")
    }

    /// `--disk NAME` (`biolatency -d`): only the loop device's requests, although the loop device's own
    /// direct I/O on its backing file reaches this machine's disk as as many requests again.
    func testDiskFilterKeepsOnlyThatDisksRequests() throws {
        try requireBPF()
        let loop = try loopDevice(in: try temporaryDirectory(self))
        let ours = try BackgroundCommand(tracerPath, ["tool", "biolatency", "--disk", loop.name, "--json"])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        let before = try completedRequests(loop.name)
        try directWritesThenReads(loop.path)
        let after = try completedRequests(loop.name)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        let histograms = jsonLines(ours.stdout)
        var counts: [String: Int] = [:]
        for histogram in histograms {
            let labels = try XCTUnwrap(histogram["labels"] as? [String: Any], ours.stdout)
            XCTAssertNil(labels["system.device"], "one histogram per direction for the selected disk: \(labels)")
            counts[labels["disk.io.direction"] as? String ?? "?", default: 0] += histogram["count"] as? Int ?? 0
        }
        XCTAssertEqual(Set(counts.keys), ["read", "write"], ours.stdout)
        let missed = try XCTUnwrap(toolCounter("hooks.missed", in: ours.stderr), ours.stderr)
        for (direction, completed) in [("write", after.writes - before.writes), ("read", after.reads - before.reads)] {
            let seen = counts[direction] ?? 0
            XCTAssertLessThanOrEqual(seen, completed, "\(direction): kernel \(completed), ours \(seen)")
            XCTAssertGreaterThanOrEqual(Double(seen), 0.995 * Double(completed) - Double(missed),
                                        "\(direction): kernel \(completed), ours \(seen), hooks.missed \(missed)")
        }
    }

    /// Per-disk histograms with room for one key: the loop device's writes and reads are two keys, so the
    /// samples of the second go to the overflow histogram, which is printed and counted.
    func testKeysPastTheLimitGoToTheCountedOverflowHistogram() throws {
        try requireBPF()
        let loop = try loopDevice(in: try temporaryDirectory(self))
        let ours = try BackgroundCommand(tracerPath, ["tool", "biolatency", "--per-disk", "--max-keys", "1", "--json"])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        try directWritesThenReads(loop.path)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        let histograms = jsonLines(ours.stdout)
        XCTAssertEqual(histograms.filter { $0["overflow"] == nil }.count, 1, ours.stdout)
        let overflow = try XCTUnwrap(histograms.first { $0["overflow"] as? Bool == true }, ours.stdout)
        XCTAssertGreaterThan(overflow["count"] as? Int ?? 0, 0)
        let counted = ours.stderr.split(separator: "\n").last { $0.contains("histogram.overflow") } ?? ""
        XCTAssertTrue(counted.contains("histogram.overflow "), ours.stderr)
        XCTAssertFalse(counted.contains("histogram.overflow 0,"), String(counted))
    }

    func testPIDPerProcessAndUnknownDiskAreOneLineErrors() throws {
        let pid = try runProduct("tracer", ["tool", "biolatency", "--pid", "1"])
        XCTAssertEqual(pid.status, 1)
        XCTAssertEqual(pid.stderr, "tracer tool: biolatency: --pid is not supported: block I/O completes in interrupt context, not in the process that asked for it\n")
        let perProcess = try runProduct("tracer", ["tool", "biolatency", "--per-process"])
        XCTAssertEqual(perProcess.status, 1)
        XCTAssertEqual(perProcess.stderr, "tracer tool: biolatency: --per-process is not supported (use --per-disk): block I/O completes in interrupt context\n")
        let disk = try runProduct("tracer", ["tool", "biolatency", "--disk", "nosuchdisk"])
        XCTAssertEqual(disk.status, 1)
        XCTAssertEqual(disk.stderr, "tracer tool: biolatency: no disk named nosuchdisk (see /sys/class/block)\n")
    }
}
