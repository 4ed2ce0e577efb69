import BPFRuntime
import CTracerABI
import Foundation
import Synchronization
import TracerFramework

/// File descriptors per process (fds.bpf.c, the sys_exit tracepoints of open, openat, openat2, creat and
/// close): every interval, one `fd_count` event per traced process with the opens and closes of the
/// interval, its open-FD count (the entries of /proc/PID/fd: every kind of descriptor, sockets and pipes too)
/// and leak suspicion — a count that grew in each of the last N intervals (`--leak-intervals`, default 5).
public struct FDsTracer: KernelTracer {
    public init() {}

    public var name: String { "fds" }
    public var summary: String { "open/close per process, open-FD count every interval, leak suspicion when it only grows (sys_exit open/openat/openat2/creat/close tracepoints)" }
    public var costNotice: String? {
        "cost: syscall tracepoints make every syscall of every process take the kernel's slow syscall path while attached (not only the traced ones)"
    }
    public var object: EmbeddedBPFObject { Tracers.Fds.object }
    public var followsAgentSelection: Bool { true }

    typealias Program = Tracers.Fds.Program

    public var hookSets: [KernelHookSet] {
        func hooks(_ opens: [String]) -> KernelHookSet {
            KernelHookSet("tracepoints syscalls:sys_exit_{\(opens.joined(separator: ",")),close}",
                          opens.map { .tracepoint(category: "syscalls", event: "sys_exit_\($0)", program: Program.fdsOpened) }
                              + [.tracepoint(category: "syscalls", event: "sys_exit_close", program: Program.fdsClosed)])
        }
        // Architectures without the legacy open and creat (asm-generic) get the second set.
        return [hooks(["openat", "openat2", "open", "creat"]), hooks(["openat", "openat2"])]
    }

    public func validate(_ options: KernelTracerOptions) throws {
        guard options.leakIntervals >= 2 else { throw KernelTracerError("\(name): --leak-intervals must be at least 2, not \(options.leakIntervals)") }
    }

    /// `--max-keys`: the processes counted at once (`fds_counts`); further ones are counted as `state.overflow`.
    public func configure(_ spec: inout BPFObjectSpec, options: KernelTracerOptions) {
        spec.mapMaxEntries[Tracers.Fds.Map.fdsCounts] = options.maxKeys
    }

    public func makePoller(options: KernelTracerOptions) -> (any KernelTracerPoller)? {
        FDCountPoller(tracer: name, target: options.pid, leakIntervals: options.leakIntervals, maxProcesses: Int(options.maxKeys))
    }
}

/// Reads `fds_counts` and each counted process's /proc/PID/fd every interval, and keeps for each process
/// how many intervals in a row its open-FD count grew.
final class FDCountPoller: KernelTracerPoller {
    private struct Tracked {
        var counts = fds_counts()
        var openFDs: Int?
        var growingIntervals = 0
    }

    private let tracer: String
    private let target: Int32?
    private let leakIntervals: Int
    private let maxProcesses: Int
    private let state = Mutex<[UInt32: Tracked]>([:])

    init(tracer: String, target: Int32?, leakIntervals: Int, maxProcesses: Int) {
        self.tracer = tracer
        self.target = target
        self.leakIntervals = leakIntervals
        self.maxProcesses = maxProcesses
    }

    func poll(_ object: BPFObject) -> [KernelEvent] {
        guard let map = try? object.map(Tracers.Fds.Map.fdsCounts), let entries = try? map.rawEntries(limit: maxProcesses) else { return [] }
        var current: [UInt32: fds_counts] = [:]
        for entry in entries where entry.key.count == 4 {
            guard let value = entry.values.first, value.count >= MemoryLayout<fds_counts>.size else { continue }
            let pid = entry.key.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            current[pid] = value.withUnsafeBytes { $0.loadUnaligned(as: fds_counts.self) }
        }
        if let target, current[UInt32(target)] == nil { current[UInt32(target)] = fds_counts() }
        return state.withLock { tracked in
            var events: [KernelEvent] = []
            for pid in current.keys.sorted() {
                let counts = current[pid]!
                guard let openFDs = Self.openFDs(of: pid) else {
                    // Gone: forget it (a new process may get its PID).
                    tracked[pid] = nil
                    _ = try? map.delete(pid)
                    continue
                }
                var process = tracked[pid] ?? Tracked()
                if let previous = process.openFDs {
                    process.growingIntervals = openFDs > previous ? process.growingIntervals + 1 : 0
                }
                let last = process.counts
                events.append(KernelEvent(tracer: tracer, name: "fd_count", timeUnixNano: 0, pid: pid, comm: Self.comm(of: pid), fields: [
                    KernelLabel("open_fds", .int(Int64(openFDs))),
                    KernelLabel("opens", .int(Int64(clamping: counts.opens &- last.opens))),
                    KernelLabel("open_errors", .int(Int64(clamping: counts.open_errors &- last.open_errors))),
                    KernelLabel("closes", .int(Int64(clamping: counts.closes &- last.closes))),
                    KernelLabel("close_errors", .int(Int64(clamping: counts.close_errors &- last.close_errors))),
                    KernelLabel("growing_intervals", .int(Int64(process.growingIntervals))),
                    KernelLabel("leak_suspected", .bool(process.growingIntervals >= leakIntervals)),
                ]))
                process.counts = counts
                process.openFDs = openFDs
                tracked[pid] = process
            }
            return events
        }
    }

    /// Entries of /proc/PID/fd, nil when the process is gone.
    static func openFDs(of pid: UInt32) -> Int? {
        guard let directory = opendir("/proc/\(pid)/fd") else { return nil }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let first = withUnsafeBytes(of: entry.pointee.d_name) { $0.first ?? 0 }
            if first != UInt8(ascii: ".") { count += 1 }
        }
        return count
    }

    static func comm(of pid: UInt32) -> String {
        ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .newlines)
    }
}
