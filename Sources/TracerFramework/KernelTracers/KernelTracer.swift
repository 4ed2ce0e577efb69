import BPFRuntime
import Foundation

/// A kernel utility tracer (tracers/runqlat, tracers/oomkill, ...): machine-wide signals that are not spans.
/// It has its own BPF object built on `bpf/kernel_tracer.bpf.h` and produces **histograms** — aggregated
/// in BPF hash maps of `struct kernel_hist` (log2 buckets) per key and read on an interval, never sent
/// event by event — and **events** (records of the object's `kernel_events` ring buffer, each starting with
/// `struct kernel_event_header`). Like a span tracer it only declares: `KernelTracerSession` loads the
/// object, attaches the first hook set that works, reads the maps and the ring, and counts what overflowed.
public protocol KernelTracer: Sendable {
    /// Short stable name, also the folder name and the `tracer tool NAME` / `--kernel-tracers` word.
    var name: String { get }
    /// One line for `tracer tool --help`.
    var summary: String { get }
    /// A line said when the tracer is enabled because it costs processes it does not trace (nil: cheap).
    var costNotice: String? { get }
    /// The tracer's compiled BPF object.
    var object: EmbeddedBPFObject { get }
    /// Hook sets in order of preference; the session uses the first one whose programs all load and attach.
    var hookSets: [KernelHookSet] { get }
    /// The histogram maps of the object (values `struct kernel_hist`).
    var histograms: [KernelHistogramMap] { get }
    /// Whether the object has the `kernel_events` ring buffer (defines KERNEL_TRACER_EVENTS).
    var emitsEvents: Bool { get }
    /// Whether, run by the agent, the tracer traces only the agent's selected processes (its object includes
    /// `bpf/kernel_tracer_selection.bpf.h`; the session keeps `kernel_selected_tgids` equal to the selection).
    var followsAgentSelection: Bool { get }
    /// Whether the tracer refuses to trace every process (a `--pid` or the agent's selection is required).
    var requiresProcessSelection: Bool { get }
    /// Whether, run by the agent, its histograms are kept per process (`perProcess`), so the agent can label
    /// those of selected processes with their service (tcp: connect latency per calling service and endpoint).
    var keysByProcessInAgent: Bool { get }

    /// Throws one line when the tracer cannot honour `options` (e.g. a PID filter where the hooks run in no
    /// process's context); checked before anything is loaded.
    func validate(_ options: KernelTracerOptions) throws
    /// Sets `const volatile` globals and map sizes before load (the session has set `kernel_target_tgid`).
    func configure(_ spec: inout BPFObjectSpec, options: KernelTracerOptions)
    /// The labels of one histogram key (the raw bytes of the map's key struct).
    func labels(ofKey key: UnsafeRawBufferPointer, map: BPFMapName, options: KernelTracerOptions) -> [KernelLabel]
    /// One event (header included), or nil when malformed (the session counts it).
    func decode(event: UnsafeRawBufferPointer, header: KernelEventHeader) -> KernelEvent?
    /// Whether a decoded event is wanted after all, for what the kernel could not judge (files: a relative
    /// path against the prefixes); the session counts the others as `events.filtered`.
    func keeps(_ event: KernelEvent, options: KernelTracerOptions) -> Bool
    /// Work done every `options.interval` seconds (1 when not set) once attached, whose events go where the
    /// ring buffer's go; nil when the tracer has none.
    func makePoller(options: KernelTracerOptions) -> (any KernelTracerPoller)?
}

/// Periodic work of a running kernel tracer (tracers/fds: each traced process's open-FD count).
public protocol KernelTracerPoller: AnyObject, Sendable {
    /// Called on the session's timer thread with the loaded object; returns the events of this interval.
    func poll(_ object: BPFObject) -> [KernelEvent]
}

