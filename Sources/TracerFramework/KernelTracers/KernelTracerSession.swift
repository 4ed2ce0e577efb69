import BPFRuntime
import CTracerABI
import Foundation
import Synchronization

/// A running kernel tracer: its object loaded with the first hook set of `KernelTracer.hookSets` whose
/// programs all load and attach, its histogram maps read on demand, its events read from the ring buffer
/// on a thread (drained every 20 ms: the programs submit without a wakeup) and handed to `onEvent`.
/// `stop()` or deinit detaches everything.
public final class KernelTracerSession: @unchecked Sendable {
    public let tracer: any KernelTracer
    public let options: KernelTracerOptions
    /// The hook set in use, for the start-up line.
    public let hooks: KernelHookSet
    /// Why earlier hook sets were not used (one line each), empty when the first one worked.
    public let fallbackReasons: [String]
    private let object: BPFObject
    private let links: Mutex<[BPFLink]>
    private let reader: RingBufferReader?
    private let poller: PollerThread?
    private let tally = EventTally()
    /// CLOCK_REALTIME − CLOCK_MONOTONIC at start: kernel timestamps to wall-clock time.
    private let wallOffset: UInt64

    /// Loads and attaches `tracer`; events go to `onEvent` on the reader thread. Throws one line naming the
    /// tracer and why each hook set failed, with nothing left attached.
    public init(_ tracer: any KernelTracer, options: KernelTracerOptions = KernelTracerOptions(),
                onEvent: @escaping @Sendable (KernelEvent) -> Void = { _ in }) throws {
        guard options.maxKeys > 0 else { throw KernelTracerError("\(tracer.name): the key limit must be at least 1") }
        if tracer.requiresProcessSelection && options.pid == nil && !options.followsSelection {
            throw KernelTracerError("\(tracer.name): give --pid (or run it in the agent with selected processes): it is not run for every process of the machine")
        }
        try tracer.validate(options)
        if let pid = options.pid, pid <= 0 || kill(pid, 0) != 0 && errno == ESRCH {
            throw KernelTracerError("\(tracer.name): no process with PID \(pid)")
        }
        self.tracer = tracer
        self.options = options
        var reasons: [String] = []
        var chosen: (KernelHookSet, BPFObject, [BPFLink])?
        for hookSet in tracer.hookSets {
            do {
                chosen = (hookSet, try Self.load(tracer, hookSet, options), [])
                let object = chosen!.1
                var links: [BPFLink] = []
                do {
                    for attachment in hookSet.attachments { links.append(try Self.attach(attachment, object: object)) }
                } catch {
                    links.forEach { $0.close() }
                    throw error
                }
                chosen!.2 = links
                break
            } catch {
                chosen = nil
                reasons.append("\(hookSet.description): \("\(error)".split(separator: "\n").first ?? "")")
            }
        }
        guard let (hooks, object, links) = chosen else {
            throw KernelTracerError("\(tracer.name): no hooks attach on this kernel (\(reasons.joined(separator: "; ")))")
        }
        self.hooks = hooks
        fallbackReasons = reasons
        self.object = object
        self.links = Mutex(links)
        var realtime = timespec(), monotonic = timespec()
        clock_gettime(CLOCK_REALTIME, &realtime)
        clock_gettime(CLOCK_MONOTONIC, &monotonic)
        wallOffset = UInt64(realtime.tv_sec) &* 1_000_000_000 &+ UInt64(realtime.tv_nsec)
            &- (UInt64(monotonic.tv_sec) &* 1_000_000_000 &+ UInt64(monotonic.tv_nsec))
        if tracer.emitsEvents {
            let (tally, wallOffset, options) = (tally, wallOffset, options)
            do {
                reader = try RingBufferReader(map: try object.map(BPFMapName("kernel_events"))) { batch in
                    for record in batch {
                        guard let header = Self.header(record), Int(header.size) <= record.count,
                              var event = tracer.decode(event: record, header: header) else {
                            tally.malformed.add(1, ordering: .relaxed)
                            continue
                        }
                        guard tracer.keeps(event, options: options) else {
                            tally.filtered.add(1, ordering: .relaxed)
                            continue
                        }
                        event.timeUnixNano = header.timestampNanoseconds &+ wallOffset
                        tally.delivered.add(1, ordering: .relaxed)
                        onEvent(event)
                    }
                }
            } catch {
                links.forEach { $0.close() }
                throw KernelTracerError("\(tracer.name): \(error)")
            }
        } else {
            reader = nil
        }
        if let work = tracer.makePoller(options: options) {
            poller = PollerThread(interval: options.interval ?? 1) { [object] in
                for var event in work.poll(object) {
                    if event.timeUnixNano == 0 { event.timeUnixNano = UInt64(Date().timeIntervalSince1970 * 1e9) }
                    onEvent(event)
                }
            }
        } else {
            poller = nil
        }
    }

