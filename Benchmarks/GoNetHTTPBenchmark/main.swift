import BPFRuntime
import ExecutableInspection
import Foundation
import Synchronization
import Telemetry
import TracerFramework
import Tracers

/// Go net/http tracer overhead (issue 5): a go1.19 hello-world server under `wrk -t1 -c2`, untraced and
/// traced in the same run, alternating; prints throughput, the ratio, agent CPU per 10 000 requests and
/// spans against requests. Run as root: `swift run -c release GoNetHTTPBenchmark [seconds] [rounds] [ring MiB]`
/// (scripts/bench-go-http.sh).

/// Decodes `events` through a fresh tracer `rounds` times, timed in this thread's CPU time; prints the
/// best round per event and per span.
func replay(_ events: [[UInt8]], rounds: Int) {
    let context = DecodeContext(monotonicToUnixOffset: 0, scope: InstrumentationScope(name: "bench")) { _ in .empty }
    var best = Double.infinity
    var spans = 0
    for _ in 0..<rounds {
        let replay = GoNetHTTPTracer()
        spans = 0
        let start = threadCPUNanoseconds()
        for event in events {
            if event.withUnsafeBytes({ replay.decode($0, context: context) }) != nil { spans += 1 }
        }
        best = min(best, Double(threadCPUNanoseconds() - start))
    }
    print("decode only (replay of \(events.count) recorded events, best of \(rounds), thread CPU): \(String(format: "%.0f", best / Double(max(events.count, 1)))) ns per event, \(String(format: "%.0f", best / Double(max(spans, 1)))) ns per span (\(spans) spans)")
}

/// `replay FILE [rounds]`: decoding alone, of events a run saved with GO_NETHTTP_RECORD=FILE (each a
/// 4-byte little-endian length and the bytes); runs under `valgrind --tool=callgrind` to count instructions.
if CommandLine.arguments.dropFirst().first == "replay", CommandLine.arguments.count >= 3 {
    let data = try Data(contentsOf: URL(fileURLWithPath: CommandLine.arguments[2]))
    var events: [[UInt8]] = []
    var offset = 0
    while offset + 4 <= data.count {
        let length = Int(data[offset]) | Int(data[offset + 1]) << 8 | Int(data[offset + 2]) << 16 | Int(data[offset + 3]) << 24
        guard offset + 4 + length <= data.count else { break }
        events.append(Array(data[(offset + 4)..<(offset + 4 + length)]))
        offset += 4 + length
    }
    replay(events, rounds: CommandLine.arguments.dropFirst(3).first.flatMap(Int.init) ?? 5)
    exit(0)
}

let arguments = CommandLine.arguments.dropFirst()
let seconds = arguments.first.flatMap(Int.init) ?? 10
let rounds = arguments.dropFirst().first.flatMap(Int.init) ?? 3
/// The events ring buffer: 64 MiB holds several seconds of this load (~400 bytes per request), so a
/// reader thread starved for a while by other work on a shared machine loses nothing (with 4 and 16 MiB
/// and a load average above 8 it did).
let ringBytes = UInt32(arguments.dropFirst(2).first.flatMap(Int.init) ?? 64) << 20

let helloServer = """
package main

import (
\t"fmt"
\t"net"
\t"net/http"
)

func main() {
\thttp.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("Hello, World!")) })
\tlistener, err := net.Listen("tcp", "127.0.0.1:0")
\tif err != nil {
\t\tpanic(err)
\t}
\tfmt.Println(listener.Addr().(*net.TCPAddr).Port)
\thttp.Serve(listener, nil)
}
"""

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs a command, returns its standard output; throws when it fails.
func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw Failure("\(executable) \(arguments) exited \(process.terminationStatus)") }
    return String(decoding: data, as: UTF8.self)
}

