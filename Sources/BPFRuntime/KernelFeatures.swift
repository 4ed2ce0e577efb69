internal import CLibBPF
import Foundation
import Synchronization

/// What the running kernel and this process can do for BPF tracing, found by really loading (and where
/// cheap, attaching) minimal programs, as bpftool's `feature probe` and cilium/ebpf's `features` do.
public struct KernelFeatures: Sendable, Codable, Equatable {
    /// One probed feature, with the kernel version that introduced it upstream.
    public struct Feature: Sendable, Codable, Equatable {
        public let id: FeatureID
        public let available: Bool
        public let minimumKernel: String
        /// Why it is unavailable (the failing step and errno), or what was checked.
        public let detail: String
    }

    public struct Capability: Sendable, Codable, Equatable {
        public let name: String
        public let held: Bool
        /// What needs it.
        public let neededFor: String
    }

    public struct Mount: Sendable, Codable, Equatable {
        public let filesystem: String
        public let path: String?
        public let mounted: Bool
    }

    public let kernelRelease: String
    public let features: [Feature]
    public let capabilities: [Capability]
    public let mounts: [Mount]
    /// The kernel lockdown mode (`none`, `integrity`, `confidentiality`), nil when securityfs is not mounted.
    public let lockdown: String?

    public func isAvailable(_ id: FeatureID) -> Bool {
        features.first { $0.id == id }?.available ?? false
    }
}

public enum FeatureID: String, Sendable, Codable, CaseIterable {
    case btf = "btf"
    case ringBuffer = "ring_buffer"
    case perfEventArray = "perf_event_array"
    case tracepoint = "tracepoint"
    case rawTracepoint = "raw_tracepoint"
    case tpBTF = "tp_btf"
    case kprobe = "kprobe"
    case fentry = "fentry"
    case uprobe = "uprobe"
    case uprobeMulti = "uprobe_multi"
    case probeWriteUser = "bpf_probe_write_user"
    case batchMapOperations = "batch_map_operations"
    case runTimeStatistics = "run_time_statistics"

    /// The upstream kernel release that introduced the feature.
    public var minimumKernel: String {
        switch self {
        case .btf: "5.4"
        case .ringBuffer: "5.8"
        case .perfEventArray: "4.3"
        case .tracepoint: "4.7"
        case .rawTracepoint: "4.17"
        case .tpBTF, .fentry: "5.5"
        case .kprobe: "4.1"
        case .uprobe: "4.3"
        case .uprobeMulti: "6.6"
        case .probeWriteUser: "4.8"
        case .batchMapOperations: "5.6"
        case .runTimeStatistics: "5.8"
        }
    }

    public var title: String {
        switch self {
        case .btf: "BTF (/sys/kernel/btf/vmlinux, CO-RE)"
        case .ringBuffer: "BPF ring buffer"
        case .perfEventArray: "perf event array"
        case .tracepoint: "tracepoints"
        case .rawTracepoint: "raw tracepoints"
        case .tpBTF: "BTF tracepoints (tp_btf)"
        case .kprobe: "kprobes"
        case .fentry: "fentry/fexit"
        case .uprobe: "uprobes"
        case .uprobeMulti: "uprobe_multi links"
        case .probeWriteUser: "bpf_probe_write_user"
        case .batchMapOperations: "batch map operations"
        case .runTimeStatistics: "program run-time statistics"
        }
    }
}

/// The minimal programs the probe loads, from bpf/features.bpf.c (handed in by the module that embeds it).
public struct FeatureProbePrograms: Sendable {
    public var object: EmbeddedBPFObject
    public var kprobe, fentry, tpBTF, rawTracepoint, tracepoint, uprobe, uprobeMulti, writeUser, ringBuffer: BPFProgramName
    public var ringBufferMap: BPFMapName

