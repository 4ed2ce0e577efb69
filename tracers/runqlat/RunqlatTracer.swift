import BPFRuntime
import CTracerABI
import Foundation
import Synchronization
import TracerFramework

/// Run-queue delay (runqlat.bpf.c): how long runnable threads wait for a CPU, as a log2 histogram of
/// microseconds for the whole machine, per process (libbpf-tools' `runqlat -P`) or per cgroup.
public struct RunqlatTracer: KernelTracer {
    public init() {}

    public var name: String { "runqlat" }
    public var summary: String { "run-queue delay histogram (sched_wakeup/sched_switch), machine-wide, per process or per cgroup" }
    public var object: EmbeddedBPFObject { Tracers.Runqlat.object }

    typealias Program = Tracers.Runqlat.Program

    public var hookSets: [KernelHookSet] {
        [
            KernelHookSet("tp_btf sched_wakeup, sched_wakeup_new, sched_switch", [
                .btf(program: Program.runqlatWakeupBtf), .btf(program: Program.runqlatWakeupNewBtf), .btf(program: Program.runqlatSwitchBtf),
            ]),
            KernelHookSet("raw_tp sched_wakeup, sched_wakeup_new, sched_switch", [
                .rawTracepoint(event: "sched_wakeup", program: Program.runqlatWakeupRaw),
                .rawTracepoint(event: "sched_wakeup_new", program: Program.runqlatWakeupNewRaw),
                .rawTracepoint(event: "sched_switch", program: Program.runqlatSwitchRaw),
            ]),
        ]
    }

    public var histograms: [KernelHistogramMap] {
        [KernelHistogramMap(map: Tracers.Runqlat.Map.runqlatHists, metric: "tracer.runqlat.delay",
                            description: "Time runnable threads waited on a run queue before running.", unit: "us", unitWord: "usecs")]
    }

    public func configure(_ spec: inout BPFObjectSpec, options: KernelTracerOptions) {
        let groupBy = options.perProcess ? RUNQLAT_GROUP_PROCESS : options.perCgroup ? RUNQLAT_GROUP_CGROUP : RUNQLAT_GROUP_MACHINE
        spec.set(BPFGlobalName("runqlat_group_by"), to: UInt32(groupBy))
    }

    public func validate(_ options: KernelTracerOptions) throws {
        guard !(options.perProcess && options.perCgroup) else { throw KernelTracerError("\(name): --per-process or --per-cgroup, not both") }
    }

    public func labels(ofKey key: UnsafeRawBufferPointer, map: BPFMapName, options: KernelTracerOptions) -> [KernelLabel] {
        guard options.perProcess || options.perCgroup, key.count >= MemoryLayout<runqlat_key>.size else { return [] }
        let decoded = key.loadUnaligned(as: runqlat_key.self)
        if options.perCgroup {
            return [KernelLabel("cgroup.id", .int(Int64(bitPattern: decoded.cgroup))),
                    KernelLabel("cgroup.path", .string(cgroupPaths.path(of: decoded.cgroup) ?? "?"))]
        }
        return [KernelLabel("process.pid", .int(Int64(decoded.tgid))), KernelLabel("process.executable.name", .string(fixedCString(decoded.comm)))]
    }

    private let cgroupPaths = CgroupPaths()
}

/// cgroup v2 ids to paths: a cgroup's id is the inode number of its directory in the cgroup2 mount
/// (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` in the hybrid layout), found by walking it; remembered.
final class CgroupPaths: Sendable {
    private let known = Mutex<[UInt64: String]>([:])

    func path(of id: UInt64) -> String? {
        if let path = known.withLock({ $0[id] }) { return path }
        guard let root = Cgroup2.mountPoint() else { return nil }
        var found: String?
        var pending = [""]
        var visited = 0
        while let relative = pending.popLast(), found == nil, visited < 100_000 {
            visited += 1
            var info = stat()
            guard stat(root + relative, &info) == 0 else { continue }
            if UInt64(info.st_ino) == id { found = relative.isEmpty ? "/" : relative }
            let children = (try? FileManager.default.contentsOfDirectory(atPath: root + relative)) ?? []
            for child in children {
                var childInfo = stat()
                if stat(root + relative + "/" + child, &childInfo) == 0 && childInfo.st_mode & S_IFMT == S_IFDIR { pending.append(relative + "/" + child) }
            }
        }
        if let found { known.withLock { $0[id] = found } }
        return found
    }
}
