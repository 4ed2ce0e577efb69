import BPFRuntime
import Logging
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

/// `decode [requests] [rounds]`: user space alone — the capture events a Go server makes per request (its
/// request read, net/http's 1-byte background read of the next one, the response write) for 8 keep-alive
/// connections, through the connection tracker, the HTTP/1 parser and the HTTP span builder, as the agent
/// runs them; best round of this thread's CPU time per span. Runs under `valgrind --tool=callgrind` too.
if CommandLine.arguments.dropFirst().first == "decode" {
    let requests = CommandLine.arguments.dropFirst(2).first.flatMap(Int.init) ?? 100_000
    let rounds = CommandLine.arguments.dropFirst(3).first.flatMap(Int.init) ?? 5
    let tuple = CaptureEvents.tuple(local: [127, 0, 0, 1], localPort: 8080, remote: [127, 0, 0, 1], remotePort: 40_000)
    let head = Array("GET /hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n".utf8)
    let response = Array("HTTP/1.1 200 OK\r\nDate: Sun, 06 Dec 2026 04:00:00 GMT\r\nContent-Length: 5\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello".utf8)
    var events: [[UInt8]] = []
    for index in 0..<requests {
        let connection = UInt64(index % 8 + 1), time = UInt64(index) * 1000
        let goid = connection + 100
        if index >= 8 { events.append(CaptureEvents.chunk(connection: connection, pid: 1, goid: 900, direction: .receive, data: Array(head.prefix(1)), timestamp: time)) }
        let rest = index >= 8 ? Array(head.dropFirst()) : head
        events.append(CaptureEvents.chunk(connection: connection, pid: 1, goid: goid, direction: .receive, data: rest, timestamp: time + 10, tuple: tuple))
        events.append(CaptureEvents.chunk(connection: connection, pid: 1, goid: goid, direction: .send, data: response, timestamp: time + 500, tuple: tuple))
    }
    let parser = HTTPTracer().parser!
    let resource = Resource(attributes: [SemanticConventions.serviceName: "bench"])
    let scope = InstrumentationScope(name: "bench")
    var best = Double.infinity, spans = 0
    for _ in 0..<rounds {
        let tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: [parser]) }, countOnly: { _ in })
        var built: [Span] = []
        built.reserveCapacity(requests)
        let start = threadCPUNanoseconds()
        var exchanges: [Exchange] = []
        for event in events {
            event.withUnsafeBytes { tracker.handle($0, into: &exchanges) }
            for case .http(let exchange) in exchanges {
                built.append(HTTPSpans.span(exchange, resource: resource, scope: scope) { $0 })
            }
            exchanges.removeAll(keepingCapacity: true)
        }
        best = min(best, Double(threadCPUNanoseconds() - start))
        spans = built.count
    }
    print("decode only (\(events.count) capture events, \(spans) spans, best of \(rounds), thread CPU): \(String(format: "%.0f", best / Double(max(spans, 1)))) ns per span, \(String(format: "%.0f", best / Double(max(events.count, 1)))) ns per event")
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

// The agent as `tracer --pid` runs it (the capture layer and the tracers the registry has), started for each
// traced round and stopped after it.
func startAgent(_ collector: SpanCollector) throws -> Agent {
    var logger = Logger(label: "bench")
    logger.logLevel = .warning
    let agent = try Agent(.init(selection: Selection(rules: [SelectionRule(pids: [pid])]), tracers: TracerRegistry.all, sinks: [collector],
                                channel: .init(transport: .ringBuffer(bytes: ringBytes)), logger: logger))
    try agent.start()
    agent.settle()
    return agent
}

var loadAverage = [Double](repeating: 0, count: 3)
getloadavg(&loadAverage, 3)
print("Go net/http tracer: go1.19 hello-world server (pid \(pid)), wrk -t1 -c2 -d\(seconds)s, \(rounds) round(s), ring \(ringBytes >> 20) MiB, load average \(loadAverage.map { String(format: "%.1f", $0) }.joined(separator: " "))")
_ = try wrk(port: port, seconds: 2)  // warm-up
var untraced: [Double] = []
var traced: [Double] = []
var untracedCPU: [Double] = []
var tracedCPU: [Double] = []
/// Server CPU per request in microseconds.
func microseconds(_ cpu: Double, _ requests: Int) -> String { String(format: "%.2f", cpu * 1e6 / Double(requests)) }
for round in 1...rounds {
    let plainCPUBefore = try processCPUSeconds(pid)
    let plain = try wrk(port: port, seconds: seconds)
    let plainCPU = try processCPUSeconds(pid) - plainCPUBefore
    untraced.append(plain.perSecond)
    untracedCPU.append(plainCPU * 1e6 / Double(plain.requests))
    print("round \(round) untraced: \(plain.requests) requests, \(String(format: "%.0f", plain.perSecond)) req/s, server CPU \(microseconds(plainCPU, plain.requests)) µs/request")

    let collector = SpanCollector()
    let agent = try startAgent(collector)
    let cpuBefore = cpuSeconds()
    let serverCPUBefore = try processCPUSeconds(pid)
    let result = try wrk(port: port, seconds: seconds)
    let serverCPU = try processCPUSeconds(pid) - serverCPUBefore
    tracedCPU.append(serverCPU * 1e6 / Double(result.requests))
    Thread.sleep(forTimeInterval: 0.2)  // let the reader drain
    let cpu = cpuSeconds() - cpuBefore
    let drops = agent.kernelDrops
    agent.stop()
    traced.append(result.perSecond)
    let spans = collector.count
    print("round \(round) traced:   \(result.requests) requests, \(String(format: "%.0f", result.perSecond)) req/s, server CPU \(microseconds(serverCPU, result.requests)) µs/request, "
          + "\(spans) spans (spans − requests = \(spans - result.requests); wrk does not count the ≤ 2 requests in flight at its end), "
          + "agent CPU \(String(format: "%.3f", cpu)) s = \(String(format: "%.1f", cpu * 1000 / Double(max(spans, 1)) * 10_000)) ms per 10 000 requests "
          + "(\(String(format: "%.0f", cpu * 1e9 / Double(max(spans, 1)))) ns per span), kernel drops \(drops)")
}
// A separate round with the kernel's BPF run-time statistics on (they add a clock read per run, so they
// stay off while throughput is measured): how often each program ran per request, and for how long.
do {
    let statistics = try BPFStatistics.enable()
    let agent = try startAgent(SpanCollector())
    let before = agent.programStatistics()
    let result = try wrk(port: port, seconds: 3)
    let after = agent.programStatistics()
    agent.stop()
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

/// The middle value: rounds alternate untraced/traced, and the median resists the bursts of other work
/// on a shared machine better than the mean.
func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
let ratio = median(traced) / median(untraced)
print("throughput ratio traced/untraced (medians): \(String(format: "%.3f", ratio)) (untraced \(untraced.map { String(format: "%.0f", $0) }.joined(separator: ", ")) req/s; traced \(traced.map { String(format: "%.0f", $0) }.joined(separator: ", ")) req/s)")
print("server CPU per request traced/untraced (medians): \(String(format: "%.3f", median(tracedCPU) / median(untracedCPU))) (untraced \(untracedCPU.map { String(format: "%.2f", $0) }.joined(separator: ", ")) µs; traced \(tracedCPU.map { String(format: "%.2f", $0) }.joined(separator: ", ")) µs)")