    deinit { stop() }

    /// Makes the traced processes exactly `tgids` (`kernel_selected_tgids`, for a tracer following the agent's
    /// selection: `options.followsSelection`). Throws when the map (4096 processes) is full; those added stay.
    public func select(tgids: Set<Int32>) throws {
        let map = try object.map(BPFMapName("kernel_selected_tgids"))
        let current = Set(try map.keys(as: UInt32.self))
        let wanted = Set(tgids.map { UInt32(bitPattern: $0) })
        for gone in current.subtracting(wanted) { _ = try map.delete(gone) }
        for added in wanted.subtracting(current) { try map.update(added, UInt8(1)) }
    }

    /// Detaches the programs and stops the event reader (after one last drain). Idempotent.
    public func stop() {
        let current = links.withLock { links in
            defer { links = [] }
            return links
        }
        current.forEach { $0.close() }
        poller?.stop()
        reader?.stop()
    }

    /// Every histogram of the tracer's maps, read now, then the overflow histogram if it holds samples.
    /// `clear` empties the maps after reading (interval histograms, as libbpf-tools print them); without it
    /// the histograms are cumulative since start.
    public func histograms(clear: Bool = false) throws -> [KernelHistogram] {
        var result: [KernelHistogram] = []
        for histogram in tracer.histograms {
            let map = try object.map(histogram.map)
            let entries = try map.rawEntries(limit: Int(options.maxKeys))
            for entry in entries {
                guard let value = Self.hist(entry.values.first) else { continue }
                let labels = entry.key.withUnsafeBytes { tracer.labels(ofKey: $0, map: histogram.map, options: options) }
                result.append(KernelHistogram(tracer: tracer.name, map: histogram.name, labels: labels, slots: value.slots,
                                              count: value.count, sum: value.sum, isOverflow: false))
            }
            if clear { try map.clear() }
        }
        let overflowMap = try object.map(BPFMapName("kernel_hist_overflow"))
        if let first = tracer.histograms.first, let value = Self.hist(try overflowMap.rawEntries(limit: 1).first?.values.first), value.count > 0 {
            result.append(KernelHistogram(tracer: tracer.name, map: first.name, labels: [], slots: value.slots,
                                          count: value.count, sum: value.sum, isOverflow: true))
            if clear { try overflowMap.clear() }
        }
        return result
    }

    /// Counters of the tracer: overflows, ring buffer drops, malformed events, events delivered.
    public func counters() -> [TracerCounter] {
        let stats = try? object.map(BPFMapName("kernel_stats"))
        func kernelStat(_ index: Int32) -> @Sendable () -> UInt64 {
            { [stats] in ((try? stats?.lookupPerCPU(UInt32(index), as: UInt64.self)) ?? nil)?.reduce(0, &+) ?? 0 }
        }
        let tally = tally
        var counters = [
            TracerCounter("histogram.overflow", help: "Samples counted in the overflow histogram: the per-key map was full (cardinality limit).",
                          value: kernelStat(KERNEL_STAT_HIST_OVERFLOW)),
            TracerCounter("state.overflow", help: "In-flight starts the kernel could not store (their table was full): samples lost.",
                          value: kernelStat(KERNEL_STAT_STATE_OVERFLOW)),
            TracerCounter("hooks.missed", help: "Hook runs the kernel skipped because the program was already running on that CPU (bpf_prog_info.recursion_misses): samples lost.",
                          value: { [self] in programStatistics().reduce(0) { $0 &+ $1.recursionMisses } }),
        ]
        if tracer.emitsEvents {
            counters += [
                TracerCounter("events", help: "Events the kernel submitted.", value: kernelStat(KERNEL_STAT_EVENTS)),
                TracerCounter("events.dropped", help: "Events the ring buffer had no room for.", value: kernelStat(KERNEL_STAT_EVENTS_DROPPED)),
                TracerCounter("events.malformed", help: "Events too short or of an unknown type.", value: { tally.malformed.load(ordering: .relaxed) }),
                TracerCounter("events.filtered", help: "Events decoded but not wanted (files: a relative path outside the prefixes).",
                              value: { tally.filtered.load(ordering: .relaxed) }),
                TracerCounter("events.delivered", help: "Events decoded and delivered.", value: { tally.delivered.load(ordering: .relaxed) }),
            ]
        }
        return counters
    }