/// This process's user + system CPU time in seconds (the agent: reader thread and decoding).
func threadCPUNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// CPU seconds (user + system) process `pid` has used: fields 14 and 15 of /proc/PID/stat. The BPF
/// programs run in the syscalls of the process that triggers them, so the server's CPU per request
/// includes the tracer's kernel-side cost; unlike throughput it barely depends on other load.
func processCPUSeconds(_ pid: Int32) throws -> Double {
    let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
    guard let close = stat.lastIndex(of: ")") else { throw Failure("unreadable /proc/\(pid)/stat") }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { throw Failure("unreadable /proc/\(pid)/stat") }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// wrk's totals: requests completed and requests per second.
func wrk(port: Int, seconds: Int) throws -> (requests: Int, perSecond: Double) {
    let output = try run("/usr/bin/wrk", ["-t1", "-c2", "-d\(seconds)s", "http://127.0.0.1:\(port)/"])
    var requests = 0
    var perSecond = 0.0
    for line in output.split(separator: "\n") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        if fields.count >= 3, fields[1] == "requests", fields[2] == "in" { requests = Int(fields[0]) ?? 0 }
        if fields.first == "Requests/sec:", fields.count >= 2 { perSecond = Double(fields[1]) ?? 0 }
    }
    guard requests > 0 else { throw Failure("wrk printed no totals:\n\(output)") }
    return (requests, perSecond)
}

let directory = FileManager.default.temporaryDirectory.appendingPathComponent("go-nethttp-bench-\(getpid())")
try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: directory) }
try helloServer.write(to: directory.appendingPathComponent("main.go"), atomically: true, encoding: .utf8)
let binary = directory.appendingPathComponent("hello")
_ = try run("/usr/bin/go", ["build", "-o", binary.path, directory.appendingPathComponent("main.go").path],
            environment: ["GOCACHE": directory.appendingPathComponent("cache").path, "GOPATH": directory.appendingPathComponent("gopath").path])

