import BPFRuntime
import ExecutableInspection
import Telemetry

/// A tracer plugin: one folder under `tracers/` with its decoding, README and tests (OBI's `ebpf.Tracer`).
/// Two kinds: a **protocol parser** on the shared capture layer (bpf/capture.bpf.c; it declares `parser`),
/// and a **probe tracer** with its own BPF program and event header (it declares `object`, `probes` and
/// `eventTypes`). A tracer only declares; the framework loads its object, attaches its probes once per file,
/// keeps the PID filter, hands it the events whose `tracer_event_header.type` it owns, and decides who owns
/// a process or a connection. Tracers never call libbpf, nor each other.
public protocol Tracer: Sendable {
    /// Short stable name, also the folder name (`http`, `go-nethttp`).
    var name: String { get }
    /// The tracer's compiled BPF object, nil for a protocol parser; it includes bpf/tracer_common.bpf.h, so
    /// it shares the agent's events channel and PID filter.
    var object: EmbeddedBPFObject? { get }
    /// Every probe the tracer may attach. The framework loads exactly the programs named here. Agent-wide
    /// probes (tracepoints, kprobes, fexit) are attached while a process the tracer applies to is selected.
    var probes: [Probe] { get }
    /// The range of `tracer_event_header.type` numbers this tracer emits; ranges of loaded tracers must not
    /// overlap (checked at load).
    var eventTypes: ClosedRange<UInt32>? { get }
    /// The parser this tracer runs on the shared capture layer's connections, if it is a protocol parser.
    var parser: (any ProtocolParser)? { get }
    /// Exchanges this tracer makes itself for the processes it applies to (e.g. Go's HTTP client calls,
    /// from uprobes): protocol parsers leave those connections alone.
    var ownedExchanges: Set<ExchangeKind> { get }
    /// Go struct fields the tracer reads from process memory (resolved from DWARF or the offsets table).
    var goFields: [GoField] { get }
    /// The tracer's own counters (malformed events, abandoned exchanges, counts its BPF programs keep in
    /// maps of `object`, its loaded object), for `/metrics` and OTLP self-metrics.
    func counters(object: BPFObject?) -> [TracerCounter]
    /// Whether the agent must stop when this tracer cannot be loaded (false: log the reason, carry on).
    var isRequired: Bool { get }
    /// Which hooks the tracer chose on this kernel, for the start-up log (e.g. `socket tracepoints`).
    var hookDescription: String? { get }
    /// A line the agent logs once at start (e.g. that an asked-for feature is off on this kernel).
    var notice: String? { get }

    /// Whether this tracer instruments `process` at all (language, mapped libraries, offsets found...).
    /// Returning a reason instead of `true` lets `tracer inspect` and the logs say why not.
    func applicability(to process: TracedProcess) -> Applicability

    /// Sets `const volatile` globals and map sizes before the object is loaded.
    func configure(_ spec: inout BPFObjectSpec, features: KernelFeatures)

    /// Whether function probe `symbol`, found in `executable`, is worth attaching there (e.g. the struct fields
    /// its program reads are known in that binary). Default: whenever the function is found.
    func attaches(_ symbol: String, in executable: ExecutableInfo) -> Bool

    /// Functions whose probes matter only in a process that makes calls (they tie a call to the request it is
    /// made for): attached once the framework first sees a call of the process (a parent asked of
    /// ``TraceContexts``), not before, so a server that calls nothing pays nothing for them.
    var attachedOnceCalling: Set<String> { get }

    /// Functions whose entry probes are attached at once but whose RET probes matter only in a process that
    /// makes calls (they make a read's bytes known before the call the reader makes next): attached with
    /// ``attachedOnceCalling``.
    var returnsAttachedOnceCalling: Set<String> { get }

    /// What the tracer does in `executable` beyond finding its functions, one line per path it may take there,
    /// with the reason a path is off (e.g. a struct field unknown without DWARF): for `tracer inspect` and the
    /// attach log, so a user learns what is not traced. Default: nothing to say.
    func coverage(in executable: ExecutableInfo) -> [PathCoverage]

    /// Called after the object is loaded, before the process is allowed to emit: e.g. store per-process
    /// struct offsets in a map of the tracer's object. Default: nothing.
    func prepare(_ process: TracedProcess, object: BPFObject) throws

