import BPFPrograms
import BPFRuntime
import CTracerABI
import Foundation
import Telemetry
import TracerFramework

/// A tracer with one uprobe on `bench_target` of a small program the benchmark compiles.
struct BenchTracer: Tracer {
    var name: String { "bench" }
    var object: EmbeddedBPFObject { BPFPrograms.Selftest.object }
    var probes: [Probe] { [.function(symbol: "bench_target", entry: BPFPrograms.Selftest.Program.selftestUprobe, returns: nil)] }
    var eventTypes: Set<UInt32> { [UInt32(SELFTEST_EVENT_UPROBE)] }
    func applicability(to process: TracedProcess) -> Applicability { .applies }
    func decode(_ event: UnsafeRawBufferPointer, context: DecodeContext) -> Span? { nil }
}

/// Links of this process, counted from /proc/self/fd.
func openLinks() -> Int {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return entries.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)"))?.contains("bpf_link") ?? false }.count
}

func percentile(_ values: [Double], _ fraction: Double) -> Double {
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]
}

/// Exec of a matching program → its probes attached, and exit → its links closed, measured from this
/// process (which runs the agent) by polling the agent's attachment table and its own link descriptors.
/// Baseline: the time the program itself takes from fork to its first instruction in main.
func benchmarkDiscovery() throws {
    print("== discovery: exec of a matching program → probes attached; exit → links detached ==")
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tracer-bench-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let source = directory.appendingPathComponent("bench-target.c")
    let binary = directory.appendingPathComponent("bench-target")
    try """
    #include <stdio.h>
    #include <unistd.h>
    __attribute__((noinline)) int bench_target(int x) { __asm__ volatile("" ::: "memory"); return x + 1; }
    int main(void) { char line[8]; printf("up\\n"); fflush(stdout); if (!fgets(line, sizeof line, stdin)) return 1; return bench_target(0) - 1; }
    """.write(to: source, atomically: true, encoding: .utf8)
    let compiler = Process()
    compiler.executableURL = URL(fileURLWithPath: "/usr/bin/cc")
    compiler.arguments = ["-O1", "-o", binary.path, source.path]
    try compiler.run()
    compiler.waitUntilExit()

    let agent = try Agent(.init(selection: Selection(rules: [SelectionRule(exePath: "*/bench-target")]), tracers: [BenchTracer()],
                                drainInterval: .milliseconds(20)))
    try agent.start()
    defer { agent.stop() }
    var attachTimes: [Double] = [], detachTimes: [Double] = [], startTimes: [Double] = []
    for _ in 0..<40 {
        let process = Process()
        process.executableURL = binary
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        let linksBefore = openLinks()
        let started = ContinuousClock.now
        try process.run()
        var up: Duration?
        while true {
            if up == nil, !output.fileHandleForReading.availableData.isEmpty { up = ContinuousClock.now - started }
            if agent.attachedFiles().contains(where: { $0.users.contains(process.processIdentifier) }) { break }
            if ContinuousClock.now - started > .seconds(5) { throw BPFError("wait for the attach of pid \(process.processIdentifier)", errno: ETIMEDOUT) }
            usleep(200)
        }
        attachTimes.append(milliseconds(ContinuousClock.now - started))
        if let up { startTimes.append(milliseconds(up)) }
        input.fileHandleForWriting.write(Data("go\n".utf8))
        process.waitUntilExit()
        let exited = ContinuousClock.now
        while openLinks() > linksBefore {
            if ContinuousClock.now - exited > .seconds(5) { throw BPFError("wait for the detach of pid \(process.processIdentifier)", errno: ETIMEDOUT) }
            usleep(200)
        }
        detachTimes.append(milliseconds(ContinuousClock.now - exited))
    }
    print("exec → attached: p50 \(format(percentile(attachTimes, 0.5))) ms, p95 \(format(percentile(attachTimes, 0.95))) ms, max \(format(attachTimes.max()!)) ms (target p95 <= 50 ms)")
    if !startTimes.isEmpty {
        print("baseline, exec → the program's first output: p50 \(format(percentile(startTimes, 0.5))) ms")
    }
    print("exit → links closed: p50 \(format(percentile(detachTimes, 0.5))) ms, p95 \(format(percentile(detachTimes, 0.95))) ms, max \(format(detachTimes.max()!)) ms (target <= 100 ms)")
    print("events dropped meanwhile: \(agent.metricsSnapshot.eventsDroppedKernel) in the kernel")
}
