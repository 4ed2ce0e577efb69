import Synchronization
import Telemetry

/// A sink that keeps every span in memory: for tests, benchmarks and tools that look at spans themselves.
public final class SpanCollector: SpanSink {
    private let collected = Mutex<[Span]>([])

    public init() {}

    public func consume(_ spans: [Span]) { collected.withLock { $0 += spans } }
    public func flush(timeout: Duration) -> Bool { true }
    public func shutdown(timeout: Duration) {}

    public var spans: [Span] { collected.withLock { $0 } }
    public var count: Int { collected.withLock { $0.count } }
}
