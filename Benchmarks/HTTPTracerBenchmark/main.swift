import BPFRuntime
import Logging
import CTracerABI
import ExecutableInspection
import Foundation
import Synchronization
import Telemetry
import TracerFramework
import Tracers

/// Cost of the HTTP tracer (issue 6), side by side with its baseline in one run. Run as root:
///   swift run -c release HTTPTracerBenchmark [--seconds N] [--rounds N] [--nginx] [--syscall-tracepoints]
/// 1. A Python `http.server` (or nginx with --nginx) under `wrk -t1 -c4`: untraced and traced rounds
///    alternate; medians and their ratio are printed, with spans counted against wrk's requests.
/// 2. A process that is NOT selected makes syscalls in tight loops (getppid, which no hook sees; read/write of
///    /dev/zero and /dev/null; send/recv over TCP loopback) with and without the tracer's programs attached,
///    9 alternating rounds, fastest round of each: the price every other process on the machine pays.

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted[sorted.count / 2]
}

/// The fastest of several rounds: on a shared, noisy machine the least disturbed round is the best
/// estimate of a syscall's own cost.
func best(_ values: [Double]) -> Double { values.min() ?? 0 }

func format(_ value: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", value) }

struct Failure: Error, CustomStringConvertible {
    let description: String
}

var seconds = 5
var rounds = 3
var useNginx = false
var syscallsOnly = false
var hooks: CaptureHooks? = nil
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--seconds": seconds = Int(arguments.popFirst() ?? "") ?? seconds
    case "--rounds": rounds = Int(arguments.popFirst() ?? "") ?? rounds
    case "--nginx": useNginx = true
    case "--syscalls-only": syscallsOnly = true
    case "--syscall-tracepoints": hooks = .syscallTracepoints
    default: print("unknown argument \(argument)"); exit(2)
    }
}

final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    func add(_ n: Int) { value.add(n, ordering: .relaxed) }
    func load() -> Int { value.load(ordering: .relaxed) }
}

/// The agent as `tracer --pid` runs it, started by `attach(pids:)` (the capture layer's hooks attach with
/// the first selected process) and stopped by `detach()`; spans are counted.
final class AttachedTracer {
    let hooks: CaptureHooks?
    private(set) var agent: Agent?
    private var collector = SpanCollector()
    private var counted = 0

    init(hooks: CaptureHooks?) { self.hooks = hooks }

    var spans: Int { counted + collector.count }

    func attach(pids: [Int32]) throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let agent = try Agent(.init(selection: Selection(rules: [SelectionRule(pids: pids)]), tracers: TracerRegistry.all,
                                    sinks: [collector], logger: logger, captureHooks: hooks))
        try agent.start()
        agent.settle()
        self.agent = agent
    }

    func detach() {
        agent?.stop()
        agent = nil
        counted += collector.count
        collector = SpanCollector()
    }
}

/// Runs a command, returns its standard output.
func output(of executable: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}

/// `wrk` for `seconds`: (requests per second, total requests).
@MainActor func wrk(_ url: String) throws -> (rate: Double, requests: Int) {
    let text = try output(of: "/usr/bin/wrk", ["-t1", "-c4", "-d\(seconds)s", url])
    let lines = text.split(separator: "\n")
    guard let rateLine = lines.first(where: { $0.hasPrefix("Requests/sec:") }),
          let rate = Double(rateLine.split(separator: " ").last ?? ""),
          let totalLine = lines.first(where: { $0.contains("requests in") }),
          let total = Int(totalLine.split(separator: " ").first ?? "")
    else { throw Failure(description: "cannot read wrk's output: \(text)") }
    return (rate, total)
}

