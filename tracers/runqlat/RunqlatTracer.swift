import BPFRuntime
import CTracerABI
import TracerFramework

/// Run-queue delay (runqlat.bpf.c): how long runnable threads wait for a CPU, as a log2 histogram of
/// microseconds for the whole machine or per process, like libbpf-tools' `runqlat` (`-P`).
public struct RunqlatTracer: KernelTracer {
    public init() {}

    public var name: String { "runqlat" }
    public var summary: String { "run-queue delay histogram (sched_wakeup/sched_switch), machine-wide or per process" }
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
        spec.set(BPFGlobalName("runqlat_group_by"), to: UInt32(options.perProcess ? RUNQLAT_GROUP_PROCESS : RUNQLAT_GROUP_MACHINE))
    }

    public func labels(ofKey key: UnsafeRawBufferPointer, map: BPFMapName, options: KernelTracerOptions) -> [KernelLabel] {
        guard options.perProcess, key.count >= MemoryLayout<runqlat_key>.size else { return [] }
        let decoded = key.loadUnaligned(as: runqlat_key.self)
        return [KernelLabel("process.pid", .int(Int64(decoded.tgid))), KernelLabel("process.executable.name", .string(fixedCString(decoded.comm)))]
    }
}