    public init(object: EmbeddedBPFObject, kprobe: BPFProgramName, fentry: BPFProgramName, tpBTF: BPFProgramName,
                rawTracepoint: BPFProgramName, tracepoint: BPFProgramName, uprobe: BPFProgramName, uprobeMulti: BPFProgramName,
                writeUser: BPFProgramName, ringBuffer: BPFProgramName, ringBufferMap: BPFMapName) {
        self.object = object
        self.kprobe = kprobe
        self.fentry = fentry
        self.tpBTF = tpBTF
        self.rawTracepoint = rawTracepoint
        self.tracepoint = tracepoint
        self.uprobe = uprobe
        self.uprobeMulti = uprobeMulti
        self.writeUser = writeUser
        self.ringBuffer = ringBuffer
        self.ringBufferMap = ringBufferMap
    }
}

extension KernelFeatures {
    private static let cache = Mutex<KernelFeatures?>(nil)

    /// Probes the kernel once per process; later calls return the cached result.
    public static func detect(using probes: FeatureProbePrograms) -> KernelFeatures {
        if let cached = cache.withLock({ $0 }) { return cached }
        let detected = FeatureProber(probes).run()
        cache.withLock { $0 = detected }
        return detected
    }
}

/// Runs each probe; every probe is independent, and a failure only marks its feature unavailable.
private struct FeatureProber {
    let probes: FeatureProbePrograms

    init(_ probes: FeatureProbePrograms) { self.probes = probes }

    func run() -> KernelFeatures {
        let features: [KernelFeatures.Feature] = FeatureID.allCases.map { id in
            do {
                let detail = try probe(id)
                return .init(id: id, available: true, minimumKernel: id.minimumKernel, detail: detail)
            } catch let error as BPFError {
                return .init(id: id, available: false, minimumKernel: id.minimumKernel, detail: "\(error.operation): \(errnoName(error.errno))")
            } catch {
                return .init(id: id, available: false, minimumKernel: id.minimumKernel, detail: "\(error)")
            }
        }
        return KernelFeatures(kernelRelease: Self.kernelRelease(), features: features, capabilities: Self.capabilities(),
                              mounts: Self.mounts(), lockdown: Self.lockdownMode())
    }

    private func load(_ program: BPFProgramName, uprobeMulti: Bool = false, ringBuffer: Bool = false) throws -> BPFProgram {
        var spec = BPFObjectSpec(probes.object, programs: [program])
        if uprobeMulti { spec.uprobeMultiPrograms = [program] }
        if !ringBuffer { spec.skippedMaps = [probes.ringBufferMap] }
        return try spec.load().program(program)
    }