extension KernelTracer {
    public var costNotice: String? { nil }
    public var histograms: [KernelHistogramMap] { [] }
    public var emitsEvents: Bool { false }
    public var followsAgentSelection: Bool { false }
    public var requiresProcessSelection: Bool { false }
    public var keysByProcessInAgent: Bool { false }
    public func makePoller(options: KernelTracerOptions) -> (any KernelTracerPoller)? { nil }
    public func validate(_ options: KernelTracerOptions) throws {}
    public func configure(_ spec: inout BPFObjectSpec, options: KernelTracerOptions) {}
    public func labels(ofKey key: UnsafeRawBufferPointer, map: BPFMapName, options: KernelTracerOptions) -> [KernelLabel] { [] }
    public func decode(event: UnsafeRawBufferPointer, header: KernelEventHeader) -> KernelEvent? { nil }
    public func keeps(_ event: KernelEvent, options: KernelTracerOptions) -> Bool { true }
}

/// What the user asked of a kernel tracer.
public struct KernelTracerOptions: Sendable, Equatable {
    /// Host TGID to trace; nil for every process.
    public var pid: Int32?
    /// Histograms per process instead of one for the whole machine (where the tracer can key by process).
    public var perProcess: Bool
    /// Histograms per cgroup (v2 hierarchy) instead of one for the whole machine (where the tracer keys by cgroup).
    public var perCgroup: Bool
    /// An event for every state change, where the tracer follows states (tcp, as libbpf-tools' tcpstates).
    public var stateChanges: Bool
    /// Histogram keys each map holds; samples of further keys go to one overflow histogram (counted).
    public var maxKeys: UInt32
    /// Histograms per disk instead of one for all disks (where the tracer keys by disk: biolatency -D).
    public var perDisk: Bool
    /// Include the time requests wait in the OS queue (where the tracer measures a queue: biolatency -Q).
    public var queued: Bool
    /// Only this disk, by name (`sda`, `vda`), where the tracer sees disks (biolatency -d).
    public var disk: String?
    /// Only paths under these prefixes, where the tracer sees paths (files).
    public var pathPrefixes: [String]
    /// Trace the processes the session is given with `select(tgids:)` (the agent's selection), not `pid`.
    public var followsSelection: Bool
    /// Seconds between polls, where the tracer polls (fds); nil: 1 s.
    public var interval: Double?
    /// Intervals over which an only-growing count makes a leak suspect (fds).
    public var leakIntervals: Int

    public init(pid: Int32? = nil, perProcess: Bool = false, perCgroup: Bool = false, stateChanges: Bool = false, maxKeys: UInt32 = 1024,
                perDisk: Bool = false, queued: Bool = false, disk: String? = nil, pathPrefixes: [String] = [], followsSelection: Bool = false,
                interval: Double? = nil, leakIntervals: Int = 5) {
        self.pid = pid
        self.stateChanges = stateChanges
        self.perProcess = perProcess
        self.perCgroup = perCgroup
        self.maxKeys = maxKeys
        self.perDisk = perDisk
        self.queued = queued
        self.disk = disk
        self.pathPrefixes = pathPrefixes
        self.followsSelection = followsSelection
        self.interval = interval
        self.leakIntervals = leakIntervals
    }
}

/// One way to hook a tracer into the kernel: programs and where each attaches.
public struct KernelHookSet: Sendable {
    /// For the log: `tp_btf sched_switch, sched_wakeup, sched_wakeup_new`.
    public let description: String
    public let attachments: [KernelAttachment]

    public init(_ description: String, _ attachments: [KernelAttachment]) {
        self.description = description
        self.attachments = attachments
    }
}

/// Where one program of a kernel tracer attaches.
public enum KernelAttachment: Sendable {
    /// Classic tracepoint `category:event` (Linux 4.7).
    case tracepoint(category: String, event: String, program: BPFProgramName)
    /// BTF-typed program at the target its section names: tp_btf, fentry, fexit (Linux 5.5).
    case btf(program: BPFProgramName)
    /// Raw tracepoint (Linux 4.17).
    case rawTracepoint(event: String, program: BPFProgramName)
    /// Kprobe or kretprobe (CONFIG_KPROBES).
    case kprobe(function: String, program: BPFProgramName, returnProbe: Bool)

    public var program: BPFProgramName {
        switch self {
        case .tracepoint(_, _, let program), .btf(let program), .rawTracepoint(_, let program), .kprobe(_, let program, _): program
        }
    }
}

