import CTracerABI
import Foundation
import Logging
import OTLPExport
import Synchronization
import Telemetry
import TracerFramework
import Tracers

/// Kernel utility tracers run by the agent (`--kernel-tracers runqlat,oomkill`, config `kernel_tracers`):
/// each tracer's histograms, cumulative since start, are published as OTLP histogram metrics and on
/// `/metrics` (log2 bucket bounds 1, 3, 7, … 2^31 − 1, then +Inf; the overflow histogram with
/// `otel.metric.overflow=true`), its counters as `tracer.<name>.<counter>`; its events are printed with the
/// spans (`--print text|json`, as `tracer tool` prints them) and, with OTLP export on, sent as log records.
/// A tracer whose hooks do not attach here is left out with one line saying why; the others run.
/// Tracers on syscall tracepoints (files, fds, syscalls) trace only the agent's selected processes: their set
/// of traced PIDs is made equal to the selection every second.
final class KernelTracersBesideAgent: Sendable {
    private let sessions: [KernelTracerSession]
    /// The resource of a selected process (its service), for its events and its histograms.
    private let resourceOf: @Sendable (Int32) -> Resource?
    private let selectionSync = DispatchSemaphore(value: 0)
    private let logs = LogDestination()
    private let output = ObjectOutput()

    static let scope = InstrumentationScope(name: "tracer/kernel")

    /// The tracers named in `names` (comma-separated, as the flag takes them), or a one-line error naming an
    /// unknown one.
    static func tracers(named names: [String]) throws -> [any KernelTracer] {
        try names.map { name in
            guard let tracer = TracerRegistry.kernelTracers.first(where: { $0.name == name }) else {
                throw KernelTracerError("unknown kernel tracer '\(name)' (known: \(TracerRegistry.kernelTracers.map(\.name).joined(separator: ", ")))")
            }
            return tracer
        }
    }

    /// Starts every tracer of `tracers`; `pathPrefixes` are the `files` tracer's (`--path-prefix`); `format` is
    /// the agent's print format. A log record carries the resource of the selected process its event is about
    /// (`resourceOf`, as its spans do), else `resource` (the agent's). `selection` gives the PIDs the agent traces now.
    init(tracers: [any KernelTracer], pathPrefixes: [String] = [], format: String, resource: Resource, logger: Logger,
         resourceOf: @escaping @Sendable (Int32) -> Resource? = { _ in nil }, selection: @escaping @Sendable () -> [Int32] = { [] }) {
        self.resourceOf = resourceOf
        var sessions: [KernelTracerSession] = []
        let (logs, output) = (logs, output)
        for tracer in tracers {
            do {
                let options = KernelTracerOptions(perProcess: tracer.keysByProcessInAgent, pathPrefixes: pathPrefixes,
                                                  followsSelection: tracer.followsAgentSelection)
                let session = try KernelTracerSession(tracer, options: options) { event in
                    switch format {
                    case "json": output.out(KernelToolOutput.json(event) + "\n")
                    case "text": output.out(KernelToolOutput.text(event) + "\n")
                    default: break
                    }
                    guard let sink = logs.sink.withLock({ $0 }) else { return }
                    sink.consume([Self.record(event, resource: resourceOf(Int32(bitPattern: event.pid)) ?? resource)])
                }
                var line = "kernel tracer \(tracer.name): hooks: \(session.hooks.description)"
                if !session.fallbackReasons.isEmpty { line += " (not: \(session.fallbackReasons.joined(separator: "; ")))" }
                if let cost = tracer.costNotice { line += "; \(cost)" }
                if tracer.followsAgentSelection { line += "; traces the selected processes only" }
                logger.info("\(line)")
                sessions.append(session)
            } catch {
                logger.error("kernel tracer off: \(error)")
            }
        }
        self.sessions = sessions
        let following = sessions.filter { $0.options.followsSelection }
        if !following.isEmpty {
            let stopped = selectionSync
            let names = following.map(\.tracer.name).joined(separator: ",")
            Thread.detachNewThread {
                var previous: Set<Int32>?
                repeat {
                    let pids = Set(selection())
                    guard pids != previous else { continue }
                    for session in following {
                        do { try session.select(tgids: pids) } catch { logger.error("kernel tracer \(session.tracer.name): selection not updated: \(error)") }
                    }
                    previous = pids
                    logger.info("kernel tracers \(names): tracing \(pids.count) selected process\(pids.count == 1 ? "" : "es")")
                } while stopped.wait(timeout: .now() + 1) == .timedOut
            }
        }
    }

