import BPFRuntime
import ExecutableInspection
import Logging
import Telemetry

/// A tracer whose object is loaded (protocol parsers have none), with its agent-wide links (tracepoints,
/// kprobes, fexit): attached while at least one selected process uses the tracer, so an agent that traces
/// nothing the tracer applies to costs the machine nothing for it.
final class LoadedTracer: @unchecked Sendable {
    let tracer: any Tracer
    let object: BPFObject?
    /// Uprobe programs were loaded as uprobe_multi (Linux 6.6): one link per program and file.
    let usesUprobeMulti: Bool
    /// This tracer's bit in the PID filter's values (`tracer_pid_mask`).
    let pidMask: UInt32
    let scope: InstrumentationScope
    /// How the agent-wide probes attach (built once at load; kprobes replaced by their fallback).
    fileprivate var globalAttachments: [() throws -> BPFLink] = []
    fileprivate(set) var globalLinks: [BPFLink] = []
    /// Selected processes that use the tracer (its agent-wide links live while there is one).
    fileprivate(set) var users: Set<Int32> = []

    init(tracer: any Tracer, object: BPFObject?, usesUprobeMulti: Bool, pidMask: UInt32) {
        self.tracer = tracer
        self.object = object
        self.usesUprobeMulti = usesUprobeMulti
        self.pidMask = pidMask
        scope = InstrumentationScope(name: "tracer/\(tracer.name)")
    }

    /// The object of a tracer that has one (only those declare programs).
    func loadedObject() throws -> BPFObject {
        guard let object else { throw SelectionError("tracer \(tracer.name) has no BPF object") }
        return object
    }
}

/// What attaching a process did.
public struct AttachReport: Sendable {
    public var tracers: [String] = []
    /// The PID filter bits of `tracers`.
    public var tracerMask: UInt32 = 0
    /// Links created for this process (0 when every file it uses was attached already).
    public var newLinks = 0
    /// Probe points the process is covered by (offsets of uprobes in its files, plus global probes).
    public var probes = 0
    public var errors: [String] = []
    public var skipped: [String] = []
    /// Paths of the attached tracers that are off for this process's executable, and why (``Tracer/coverage(in:)``).
    public var pathsOff: [String] = []
    /// The protocol parsers that apply, and the exchanges the process's other tracers make themselves.
    public var parsers: [any ProtocolParser] = []
    public var ownedExchanges: Set<ExchangeKind> = []
}

/// Attaches tracers' probes: once per file (device+inode) however many processes run it, shared
/// libraries reference-counted across the processes that map them, kprobes replaced by their tracepoint
/// fallback where the kernel has none. Not thread-safe: the agent calls it from its control queue only.
final class Attacher {
    /// A file's links for one tracer and the processes that use them.
    private final class FileAttachment {
        let path: String
        let links: [BPFLink]
        let probeCount: Int
        var users: Set<Int32> = []

        init(path: String, links: [BPFLink], probeCount: Int) {
            self.path = path
            self.links = links
            self.probeCount = probeCount
        }
    }

    private struct FileKey: Hashable {
        let tracer: String
        let file: FileIdentity
        /// The tracer's ``Tracer/attachedOnceCalling`` functions, attached apart from the others.
        var forCalls = false
    }

    let loaded: [LoadedTracer]
    /// The shared capture layer, loaded when a tracer has a protocol parser.
    let capture: LoadedTracer?
    private var files: [FileKey: FileAttachment] = [:]
    /// Attached processes whose executable has functions a tracer attaches only once the process makes calls.
    private var notYetCalling: [Int32: TracedProcess] = [:]
    private let inspection: InspectionCache
    private let logger: Logger