/// The server under load: a keep-alive Python http.server, or nginx serving a small file.
@MainActor func startServer(directory: URL) throws -> (process: Process, url: String) {
    let process = Process()
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice // wrk resets its connections at the end: no tracebacks
    if useNginx {
        let port = 18_080
        let config = directory.appendingPathComponent("nginx.conf")
        try """
        daemon off; master_process off; worker_processes 1; pid \(directory.path)/nginx.pid;
        error_log \(directory.path)/error.log;
        events { worker_connections 256; }
        http { access_log off; server { listen 127.0.0.1:\(port); root \(directory.path); } }
        """.write(to: config, atomically: true, encoding: .utf8)
        try "hello\n".write(to: directory.appendingPathComponent("hello"), atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/nginx")
        process.arguments = ["-c", config.path, "-p", directory.path]
        try process.run()
        usleep(500_000)
        return (process, "http://127.0.0.1:\(port)/hello")
    }
    let script = directory.appendingPathComponent("server.py")
    try #"""
    import http.server, socketserver
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stalls
        def log_message(self, *args):
            pass
        def do_GET(self):
            body = b"hello\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """#.write(to: script, atomically: true, encoding: .utf8)
    process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    process.arguments = [script.path]
    try process.run()
    var line = [UInt8]()
    while true {
        let byte = pipe.fileHandleForReading.readData(ofLength: 1)
        guard let c = byte.first, c != UInt8(ascii: "\n") else { break }
        line.append(c)
    }
    guard let port = Int(String(decoding: line, as: UTF8.self)) else { throw Failure(description: "the server printed no port") }
    return (process, "http://127.0.0.1:\(port)/hello")
}

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// Nanoseconds per getppid(2) (a syscall the tracer does not hook) for `count` calls.
func unhookedLoop(count: Int) -> Double {
    let start = ContinuousClock.now
    for _ in 0..<count { _ = getppid() }
    let elapsed = ContinuousClock.now - start
    return (Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9) / Double(count)
}

/// Nanoseconds per syscall for `count` read(2)s of /dev/zero and write(2)s to /dev/null from this
/// (unselected) process.
func syscallLoop(count: Int) -> Double {
    let zero = open("/dev/zero", O_RDONLY), null = open("/dev/null", O_WRONLY)
    defer { close(zero); close(null) }
    var buffer = [UInt8](repeating: 0, count: 64)
    let start = ContinuousClock.now
    buffer.withUnsafeMutableBytes { bytes in
        for _ in 0..<(count / 2) {
            _ = read(zero, bytes.baseAddress, 64)
            _ = write(null, bytes.baseAddress, 64)
        }
    }
    let elapsed = ContinuousClock.now - start
    return (Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9) / Double(count)
}

/// A connected TCP pair on 127.0.0.1 (client, accepted server side).
func loopbackPair() throws -> (Int32, Int32) {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(listener) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    try withUnsafeMutablePointer(to: &address) { pointer in
        try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
            guard bind(listener, raw, length) == 0, listen(listener, 1) == 0, getsockname(listener, raw, &length) == 0
            else { throw Failure(description: "loopback listener: errno \(errno)") }
        }
    }
    let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    try withUnsafePointer(to: &address) { pointer in
        try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
            guard connect(client, raw, length) == 0 else { throw Failure(description: "loopback connect: errno \(errno)") }
        }
    }
    let server = accept(listener, nil, nil)
    guard server >= 0 else { throw Failure(description: "loopback accept: errno \(errno)") }
    return (client, server)
}

/// Nanoseconds per syscall for `count` send(2)/recv(2) of 64 bytes over a TCP loopback connection.
func socketLoop(count: Int, pair: (Int32, Int32)) -> Double {
    var buffer = [UInt8](repeating: 0x41, count: 64)
    let start = ContinuousClock.now
    buffer.withUnsafeMutableBytes { bytes in
        for _ in 0..<(count / 2) {
            _ = send(pair.0, bytes.baseAddress, 64, 0)
            _ = recv(pair.1, bytes.baseAddress, 64, 0)
        }
    }
    let elapsed = ContinuousClock.now - start
    return (Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9) / Double(count)
}

let directory = FileManager.default.temporaryDirectory.appendingPathComponent("http-bench-\(getpid())")
try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: directory) }
let tracer = AttachedTracer(hooks: hooks)
let (server, url) = try startServer(directory: directory)
defer { server.terminate(); server.waitUntilExit() }

