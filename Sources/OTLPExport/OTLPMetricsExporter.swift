import Foundation
import Logging
import Synchronization
import Telemetry

/// Pushes RED metrics and the agent's self-metrics to `/v1/metrics` every `metricExportInterval`
/// (OTel SDK "Periodic exporting MetricReader" with the OTLP exporter, cumulative temporality), with the same
/// retry rules as spans. A final export happens on shutdown.
public final class OTLPMetricsExporter: @unchecked Sendable {
    public let settings: ExportSettings
    /// Successful and failed periodic exports.
    public let exportsSucceeded = Atomic<Int>(0)
    public let exportsFailed = Atomic<Int>(0)
    private let collect: @Sendable () -> [ResourceMetricsData]
    private let startTimeUnixNano: UInt64
    private let logger: Logger
    private let scope = InstrumentationScope(name: "tracer", version: "0.1.0")
    private let condition = NSCondition()
    // Guarded by `condition`:
    private var deadline: ContinuousClock.Instant?
    private var closed = false
    private var requested = 0
    private var completed = 0
    private var done = false

    /// `red` and `registry` are read at each export; `agentResource` carries the self-metrics
    /// (the settings' resource attributes are layered under every resource).
    public init(
        settings: ExportSettings, red: REDMetrics?, registry: MetricsRegistry?, agentResource: Resource,
        logger: Logger = Logger(label: "tracer.otlp.metrics"), makeTransport: (@Sendable () -> HTTPTransport)? = nil
    ) {
        self.settings = settings
        self.logger = logger
        startTimeUnixNano = red?.startTimeUnixNano ?? UInt64(Date().timeIntervalSince1970 * 1e9)
        let base = settings.resourceAttributes
        collect = {
            var groups = red?.snapshot() ?? []
            if let registry { groups.append(ResourceMetricsData(resource: agentResource, metrics: registry.collect())) }
            guard !base.isEmpty else { return groups }
            return groups.map { group in
                var attributes = base
                attributes.merge(group.resource.attributes)
                return ResourceMetricsData(resource: Resource(attributes: attributes), metrics: group.metrics)
            }
        }
        let thread = Thread { [self] in self.run(transport: makeTransport?() ?? CurlTransport(settings: settings)) }
        thread.name = "otlp-metrics"
        thread.start()
    }

    /// Exports now and waits for the result; false on timeout.
    @discardableResult public func forceFlush(timeout: Duration) -> Bool {
        let until = Date(timeIntervalSinceNow: timeout.seconds)
        condition.lock()
        defer { condition.unlock() }
        requested += 1
        let target = requested
        condition.broadcast()
        while completed < target && !done {
            if !condition.wait(until: until) { return false }
        }
        return completed >= target
    }

    /// A last export within `timeout`, then the thread stops.
    public func shutdown(timeout: Duration) {
        condition.lock()
        if !closed {
            closed = true
            deadline = ContinuousClock.now + timeout
        }
        condition.broadcast()
        let until = Date(timeIntervalSinceNow: timeout.seconds + 1)
        while !done {
            if !condition.wait(until: until) { break }
        }
        condition.unlock()
    }

    private func run(transport: HTTPTransport) {
        let sender = OTLPSender(
            transport: transport, settings: settings, url: settings.metricsURL, signal: .metrics, stats: ExporterStats(),
            logger: logger, deadline: { [self] in self.condition.withLock { self.deadline } },
            sleep: { [self] instant in
                self.condition.lock()
                _ = self.condition.wait(until: Date(timeIntervalSinceNow: (instant - ContinuousClock.now).seconds))
                self.condition.unlock()
            })
        var writer = ProtobufWriter(capacity: 64 * 1024)
        var json: [UInt8] = []
        var next = ContinuousClock.now + settings.metricExportInterval
        while true {
            condition.lock()
            while !closed && requested == completed && ContinuousClock.now < next {
                _ = condition.wait(until: Date(timeIntervalSinceNow: (next - ContinuousClock.now).seconds))
            }
            let last = closed
            let target = requested
            condition.unlock()

            exportOnce(sender: sender, writer: &writer, json: &json)
            next = ContinuousClock.now + settings.metricExportInterval

            condition.lock()
            completed = max(completed, target)
            if last { done = true }
            condition.broadcast()
            condition.unlock()
            if last { return }
        }
    }

    private func exportOnce(sender: OTLPSender, writer: inout ProtobufWriter, json: inout [UInt8]) {
        let groups = collect()
        guard groups.contains(where: { !$0.metrics.isEmpty }) else { return }
        let now = UInt64(Date().timeIntervalSince1970 * 1e9)
        let result: SendResult
        if settings.protocol_ == .httpProtobuf {
            writer.reset()
            OTLPMetricsEncoder.encodeProtobuf(groups, scope: scope, startTimeUnixNano: startTimeUnixNano, timeUnixNano: now, into: &writer)
            result = writer.withBytes { sender.send($0) }
        } else {
            json.removeAll(keepingCapacity: true)
            OTLPMetricsEncoder.encodeJSON(groups, scope: scope, startTimeUnixNano: startTimeUnixNano, timeUnixNano: now, into: &json)
            result = json.withUnsafeBytes { sender.send($0) }
        }
        switch result {
        case .delivered(let rejected, let message):
            exportsSucceeded.add(1, ordering: .relaxed)
            if rejected > 0 { logger.warning("OTLP metrics partial success: \(rejected) data points rejected: \(message)") }
        case .tooLarge:
            exportsFailed.add(1, ordering: .relaxed)
            logger.warning("OTLP metrics export to \(settings.metricsURL) refused as too large (413)")
        case .failed(let reason):
            exportsFailed.add(1, ordering: .relaxed)
            logger.warning("OTLP metrics export to \(settings.metricsURL) failed: \(reason)")
        }
    }
}