    /// Loads every tracer into `channel` (agent-wide probes attach with the first process that uses the
    /// tracer). A tracer that fails is skipped with a logged reason, unless it is required; tracers whose
    /// event-type ranges overlap are an error.
    init(tracers: [any Tracer], channel: EventChannel, features: KernelFeatures, captureHooks: CaptureHooks,
         networkPropagation: NetworkPropagation = .off, followForks: Bool, inspection: InspectionCache, logger: Logger) throws {
        self.inspection = inspection
        self.logger = logger
        guard tracers.count <= 31 else { throw SelectionError("at most 31 tracers fit the PID filter's mask, not \(tracers.count)") }
        let capture: (any Tracer)? = tracers.contains { $0.parser != nil } ? CaptureTracer(hooks: captureHooks, followForks: followForks, networkPropagation: networkPropagation) : nil
        try Self.checkEventTypes(tracers + (capture.map { [$0] } ?? []))
        var loaded: [LoadedTracer] = []
        for (index, tracer) in tracers.enumerated() {
            do {
                loaded.append(try Self.load(tracer, channel: channel, features: features, pidMask: 1 << UInt32(index), logger: logger))
            } catch {
                if tracer.isRequired { throw error }
                logger.warning("tracer \(tracer.name) not loaded: \(error)")
            }
        }
        self.loaded = loaded
        // The capture layer's bit is the last one: it emits for a process when one of its parsers applies.
        self.capture = try capture.map { try Self.load($0, channel: channel, features: features, pidMask: 1 << 31, logger: logger) }
    }

    /// Event-type ranges of different tracers must not overlap: a collision would hand one tracer's events
    /// to another.
    static func checkEventTypes(_ tracers: [any Tracer]) throws {
        let ranges = tracers.compactMap { tracer in tracer.eventTypes.map { (tracer.name, $0) } }
        for (index, (name, range)) in ranges.enumerated() {
            for (other, otherRange) in ranges[(index + 1)...] where range.overlaps(otherRange) {
                throw SelectionError("tracers \(name) and \(other) both claim event types \(max(range.lowerBound, otherRange.lowerBound))...\(min(range.upperBound, otherRange.upperBound)): give each tracer its own range")
            }
        }
    }

    private static func load(_ tracer: any Tracer, channel: EventChannel, features: KernelFeatures, pidMask: UInt32,
                             logger: Logger) throws -> LoadedTracer {
        guard let embedded = tracer.object else {
            logger.info("loaded tracer \(tracer.name): a protocol parser on the shared capture layer")
            return LoadedTracer(tracer: tracer, object: nil, usesUprobeMulti: false, pidMask: pidMask)
        }
        let kprobes = features.isAvailable(.kprobe)
        let multi = features.isAvailable(.uprobeMulti)
        var programs: Set<BPFProgramName> = []
        var uprobePrograms: Set<BPFProgramName> = []
        for probe in tracer.probes {
            switch probe {
            case .kprobe(_, let program, _, let fallback):
                if kprobes || fallback == nil { programs.insert(program) } else { programs.insert(fallback!.program) }
            default:
                programs.formUnion(probe.programs)
                uprobePrograms.formUnion(probe.uprobePrograms)
            }
        }
        var spec = BPFObjectSpec(embedded, programs: programs)
        if multi { spec.uprobeMultiPrograms = uprobePrograms }
        channel.use(in: &spec, pidMask: pidMask)
        tracer.configure(&spec, features: features)
        let object = try spec.load()
        let loaded = LoadedTracer(tracer: tracer, object: object, usesUprobeMulti: multi, pidMask: pidMask)

        for probe in tracer.probes {
            switch probe {
            case .tracepoint(let tracepoint):
                loaded.globalAttachments.append { try object.program(tracepoint.program).attachTracepoint(category: tracepoint.category, event: tracepoint.event) }
            case .rawTracepoint(let event, let program):
                loaded.globalAttachments.append { try object.program(program).attachRawTracepoint(event) }
            case .btf(_, let program):
                loaded.globalAttachments.append { try object.program(program).attachTracing() }
            case .cgroup(let program):
                loaded.globalAttachments.append {
                    guard let root = Cgroup2.mountPoint() else { throw SelectionError("no cgroup2 filesystem is mounted to attach \(program) to") }
                    return try object.program(program).attachCgroup(path: root)
                }
            case .messageVerdict(let map, let program):
                loaded.globalAttachments.append { try object.program(program).attachMessageVerdict(to: object.map(map)) }
            case .kprobe(let function, let program, let returnProbe, let fallback):
                if kprobes || fallback == nil {
                    loaded.globalAttachments.append { try object.program(program).attachKprobe(function: function, returnProbe: returnProbe) }
                } else if let fallback {
                    loaded.globalAttachments.append { try object.program(fallback.program).attachTracepoint(category: fallback.category, event: fallback.event) }
                }
            case .function, .library:
                break
            }
        }
        let hooks = tracer.hookDescription ?? (kprobes ? "kprobes" : "tracepoints (no kprobes on this kernel)")
        logger.info("loaded tracer \(tracer.name): \(loaded.globalAttachments.count) agent-wide probes via \(hooks) (attached while a process uses it), uprobes as \(multi ? "uprobe_multi links" : "perf-event links")")
        return loaded
    }

