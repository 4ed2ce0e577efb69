import BPFRuntime
import CTracerABI
import Foundation
import TracerFramework

/// Block I/O latency (biolatency.bpf.c): how long block requests take, issue → complete (device time) or
/// insert → complete (`--queued`: OS queue included), as log2 histograms of microseconds per operation,
/// for all disks or per disk, like libbpf-tools' `biolatency` (`-Q`, `-D`).
public struct BiolatencyTracer: KernelTracer {
    public init() {}

    public var name: String { "biolatency" }
    public var summary: String { "block I/O latency histogram per operation (block_rq_issue/complete), all disks or per disk" }
    public var object: EmbeddedBPFObject { Tracers.Biolatency.object }

    typealias Program = Tracers.Biolatency.Program

    public var hookSets: [KernelHookSet] {
        [
            KernelHookSet("tp_btf block_rq_insert, block_rq_issue, block_rq_complete", [
                .btf(program: Program.biolatencyInsertBtf), .btf(program: Program.biolatencyIssueBtf), .btf(program: Program.biolatencyCompleteBtf),
            ]),
            KernelHookSet("raw_tp block_rq_insert, block_rq_issue, block_rq_complete", [
                .rawTracepoint(event: "block_rq_insert", program: Program.biolatencyInsertRaw),
                .rawTracepoint(event: "block_rq_issue", program: Program.biolatencyIssueRaw),
                .rawTracepoint(event: "block_rq_complete", program: Program.biolatencyCompleteRaw),
            ]),
        ]
    }

    public var histograms: [KernelHistogramMap] {
        [KernelHistogramMap(map: Tracers.Biolatency.Map.biolatencyHists, metric: "tracer.biolatency.duration",
                            description: "Time block I/O requests took from issue to the driver (or, queued, from insert into the OS queue) to completion.",
                            unit: "us", unitWord: "usecs")]
    }

    /// Completions run in interrupt context and requests are often issued by kernel threads: the process
    /// that asked for the I/O is not known at the hooks, so a PID filter or per-process keys would be wrong.
    public func validate(_ options: KernelTracerOptions) throws {
        if options.pid != nil { throw KernelTracerError("\(name): --pid is not supported: block I/O completes in interrupt context, not in the process that asked for it") }
        if options.perProcess { throw KernelTracerError("\(name): --per-process is not supported (use --per-disk): block I/O completes in interrupt context") }
        if let disk = options.disk { _ = try Self.diskNumber(named: disk) }
    }

    public func configure(_ spec: inout BPFObjectSpec, options: KernelTracerOptions) {
        spec.set(BPFGlobalName("biolatency_measure"), to: UInt32(options.queued ? BIOLATENCY_QUEUED_TIME : BIOLATENCY_DEVICE_TIME))
        spec.set(BPFGlobalName("biolatency_per_disk"), to: UInt32(options.perDisk ? 1 : 0))
        if let disk = options.disk, let number = try? Self.diskNumber(named: disk) {
            spec.set(BPFGlobalName("biolatency_filter_disk"), to: UInt32(1))
            spec.set(BPFGlobalName("biolatency_disk_major"), to: number.major)
            spec.set(BPFGlobalName("biolatency_disk_minor"), to: number.minor)
        }
    }

    /// The major:minor of the whole disk `name` (`/sys/class/block/NAME/dev`); a partition or an unknown
    /// name is a one-line error.
    static func diskNumber(named name: String) throws -> (major: UInt32, minor: UInt32) {
        let directory = "/sys/class/block/\(name)"
        guard !name.isEmpty, !name.contains("/"), let text = try? String(contentsOfFile: "\(directory)/dev", encoding: .utf8) else {
            throw KernelTracerError("biolatency: no disk named \(name) (see /sys/class/block)")
        }
        if FileManager.default.fileExists(atPath: "\(directory)/partition") {
            throw KernelTracerError("biolatency: \(name) is a partition: give its disk")
        }
        let parts = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").compactMap { UInt32($0) }
        guard parts.count == 2 else { throw KernelTracerError("biolatency: \(directory)/dev is not MAJOR:MINOR") }
        return (parts[0], parts[1])
    }

    public func labels(ofKey key: UnsafeRawBufferPointer, map: BPFMapName, options: KernelTracerOptions) -> [KernelLabel] {
        guard key.count >= MemoryLayout<biolatency_key>.size else { return [] }
        let decoded = key.loadUnaligned(as: biolatency_key.self)
        var labels: [KernelLabel] = []
        if options.perDisk {
            labels.append(KernelLabel("system.device", .string(Self.deviceName(major: decoded.major, minor: decoded.minor))))
        }
        labels.append(KernelLabel("disk.io.direction", .string(Self.direction(ofOperation: decoded.op))))
        return labels
    }

    /// `disk.io.direction`: `read` and `write` as OTel names them; the other block operations (Linux
    /// `enum req_op`) by their kernel name, lower case (custom values the convention allows).
    static func direction(ofOperation op: UInt32) -> String {
        switch op {
        case 0: "read"
        case 1: "write"
        case 2: "flush"
        case 3: "discard"
        case 5: "secure_erase"
        case 7: "zone_append"
        case 9: "write_zeroes"
        case 11: "zone_open"
        case 13: "zone_close"
        case 15: "zone_finish"
        case 17: "zone_reset"
        case 19: "zone_reset_all"
        case 34: "drv_in"
        case 35: "drv_out"
        default: "op_\(op)"
        }
    }

    /// The disk's name (`vda`, `loop0`) from `/sys/dev/block/MAJ:MIN/uevent` (DEVNAME), else `MAJ:MIN`
    /// (a disk gone since, or requests without a disk).
    static func deviceName(major: UInt32, minor: UInt32) -> String {
        let number = "\(major):\(minor)"
        guard let uevent = try? String(contentsOfFile: "/sys/dev/block/\(number)/uevent", encoding: .utf8) else { return number }
        for line in uevent.split(separator: "\n") where line.hasPrefix("DEVNAME=") {
            let name = line.dropFirst("DEVNAME=".count)
            if !name.isEmpty { return String(name) }
        }
        return number
    }
}