let server = Process()
server.executableURL = binary
let serverOutput = Pipe()
server.standardOutput = serverOutput
try server.run()
defer { server.terminate() }
var portLine = Data()
while !portLine.contains(UInt8(ascii: "\n")) {
    let chunk = serverOutput.fileHandleForReading.availableData
    if chunk.isEmpty { break }
    portLine.append(chunk)
}
guard let port = Int(String(decoding: portLine, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
    throw Failure("the Go server printed no port")
}
let pid = server.processIdentifier

// Attach the tracer the way the framework does: tracepoints, then the Go function's entry and RET
// offsets as uprobe_multi links; prepare and allow the process; decode every event.
let tracer = GoNetHTTPTracer()
let channel = try EventChannel(.init(transport: .ringBuffer(bytes: ringBytes)))
let path = "/proc/\(pid)/exe"
let executable = try ExecutableInspector().inspect(path: path, queries: tracer.probeTargetQueries)
let process = TracedProcess(pid: pid, snapshot: try ProcessInspection.snapshot(pid: pid), executable: executable, resource: .empty)
guard tracer.applicability(to: process) == .applies else { throw Failure("\(tracer.applicability(to: process))") }
typealias Program = GoNetHTTPTracer.Program
var spec = BPFObjectSpec(tracer.object, programs: [
    Program.goNethttpSysExit, Program.goNethttpRoundTrip, Program.goNethttpRoundTripReturn,
])
spec.uprobeMultiPrograms = [Program.goNethttpRoundTrip, Program.goNethttpRoundTripReturn]
channel.use(in: &spec)
let object = try spec.load()
try tracer.prepare(process, object: object)

let spanCount = Atomic<Int>(0)
/// Longest pause between two batches and largest batch, in the traced rounds (a reader starved by other
/// work on the machine shows here, and as kernel-side drops once the ring is full).
let longestPauseNanoseconds = Atomic<UInt64>(0)
let largestBatchBytes = Atomic<Int>(0)
let lastBatch = Atomic<UInt64>(0)
let context = DecodeContext(monotonicToUnixOffset: 0, scope: InstrumentationScope(name: "bench")) { _ in .empty }
/// Off in the "kernel side only" rounds: events are drained and dropped without decoding, which
/// separates the tracer's cost in the traced process from the agent's decoding competing for the CPUs.
let decoding = Atomic<Bool>(true)
/// The first events of the traced rounds, copied, for the decode-only replay at the end (the agent's
/// user-space cost per request without wrk and the server competing for the CPUs).
let recordLimit = 100_000
let recorded = Mutex<[[UInt8]]>([])
let reader = try channel.startReader { batch in
    guard decoding.load(ordering: .relaxed) else { return }
    let now = DispatchTime.now().uptimeNanoseconds
    let previous = lastBatch.exchange(now, ordering: .relaxed)
    if previous != 0 { longestPauseNanoseconds.max(now - previous, ordering: .relaxed) }
    largestBatchBytes.max(batch.byteCount, ordering: .relaxed)
    recorded.withLock { recorded in
        for event in batch where recorded.count < recordLimit { recorded.append(Array(event)) }
    }
    for event in batch where tracer.decode(event, context: context) != nil {
        spanCount.add(1, ordering: .relaxed)
    }
}

/// Attaches every probe; returns the links (closed to detach).
func attach() throws -> [BPFLink] {
    var links: [BPFLink] = []
    for probe in tracer.probes {
        switch probe {
        case .rawTracepoint(let event, let program):
            links.append(try object.program(program).attachRawTracepoint(event))
        case .function(let symbol, let entry, let returns):
            guard let target = executable.probeTargets.first(where: { $0.symbol == symbol }) else { continue }
            if let entry { links.append(try object.program(entry).attachUprobeMulti(path: path, offsets: [target.fileOffset])) }
            if let returns, !target.returnOffsets.isEmpty {
                links.append(try object.program(returns).attachUprobeMulti(path: path, offsets: target.returnOffsets))
            }
        default:
            throw Failure("unexpected probe \(probe)")
        }
    }
    try channel.allow(pid: pid)
    return links
}

var loadAverage = [Double](repeating: 0, count: 3)
getloadavg(&loadAverage, 3)
print("Go net/http tracer: go1.19 hello-world server (pid \(pid)), wrk -t1 -c2 -d\(seconds)s, \(rounds) round(s), ring \(ringBytes >> 20) MiB, load average \(loadAverage.map { String(format: "%.1f", $0) }.joined(separator: " "))")
_ = try wrk(port: port, seconds: 2)  // warm-up
var untraced: [Double] = []
var traced: [Double] = []
var untracedCPU: [Double] = []
var tracedCPU: [Double] = []
var kernelOnly: [Double] = []
var kernelOnlyCPU: [Double] = []
/// Server CPU per request in microseconds.
func microseconds(_ cpu: Double, _ requests: Int) -> String { String(format: "%.2f", cpu * 1e6 / Double(requests)) }
for round in 1...rounds {
    let plainCPUBefore = try processCPUSeconds(pid)
    let plain = try wrk(port: port, seconds: seconds)
    let plainCPU = try processCPUSeconds(pid) - plainCPUBefore
    untraced.append(plain.perSecond)
    untracedCPU.append(plainCPU * 1e6 / Double(plain.requests))
    print("round \(round) untraced: \(plain.requests) requests, \(String(format: "%.0f", plain.perSecond)) req/s, server CPU \(microseconds(plainCPU, plain.requests)) µs/request")

    let links = try attach()
    spanCount.store(0, ordering: .relaxed)
    longestPauseNanoseconds.store(0, ordering: .relaxed)
    largestBatchBytes.store(0, ordering: .relaxed)
    lastBatch.store(0, ordering: .relaxed)
    let dropsBefore = try channel.kernelDrops()
    let cpuBefore = cpuSeconds()
    let serverCPUBefore = try processCPUSeconds(pid)
    let result = try wrk(port: port, seconds: seconds)
    let serverCPU = try processCPUSeconds(pid) - serverCPUBefore
    tracedCPU.append(serverCPU * 1e6 / Double(result.requests))
    Thread.sleep(forTimeInterval: 0.2)  // let the reader drain
    let cpu = cpuSeconds() - cpuBefore
    try channel.forget(pid: pid)
    for link in links { link.close() }
    traced.append(result.perSecond)

    decoding.store(false, ordering: .relaxed)
    let kernelLinks = try attach()
    let kernelCPUBefore = try processCPUSeconds(pid)
    let kernelResult = try wrk(port: port, seconds: seconds)
    let kernelCPU = try processCPUSeconds(pid) - kernelCPUBefore
    try channel.forget(pid: pid)
    for link in kernelLinks { link.close() }
    Thread.sleep(forTimeInterval: 0.2)
    decoding.store(true, ordering: .relaxed)
    kernelOnly.append(kernelResult.perSecond)
    kernelOnlyCPU.append(kernelCPU * 1e6 / Double(kernelResult.requests))
    print("round \(round) kernel side only (events drained, not decoded): \(kernelResult.requests) requests, \(String(format: "%.0f", kernelResult.perSecond)) req/s, server CPU \(microseconds(kernelCPU, kernelResult.requests)) µs/request")
    let spans = spanCount.load(ordering: .relaxed)
    print("round \(round) traced:   \(result.requests) requests, \(String(format: "%.0f", result.perSecond)) req/s, server CPU \(microseconds(serverCPU, result.requests)) µs/request, "
          + "\(spans) spans (spans − requests = \(spans - result.requests); wrk does not count the ≤ 2 requests in flight at its end), "
          + "agent CPU \(String(format: "%.3f", cpu)) s = \(String(format: "%.1f", cpu * 1000 / Double(max(spans, 1)) * 10_000)) ms per 10 000 requests, "
          + "kernel drops \(try channel.kernelDrops() - dropsBefore), longest reader pause \(longestPauseNanoseconds.load(ordering: .relaxed) / 1_000_000) ms, "
          + "largest batch \(largestBatchBytes.load(ordering: .relaxed) >> 10) KiB")
}
// A separate round with the kernel's BPF run-time statistics on (they add a clock read per run, so they
// stay off while throughput is measured): how often each program ran per request, and for how long.
// The syscall tracepoints run for every process's read/write/close, wrk's included.
do {
    let statistics = try BPFStatistics.enable()
    let links = try attach()
    let before = try object.loadedPrograms.map { try $0.runtimeStatistics() }
    let result = try wrk(port: port, seconds: 3)
    let after = try object.loadedPrograms.map { try $0.runtimeStatistics() }
    try channel.forget(pid: pid)
    for link in links { link.close() }
    _ = statistics
    print("program runs per request (statistics round, \(result.requests) requests, all processes):")
    var totalNanoseconds = 0.0
    for (start, end) in zip(before, after) {
        let runs = Double(end.runCount - start.runCount)
        let nanoseconds = Double(end.runTimeNanoseconds - start.runTimeNanoseconds)
        totalNanoseconds += nanoseconds
        print("  \(end.program.rawValue): \(String(format: "%.2f", runs / Double(result.requests))) runs, \(String(format: "%.0f", runs == 0 ? 0 : nanoseconds / runs)) ns each")
    }
    print("  BPF time per request: \(String(format: "%.0f", totalNanoseconds / Double(result.requests))) ns")
}
reader.stop()

// Decode-only replay: the recorded events through a fresh tracer, timed in this thread's CPU time.
do {
    let events = recorded.withLock { $0 }
    replay(events, rounds: 5)
    if let path = ProcessInfo.processInfo.environment["GO_NETHTTP_RECORD"] {
        var data = Data()
        for event in events {
            withUnsafeBytes(of: UInt32(event.count).littleEndian) { data.append(contentsOf: $0) }
            data.append(contentsOf: event)
        }
        try data.write(to: URL(fileURLWithPath: path))
    }
}

/// The middle value: rounds alternate untraced/traced, and the median resists the bursts of other work
/// on a shared machine better than the mean.
func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
let ratio = median(traced) / median(untraced)
print("throughput ratio traced/untraced (medians): \(String(format: "%.3f", ratio)) (untraced \(untraced.map { String(format: "%.0f", $0) }.joined(separator: ", ")) req/s; traced \(traced.map { String(format: "%.0f", $0) }.joined(separator: ", ")) req/s)")
print("throughput ratio kernel side only/untraced (medians): \(String(format: "%.3f", median(kernelOnly) / median(untraced))) (\(kernelOnly.map { String(format: "%.0f", $0) }.joined(separator: ", ")) req/s); server CPU per request: \(String(format: "%.3f", median(kernelOnlyCPU) / median(untracedCPU)))")
print("server CPU per request traced/untraced (medians): \(String(format: "%.3f", median(tracedCPU) / median(untracedCPU))) (untraced \(untracedCPU.map { String(format: "%.2f", $0) }.joined(separator: ", ")) µs; traced \(tracedCPU.map { String(format: "%.2f", $0) }.joined(separator: ", ")) µs)")
print("kernel-side drops: \(try channel.kernelDrops()); malformed events: \(tracer.counters.malformed); abandoned exchanges: \(tracer.counters.abandoned)")