    /// Every loaded tracer, the capture layer last.
    private var all: [LoadedTracer] { loaded + (capture.map { [$0] } ?? []) }

    /// Every probe target query of the loaded tracers, for inspecting executables.
    var probeTargetQueries: [ProbeTargetQuery] { all.flatMap(\.tracer.probeTargetQueries) }

    /// Every Go struct field a loaded tracer reads.
    var goFields: [GoField] { Array(Set(all.flatMap(\.tracer.goFields))).sorted { $0.description < $1.description } }

    /// Attaches what `process` needs from every tracer that applies to it (and the capture layer when one of
    /// them is a protocol parser), then lets each tracer prepare it.
    func attach(_ process: TracedProcess) -> AttachReport {
        var report = AttachReport()
        var parsers = false
        for tracer in loaded {
            if case .notApplicable(let reason) = tracer.tracer.applicability(to: process) {
                report.skipped.append("\(tracer.tracer.name): \(reason)")
                continue
            }
            if attach(tracer, to: process, report: &report) {
                parsers = parsers || tracer.tracer.parser != nil
                report.parsers += tracer.tracer.parser.map { [$0] } ?? []
                report.ownedExchanges.formUnion(tracer.tracer.ownedExchanges)
            }
        }
        if parsers, let capture {
            _ = attach(capture, to: process, report: &report)
        }
        return report
    }

    /// Attaches one tracer for `process`; returns whether it applies now.
    private func attach(_ tracer: LoadedTracer, to process: TracedProcess, report: inout AttachReport) -> Bool {
        do {
            if let object = tracer.object {
                try attachFunctions(of: tracer, to: process, report: &report)
                do {
                    try attachLibraries(of: tracer, to: process, report: &report)
                } catch {
                    // A library that vanished or cannot be probed costs its probes, not the tracer's others.
                    report.errors.append("\(tracer.tracer.name): \(error)")
                }
                if tracer.globalLinks.isEmpty {
                    tracer.globalLinks = try BPFLinkGroup(attaching: tracer.globalAttachments).links
                    report.newLinks += tracer.globalLinks.count
                }
                try tracer.tracer.prepare(process, object: object)
            }
            tracer.users.insert(process.pid)
            report.tracers.append(tracer.tracer.name)
            report.pathsOff += tracer.tracer.coverage(in: process.executable).filter { $0.offReason != nil }.map { "\(tracer.tracer.name): \($0)" }
            report.tracerMask |= tracer.pidMask
            report.probes += tracer.globalLinks.count
            return true
        } catch {
            report.errors.append("\(tracer.tracer.name): \(error)")
            return false
        }
    }