    /// Where events go as log records from now on (set once OTLP export is known to be on).
    func send(logs sink: any LogSink) { logs.sink.withLock { $0 = sink } }

    var emitsEvents: Bool { sessions.contains { $0.tracer.emitsEvents || $0.tracer.makePoller(options: $0.options) != nil } }

    /// Histograms (cumulative) and counters of every running tracer.
    func metrics() -> [MetricData] {
        var metrics: [MetricData] = []
        for session in sessions {
            let histograms = (try? session.histograms(clear: false)) ?? []
            for map in session.tracer.histograms {
                let points = histograms.filter { $0.map.metric == map.metric }.map { Self.point($0, resourceOf: resourceOf) }
                metrics.append(MetricData(name: map.metric, description: map.description, unit: map.unit,
                                          points: .histogram(bounds: Self.bounds, points: points)))
            }
            for counter in session.counters() {
                metrics.append(MetricData(name: "tracer.\(session.tracer.name).\(counter.name)", description: counter.help, unit: "1",
                                          points: .counter([.init(value: Double(counter.value()))])))
            }
        }
        return metrics
    }

    func stop() {
        selectionSync.signal()
        sessions.forEach { $0.stop() }
    }

    /// Explicit bounds of the log2 slots: slot i holds values up to 2^(i+1) − 1; the last slot is +Inf.
    static let bounds: [Double] = (0..<(Int(KERNEL_HIST_SLOTS) - 1)).map { Double(KernelHistogram.upperBound(ofSlot: $0)) }

    /// A histogram as an OTLP point; one keyed by a selected process (`process.pid`) also names its service.
    static func point(_ histogram: KernelHistogram, resourceOf: (Int32) -> Resource? = { _ in nil }) -> HistogramPoint {
        var attributes = Attributes(histogram.labels.map { Attribute($0.key, Self.attributeValue($0.value)) })
        if let pid = attributes[SemanticConventions.processPID]?.intValue, let service = resourceOf(Int32(clamping: pid))?.serviceName {
            attributes[SemanticConventions.serviceName] = .string(service)
        }
        if histogram.isOverflow { attributes["otel.metric.overflow"] = .bool(true) }
        return HistogramPoint(attributes: attributes, bucketCounts: histogram.slots, sum: Double(histogram.sum),
                              count: histogram.count, min: nil, max: nil)
    }

    /// An event as an OTLP log record: body the event's name, `event.name` `tracer.<tool>.<event>`,
    /// `process.pid` and `process.executable.name` of the process it is about, its fields as attributes.
    static func record(_ event: KernelEvent, resource: Resource) -> LogRecord {
        var attributes: Attributes = [
            "event.name": .string("tracer.\(event.tracer).\(event.name)"),
            SemanticConventions.processPID: .int(Int64(event.pid)),
            SemanticConventions.processExecutableName: .string(event.comm),
        ]
        for field in event.fields { attributes[field.key] = Self.attributeValue(field.value) }
        return LogRecord(timeUnixNano: event.timeUnixNano, observedTimeUnixNano: UInt64(Date().timeIntervalSince1970 * 1e9),
                         severity: .info, severityText: LogSeverity.info.text, body: .string(event.name),
                         attributes: attributes, resource: resource, scope: scope)
    }

    private static func attributeValue(_ value: KernelValue) -> AttributeValue {
        switch value {
        case .int(let number): .int(number)
        case .string(let text): .string(text)
        case .bool(let flag): .bool(flag)
        }
    }
}

/// Where kernel tracer events go as log records, set once export is known to be on.
private final class LogDestination: Sendable {
    let sink = Mutex<(any LogSink)?>(nil)
}
