import BPFRuntime
import CTracerABI
import Foundation
import TracerFramework

/// Syscall latency of selected processes (syscalls.bpf.c, sys_enter/sys_exit): a log2 histogram of
/// nanoseconds per syscall (`syscall.name`), and per syscall and errno (`error.type`) for the failed calls
/// (their count is the error count), for one process (`--pid`) or the agent's selection — never for the
/// whole machine — optionally per process (`--per-process`).
public struct SyscallsTracer: KernelTracer {
    public init() {}

    public var name: String { "syscalls" }
    public var summary: String { "per-syscall latency histograms and error counts of selected processes only (--pid; sys_enter/sys_exit)" }
    public var costNotice: String? {
        "cost: sys_enter/sys_exit make every syscall of every process on the machine take the kernel's slow syscall path while attached (an unselected tight syscall loop ran about 2x slower here), and the traced processes pay two BPF programs and two map updates per syscall"
    }
    public var object: EmbeddedBPFObject { Tracers.Syscalls.object }
    public var followsAgentSelection: Bool { true }
    public var requiresProcessSelection: Bool { true }

    typealias Program = Tracers.Syscalls.Program
    typealias Map = Tracers.Syscalls.Map

    public var hookSets: [KernelHookSet] {
        [
            KernelHookSet("tp_btf sys_enter, sys_exit", [.btf(program: Program.syscallsEnterBtf), .btf(program: Program.syscallsExitBtf)]),
            KernelHookSet("raw_tp sys_enter, sys_exit", [
                .rawTracepoint(event: "sys_enter", program: Program.syscallsEnterRaw),
                .rawTracepoint(event: "sys_exit", program: Program.syscallsExitRaw),
            ]),
        ]
    }

    public var histograms: [KernelHistogramMap] {
        [
            KernelHistogramMap(map: Map.syscallsHists, metric: "tracer.syscalls.duration",
                               description: "Time syscalls of the selected processes took, sys_enter to sys_exit, per syscall.",
                               unit: "ns", unitWord: "nsecs"),
            KernelHistogramMap(map: Map.syscallsErrorHists, metric: "tracer.syscalls.error.duration",
                               description: "Time failed syscalls of the selected processes took, per syscall and errno (the count is the error count).",
                               unit: "ns", unitWord: "nsecs"),
        ]
    }

    public func configure(_ spec: inout BPFObjectSpec, options: KernelTracerOptions) {
        spec.set(BPFGlobalName("syscalls_per_process"), to: UInt32(options.perProcess ? 1 : 0))
    }

    public func labels(ofKey key: UnsafeRawBufferPointer, map: BPFMapName, options: KernelTracerOptions) -> [KernelLabel] {
        guard key.count >= MemoryLayout<syscalls_key>.size else { return [] }
        let decoded = key.loadUnaligned(as: syscalls_key.self)
        var labels: [KernelLabel] = []
        if options.perProcess {
            let comm = (try? String(contentsOfFile: "/proc/\(decoded.tgid)/comm", encoding: .utf8))?.trimmingCharacters(in: .newlines) ?? ""
            labels += [KernelLabel("process.pid", .int(Int64(decoded.tgid))), KernelLabel("process.executable.name", .string(comm))]
        }
        labels.append(KernelLabel("syscall.name", .string(Self.syscallName(decoded.number))))
        if map == Map.syscallsErrorHists {
            labels.append(KernelLabel("error.type", .string(LinuxSyscallTable.errnoNames[Int32(clamping: decoded.error)] ?? "errno \(decoded.error)")))
        }
        return labels
    }

    /// The syscall's name from the build machine's kernel headers (generated table), else `syscall_N`.
    static func syscallName(_ number: UInt32) -> String {
        let names = LinuxSyscallTable.syscallNames
        return Int(number) < names.count && !names[Int(number)].isEmpty ? names[Int(number)] : "syscall_\(number)"
    }
}