    /// Called when a process it prepared has exited. Default: nothing.
    func forget(pid: Int32, object: BPFObject)

    /// Turns one event into a span, or nil when the event does not complete one (or is malformed: count it
    /// in the tracer and return nil). `event` is only valid during the call.
    func decode(_ event: UnsafeRawBufferPointer, context: DecodeContext) -> Span?
}

extension Tracer {
    public var object: EmbeddedBPFObject? { nil }
    public var probes: [Probe] { [] }
    public var eventTypes: ClosedRange<UInt32>? { nil }
    public var parser: (any ProtocolParser)? { nil }
    public var ownedExchanges: Set<ExchangeKind> { [] }
    public var goFields: [GoField] { [] }
    public func counters(object: BPFObject?) -> [TracerCounter] { [] }
    public func decode(_ event: UnsafeRawBufferPointer, context: DecodeContext) -> Span? { nil }
    public var isRequired: Bool { false }
    public var hookDescription: String? { nil }
    public var notice: String? { nil }
    public func configure(_ spec: inout BPFObjectSpec, features: KernelFeatures) {}
    public func attaches(_ symbol: String, in executable: ExecutableInfo) -> Bool { true }
    public func coverage(in executable: ExecutableInfo) -> [PathCoverage] { [] }
    public var attachedOnceCalling: Set<String> { [] }
    public var returnsAttachedOnceCalling: Set<String> { [] }
    public func prepare(_ process: TracedProcess, object: BPFObject) throws {}
    public func forget(pid: Int32, object: BPFObject) {}

    /// The functions this tracer needs resolved in executables and libraries. RET offsets (a capstone
    /// disassembly) only where a return runs at them, not for a uretprobe, which attaches at the entry.
    public var probeTargetQueries: [ProbeTargetQuery] {
        probes.compactMap { probe in
            switch probe {
            case .function(let symbol, _, let returns):
                ProbeTargetQuery(tracer: name, symbol: symbol, needsReturnOffsets: returns != nil)
            case .library(_, let symbol, _, let returns, let returnsWithUretprobe):
                ProbeTargetQuery(tracer: name, symbol: symbol, needsReturnOffsets: returns != nil && !returnsWithUretprobe)
            default: nil
            }
        }
    }
}

/// One counter a tracer exports (as `tracer_<tracer>_<name>_total` on `/metrics`).
public struct TracerCounter: Sendable {
    public let name: String
    public let help: String
    public let value: @Sendable () -> UInt64

    public init(_ name: String, help: String, value: @escaping @Sendable () -> UInt64) {
        self.name = name
        self.help = help
        self.value = value
    }
}

/// Whether a tracer instruments a process, and if not, why.
public enum Applicability: Sendable, Equatable {
    case applies
    case notApplicable(reason: String)
}

/// One probe of a tracer.
public enum Probe: Sendable, Hashable {
    /// A function of the process's main executable. `entry` runs at its first instruction; `returns` runs
    /// at every RET instruction (uprobes at RET offsets: never a uretprobe, which Go's moving stacks turn
    /// into crashes). Attached once per executable file, batched into uprobe_multi links where available.
    case function(symbol: String, entry: BPFProgramName?, returns: BPFProgramName?)
    /// A function of a shared library the process maps, chosen by file name prefix (`libssl.so`).
    /// `returns` is a uretprobe when `returnsWithUretprobe` (safe for C code), else uprobes at RET offsets.
    /// Attached once per library file and reference-counted across the processes that map it.
    case library(prefix: String, symbol: String, entry: BPFProgramName?, returns: BPFProgramName?, returnsWithUretprobe: Bool)
    /// A kernel function; where the kernel has no kprobes the fallback tracepoint is attached instead.
    case kprobe(function: String, program: BPFProgramName, returnProbe: Bool, fallback: TracepointProbe?)
    /// A static tracepoint, attached once for the whole agent (the PID filter decides who emits).
    case tracepoint(TracepointProbe)
    /// A BTF-typed tracing program (tp_btf, fentry, fexit; Linux 5.5) on `target`, which its section names:
    /// typed arguments, and no trace record built per hit as classic tracepoints do.
    case btf(target: String, program: BPFProgramName)
    /// A raw tracepoint (`BPF_PROG_TYPE_RAW_TRACEPOINT`, Linux 4.17) such as `sys_exit`, attached once for the
    /// whole agent: no perf-buffer record is built per hit, so it is the cheapest hook on hot syscalls.
    case rawTracepoint(event: String, program: BPFProgramName)
    /// A cgroup program (sock_ops, cgroup_skb...) on the root of the cgroup v2 hierarchy, as a BPF link: it
    /// runs for the sockets of every cgroup, so it must filter by process itself.
    case cgroup(program: BPFProgramName)
    /// An sk_msg verdict program on a SOCKHASH/SOCKMAP of the tracer's object (`BPF_SK_MSG_VERDICT`): it runs
    /// for the sends of the sockets in that map.
    case messageVerdict(map: BPFMapName, program: BPFProgramName)