    /// Run count and run time of each attached program (counted only while BPF statistics are enabled).
    public func programStatistics() -> [ProgramStatistics] {
        hooks.attachments.compactMap { try? object.program($0.program).runtimeStatistics() }
    }

    // MARK: - Loading

    private static func load(_ tracer: any KernelTracer, _ hookSet: KernelHookSet, _ options: KernelTracerOptions) throws -> BPFObject {
        var spec = BPFObjectSpec(tracer.object, programs: Set(hookSet.attachments.map(\.program)))
        spec.set(BPFGlobalName("kernel_target_tgid"), to: UInt32(options.pid ?? 0))
        if options.followsSelection && tracer.followsAgentSelection { spec.set(BPFGlobalName("kernel_follow_selection"), to: UInt32(1)) }
        for histogram in tracer.histograms { spec.mapMaxEntries[histogram.map] = options.maxKeys }
        tracer.configure(&spec, options: options)
        return try spec.load()
    }

    private static func attach(_ attachment: KernelAttachment, object: BPFObject) throws -> BPFLink {
        let program = try object.program(attachment.program)
        switch attachment {
        case .tracepoint(let category, let event, _): return try program.attachTracepoint(category: category, event: event)
        case .btf: return try program.attachTracing()
        case .rawTracepoint(let event, _): return try program.attachRawTracepoint(event)
        case .kprobe(let function, _, let returnProbe): return try program.attachKprobe(function: function, returnProbe: returnProbe)
        }
    }

    // MARK: - Decoding

    /// The header of an event, or nil when the record is shorter than one.
    public static func header(_ record: UnsafeRawBufferPointer) -> KernelEventHeader? {
        guard record.count >= MemoryLayout<kernel_event_header>.size else { return nil }
        let raw = record.loadUnaligned(as: kernel_event_header.self)
        return KernelEventHeader(timestampNanoseconds: raw.timestamp_ns, pid: raw.pid, tid: raw.tid,
                                 comm: fixedCString(raw.comm), type: raw.type, size: raw.size)
    }

    private static func hist(_ bytes: [UInt8]?) -> (slots: [UInt64], count: UInt64, sum: UInt64)? {
        guard let bytes, bytes.count >= MemoryLayout<kernel_hist>.size else { return nil }
        let value = bytes.withUnsafeBytes { $0.loadUnaligned(as: kernel_hist.self) }
        let slots = withUnsafeBytes(of: value.slots) { Array($0.bindMemory(to: UInt64.self)) }
        return (slots, value.count, value.sum)
    }
}

/// A thread that runs `work` every `interval` seconds until stopped.
private final class PollerThread: Sendable {
    private let stopped = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    private let isStopped = Atomic<Bool>(false)

    init(interval: Double, work: @escaping @Sendable () -> Void) {
        let (stopped, done) = (stopped, done)
        let thread = Thread {
            while stopped.wait(timeout: .now() + interval) == .timedOut { work() }
            done.signal()
        }
        thread.name = "kernel-tracer-poll"
        thread.start()
    }

    func stop() {
        guard !isStopped.exchange(true, ordering: .relaxed) else { return }
        stopped.signal()
        done.wait()
    }
}

/// Events decoded and events that could not be.
private final class EventTally: Sendable {
    let malformed = Atomic<UInt64>(0)
    let filtered = Atomic<UInt64>(0)
    let delivered = Atomic<UInt64>(0)
}

/// A fixed `char[N]` (imported as a tuple of bytes) as text, up to its first NUL; invalid UTF-8 repaired.
public func fixedCString<T>(_ tuple: T) -> String {
    withUnsafeBytes(of: tuple) { bytes in
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }
}
