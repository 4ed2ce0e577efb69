import BPFPrograms
import BPFRuntime
import CTracerABI
internal import CTracerShim
import ExecutableInspection
import Foundation
import Logging
import Synchronization
import Telemetry

/// The agent: watches processes, selects them, attaches tracers, and turns their events into spans for
/// the sinks. Data flows one way: /proc scan + sched tracepoints → selection → inspection → attach →
/// events → decode → sinks.
///
/// Threads: the events reader decodes and hands spans to the sinks; a serial control queue does all
/// selection, inspection and attaching; a serial detach queue closes links (detaching a perf-event uprobe
/// waits ~100 ms for RCU), so neither stalls event processing.
public final class Agent: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var selection: Selection
        public var tracers: [any Tracer]
        public var sinks: [any SpanSink]
        public var channel: EventChannel.Settings
        /// How often /proc is rescanned as a safety net for missed events.
        public var rescanInterval: Duration
        public var drainInterval: Duration
        public var logger: Logger
        /// What the kernel can do, when the caller detected it already (tracers may depend on it); else
        /// the agent detects it.
        public var features: KernelFeatures?
        /// The capture layer's hook variant; nil: the cheapest this kernel has.
        public var captureHooks: CaptureHooks?
        /// Insert a traceparent into the plaintext HTTP/1 requests of selected non-Go processes (sk_msg), where
        /// this machine allows it (``NetworkPropagation``).
        public var networkPropagation: Bool

        public init(selection: Selection, tracers: [any Tracer], sinks: [any SpanSink] = [],
                    channel: EventChannel.Settings = .init(), rescanInterval: Duration = .seconds(10),
                    drainInterval: Duration = .milliseconds(20), logger: Logger = Logger(label: "tracer"),
                    features: KernelFeatures? = nil, captureHooks: CaptureHooks? = nil, networkPropagation: Bool = false) {
            self.features = features
            self.captureHooks = captureHooks
            self.networkPropagation = networkPropagation
            self.selection = selection
            self.tracers = tracers
            self.sinks = sinks
            self.channel = channel
            self.rescanInterval = rescanInterval
            self.drainInterval = drainInterval
            self.logger = logger
        }
    }

    /// A process the agent selected. A class: the reader thread looks one up per span (its resource), and a
    /// lookup then costs one reference, not a copy of every field.
    public final class SelectedProcess: Sendable {
        public let pid: Int32
        public let rule: SelectionRule
        public let resource: Resource
        public let executable: String
        public let tracers: [String]
        /// PID filter bits of `tracers`: events of other tracers for this process are dropped.
        let tracerMask: UInt32
        /// The protocol parsers that apply, for the capture layer's connections.
        let parsers: ConnectionTracker.ProcessParsers
        /// When it was (last) instrumented.
        let attachedAt: ContinuousClock.Instant

        init(pid: Int32, rule: SelectionRule, resource: Resource, executable: String, tracers: [String], tracerMask: UInt32,
             parsers: ConnectionTracker.ProcessParsers, attachedAt: ContinuousClock.Instant) {
            self.pid = pid
            self.rule = rule
            self.resource = resource
            self.executable = executable
            self.tracers = tracers
            self.tracerMask = tracerMask
            self.parsers = parsers
            self.attachedAt = attachedAt
        }
    }

    public let configuration: Configuration
    public let features: KernelFeatures
    public let metrics = AgentMetrics()
    /// Children the kernel prepared at fork whose chunks came before the agent selected them, with the
    /// selected ancestor they follow (`capture_chunk_event.follows`) until then; pruned at each rescan.
    private let followed = Followed()
    private final class Followed: Sendable {
        private let ancestors = Mutex<[Int32: Int32]>([:])
        func withLock<R>(_ body: (inout [Int32: Int32]) -> R) -> R { ancestors.withLock { body(&$0) } }
    }
    /// The capture layer's hook variant on this kernel.
    public let captureHooks: CaptureHooks
    /// Whether the capture layer inserts traceparents on the network.
    public let networkPropagation: NetworkPropagation
    /// Which span each goroutine serves, shared by the tracers' decoding.
    public let traceContexts = TraceContexts()
    private let channel: EventChannel
    /// Process lifecycle events have a channel of their own (same transport, 256 KiB, the same PID filter),
    /// so a flood of tracer events never drops an exec.
    private let processChannel: EventChannel
    private let attacher: Attacher
    private let inspection: InspectionCache
    /// The capture layer's connections (reader thread).
    private var tracker: ConnectionTracker!
    /// An event's exchanges and a run of spans for the sinks (reader thread): kept between batches, so their
    /// storage does not grow again, copying what it holds, for every batch.
    private var batchExchanges: [Exchange] = []
    private var batchSpans: [Span] = []
    /// Process lifecycle events have their own ring, so a span flood never drops an exec.
    private var processReader: (any EventReader)?
    private let logger: Logger
    private let control = DispatchQueue(label: "tracer.control")
    private let detach = DispatchQueue(label: "tracer.detach")
    private let selected = SelectedTable()
    /// PIDs already considered (selected or not), so a rescan looks only at new ones. Control queue only.
    private var considered: Set<Int32> = []
    private var watcherObject: BPFObject?
    private var watcherLinks: [BPFLink] = []
    private var reader: (any EventReader)?
    private var rescanTimer: DispatchSourceTimer?
    private let tracersByEventType: [UInt32: (LoadedTracer, DecodeContext)]
    /// How capture exchanges become spans (the capture layer's scope and clock).
    private let captureContext: DecodeContext
    private let stopped = Mutex(false)

    /// Loads the process watcher and every tracer. Throws when BPF is unusable or a required tracer fails.
    public init(_ configuration: Configuration) throws {
        self.configuration = configuration
        logger = configuration.logger
        features = configuration.features ?? KernelFeatures.detect()
        captureHooks = configuration.captureHooks ?? CaptureHooks.choose(features)
        channel = try EventChannel(configuration.channel)
        let processTransport: EventChannel.Transport = switch configuration.channel.transport {
        case .ringBuffer: .ringBuffer(bytes: 256 << 10)
        case .perfBuffer: .perfBuffer(pagesPerCPU: 8)
        }
        processChannel = try EventChannel(.init(transport: processTransport, wakeupBytes: 4096, filterPIDs: false),
                                          sharingPIDFilterOf: channel)
        inspection = InspectionCache(inspector: ExecutableInspector(goFields: goFieldsToInspect(for: configuration.tracers)))
        let ringBuffer = if case .ringBuffer = configuration.channel.transport { true } else { false }
        let networkAdmin = features.capabilities.contains { ($0.name == "CAP_NET_ADMIN" || $0.name == "CAP_SYS_ADMIN") && $0.held }
        networkPropagation = NetworkPropagation.decide(requested: configuration.networkPropagation, hooks: captureHooks,
                                                       kernelRelease: features.kernelRelease, ringBuffer: ringBuffer, networkAdmin: networkAdmin)
        attacher = try Attacher(tracers: configuration.tracers, channel: channel, features: features, captureHooks: captureHooks,
                                networkPropagation: networkPropagation, followForks: configuration.selection.includeChildren,
                                inspection: inspection, logger: logger)
        for tracer in configuration.tracers { if let notice = tracer.notice { logger.notice("\(notice)") } }
        if let notice = networkPropagation.notice { logger.notice("\(notice)") }
        let offset = Self.monotonicToUnixOffset()
        var byType: [UInt32: (LoadedTracer, DecodeContext)] = [:]
        let selected = self.selected
        // A child the kernel prepared at fork (bpf/capture.bpf.c) is its selected ancestor's until the agent
        // selects it: that one's parsers, and its resource under the child's pid.
        let followed = self.followed
        let resource: @Sendable (Int32) -> Resource? = { pid in
            if let resource = selected.withLock({ $0[pid]?.resource }) { return resource }
            guard let ancestor = followed.withLock({ $0[pid] }), let resource = selected.withLock({ $0[ancestor]?.resource }) else { return nil }
            return resource.merging([SemanticConventions.processPID: .int(Int64(pid)), SemanticConventions.processParentPID: .int(Int64(ancestor))])
        }
        for loaded in attacher.loaded {
            let context = DecodeContext(monotonicToUnixOffset: offset, scope: loaded.scope, traceContexts: traceContexts, resource: resource)
            for type in loaded.tracer.eventTypes.map(Array.init) ?? [] { byType[type] = (loaded, context) }
        }
        tracersByEventType = byType
        captureContext = DecodeContext(monotonicToUnixOffset: offset, scope: InstrumentationScope(name: "tracer/capture"),
                                       traceContexts: traceContexts, resource: resource)
        let verdicts = try attacher.capture?.loadedObject().map(BPFPrograms.Capture.Map.captureVerdicts)
        let epoch = try attacher.capture?.loadedObject().map(BPFPrograms.Capture.Map.captureVerdictEpoch)
        var verdictsWritten: UInt64 = 0 // the reader thread's only
        tracker = ConnectionTracker(traceContexts: traceContexts, parsers: { pid, follows in
            let (pid, ancestor) = (Int32(bitPattern: pid), Int32(bitPattern: follows))
            if let parsers = selected.withLock({ $0[pid]?.parsers }) { return parsers }
            guard ancestor != 0, let parsers = selected.withLock({ $0[ancestor]?.parsers }) else { return nil }
            followed.withLock { $0[pid] = ancestor }
            return parsers
        }, countOnly: { id in
            guard (try? verdicts?.update(id, UInt8(CAPTURE_VERDICT_COUNT))) != nil else { return }
            verdictsWritten += 1
            _ = try? epoch?.update(UInt32(0), verdictsWritten)
        })
        // Once per process and protocol, what it speaks; once per process, that something is not understood.
        let logger = self.logger
        tracker.sighted = { pid, sighting in
            let pid = Int32(bitPattern: pid)
            let service = resource(pid)?.serviceName.map { " (service \($0))" } ?? ""
            switch sighting {
            case .protocolSeen(let use):
                logger.info("pid \(pid)\(service): \(use.name) seen, as \(use.role == .server ? "server" : "client")")
            case .firstUnclaimed(let peer):
                let other = peer.map { " with \($0.address):\($0.port)" } ?? ""
                logger.notice("pid \(pid)\(service): a connection\(other) that no protocol parser understands; its bytes are only counted from now on (tracer_capture_unclaimed_connections_total)")
            case .firstUnreadTLS:
                logger.notice("pid \(pid)\(service): a TLS connection whose plaintext no hook reads (a TLS library other than libssl or Go's crypto/tls): not traced (tracer_capture_unread_tls_connections_total)")
            }
        }
        // A process's first call: the probes that tie calls to the requests they are made for come now.
        let control = self.control
        nonisolated(unsafe) weak var agent = self // used on the control queue only
        traceContexts.onFirstCall { pid in
            control.async { agent?.attachForCalls(Int32(bitPattern: pid)) }
        }
    }

    /// Control queue: attaches what process `pid`'s tracers attach once it makes calls.
    private func attachForCalls(_ pid: Int32) {
        do {
            let links = try attacher.attachForCalls(pid: pid)
            if links > 0 { logger.debug("pid \(pid) makes calls: \(links) new links tie its calls to the requests they are made for") }
        } catch {
            metrics.attachErrors.add(1, ordering: .relaxed)
            logger.error("pid \(pid): attaching the probes of its calls failed: \(error)")
        }
    }

    /// The counters of every tracer and of the capture layer, for `/metrics` and OTLP self-metrics.
    public var counters: [(tracer: String, counter: TracerCounter)] {
        let tracker = self.tracker!.counters
        let capture: [TracerCounter] = [
            TracerCounter("malformed_events", help: "Capture events too short for their type.") { tracker.malformed.load(ordering: .relaxed) },
            TracerCounter("unclaimed_connections", help: "Connections no protocol parser claimed (only counted from then on).") {
                tracker.unclaimedConnections.load(ordering: .relaxed)
            },
            TracerCounter("unread_tls_connections", help: "TLS connections whose plaintext no hook read (a TLS library other than libssl or Go's).") {
                tracker.unreadTLSConnections.load(ordering: .relaxed)
            },
            TracerCounter("owned_elsewhere_connections", help: "Connections whose exchanges another tracer of the process makes.") {
                tracker.ownedElsewhere.load(ordering: .relaxed)
            },
            TracerCounter("evicted_connections", help: "Connection states dropped because the table was full.") { tracker.evicted.load(ordering: .relaxed) },
        ]
        let links = self.tracker!.peerLinks.counters
        let linking: [TracerCounter] = [
            TracerCounter("same_host_linked", help: "Server spans linked to the traced client span at the other end of their connection.") {
                links.linked.load(ordering: .relaxed) + links.linkedLate.load(ordering: .relaxed)
            },
            TracerCounter("same_host_other_namespace", help: "Same-host candidates in another network namespace: not linked.") {
                links.otherNamespace.load(ordering: .relaxed)
            },
            TracerCounter("same_host_out_of_window", help: "Same-host candidates whose times disagree (reused tuple, lost events): not linked.") {
                links.outOfWindow.load(ordering: .relaxed)
            },
            TracerCounter("same_host_mismatched", help: "Same-host candidates whose requests differ (one side seen from mid-stream): not linked.") {
                links.mismatched.load(ordering: .relaxed)
            },
            TracerCounter("same_host_ambiguous_calls", help: "Client requests of another tracer's connection with no single call in flight: not linked.") {
                links.ambiguousCalls.load(ordering: .relaxed)
            },
            TracerCounter("same_host_evicted", help: "Same-host linking entries dropped because a table was full.") { links.evicted.load(ordering: .relaxed) },
            TracerCounter("same_host_other_trace", help: "Same-host candidates in another trace than the kernel-decided ids of the server span (network propagation): not linked.") {
                links.otherTrace.load(ordering: .relaxed)
            },
        ]
        let propagation = attacher.capture.map { $0.tracer.counters(object: $0.object) } ?? []
        return (capture + linking + propagation).map { ("capture", $0) } + attacher.loaded.flatMap { loaded in
            loaded.tracer.counters(object: loaded.object).map { (loaded.tracer.name, $0) }
        }
    }

    /// Run counts and times of every loaded program (the kernel counts while `BPFStatistics` is enabled).
    public func programStatistics() -> [ProgramStatistics] {
        (attacher.loaded + (attacher.capture.map { [$0] } ?? [])).compactMap(\.object).flatMap { object in
            object.loadedPrograms.compactMap { try? $0.runtimeStatistics() }
        }
    }

    /// Kernel-side drops of the events ring.
    public var kernelDrops: UInt64 { (try? channel.kernelDrops()) ?? 0 }

    /// Connections that no protocol parser claimed, of process `pid`.
    public func unclaimedConnections(pid: Int32) -> UInt64 { tracker.counters.unclaimed(pid: UInt32(bitPattern: pid)) }

    /// The protocols seen on `pid`'s connections while it was selected, and the connections none understood.
    public func protocolsSeen(pid: Int32) -> ConnectionTracker.ProcessProtocols { tracker.counters.protocols(pid: UInt32(bitPattern: pid)) }

    /// Starts the event reader and the process watcher, then selects among the processes running now.
    public func start() throws {
        reader = try channel.startReader(drainInterval: configuration.drainInterval) { [weak self] batch in
            self?.handle(batch)
        }
        var spec = BPFObjectSpec(BPFPrograms.ProcessWatcher.object)
        processChannel.use(in: &spec)
        spec.set(BPFPrograms.ProcessWatcher.Global.tracerFilterPids, to: UInt8(0)) // every exec counts
        let watcher = try spec.load()
        processReader = try processChannel.startReader(drainInterval: configuration.drainInterval) { [weak self] batch in
            self?.handleProcessEvents(batch)
        }
        typealias Program = BPFPrograms.ProcessWatcher.Program
        watcherLinks = try BPFLinkGroup(attaching: [
            { try watcher.program(Program.processExec).attachTracepoint(category: "sched", event: "sched_process_exec") },
            { try watcher.program(Program.processFork).attachTracepoint(category: "sched", event: "sched_process_fork") },
            { try watcher.program(Program.processExit).attachTracepoint(category: "sched", event: "sched_process_exit") },
        ]).links
        watcherObject = watcher
        control.sync { scan() }
        // Loading parsed the kernel's BTF (megabytes, freed by libbpf): give the freed heap back to the system,
        // and the relocation table the dynamic loader read at start.
        tracer_release_free_heap()
        _ = tracer_release_relocation_pages(nil)

        let timer = DispatchSource.makeTimerSource(queue: control)
        let interval = DispatchTimeInterval.milliseconds(Int(configuration.rescanInterval.wholeMilliseconds))
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { [weak self] in self?.scan() }
        timer.resume()
        rescanTimer = timer
    }

    /// Detaches everything, drains the last events into the sinks, then shuts the sinks down: each sends
    /// what it holds within `flushTimeout` (exporters), and takes no more.
    public func stop(flushTimeout: Duration = .seconds(10)) {
        guard stopped.withLock({ state in defer { state = true }; return !state }) else { return }
        rescanTimer?.cancel()
        let links: [BPFLink] = control.sync {
            defer { watcherLinks = [] }
            return attacher.releaseAll() + watcherLinks
        }
        links.forEach { $0.close() }
        detach.sync {}
        reader?.stop()
        processReader?.stop()
        for sink in configuration.sinks { sink.shutdown(timeout: flushTimeout) }
    }

    /// The processes selected now.
    public var selectedProcesses: [SelectedProcess] { selected.withLock { Array($0.values) } }

    public var metricsSnapshot: AgentMetrics.Snapshot { metrics.snapshot(kernelDrops: (try? channel.kernelDrops()) ?? 0) }

    /// The PID filter map as the BPF side sees it (host TGID → whether any tracer may emit for it).
    public func pidFilterEntries() throws -> [Int32: Bool] {
        Dictionary(uniqueKeysWithValues: try channel.pids.entries(as: (UInt32, UInt32).self).map { (Int32($0.0), $0.1 != 0) })
    }

    /// Files with uprobe links: tracer, path, identity, link count and the PIDs using them.
    public func attachedFiles() -> [(tracer: String, path: String, file: FileIdentity, links: Int, users: Set<Int32>, forCalls: Bool)] {
        control.sync { attacher.attachedFiles }
    }

    /// Waits until the control queue has handled everything queued so far (for tests and shutdown).
    public func settle() {
        control.sync {}
        detach.sync {}
    }

    // MARK: - Control queue

    /// Considers every process not considered yet and forgets selected ones that are gone (/proc rescan).
    private func scan() {
        let alive = Set(ProcFS.pids())
        followed.withLock { $0 = $0.filter { alive.contains($0.key) } }
        for pid in selected.withLock({ Array($0.keys) }) where !alive.contains(pid) { exitedOnceRead(pid) }
        considered.formIntersection(alive)
        for pid in alive.subtracting(considered).sorted() {
            consider(pid, parentRule: parentRule(of: pid))
        }
        for pid in selected.withLock({ Array($0.keys) }) { refresh(pid) }
    }

    private func parentRule(of pid: Int32) -> SelectionRule? {
        guard configuration.selection.includeChildren, let parent = ProcFS.parent(pid) else { return nil }
        return selected.withLock { $0[parent]?.rule }
    }

    private func consider(_ pid: Int32, parentRule: SelectionRule?) {
        considered.insert(pid)
        guard let executablePath = ProcFS.executablePath(pid), let comm = ProcFS.comm(pid) else { return }
        let selection = configuration.selection
        let snapshot = selection.needsLanguage ? try? ProcessInspection.snapshot(pid: pid) : nil
        let facts = ProcessFacts(pid: pid, executablePath: executablePath, comm: comm, cgroup: ProcFS.cgroup(pid),
                                 language: snapshot.map { $0.languageHint },
                                 listeningPorts: selection.needsPorts ? ProcFS.listeningPorts(pid) : [])
        guard let rule = selection.rule(for: facts, selectedParent: parentRule) else { return }
        instrument(pid, rule: rule)
    }

    private func instrument(_ pid: Int32, rule: SelectionRule) {
        let started = ContinuousClock.now
        let process: TracedProcess
        do {
            process = try TracedProcess.inspect(pid: pid, rule: rule, queries: attacher.probeTargetQueries, cache: inspection)
        } catch {
            if kill(pid, 0) == 0 || errno != ESRCH {
                logger.warning("pid \(pid) selected but not instrumented: \(error)")
            } else {
                logger.debug("pid \(pid) exited before it was instrumented: \(error)")
            }
            return
        }
        let report = attacher.attach(process)
        guard kill(pid, 0) == 0 || errno != ESRCH else {
            logger.debug("pid \(pid) exited while being attached")
            let links = attacher.release(pid: pid)
            detach.async { links.forEach { $0.close() } }
            return
        }
        knownLibraries[pid] = Set(process.snapshot.libraries.compactMap(\.identity))
        do {
            try channel.allow(pid: pid, tracers: report.tracerMask)
        } catch {
            logger.error("pid \(pid): cannot allow it in the PID filter: \(error)")
            metrics.attachErrors.add(1, ordering: .relaxed)
            return
        }
        let wasSelected = selected.withLock { selected in
            defer {
                selected[pid] = SelectedProcess(pid: pid, rule: rule, resource: process.resource,
                                                executable: process.snapshot.executablePath, tracers: report.tracers,
                                                tracerMask: report.tracerMask,
                                                parsers: .init(parsers: report.parsers, ownedElsewhere: report.ownedExchanges,
                                                               servesOnThreads: process.executable.language != .go),
                                                attachedAt: .now)
            }
            return selected[pid] != nil
        }
        if !wasSelected {
            metrics.processesSelected.add(1, ordering: .relaxed)
            if !report.tracers.isEmpty { metrics.processesInstrumented.add(1, ordering: .relaxed) }
        }
        // It may have exited after the check above and before the PID filter let it in: the kernel reports
        // exits of filtered processes only, so it is forgotten here (once what it did was read) rather than
        // at the next rescan.
        if kill(pid, 0) != 0 && errno == ESRCH { exitedOnceRead(pid) }
        metrics.attachErrors.add(UInt64(report.errors.count), ordering: .relaxed)
        for error in report.errors { logger.error("pid \(pid) (\(process.snapshot.executablePath)): \(error)") }
        let milliseconds = (ContinuousClock.now - started).wholeMilliseconds
        let identity = process.executable.identity.map { "dev \($0.deviceMajor):\($0.deviceMinor) ino \($0.inode)" } ?? "unknown file"
        let version = process.executable.go?.buildInfo.map { "\($0.goVersion), " } ?? ""
        let service = process.resource.serviceName ?? "?"
        let tracers = report.tracers.isEmpty ? "no tracer applies" : "tracers: \(report.tracers.joined(separator: ", "))"
        let goTLS = report.tracers.contains(CaptureTracer.name) ? goTLSPlaintextStatus(of: process.executable).map { "; go tls plaintext \($0)" } ?? "" : ""
        logger.log(level: wasSelected ? .debug : .info, "attached \(report.probes) probes to \(process.snapshot.executablePath) (\(version)\(identity)) for pid \(pid) [service \(service); \(tracers); \(report.newLinks) new links\(goTLS)] in \(milliseconds) ms")
        for reason in report.skipped { logger.debug("pid \(pid): \(reason)") }
        if !wasSelected {
            for path in report.pathsOff { logger.info("pid \(pid): \(path)") }
            // Shared libraries are mapped by the dynamic loader after exec, and dlopen()ed later still:
            // look again shortly (and at every rescan).
            for delay in [250, 2000] {
                control.asyncAfter(deadline: .now() + .milliseconds(delay)) { [weak self] in self?.refresh(pid) }
            }
        }
    }

    /// Re-attaches a selected process whose mapped libraries changed since it was attached.
    private func refresh(_ pid: Int32) {
        guard let entry = selected.withLock({ $0[pid] }), !stopped.withLock({ $0 }) else { return }
        instrumentIfLibrariesChanged(pid, rule: entry.rule)
    }

    private var knownLibraries: [Int32: Set<FileIdentity>] = [:]

    private func instrumentIfLibrariesChanged(_ pid: Int32, rule: SelectionRule) {
        guard let snapshot = try? ProcessInspection.snapshot(pid: pid),
              knownLibraries[pid] != Set(snapshot.libraries.compactMap(\.identity)) else { return }
        instrument(pid, rule: rule)
    }

    /// `pid` exited (or stopped being selected): the events ring is drained on a timer, so what it did just
    /// before may still be there; it is forgotten once that has been read.
    private func exitedOnceRead(_ pid: Int32) {
        control.asyncAfter(deadline: .now() + Self.exitDelay) { [weak self] in
            guard let self else { return }
            let seen = protocolsSeen(pid: pid)
            tracker.forget(pid: UInt32(bitPattern: pid))
            _ = followed.withLock { $0.removeValue(forKey: pid) }
            exited(pid, seen: seen)
        }
    }

    /// `seen`: what its connections spoke, for the exit line.
    private func exited(_ pid: Int32, seen: ConnectionTracker.ProcessProtocols) {
        guard selected.withLock({ $0.removeValue(forKey: pid) }) != nil else { return }
        knownLibraries[pid] = nil
        try? channel.forget(pid: pid)
        traceContexts.forget(pid: UInt32(bitPattern: pid))
        metrics.processesSelected.add(-1, ordering: .relaxed)
        let links = attacher.release(pid: pid)
        if !links.isEmpty {
            detach.async { links.forEach { $0.close() } }
        }
        logger.info("pid \(pid) exited: \(links.count) links detached; connections: \(seen.summary)")
        // Agent-wide probes go when no selected process has used them for a while (an exec re-selects at once).
        control.asyncAfter(deadline: .now() + .seconds(1)) { [weak self] in
            guard let self, !self.stopped.withLock({ $0 }) else { return }
            let unused = self.attacher.releaseUnusedGlobalLinks()
            if !unused.isEmpty { self.detach.async { unused.forEach { $0.close() } } }
        }
    }

    private func processEvent(_ event: process_event) {
        let pid = Int32(bitPattern: event.header.pid)
        switch event.header.type {
        case UInt32(PROCESS_EVENT_EXEC):
            if let previous = selected.withLock({ $0[pid] }) {
                // The image changed: what was attached for the old one no longer applies. The process stays
                // in the PID filter and the selected table meanwhile, so the new image's first bytes (a client
                // that connects at once) are not lost; it leaves them if it is no longer selected.
                let links = attacher.release(pid: pid, reinstrumenting: true)
                if !links.isEmpty { detach.async { links.forEach { $0.close() } } }
                knownLibraries[pid] = nil
                let generation = previous.executable
                consider(pid, parentRule: previous.rule)
                if selected.withLock({ $0[pid]?.executable == generation && $0[pid]?.attachedAt == previous.attachedAt }) {
                    exitedOnceRead(pid) // not selected any more, or already gone
                }
            } else {
                let parent = Int32(bitPattern: event.parent_pid)
                let parentRule = configuration.selection.includeChildren ? selected.withLock { $0[parent]?.rule } : nil
                consider(pid, parentRule: parentRule)
            }
        case UInt32(PROCESS_EVENT_FORK):
            let child = Int32(bitPattern: event.child_pid)
            guard configuration.selection.includeChildren, ProcFS.threadGroup(child) == child,
                  let rule = selected.withLock({ $0[pid]?.rule }) else { return }
            considered.insert(child)
            instrument(child, rule: rule)
        default:
            break // exits go through exitedOnceRead
        }
    }

    // MARK: - Reader thread

    private func handleProcessEvents(_ batch: EventBatch) {
        for event in batch {
            metrics.events.add(1, ordering: .relaxed)
            guard event.count >= MemoryLayout<process_event>.size else {
                metrics.eventsDropped.add(1, ordering: .relaxed)
                continue
            }
            let processEvent = event.loadUnaligned(as: process_event.self)
            guard processEvent.header.type == UInt32(PROCESS_EVENT_EXIT) else {
                control.async { [weak self] in self?.processEvent(processEvent) }
                continue
            }
            control.async { [weak self] in self?.exitedOnceRead(Int32(bitPattern: processEvent.header.pid)) }
        }
    }

    /// Spans handed to the sinks at a time: few enough to be in the cache still when the sinks read them (a
    /// drain holds thousands of events).
    static let sinkRun = 64

    private func handle(_ batch: EventBatch) {
        var (spans, exchanges) = (batchSpans, batchExchanges)
        (batchSpans, batchExchanges) = ([], []) // the arrays are this call's alone until given back
        defer { (batchSpans, batchExchanges) = (spans, exchanges) }
        // Consecutive exchanges are mostly one process's: its resource is looked up (under the table's lock) once.
        var last: (pid: UInt32, resource: Resource?) = (0, nil)
        let (scope, clock) = (captureContext.scope, captureContext.unixNanoseconds(monotonic:))
        let tracker = self.tracker! // read once: a stored `var` is loaded and retained at every use
        let headerSize = MemoryLayout<tracer_event_header>.size
        metrics.events.add(UInt64(batch.count), ordering: .relaxed)
        for event in batch {
            if spans.count >= Self.sinkRun { deliver(&spans) }
            guard event.count >= headerSize else {
                metrics.eventsDropped.add(1, ordering: .relaxed)
                continue
            }
            let type = event.loadUnaligned(as: UInt32.self)
            let pid = Int32(bitPattern: event.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            if (UInt32(CAPTURE_EVENT_CHUNK)...UInt32(CAPTURE_EVENT_CONTEXT)).contains(type) {
                tracker.handle(event, into: &exchanges)
                // Each exchange moved out of the array (an element read in place would be copied), in order:
                // reversed through the buffer (bitwise moves; the array's own swaps copy), then popped.
                exchanges.withUnsafeMutableBufferPointer { $0.reverse() }
                while let exchange = exchanges.popLast() {
                    let pid = exchange.pid
                    if pid != last.pid { last = (pid, captureContext.resource(Int32(bitPattern: pid))) }
                    guard let resource = last.resource else { continue }
                    spans.append(exchange.span(resource: resource, scope: scope, unixNanoseconds: clock))
                }
                continue
            }
            // User space is authoritative: an event from a process that is not selected (any more), or from a
            // tracer that does not apply to it, is dropped.
            guard let (loaded, context) = tracersByEventType[type],
                  selected.withLock({ ($0[pid]?.tracerMask ?? 0) & loaded.pidMask != 0 }) else {
                metrics.eventsDropped.add(1, ordering: .relaxed)
                continue
            }
            if let span = loaded.tracer.decode(event, context: context) { spans.append(span) }
        }
        deliver(&spans)
    }

    /// Hands `spans` to every sink and empties it (new storage if a sink kept the spans).
    private func deliver(_ spans: inout [Span]) {
        guard !spans.isEmpty else { return }
        metrics.spans.add(UInt64(spans.count), ordering: .relaxed)
        for sink in configuration.sinks { sink.consume(spans) }
        spans.removeAll(keepingCapacity: true)
    }

    /// The selected processes by host PID, shared by the control queue (writes) and the reader (lookups).
    private final class SelectedTable: Sendable {
        private let entries = Mutex<[Int32: SelectedProcess]>([:])

        func withLock<T>(_ body: (inout [Int32: SelectedProcess]) -> T) -> T { entries.withLock { body(&$0) } }
    }

    /// How long after its exit a process is forgotten: several drains of the events ring.
    static let exitDelay = DispatchTimeInterval.milliseconds(300)

    /// `CLOCK_REALTIME − CLOCK_MONOTONIC`, to place `bpf_ktime_get_ns()` timestamps on the Unix clock.
    static func monotonicToUnixOffset() -> Int64 {
        var monotonic = timespec(), realtime = timespec()
        clock_gettime(CLOCK_MONOTONIC, &monotonic)
        clock_gettime(CLOCK_REALTIME, &realtime)
        return (Int64(realtime.tv_sec) - Int64(monotonic.tv_sec)) * 1_000_000_000 + Int64(realtime.tv_nsec) - Int64(monotonic.tv_nsec)
    }
}