if !syscallsOnly {
print("HTTP tracer benchmark: \(useNginx ? "nginx" : "python3 http.server") at \(url), wrk -t1 -c4 -d\(seconds)s, \(rounds) rounds each")
_ = try wrk(url) // warm-up
var untraced: [Double] = [], traced: [Double] = []
var tracedRequests = 0, spansBefore = 0, cpuTraced = 0.0
for round in 1...rounds {
    let plain = try wrk(url)
    untraced.append(plain.rate)
    try tracer.attach(pids: [server.processIdentifier])
    if round == 1 { print("hooks: \(tracer.agent!.captureHooks.description)") }
    spansBefore = tracer.spans
    let cpuBefore = cpuSeconds()
    let withTracer = try wrk(url)
    usleep(300_000) // the reader drains every 20 ms; wrk's last connections close after it returns
    tracer.detach()
    cpuTraced += cpuSeconds() - cpuBefore
    traced.append(withTracer.rate)
    tracedRequests += withTracer.requests
    spansBefore = tracer.spans - spansBefore
    print("  round \(round): untraced \(format(plain.rate, 0)) req/s, traced \(format(withTracer.rate, 0)) req/s, spans \(spansBefore) for \(withTracer.requests) requests")
}
let ratio = median(traced) / median(untraced)
print("throughput: untraced median \(format(median(untraced), 0)) req/s, traced median \(format(median(traced), 0)) req/s, ratio \(format(ratio, 3)) (target >= 0.95)")
print("spans: \(tracer.spans) for \(tracedRequests) traced requests")
print("agent CPU (reader + decode, this process): \(format(cpuTraced / Double(max(tracedRequests, 1)) * 10_000 * 1000, 1)) ms per 10 000 traced requests")

}

// An unselected process while the agent traces the server: the capture hooks are attached (they attach with
// the first selected process), and tracer_pid_allowed() says no to this one.
let calls = 4_000_000
_ = syscallLoop(count: calls / 4)
let pair = try loopbackPair()
var bare: [Double] = [], attached: [Double] = [], unhookedBare: [Double] = [], unhookedAttached: [Double] = []
var socketBare: [Double] = [], socketAttached: [Double] = []
for _ in 0..<9 {
    bare.append(syscallLoop(count: calls))
    unhookedBare.append(unhookedLoop(count: calls))
    socketBare.append(socketLoop(count: calls / 4, pair: pair))
    try tracer.attach(pids: [server.processIdentifier])
    attached.append(syscallLoop(count: calls))
    unhookedAttached.append(unhookedLoop(count: calls))
    socketAttached.append(socketLoop(count: calls / 4, pair: pair))
    tracer.detach()
}
do {
    let statistics = try BPFStatistics.enable()
    try tracer.attach(pids: [server.processIdentifier])
    let before = tracer.agent!.programStatistics()
    _ = syscallLoop(count: calls)
    _ = socketLoop(count: calls / 4, pair: pair)
    for (start, end) in zip(before, tracer.agent!.programStatistics()) where end.runCount > start.runCount {
        let runs = Double(end.runCount - start.runCount)
        print("  \(end.program): \(Int(runs)) runs, \(format(Double(end.runTimeNanoseconds - start.runTimeNanoseconds) / runs, 1)) ns per run (BPF run time only)")
    }
    tracer.detach()
    withExtendedLifetime(statistics) {}
}
let slowdown = best(attached) / best(bare) - 1
let unhookedSlowdown = best(unhookedAttached) / best(unhookedBare) - 1
print("unselected process, getppid loop (not hooked): \(format(best(unhookedBare), 1)) ns/syscall bare, \(format(best(unhookedAttached), 1)) ns/syscall attached: \(format(unhookedSlowdown * 100, 1)) % slower")
let socketSlowdown = best(socketAttached) / best(socketBare) - 1
print("unselected process, TCP loopback send+recv loop: \(format(best(socketBare), 1)) ns/syscall bare, \(format(best(socketAttached), 1)) ns/syscall attached: \(format(socketSlowdown * 100, 1)) % slower")
print("unselected process, read+write loop: \(format(best(bare), 1)) ns/syscall bare, \(format(best(attached), 1)) ns/syscall with the programs attached: \(format(slowdown * 100, 1)) % slower (target <= 3 %)")
tracer.detach()