    /// Programs of this probe that run as uprobes or uretprobes (loaded as uprobe_multi where the kernel has it).
    public var uprobePrograms: [BPFProgramName] {
        switch self {
        case .function(_, let entry, let returns): [entry, returns].compactMap { $0 }
        case .library(_, _, let entry, let returns, _): [entry, returns].compactMap { $0 }
        default: []
        }
    }

    /// Every program this probe may run.
    public var programs: [BPFProgramName] {
        switch self {
        case .function(_, let entry, let returns), .library(_, _, let entry, let returns, _): [entry, returns].compactMap { $0 }
        case .kprobe(_, let program, _, let fallback): [program] + (fallback.map { [$0.program] } ?? [])
        case .tracepoint(let tracepoint): [tracepoint.program]
        case .rawTracepoint(_, let program), .btf(_, let program), .cgroup(let program), .messageVerdict(_, let program): [program]
        }
    }
}

/// A tracepoint `category:event` and the program to attach there.
public struct TracepointProbe: Sendable, Hashable {
    public let category: String
    public let event: String
    public let program: BPFProgramName

    public init(_ category: String, _ event: String, program: BPFProgramName) {
        self.category = category
        self.event = event
        self.program = program
    }
}

/// A selected process as tracers see it.
public struct TracedProcess: Sendable {
    /// Host PID (TGID).
    public let pid: Int32
    public let snapshot: ProcessSnapshot
    /// The main executable, inspected with every tracer's probe target queries.
    public let executable: ExecutableInfo
    /// OTel resource of the process (service name, process and host attributes).
    public let resource: Resource

    public init(pid: Int32, snapshot: ProcessSnapshot, executable: ExecutableInfo, resource: Resource) {
        self.pid = pid
        self.snapshot = snapshot
        self.executable = executable
        self.resource = resource
    }
}

/// What decoding needs besides the event bytes.
public struct DecodeContext: Sendable {
    /// Converts `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to Unix nanoseconds.
    public let monotonicToUnixOffset: Int64
    /// The resource of a traced process by host PID, nil for processes that are no longer traced.
    public let resource: @Sendable (Int32) -> Resource?
    /// The scope spans of this tracer carry.
    public let scope: InstrumentationScope
    /// Which span each goroutine serves, for parenting across tracers.
    public let traceContexts: TraceContexts

    public init(monotonicToUnixOffset: Int64, scope: InstrumentationScope, traceContexts: TraceContexts = TraceContexts(),
                resource: @escaping @Sendable (Int32) -> Resource?) {
        self.monotonicToUnixOffset = monotonicToUnixOffset
        self.resource = resource
        self.scope = scope
        self.traceContexts = traceContexts
    }

    /// A `bpf_ktime_get_ns()` timestamp as Unix nanoseconds.
    public func unixNanoseconds(monotonic: UInt64) -> UInt64 {
        UInt64(clamping: Int64(clamping: monotonic) &+ monotonicToUnixOffset)
    }
}

/// One path of a tracer in an executable (``Tracer/coverage(in:)``): on, or off and why.
public struct PathCoverage: Sendable, Equatable, Encodable, CustomStringConvertible {
    public let path: String
    /// Nil when the path is on.
    public let offReason: String?

    public init(_ path: String, offBecause offReason: String? = nil) {
        self.path = path
        self.offReason = offReason
    }

    public var description: String { offReason.map { "\(path): off, \($0)" } ?? "\(path): on" }
}
