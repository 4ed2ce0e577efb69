import Synchronization
import Telemetry

/// The agent's own metrics (self-observability), exported on the Prometheus endpoint and as OTLP metrics.
/// Components register counters and gauges here (ring-buffer drops, processes instrumented, …); the exporter's
/// `ExporterStats` are added with `register(exporter:)`.
public final class MetricsRegistry: Sendable {
    /// A monotonic counter (OTLP monotonic cumulative `Sum`, Prometheus `counter`).
    public final class Counter: Sendable {
        let value = Atomic<Int>(0)
        public func add(_ n: Int = 1) { value.add(n, ordering: .relaxed) }
        public var current: Int { value.load(ordering: .relaxed) }
    }

    /// A value that goes up and down (OTLP `Gauge`, Prometheus `gauge`).
    public final class Gauge: Sendable {
        let value = Atomic<Int>(0)
        public func set(_ n: Int) { value.store(n, ordering: .relaxed) }
        public func add(_ n: Int) { value.add(n, ordering: .relaxed) }
        public var current: Int { value.load(ordering: .relaxed) }
    }

    struct Entry: Sendable {
        let name: String
        let help: String
        let unit: String
        let attributes: Attributes
        let counter: Counter?
        let gauge: Gauge?
    }

    private let entries = Mutex<[Entry]>([])
    private let collectors = Mutex<[@Sendable () -> [MetricData]]>([])

    public init() {}

    /// The counter `name` with `attributes`, created on first use (the same object is returned afterwards).
    /// Names follow OTel style (`tracer.ringbuffer.drops`); Prometheus gets `tracer_ringbuffer_drops_total`.
    public func counter(_ name: String, help: String, unit: String = "1", attributes: Attributes = Attributes()) -> Counter {
        entries.withLock { entries in
            if let e = entries.first(where: { $0.name == name && $0.attributes == attributes }), let c = e.counter { return c }
            let c = Counter()
            entries.append(Entry(name: name, help: help, unit: unit, attributes: attributes, counter: c, gauge: nil))
            return c
        }
    }

    /// The gauge `name` with `attributes`, created on first use.
    public func gauge(_ name: String, help: String, unit: String = "1", attributes: Attributes = Attributes()) -> Gauge {
        entries.withLock { entries in
            if let e = entries.first(where: { $0.name == name && $0.attributes == attributes }), let g = e.gauge { return g }
            let g = Gauge()
            entries.append(Entry(name: name, help: help, unit: unit, attributes: attributes, counter: nil, gauge: g))
            return g
        }
    }

    /// Adds metrics computed at collection time (called on every scrape or export).
    public func register(collector: @escaping @Sendable () -> [MetricData]) {
        collectors.withLock { $0.append(collector) }
    }

    /// Publishes an exporter's counters (`tracer.spans.exported|dropped|failed|rejected`,
    /// `tracer.export.requests|retries`), its queue length (`tracer.export.queue.size`) and its request
    /// latency histogram (`tracer.export.duration`).
    public func register(exporter stats: ExporterStats) {
        register { [stats] in
            func counter(_ name: String, _ help: String, _ value: Int) -> MetricData {
                MetricData(name: name, description: help, unit: "1", points: .counter([.init(value: Double(value))]))
            }
            let latency = stats.latencySnapshot
            return [
                counter("tracer.spans.exported", "Spans accepted by the OTLP collector.", stats.spansExported.load(ordering: .relaxed)),
                counter("tracer.spans.dropped", "Spans dropped before export (queue full, shutdown).", stats.spansDropped.load(ordering: .relaxed)),
                counter("tracer.spans.failed", "Spans lost in export (non-retryable error, retries exhausted, too large).", stats.spansFailed.load(ordering: .relaxed)),
                counter("tracer.spans.rejected", "Spans the collector rejected in a partial success.", stats.spansRejected.load(ordering: .relaxed)),
                counter("tracer.export.requests", "OTLP export HTTP requests.", stats.requests.load(ordering: .relaxed)),
                counter("tracer.export.retries", "OTLP export retries.", stats.retries.load(ordering: .relaxed)),
                MetricData(
                    name: "tracer.export.queue.size", description: "Spans waiting in the export queue.", unit: "1",
                    points: .gauge([.init(value: Double(stats.queued.load(ordering: .relaxed)))])),
                MetricData(
                    name: "tracer.export.duration", description: "OTLP export request latency.", unit: "s",
                    points: .histogram(
                        bounds: ExporterStats.latencyBounds,
                        points: [
                            HistogramPoint(
                                attributes: Attributes(), bucketCounts: latency.buckets.map { UInt64($0) },
                                sum: latency.sum, count: UInt64(latency.count), min: nil, max: nil)
                        ])),
            ]
        }
    }

    /// Publishes the OTLP log exporter's record counters (`tracer.log_records.exported|dropped|failed|rejected`)
    /// and queue length (`tracer.log_records.queued`); `tracer.export.*` stay the span exporter's.
    public func register(logExporter stats: ExporterStats) {
        register { [stats] in
            func counter(_ name: String, _ help: String, _ value: Int) -> MetricData {
                MetricData(name: name, description: help, unit: "1", points: .counter([.init(value: Double(value))]))
            }
            return [
                counter("tracer.log_records.exported", "Log records accepted by the OTLP collector.", stats.spansExported.load(ordering: .relaxed)),
                counter("tracer.log_records.dropped", "Log records dropped before export (queue full, shutdown).", stats.spansDropped.load(ordering: .relaxed)),
                counter("tracer.log_records.failed", "Log records lost in export (non-retryable error, retries exhausted, too large).", stats.spansFailed.load(ordering: .relaxed)),
                counter("tracer.log_records.rejected", "Log records the collector rejected in a partial success.", stats.spansRejected.load(ordering: .relaxed)),
                MetricData(
                    name: "tracer.log_records.queued", description: "Log records waiting in the export queue.", unit: "1",
                    points: .gauge([.init(value: Double(stats.queued.load(ordering: .relaxed)))])),
            ]
        }
    }

    /// Every registered metric, current values.
    public func collect() -> [MetricData] {
        var out: [MetricData] = []
        for e in entries.withLock({ $0 }) {
            let point = MetricData.NumberPoint(attributes: e.attributes, value: Double(e.counter?.current ?? e.gauge?.current ?? 0))
            if let i = out.firstIndex(where: { $0.name == e.name }) {
                switch out[i].points {
                case .counter(let p): out[i].points = .counter(p + [point])
                case .gauge(let p): out[i].points = .gauge(p + [point])
                case .histogram: break
                }
            } else {
                out.append(MetricData(name: e.name, description: e.help, unit: e.unit, points: e.counter != nil ? .counter([point]) : .gauge([point])))
            }
        }
        for collector in collectors.withLock({ $0 }) { out += collector() }
        return out
    }
}