    private func attachFunctions(of tracer: LoadedTracer, to process: TracedProcess, report: inout AttachReport, forCalls: Bool = false) throws {
        let later = tracer.tracer.attachedOnceCalling, laterReturns = tracer.tracer.returnsAttachedOnceCalling
        // The probes of this phase: those of functions attached once calling then, their RETs too where only
        // those wait, the rest now.
        let probes = tracer.tracer.probes.enumerated().compactMap { index, probe -> (offset: Int, element: Probe)? in
            guard case .function(let symbol, let entry, let returns) = probe else { return nil }
            if later.contains(symbol) { return forCalls ? (index, probe) : nil }
            if laterReturns.contains(symbol) {
                let phase = forCalls ? Probe.function(symbol: symbol, entry: nil, returns: returns) : .function(symbol: symbol, entry: entry, returns: nil)
                return forCalls && returns == nil ? nil : (index, phase)
            }
            return forCalls ? nil : (index, probe)
        }
        guard let identity = process.executable.identity else { return }
        let wanted = process.executable.probeTargets.filter {
            $0.tracer == tracer.tracer.name && tracer.tracer.attaches($0.symbol, in: process.executable)
        }
        let targets = wanted.filter { target in
            probes.contains { if case .function(let symbol, _, _) = $0.element { symbol == target.symbol } else { false } }
        }
        if !forCalls && !(later.isEmpty && laterReturns.isEmpty) {
            let callingKey = FileKey(tracer: tracer.tracer.name, file: identity, forCalls: true)
            if files[callingKey] != nil {
                // Another process of this file calls already: its probes cover this one too.
                files[callingKey]!.users.insert(process.pid)
            } else if wanted.contains(where: { later.contains($0.symbol) || laterReturns.contains($0.symbol) }) {
                notYetCalling[process.pid] = process
            }
        }
        guard !probes.isEmpty else { return }
        let key = FileKey(tracer: tracer.tracer.name, file: identity, forCalls: forCalls)
        if files[key] == nil {
            let (links, count) = try attachUprobes(tracer, path: process.snapshot.executableOpenPath, targets: targets, probes: probes)
            files[key] = FileAttachment(path: process.snapshot.executablePath, links: links, probeCount: count)
            report.newLinks += links.count
        }
        files[key]!.users.insert(process.pid)
        report.probes += files[key]!.probeCount
    }

    /// Process `pid` made its first call: attaches the functions its tracers attach only once a process calls
    /// (``Tracer/attachedOnceCalling``), for its executable (once per file, like the others). Returns the
    /// links made (0 when the file had them already, or the process has none).
    func attachForCalls(pid: Int32) throws -> Int {
        guard let process = notYetCalling.removeValue(forKey: pid) else { return 0 }
        var report = AttachReport()
        for tracer in loaded + [capture].compactMap({ $0 })
            where !(tracer.tracer.attachedOnceCalling.isEmpty && tracer.tracer.returnsAttachedOnceCalling.isEmpty) && tracer.users.contains(pid) {
            try attachFunctions(of: tracer, to: process, report: &report, forCalls: true)
        }
        return report.newLinks
    }

    private func attachLibraries(of tracer: LoadedTracer, to process: TracedProcess, report: inout AttachReport) throws {
        let probes = tracer.tracer.probes.enumerated().filter { if case .library = $0.element { true } else { false } }
        guard !probes.isEmpty else { return }
        let prefixes = Set(probes.compactMap { if case .library(let prefix, _, _, _, _) = $0.element { prefix } else { nil } })
        let queries = tracer.tracer.probeTargetQueries
        for library in process.snapshot.libraries {
            let name = library.path.split(separator: "/").last.map(String.init) ?? library.path
            guard let identity = library.identity, prefixes.contains(where: { name.hasPrefix($0) }) else { continue }
            let key = FileKey(tracer: tracer.tracer.name, file: identity)
            if files[key] == nil {
                let openPath = "/proc/\(process.pid)/root\(library.path)"
                let info = try inspection.info(path: openPath, queries: queries)
                let matching = probes.filter { if case .library(let prefix, _, _, _, _) = $0.element { name.hasPrefix(prefix) } else { false } }
                let (links, count) = try attachUprobes(tracer, path: openPath, targets: info.probeTargets, probes: matching)
                files[key] = FileAttachment(path: library.path, links: links, probeCount: count)
                report.newLinks += links.count
            }
            files[key]!.users.insert(process.pid)
            report.probes += files[key]!.probeCount
        }
    }

