import BPFRuntime
import ExecutableInspection
import Logging
import Telemetry

/// A tracer whose object is loaded, with the links it holds for the whole agent (tracepoints, kprobes).
final class LoadedTracer: @unchecked Sendable {
    let tracer: any Tracer
    let object: BPFObject
    /// Uprobe programs were loaded as uprobe_multi (Linux 6.6): one link per program and file.
    let usesUprobeMulti: Bool
    /// This tracer's bit in the PID filter's values (`tracer_pid_mask`).
    let pidMask: UInt32
    let scope: InstrumentationScope
    fileprivate(set) var globalLinks: [BPFLink] = []

    init(tracer: any Tracer, object: BPFObject, usesUprobeMulti: Bool, pidMask: UInt32) {
        self.tracer = tracer
        self.object = object
        self.usesUprobeMulti = usesUprobeMulti
        self.pidMask = pidMask
        scope = InstrumentationScope(name: "tracer/\(tracer.name)")
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
    }

    let loaded: [LoadedTracer]
    private var files: [FileKey: FileAttachment] = [:]
    private let inspection: InspectionCache
    private let logger: Logger

    /// Loads every tracer into `channel` and attaches its agent-wide probes. A tracer that fails is
    /// skipped with a logged reason, unless it is required.
    init(tracers: [any Tracer], channel: EventChannel, features: KernelFeatures, inspection: InspectionCache, logger: Logger) throws {
        self.inspection = inspection
        self.logger = logger
        guard tracers.count <= 32 else { throw SelectionError("at most 32 tracers fit the PID filter's mask, not \(tracers.count)") }
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
    }

    private static func load(_ tracer: any Tracer, channel: EventChannel, features: KernelFeatures, pidMask: UInt32,
                             logger: Logger) throws -> LoadedTracer {
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
        var spec = BPFObjectSpec(tracer.object, programs: programs)
        if multi { spec.uprobeMultiPrograms = uprobePrograms }
        channel.use(in: &spec, pidMask: pidMask)
        tracer.configure(&spec, features: features)
        let object = try spec.load()
        let loaded = LoadedTracer(tracer: tracer, object: object, usesUprobeMulti: multi, pidMask: pidMask)

        var attachments: [() throws -> BPFLink] = []
        for probe in tracer.probes {
            switch probe {
            case .tracepoint(let tracepoint):
                attachments.append { try object.program(tracepoint.program).attachTracepoint(category: tracepoint.category, event: tracepoint.event) }
            case .rawTracepoint(let event, let program):
                attachments.append { try object.program(program).attachRawTracepoint(event) }
            case .kprobe(let function, let program, let returnProbe, let fallback):
                if kprobes || fallback == nil {
                    attachments.append { try object.program(program).attachKprobe(function: function, returnProbe: returnProbe) }
                } else if let fallback {
                    attachments.append { try object.program(fallback.program).attachTracepoint(category: fallback.category, event: fallback.event) }
                }
            case .function, .library:
                break
            }
        }
        loaded.globalLinks = try BPFLinkGroup(attaching: attachments).links
        let hooks = tracer.hookDescription ?? (kprobes ? "kprobes" : "tracepoints (no kprobes on this kernel)")
        logger.info("loaded tracer \(tracer.name): \(loaded.globalLinks.count) agent-wide probes via \(hooks), uprobes as \(multi ? "uprobe_multi links" : "perf-event links")")
        return loaded
    }

    /// Every probe target query of the loaded tracers, for inspecting executables.
    var probeTargetQueries: [ProbeTargetQuery] { loaded.flatMap(\.tracer.probeTargetQueries) }

    /// Attaches what `process` needs from every tracer that applies to it, then lets each tracer prepare it.
    func attach(_ process: TracedProcess) -> AttachReport {
        var report = AttachReport()
        for tracer in loaded {
            if case .notApplicable(let reason) = tracer.tracer.applicability(to: process) {
                report.skipped.append("\(tracer.tracer.name): \(reason)")
                continue
            }
            do {
                try attachFunctions(of: tracer, to: process, report: &report)
                try attachLibraries(of: tracer, to: process, report: &report)
                try tracer.tracer.prepare(process, object: tracer.object)
                report.tracers.append(tracer.tracer.name)
                report.tracerMask |= tracer.pidMask
                report.probes += tracer.globalLinks.count
            } catch {
                report.errors.append("\(tracer.tracer.name): \(error)")
            }
        }
        return report
    }

    private func attachFunctions(of tracer: LoadedTracer, to process: TracedProcess, report: inout AttachReport) throws {
        let probes = tracer.tracer.probes.enumerated().filter { if case .function = $0.element { true } else { false } }
        guard !probes.isEmpty, let identity = process.executable.identity else { return }
        let key = FileKey(tracer: tracer.tracer.name, file: identity)
        if files[key] == nil {
            let targets = process.executable.probeTargets.filter { $0.tracer == tracer.tracer.name }
            let (links, count) = try attachUprobes(tracer, path: process.snapshot.executableOpenPath, targets: targets, probes: probes)
            files[key] = FileAttachment(path: process.snapshot.executablePath, links: links, probeCount: count)
            report.newLinks += links.count
        }
        files[key]!.users.insert(process.pid)
        report.probes += files[key]!.probeCount
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
                groups[GroupKey(program: entry, returnProbe: false), default: Group()].offsets.append(target.fileOffset)
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
            let program = try tracer.object.program(key.program)
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
    func release(pid: Int32) -> [BPFLink] {
        for tracer in loaded { tracer.tracer.forget(pid: pid, object: tracer.object) }
        var released: [BPFLink] = []
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

    /// Every link the attacher holds (per-file and agent-wide), handed over for closing at shutdown.
    func releaseAll() -> [BPFLink] {
        let links = files.values.flatMap(\.links) + loaded.flatMap(\.globalLinks)
        files.removeAll()
        for tracer in loaded { tracer.globalLinks.removeAll() }
        return links
    }

    /// Files with links, as `tracer path users` lines (for tests and diagnostics).
    var attachedFiles: [(tracer: String, path: String, file: FileIdentity, links: Int, users: Set<Int32>)] {
        files.map { ($0.key.tracer, $0.value.path, $0.key.file, $0.value.links.count, $0.value.users) }
    }
}
