import ArgumentParser
import Foundation

/// `--enforce-caps`: the agent's capability check at start.
struct CapabilityOptions: ParsableArguments {
    @Flag(name: .customLong("enforce-caps"), help: "Exit with status 3 when a capability the agent needs is missing (default: warn and go on).")
    var enforceCapabilities = false
}

/// Which capabilities the agent needs on this kernel and what stops working without each.
/// Reads the effective set (`CapEff` in /proc/self/status); CAP_SYS_ADMIN stands in for CAP_BPF and
/// CAP_PERFMON (kernels before 5.8 know only CAP_SYS_ADMIN), CAP_CHECKPOINT_RESTORE exists from 5.9.
struct CapabilityCheck {
    struct Requirement: Equatable {
        let name: String
        let bit: UInt64
        /// What stops working without it.
        let consequence: String
    }

    static let sysAdmin = Requirement(name: "CAP_SYS_ADMIN", bit: 21,
        consequence: "no BPF program can be loaded or attached (this kernel predates CAP_BPF/CAP_PERFMON, Linux 5.8)")
    static let modern: [Requirement] = [
        .init(name: "CAP_BPF", bit: 39, consequence: "no BPF program can be loaded and no map created: nothing is traced"),
        .init(name: "CAP_PERFMON", bit: 38, consequence: "uprobes, kprobes and tracepoints cannot be attached: nothing is traced"),
        .init(name: "CAP_SYS_PTRACE", bit: 19,
              consequence: "executables, maps and environments of other users' processes cannot be read: those processes are skipped"),
        .init(name: "CAP_DAC_READ_SEARCH", bit: 2,
              consequence: "files the agent's user cannot read (under /proc/PID/root) cannot be inspected: such processes are skipped"),
    ]
    static let checkpointRestore = Requirement(name: "CAP_CHECKPOINT_RESTORE", bit: 40,
        consequence: "/proc/PID/map_files cannot be opened: shared libraries in other mount namespaces may not be resolved")

    /// The capabilities missing from `effective` on a kernel of version `kernel` (major, minor).
    static func missing(effective: UInt64, kernel: (major: Int, minor: Int)) -> [Requirement] {
        let has = { (requirement: Requirement) in effective & (1 << requirement.bit) != 0 }
        let atLeast = { (major: Int, minor: Int) in kernel.major > major || (kernel.major == major && kernel.minor >= minor) }
        guard atLeast(5, 8) else {
            return ([sysAdmin] + modern.dropFirst(2)).filter { !has($0) }
        }
        var required = modern
        if has(sysAdmin) { required.removeFirst(2) }
        if atLeast(5, 9) { required.append(checkpointRestore) }
        return required.filter { !has($0) }
    }

    /// Prints one line per missing capability on stderr; with `enforce`, exits with status 3 when any is missing.
    static func run(enforce: Bool) throws {
        let absent = missing(effective: effectiveCapabilities(), kernel: kernelVersion())
        for requirement in absent {
            FileHandle.standardError.write(Data("tracer: missing \(requirement.name): \(requirement.consequence)\n".utf8))
        }
        if enforce && !absent.isEmpty {
            FileHandle.standardError.write(Data("tracer: --enforce-caps: \(absent.count) capabilit\(absent.count == 1 ? "y" : "ies") missing, not starting\n".utf8))
            throw ExitCode(3)
        }
    }

    static func effectiveCapabilities() -> UInt64 {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("CapEff:") }
        return line.flatMap { UInt64($0.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16) } ?? 0
    }

    /// Major and minor version from `uname -r` (`6.18.0-1-amd64` → (6, 18)).
    static func kernelVersion() -> (major: Int, minor: Int) {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let numbers = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        return (numbers.first ?? 0, numbers.count > 1 ? numbers[1] : 0)
    }
}
