import BPFRuntime

/// The BPF programs of `bpf/`, compiled and embedded at build time by `BPFEmbedPlugin`:
/// each `NAME.bpf.c` becomes a nested enum (e.g. `BPFPrograms.Selftest`) holding the object and
/// constants for its programs, maps and globals.
public enum BPFPrograms {}

extension FeatureProbePrograms {
    /// The probes of bpf/features.bpf.c.
    public static let embedded: FeatureProbePrograms = {
        typealias Program = BPFPrograms.Features.Program
        return FeatureProbePrograms(
            object: BPFPrograms.Features.object, kprobe: Program.probeKprobe, fentry: Program.probeFentry,
            tpBTF: Program.probeTpBtf, rawTracepoint: Program.probeRawTp, tracepoint: Program.probeTracepoint,
            uprobe: Program.probeUprobe, uprobeMulti: Program.probeUprobeMulti, writeUser: Program.probeWriteUser,
            ringBuffer: Program.probeRingBuffer, ringBufferMap: BPFPrograms.Features.Map.probeRingbuf)
    }()
}

extension KernelFeatures {
    /// Probes this kernel with the embedded feature programs (cached after the first call).
    public static func detect() -> KernelFeatures { detect(using: .embedded) }
}