    /// Returns what was checked, or throws why the feature is missing.
    private func probe(_ id: FeatureID) throws -> String {
        switch id {
        case .btf:
            guard FileManager.default.fileExists(atPath: "/sys/kernel/btf/vmlinux") else {
                throw BPFError("read /sys/kernel/btf/vmlinux", errno: ENOENT)
            }
            return "/sys/kernel/btf/vmlinux present"
        case .ringBuffer:
            _ = try load(probes.ringBuffer, ringBuffer: true)
            return "program with a ring buffer loaded"
        case .perfEventArray:
            _ = try BPFMap(create: .perfEventArray, name: "probe_perf", keySize: 4, valueSize: 4, maxEntries: 1)
            return "map created"
        case .tracepoint:
            try load(probes.tracepoint).attachTracepoint(category: "syscalls", event: "sys_enter_getppid").close()
            return "attached to syscalls:sys_enter_getppid"
        case .rawTracepoint:
            try load(probes.rawTracepoint).attachRawTracepoint("sched_process_exec").close()
            return "attached to sched_process_exec"
        case .tpBTF:
            try load(probes.tpBTF).attachTracing().close()
            return "attached to sched_process_exec"
        case .fentry:
            try load(probes.fentry).attachTracing().close()
            return "attached to do_nanosleep"
        case .kprobe:
            try load(probes.kprobe).attachKprobe(function: "do_nanosleep").close()
            return "attached to do_nanosleep"
        case .uprobe:
            guard FileManager.default.fileExists(atPath: "/sys/bus/event_source/devices/uprobe/type") else {
                throw BPFError("find the uprobe PMU (/sys/bus/event_source/devices/uprobe)", errno: ENOENT)
            }
            _ = try load(probes.uprobe)
            return "uprobe PMU present, program loaded"
        case .uprobeMulti:
            // A kernel with uprobe_multi rejects the directory "/" as the target with EBADF; one without
            // it rejects the attach type with EINVAL.
            let program = try load(probes.uprobeMulti, uprobeMulti: true)
            do {
                try program.attachUprobeMultiUnchecked(path: "/", offsets: [0], cookies: nil, pid: nil, returnProbe: false).close()
            } catch let error as BPFError where error.errno == EBADF {
                return "BPF_TRACE_UPROBE_MULTI link create understood"
            }
            throw BPFError("create a uprobe_multi link", errno: EINVAL)
        case .probeWriteUser:
            _ = try load(probes.writeUser)
            return "program calling bpf_probe_write_user loaded"
        case .batchMapOperations:
            let map = try BPFMap(create: .hash, name: "probe_batch", keySize: 4, valueSize: 4, maxEntries: 4)
            try map.update(UInt32(1), UInt32(1))
            var count: UInt32 = 1
            var key: UInt32 = 0, value: UInt32 = 0, outBatch: UInt32 = 0
            let result = bpf_map_lookup_batch(map.fd, nil, &outBatch, &key, &value, &count, nil)
            guard result == 0 || result == -ENOENT else { throw BPFError("batch lookup", errno: result) }
            return "BPF_MAP_LOOKUP_BATCH answered"
        case .runTimeStatistics:
            _ = try BPFStatistics.enable()
            return "BPF_ENABLE_STATS accepted"
        }
    }

    static func kernelRelease() -> String {
        var name = utsname()
        uname(&name)
        return withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// Effective capabilities of this process (`CapEff` in /proc/self/status) that BPF tracing uses.
    static func capabilities() -> [KernelFeatures.Capability] {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("CapEff:") }
        let mask = line.flatMap { UInt64($0.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16) } ?? 0
        let needed: [(String, Int, String)] = [
            ("CAP_BPF", 39, "loading programs and creating maps (Linux 5.8; CAP_SYS_ADMIN before)"),
            ("CAP_PERFMON", 38, "attaching uprobes, kprobes and tracepoints (Linux 5.8; CAP_SYS_ADMIN before)"),
            ("CAP_SYS_ADMIN", 21, "kernels before 5.8, reading other processes' namespaces, bpf_probe_write_user"),
            ("CAP_SYS_PTRACE", 19, "reading /proc/PID/exe, maps and environment of other users' processes"),
            ("CAP_DAC_READ_SEARCH", 2, "opening executables under /proc/PID/root that the agent's user cannot read"),
            ("CAP_CHECKPOINT_RESTORE", 40, "reading /proc/PID/map_files of traced processes"),
            ("CAP_NET_ADMIN", 12, "the sock_ops and sk_msg programs of --context-propagation network (or CAP_SYS_ADMIN)"),
        ]
        return needed.map { .init(name: $0.0, held: mask & (1 << UInt64($0.1)) != 0, neededFor: $0.2) }
    }

    static func mounts() -> [KernelFeatures.Mount] {
        let table = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        let entries = table.split(separator: "\n").map { $0.split(separator: " ") }.filter { $0.count >= 3 }
        return ["tracefs", "bpf", "securityfs"].map { filesystem in
            let path = entries.first { $0[2] == filesystem }.map { String($0[1]) }
            return .init(filesystem: filesystem, path: path, mounted: path != nil)
        }
    }

    /// The selected mode in /sys/kernel/security/lockdown, e.g. `none [integrity] confidentiality`.
    static func lockdownMode() -> String? {
        guard let text = try? String(contentsOfFile: "/sys/kernel/security/lockdown", encoding: .utf8),
              let open = text.firstIndex(of: "["), let close = text[open...].firstIndex(of: "]") else { return nil }
        return String(text[text.index(after: open)..<close])
    }
}
