import BPFRuntime
import CTracerABI
import TracerFramework

/// OOM kills (oomkill.bpf.c, tracepoint oom:mark_victim): the victim's pid, comm, uid and memory figures,
/// the triggering task (whose allocation ran out of memory) and its memory cgroup, one event per kill.
public struct OOMKillTracer: KernelTracer {
    public init() {}

    public var name: String { "oomkill" }
    public var summary: String { "OOM-kill events: victim, memory figures, triggering task and its memory cgroup (oom:mark_victim)" }
    public var object: EmbeddedBPFObject { Tracers.Oomkill.object }
    public var emitsEvents: Bool { true }

    public var hookSets: [KernelHookSet] {
        [KernelHookSet("tracepoint oom:mark_victim", [.tracepoint(category: "oom", event: "mark_victim", program: Tracers.Oomkill.Program.oomkillMarkVictim)])]
    }

    public func decode(event: UnsafeRawBufferPointer, header: KernelEventHeader) -> KernelEvent? {
        guard header.type == UInt32(OOMKILL_EVENT_VICTIM), event.count >= MemoryLayout<oomkill_event>.size else { return nil }
        let kill = event.loadUnaligned(as: oomkill_event.self)
        // The event is about the victim; the task that triggered the kill is a field.
        return KernelEvent(tracer: name, name: "oom_kill", timeUnixNano: 0, pid: kill.victim_pid, comm: fixedCString(kill.victim_comm), fields: [
            KernelLabel("trigger_pid", .int(Int64(header.pid))),
            KernelLabel("trigger_comm", .string(header.comm)),
            KernelLabel("memory_cgroup", .string(fixedCString(kill.memory_cgroup))),
            KernelLabel("uid", .int(Int64(kill.victim_uid))),
            KernelLabel("total_vm_kib", .int(Int64(clamping: kill.total_vm_kib))),
            KernelLabel("anon_rss_kib", .int(Int64(clamping: kill.anon_rss_kib))),
            KernelLabel("file_rss_kib", .int(Int64(clamping: kill.file_rss_kib))),
            KernelLabel("shmem_rss_kib", .int(Int64(clamping: kill.shmem_rss_kib))),
            KernelLabel("pgtables_kib", .int(Int64(clamping: kill.pgtables_kib))),
            KernelLabel("oom_score_adj", .int(Int64(kill.oom_score_adj))),
        ])
    }
}
