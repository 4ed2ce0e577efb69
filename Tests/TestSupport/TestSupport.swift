import Foundation
import XCTest

/// Privileged tests call this first: it skips with the reason when this process cannot use BPF, and
/// fails instead when `TRACER_REQUIRE_BPF=1` (CI), so a skip there can never pass silently.
public func requireBPF(file: StaticString = #filePath, line: UInt = #line) throws {
    guard let reason = bpfUnavailableReason() else { return }
    try skipOrFail(kind: "BPF", reason: reason, requiredBy: "TRACER_REQUIRE_BPF", file: file, line: line)
}

/// A test that cannot run here (`kind`: what it needs) skips with the reason printed, or fails when the
/// environment variable `requiredBy` is 1 (CI sets them), so a skip there can never pass silently.
public func skipOrFail(kind: String, reason: String, requiredBy variable: String, file: StaticString = #filePath, line: UInt = #line) throws -> Never {
    if ProcessInfo.processInfo.environment[variable] == "1" {
        XCTFail("\(variable)=1 but \(kind) tests cannot run: \(reason)", file: file, line: line)
        throw PrerequisiteMissing(description: "\(kind) unavailable: \(reason)")
    }
    print("skipping \(kind) test: \(reason)")
    throw XCTSkip(reason, file: file, line: line)
}

/// A prerequisite other than BPF is missing (a program, a toolchain, a helper that did not start): skip with
/// `reason`, or fail when `variable` is 1 (`.ci/run` sets `TRACER_REQUIRE_PREREQUISITES` and
/// `TRACER_REQUIRE_OTLP_RECEIVER`).
public func prerequisiteMissing(_ kind: String, _ reason: String, requiredBy variable: String = "TRACER_REQUIRE_PREREQUISITES",
                                file: StaticString = #filePath, line: UInt = #line) throws -> Never {
    try skipOrFail(kind: kind, reason: reason, requiredBy: variable, file: file, line: line)
}

/// Tests that need a program (a package from scripts/install-deps.sh) call this first: a missing one skips
/// with the reason, or fails when `TRACER_REQUIRE_PREREQUISITES=1` (CI).
public func requireExecutable(_ path: String, package: String, file: StaticString = #filePath, line: UInt = #line) throws {
    guard access(path, X_OK) != 0 else { return }
    try skipOrFail(kind: package, reason: "\(path) is missing (apt-get install \(package), or scripts/install-deps.sh)",
                   requiredBy: "TRACER_REQUIRE_PREREQUISITES", file: file, line: line)
}

struct PrerequisiteMissing: Error, CustomStringConvertible {
    let description: String
}

private func bpfUnavailableReason() -> String? {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let capEff = status.split(separator: "\n").first { $0.hasPrefix("CapEff:") }
        .flatMap { UInt64($0.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16) } ?? 0
    let hasBPF = capEff & (1 << 39) != 0 || capEff & (1 << 21) != 0
    let hasPerfmon = capEff & (1 << 38) != 0 || capEff & (1 << 21) != 0
    if !hasBPF || !hasPerfmon { return "the process lacks CAP_BPF/CAP_PERFMON (run the tests as root)" }
    if !FileManager.default.fileExists(atPath: "/sys/kernel/tracing/events") {
        return "tracefs is not mounted at /sys/kernel/tracing (mount -t tracefs tracefs /sys/kernel/tracing)"
    }
    return nil
}

/// A scratch directory removed when the test case ends.
public func temporaryDirectory(_ testCase: XCTestCase) throws -> URL {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tracer-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    testCase.addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
    return directory
}

/// Runs a command to completion; throws with its output when it fails.
@discardableResult
public func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, input: String? = nil) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    let stdin = Pipe()
    if input != nil { process.standardInput = stdin }
    try process.run()
    if let input {
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
    }
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard process.terminationStatus == 0 else {
        throw CommandFailed(command: ([executable] + arguments).joined(separator: " "), status: process.terminationStatus, output: text)
    }
    return text
}

public struct CommandFailed: Error, CustomStringConvertible {
    public let command: String
    public let status: Int32
    public let output: String
    public var description: String { "\(command) exited \(status): \(output)" }
}

/// Compiles a C program with the system compiler.
public func compileC(_ source: String, name: String, in directory: URL, flags: [String] = []) throws -> URL {
    let sourceFile = directory.appendingPathComponent("\(name).c")
    let binary = directory.appendingPathComponent(name)
    try source.write(to: sourceFile, atomically: true, encoding: .utf8)
    try run("/usr/bin/cc", ["-O1", "-g", "-o", binary.path, sourceFile.path] + flags)
    return binary
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
public func waitUntil(timeout: TimeInterval = 5, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return true }
        usleep(5_000)
    }
    return condition()
}

/// Open file descriptors of this process that are BPF objects of `kind` (`bpf-prog`, `bpf-map`, `bpf_link`,
/// or `perf_event` for perf-event links), to prove that failures release what they created.
public func openBPFDescriptors(_ kind: String) -> Int {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return entries.filter { entry in
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(entry)"))?.contains(kind) ?? false
    }.count
}

/// The directory holding the built products (`tracer` and the test bundle), for tests that run the CLI.
public var productsDirectory: URL {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
}

/// Runs a built product; returns its exit status, standard output and standard error.
public func runProduct(_ name: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = productsDirectory.appendingPathComponent(name)
    process.arguments = arguments
    let stdout = Pipe(), stderr = Pipe()
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    let output = stdout.fileHandleForReading.readDataToEndOfFile()
    let errors = stderr.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: errors, as: UTF8.self))
}

/// The value of counter `name` on the last counters line a `tracer tool` printed to `stderr`
/// (`tracer tool NAME: histogram.overflow 0, state.overflow 3, …`); nil when that line does not name it.
public func toolCounter(_ name: String, in stderr: String) -> UInt64? {
    guard let line = stderr.split(separator: "\n").last(where: { $0.hasPrefix("tracer tool ") && $0.contains(name + " ") }),
          let counters = line.split(separator: ":", maxSplits: 1).last else { return nil }
    let fields = counters.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    return fields.lazy.compactMap { $0.hasPrefix(name + " ") ? UInt64($0.dropFirst(name.count + 1)) : nil }.first
}

/// A loopback TCP port the kernel handed out a moment ago and that nothing listens on now: servers the
/// tests start bind it, instead of a port derived from the pid that another test's socket may still hold.
public func unusedTCPPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    precondition(bound, "binding 127.0.0.1:0 failed: errno \(errno)")
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port` now (a server the test started is ready).
public func acceptsTCPConnections(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } == 0
    }
}