    /// One link per program (uprobe_multi) or per offset (perf-event links), all or nothing. The attach
    /// cookie of every probe point is the index of its probe in the tracer's `probes`.
    private func attachUprobes(_ tracer: LoadedTracer, path: String, targets: [ProbeTarget],
                               probes: [(offset: Int, element: Probe)]) throws -> (links: [BPFLink], probeCount: Int) {
        struct Group { var offsets: [UInt64] = []; var cookies: [UInt64] = [] }
        var groups: [GroupKey: Group] = [:]
        for (index, probe) in probes {
            let symbol: String, entry: BPFProgramName?, returns: BPFProgramName?, uretprobe: Bool
            switch probe {
            case .function(let name, let entryProgram, let returnProgram):
                (symbol, entry, returns, uretprobe) = (name, entryProgram, returnProgram, false)
            case .library(_, let name, let entryProgram, let returnProgram, let useUretprobe):
                (symbol, entry, returns, uretprobe) = (name, entryProgram, returnProgram, useUretprobe)
            default: continue
            }
            guard let target = targets.first(where: { $0.symbol == symbol }) else {
                logger.debug("tracer \(tracer.tracer.name): \(symbol) not found in \(path)")
                continue
            }
            if let entry {
                groups[GroupKey(program: entry, returnProbe: false), default: Group()].offsets.append(target.entryProbeOffset)
                groups[GroupKey(program: entry, returnProbe: false)]!.cookies.append(UInt64(index))
            }
            if let returns {
                let key = GroupKey(program: returns, returnProbe: uretprobe)
                let offsets = uretprobe ? [target.fileOffset] : target.returnOffsets
                groups[key, default: Group()].offsets += offsets
                groups[key]!.cookies += Array(repeating: UInt64(index), count: offsets.count)
            }
        }
        var attachments: [() throws -> BPFLink] = []
        for (key, group) in groups.sorted(by: { $0.key.program.rawValue < $1.key.program.rawValue }) where !group.offsets.isEmpty {
            let program = try tracer.loadedObject().program(key.program)
            if tracer.usesUprobeMulti {
                attachments.append { try program.attachUprobeMulti(path: path, offsets: group.offsets, cookies: group.cookies, returnProbe: key.returnProbe) }
            } else {
                for (offset, cookie) in zip(group.offsets, group.cookies) {
                    attachments.append { try program.attachUprobe(path: path, offset: offset, returnProbe: key.returnProbe, cookie: cookie) }
                }
            }
        }
        let links = try BPFLinkGroup(attaching: attachments).links
        return (links, groups.values.reduce(0) { $0 + $1.offsets.count })
    }

    private struct GroupKey: Hashable {
        let program: BPFProgramName
        let returnProbe: Bool
    }

    /// Forgets `pid`: files it was the last user of give back their links, to be closed off the event path.
    /// `reinstrumenting`: the process exec'd and is attached again at once; the tracers keep what they
    /// prepared for it until then, so its new image's first bytes are not lost.
    func release(pid: Int32, reinstrumenting: Bool = false) -> [BPFLink] {
        var released: [BPFLink] = []
        notYetCalling[pid] = nil
        for tracer in all where tracer.users.remove(pid) != nil {
            if let object = tracer.object, !reinstrumenting { tracer.tracer.forget(pid: pid, object: object) }
        }
        for (key, attachment) in files where attachment.users.contains(pid) {
            attachment.users.remove(pid)
            if attachment.users.isEmpty {
                released += attachment.links
                files[key] = nil
                logger.debug("detaching \(attachment.links.count) links of \(key.tracer) from \(attachment.path): its last process exited")
            }
        }
        return released
    }

    /// The agent-wide links of tracers no selected process uses any more, handed over for closing. Called
    /// a while after the last user left, so a process that execs (and is selected again at once) keeps them.
    func releaseUnusedGlobalLinks() -> [BPFLink] {
        var released: [BPFLink] = []
        for tracer in all where tracer.users.isEmpty && !tracer.globalLinks.isEmpty {
            logger.debug("detaching the \(tracer.globalLinks.count) agent-wide probes of \(tracer.tracer.name): no selected process uses it")
            released += tracer.globalLinks
            tracer.globalLinks = []
        }
        return released
    }

    /// Every link the attacher holds (per-file and agent-wide), handed over for closing at shutdown.
    func releaseAll() -> [BPFLink] {
        let links = files.values.flatMap(\.links) + all.flatMap(\.globalLinks)
        files.removeAll()
        for tracer in all {
            tracer.globalLinks.removeAll()
            tracer.users.removeAll()
        }
        return links
    }

    /// Files with links, as `tracer path users` lines (for tests and diagnostics).
    var attachedFiles: [(tracer: String, path: String, file: FileIdentity, links: Int, users: Set<Int32>, forCalls: Bool)] {
        files.map { ($0.key.tracer, $0.value.path, $0.key.file, $0.value.links.count, $0.value.users, $0.key.forCalls) }
    }
}
