import Synchronization

/// The exporter's self-metrics. Every span handed to `consume` ends in exactly one of exported, dropped,
/// failed or rejected (or is still queued), so nothing is lost without being counted.
public final class ExporterStats: Sendable {
    /// Spans handed to the exporter.
    public let spansReceived = Atomic<Int>(0)
    /// Spans the collector accepted (2xx, minus partial-success rejections).
    public let spansExported = Atomic<Int>(0)
    /// Spans dropped without an attempt: queue full (spans or bytes), or intake stopped / shutdown timed out.
    public let spansDropped = Atomic<Int>(0)
    /// Spans sent but lost: non-retryable status, retries exhausted, or too large even alone.
    public let spansFailed = Atomic<Int>(0)
    /// Spans the collector reported in `partial_success.rejected_spans`.
    public let spansRejected = Atomic<Int>(0)
    /// HTTP requests made (each attempt counts).
    public let requests = Atomic<Int>(0)
    /// Retries after retryable failures.
    public let retries = Atomic<Int>(0)
    /// Spans waiting in the queue now (a gauge).
    public let queued = Atomic<Int>(0)
    /// Request latency histogram (seconds): cumulative counts per `latencyBounds` bucket, plus +Inf.
    public static let latencyBounds: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    private let latency = Mutex<(buckets: [Int], sum: Double, count: Int)>(
        (Array(repeating: 0, count: ExporterStats.latencyBounds.count + 1), 0, 0))

    public init() {}

    func recordRequest(seconds: Double) {
        requests.add(1, ordering: .relaxed)
        latency.withLock { l in
            let i = Self.latencyBounds.firstIndex { seconds <= $0 } ?? Self.latencyBounds.count
            l.buckets[i] += 1
            l.sum += seconds
            l.count += 1
        }
    }

    /// Per-bucket (non-cumulative) request latency counts, their sum and count.
    public var latencySnapshot: (buckets: [Int], sum: Double, count: Int) { latency.withLock { $0 } }
}
