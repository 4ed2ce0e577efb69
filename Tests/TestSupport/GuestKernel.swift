import Foundation
import XCTest

/// `scripts/guest/run-in-guest.sh`: boots Debian 12's 6.1 kernel (kprobes, no lockdown, no uprobe_multi)
/// under qemu with software emulation and runs a shell script in it as root. Tests of what this machine's
/// kernel cannot do (kprobes, `bpf_probe_write_user`) run their scenario there.
public let guestHarness = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("scripts/guest/run-in-guest.sh")

/// Guest-kernel tests call this first (`runInGuest` does): it skips with the reason when the harness cannot
/// boot the guest here (no qemu, busybox or cached kernel: `scripts/install-deps.sh` provides them), and
/// fails instead when `TRACER_REQUIRE_GUEST=1` (CI). Returns the harness script.
@discardableResult
public func requireGuestKernel(file: StaticString = #filePath, line: UInt = #line) throws -> URL {
    guard let reason = guestKernelUnavailableReason() else { return guestHarness }
    try skipOrFail(kind: "guest-kernel", reason: reason, requiredBy: "TRACER_REQUIRE_GUEST", file: file, line: line)
}

private func guestKernelUnavailableReason() -> String? {
    guard FileManager.default.isExecutableFile(atPath: guestHarness.path) else { return "\(guestHarness.path) is missing" }
    do {
        try run(guestHarness.path, ["--check"])
        return nil
    } catch let failure as CommandFailed {
        return failure.output.trimmingCharacters(in: .whitespacesAndNewlines)
    } catch {
        return "\(guestHarness.path) --check: \(error)"
    }
}

/// What a script run in the guest did.
public struct GuestRun: Sendable {
    /// The script's exit status; 124 when the harness timed out, 125 when the guest did not start or did
    /// not finish the script (kernel panic).
    public let status: Int32
    /// What the script wrote, stdout and stderr in order.
    public let output: String
    /// The harness's own report: the guest's kernel log, timings, and why it failed when it did.
    public let log: String

    /// The harness's one-line timing summary (initramfs size and build time, boot, qemu run time).
    public var timing: String {
        log.split(separator: "\n").last { $0.hasPrefix("run-in-guest: initramfs") }.map(String.init) ?? "no timing reported"
    }
}

/// Runs `script` (busybox sh, as root, with `arguments` as "$@") in the guest kernel. Each of `files`
/// (absolute paths: executables, data, directories) is copied in at the same path, ELF files with the
/// libraries `ldd` lists — so a test passes `productsDirectory.appendingPathComponent("tracer")` and runs
/// that path in the script. The guest has no network and no disk; its /tmp is empty.
/// Skips (or fails with `TRACER_REQUIRE_GUEST=1`) when the harness cannot run here.
public func runInGuest(
    files: [URL], script: String, arguments: [String] = [], timeout: Int = 300, memoryMiB: Int? = nil,
    kernelArguments: String? = nil, file: StaticString = #filePath, line: UInt = #line
) throws -> GuestRun {
    let harness = try requireGuestKernel(file: file, line: line)
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tracer-guest-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let scriptFile = directory.appendingPathComponent("script.sh")
    try script.write(to: scriptFile, atomically: true, encoding: .utf8)
    let logFile = directory.appendingPathComponent("log")
    _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)

    var options = ["--verbose", "--timeout", "\(timeout)"]
    for file in files { options += ["--file", file.path] }
    if let memoryMiB { options += ["--memory", "\(memoryMiB)"] }
    if let kernelArguments { options += ["--append", kernelArguments] }
    let process = Process()
    process.executableURL = harness
    process.arguments = options + ["--", scriptFile.path] + arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = try FileHandle(forWritingTo: logFile)
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let log = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
    return GuestRun(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self), log: log)
}

/// The path of a shared library the dynamic linker knows by `soname` (`ldconfig -p`): for libraries the
/// agent loads with dlopen (libcapstone), which `ldd` does not list and the guest needs as `files`.
public func sharedLibrary(_ soname: String) throws -> URL {
    let listing = try run("/sbin/ldconfig", ["-p"])
    for line in listing.split(separator: "\n") where line.trimmingCharacters(in: .whitespaces).hasPrefix(soname + " ") {
        if let arrow = line.range(of: "=> ") { return URL(fileURLWithPath: String(line[arrow.upperBound...])) }
    }
    throw CommandFailed(command: "ldconfig -p", status: 0, output: "\(soname) is not installed")
}