/// A histogram map of a kernel tracer's object.
public struct KernelHistogramMap: Sendable {
    public let map: BPFMapName
    /// Metric name (`tracer.runqlat.delay`; Prometheus: `tracer_runqlat_delay`).
    public let metric: String
    /// What one sample measures, for the metric description.
    public let description: String
    /// Unit of the samples: UCUM for metrics (`us`, `ms`, `By`) …
    public let unit: String
    /// … and the word libbpf-tools prints above its histogram (`usecs`).
    public let unitWord: String

    public init(map: BPFMapName, metric: String, description: String, unit: String, unitWord: String) {
        self.map = map
        self.metric = metric
        self.description = description
        self.unit = unit
        self.unitWord = unitWord
    }
}

/// A label of a histogram or a field of an event.
public struct KernelLabel: Sendable, Equatable {
    public let key: String
    public let value: KernelValue

    public init(_ key: String, _ value: KernelValue) {
        self.key = key
        self.value = value
    }
}

public enum KernelValue: Sendable, Equatable {
    case int(Int64)
    case string(String)
    case bool(Bool)

    public var text: String {
        switch self {
        case .int(let number): String(number)
        case .string(let text): text
        case .bool(let flag): flag ? "true" : "false"
        }
    }
}

/// One histogram read from a kernel tracer's map: log2 slots (slot i holds values up to 2^(i+1) − 1).
public struct KernelHistogram: Sendable, Equatable {
    public let tracer: String
    public let map: KernelHistogramMap.Name
    public let labels: [KernelLabel]
    public let slots: [UInt64]
    public let count: UInt64
    public let sum: UInt64
    /// Samples of keys past the map's cardinality limit.
    public let isOverflow: Bool

    public init(tracer: String, map: KernelHistogramMap.Name, labels: [KernelLabel], slots: [UInt64], count: UInt64, sum: UInt64, isOverflow: Bool) {
        self.tracer = tracer
        self.map = map
        self.labels = labels
        self.slots = slots
        self.count = count
        self.sum = sum
        self.isOverflow = isOverflow
    }

    /// Upper bound (inclusive) of log2 slot `index`.
    public static func upperBound(ofSlot index: Int) -> UInt64 { index >= 63 ? UInt64.max : (UInt64(1) << UInt64(index + 1)) - 1 }
    /// Lower bound of log2 slot `index` (0 for slot 0, as libbpf-tools prints it).
    public static func lowerBound(ofSlot index: Int) -> UInt64 { index == 0 ? 0 : UInt64(1) << UInt64(min(index, 63)) }
}

extension KernelHistogramMap {
    /// The parts of a histogram map a read histogram refers to.
    public struct Name: Sendable, Equatable {
        public let metric: String
        public let description: String
        public let unit: String
        public let unitWord: String
    }

    public var name: Name { Name(metric: metric, description: description, unit: unit, unitWord: unitWord) }
}

/// The header every kernel tracer event starts with (`struct kernel_event_header`), decoded.
public struct KernelEventHeader: Sendable, Equatable {
    public let timestampNanoseconds: UInt64
    public let pid: UInt32
    public let tid: UInt32
    public let comm: String
    public let type: UInt32
    public let size: UInt32
}

/// One event of a kernel tracer: what happened (`name`), to whom, and its fields.
public struct KernelEvent: Sendable, Equatable {
    public let tracer: String
    /// Event kind (`oom_kill`, `connect`), also the log record's `event.name` suffix.
    public let name: String
    /// Wall-clock time (Unix nanoseconds).
    public var timeUnixNano: UInt64
    public let pid: UInt32
    public let comm: String
    public let fields: [KernelLabel]

    public init(tracer: String, name: String, timeUnixNano: UInt64, pid: UInt32, comm: String, fields: [KernelLabel]) {
        self.tracer = tracer
        self.name = name
        self.timeUnixNano = timeUnixNano
        self.pid = pid
        self.comm = comm
        self.fields = fields
    }
}

/// A kernel tracer that cannot run here or was misused: one line, what to do.
public struct KernelTracerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
