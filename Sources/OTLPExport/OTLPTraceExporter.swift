import Foundation
import Logging
import Telemetry

/// The OTLP/HTTP span exporter (OTel SDK "Batching processor" + "OTLP exporter" in one): a bounded queue filled
/// by `consume` without blocking, one worker thread that sends batches by size or schedule delay, the OTLP
/// retry rules, and a shutdown flush with a deadline.
public final class OTLPTraceExporter: SpanSink, @unchecked Sendable {
    public let settings: ExportSettings
    public let stats: ExporterStats
    private let logger: Logger
    private let condition = NSCondition()
    // Guarded by `condition`:
    private var queue = SpanQueue()
    private var closed = false
    private var deadline: ContinuousClock.Instant?
    private var flushRequests = 0
    private var inFlight = 0
    private var workerDone = false
    private var lastDropLog: ContinuousClock.Instant?
    /// Resources with the settings' resource attributes layered on (`OTEL_RESOURCE_ATTRIBUTES`), by identity.
    /// Used by the worker thread only.
    private var mergedResources: [ObjectIdentifier: (Resource, Resource)] = [:]

    /// Starts the worker thread, which creates its transport with `makeTransport` (libcurl by default; tests
    /// pass fakes). The thread runs until `shutdown`, which every owner must call.
    public init(
        settings: ExportSettings, logger: Logger = Logger(label: "tracer.otlp"),
        makeTransport: (@Sendable () -> HTTPTransport)? = nil
    ) {
        self.settings = settings
        self.stats = ExporterStats()
        self.logger = logger
        let thread = Thread { [self] in
            self.run(transport: makeTransport?() ?? CurlTransport(settings: settings))
        }
        thread.name = "otlp-traces"
        thread.start()
    }

    /// A rough size of a span in the queue, for the byte limit (its encoded size plus bookkeeping).
    static func estimatedBytes(_ span: Span) -> Int {
        var n = 96 + span.name.utf8.count
        for a in span.attributes.elements {
            n += 8 + a.key.utf8.count
            switch a.value {
            case .string(let s): n += s.utf8.count
            case .stringArray(let v): n += v.reduce(0) { $0 + $1.utf8.count + 4 }
            case .intArray(let v): n += 10 * v.count
            case .doubleArray(let v): n += 9 * v.count
            case .boolArray(let v): n += 2 * v.count
            default: n += 10
            }
        }
        return n
    }

    /// Queues spans; when the queue is full (spans or bytes) or intake stopped, they are dropped and counted.
    public func consume(_ spans: [Span]) {
        stats.spansReceived.add(spans.count, ordering: .relaxed)
        var dropped = 0
        condition.lock()
        if closed {
            dropped = spans.count
        } else {
            for span in spans {
                let size = Self.estimatedBytes(span)
                if queue.count >= settings.maxQueueSpans || queue.bytes + size > settings.maxQueueBytes {
                    dropped += 1
                } else {
                    queue.append(span, bytes: size)
                }
            }
            stats.queued.store(queue.count, ordering: .relaxed)
            if queue.count >= settings.maxBatchSpans { condition.broadcast() }
        }
        var logDrop = false
        if dropped > 0 {
            let now = ContinuousClock.now
            if lastDropLog.map({ now - $0 > .seconds(10) }) ?? true {
                lastDropLog = now
                logDrop = true
            }
        }
        condition.unlock()
        if dropped > 0 {
            stats.spansDropped.add(dropped, ordering: .relaxed)
            if logDrop {
                logger.warning(
                    "OTLP export queue full (\(settings.maxQueueSpans) spans / \(settings.maxQueueBytes) bytes) or closed: dropped \(dropped) spans; total dropped \(stats.spansDropped.load(ordering: .relaxed))")
            }
        }
    }

    /// Sends everything queued now; true when the queue drained and no request is in flight before `timeout`.
    @discardableResult public func flush(timeout: Duration) -> Bool {
        let until = Date(timeIntervalSinceNow: timeout.seconds)
        condition.lock()
        defer { condition.unlock() }
        flushRequests += 1
        condition.broadcast()
        defer { flushRequests -= 1 }
        while !(queue.isEmpty && inFlight == 0) && !workerDone {
            if !condition.wait(until: until) { return queue.isEmpty && inFlight == 0 }
        }
        return queue.isEmpty
    }

    /// Stops intake, sends what is queued until `timeout` passes (retries included), then drops and counts the
    /// rest and stops the worker. Returns once the worker has stopped (at most a moment after the deadline).
    public func shutdown(timeout: Duration) {
        let clock = ContinuousClock()
        condition.lock()
        if !closed {
            closed = true
            deadline = clock.now + timeout
        }
        condition.broadcast()
        let until = Date(timeIntervalSinceNow: timeout.seconds + 1)
        while !workerDone {
            if !condition.wait(until: until) { break }
        }
        condition.unlock()
    }

    /// Shutdown with the configured timeout (default 10 s).
    public func shutdown() { shutdown(timeout: settings.shutdownTimeout) }

    private func run(transport: HTTPTransport) {
        let sender = OTLPSender(
            transport: transport, settings: settings, url: settings.tracesURL, signal: .traces, stats: stats,
            logger: logger, deadline: { [self] in self.condition.withLock { self.deadline } },
            sleep: { [self] in self.sleep(until: $0) })
        var writer = ProtobufWriter(capacity: 256 * 1024)
        var json: [UInt8] = []
        let clock = ContinuousClock()
        var nextSend = clock.now + settings.scheduleDelay
        while true {
            condition.lock()
            while queue.count < settings.maxBatchSpans && !closed && !(flushRequests > 0 && !queue.isEmpty) {
                let now = clock.now
                if now >= nextSend && !queue.isEmpty { break }
                if now >= nextSend { nextSend = now + settings.scheduleDelay }
                _ = condition.wait(until: Date(timeIntervalSinceNow: (nextSend - now).seconds))
            }
            if queue.isEmpty && closed {
                workerDone = true
                condition.broadcast()
                condition.unlock()
                return
            }
            if let deadline, clock.now >= deadline {
                let left = queue.count
                queue = SpanQueue()
                stats.queued.store(0, ordering: .relaxed)
                stats.spansDropped.add(left, ordering: .relaxed)  // counted before shutdown() can return
                workerDone = true
                condition.broadcast()
                condition.unlock()
                if left > 0 { logger.warning("OTLP shutdown timeout: dropped \(left) queued spans") }
                return
            }
            let batch = queue.take(settings.maxBatchSpans)
            stats.queued.store(queue.count, ordering: .relaxed)
            inFlight += 1
            condition.unlock()

            export(batch[...], sender: sender, writer: &writer, json: &json)
            nextSend = clock.now + settings.scheduleDelay

            condition.lock()
            inFlight -= 1
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Waits until `instant` or until woken (shutdown, new spans); the caller re-checks why.
    private func sleep(until instant: ContinuousClock.Instant) {
        condition.lock()
        _ = condition.wait(until: Date(timeIntervalSinceNow: (instant - ContinuousClock.now).seconds))
        condition.unlock()
    }

    /// Encodes and sends one batch; splits it when the body is over `maxRequestBytes` or the server says 413.
    private func export(
        _ batch: ArraySlice<Span>, sender: OTLPSender, writer: inout ProtobufWriter, json: inout [UInt8]
    ) {
        let spans = withResource(batch)
        let size = encode(spans[...], writer: &writer, json: &json)
        if size > settings.maxRequestBytes {
            guard spans.count > 1 else {
                stats.spansFailed.add(1, ordering: .relaxed)
                logger.warning("OTLP: dropped a span whose request (\(size) bytes) exceeds \(settings.maxRequestBytes) bytes")
                return
            }
            exportHalves(batch, sender: sender, writer: &writer, json: &json)
            return
        }
        let result: SendResult =
            settings.protocol_ == .httpProtobuf
            ? writer.withBytes { sender.send($0) }
            : json.withUnsafeBytes { sender.send($0) }
        switch result {
        case .delivered(let rejected, let message):
            let rejectedCount = min(max(rejected, 0), spans.count)
            stats.spansExported.add(spans.count - rejectedCount, ordering: .relaxed)
            if rejectedCount > 0 || !message.isEmpty {
                stats.spansRejected.add(rejectedCount, ordering: .relaxed)
                logger.warning("OTLP partial success: collector rejected \(rejectedCount) spans: \(message)")
            }
        case .tooLarge:
            if spans.count > 1 {
                logger.info("OTLP: collector answered 413 for \(spans.count) spans; sending halves")
                exportHalves(batch, sender: sender, writer: &writer, json: &json)
            } else {
                stats.spansFailed.add(1, ordering: .relaxed)
                logger.warning("OTLP: collector answered 413 for a single span; dropped")
            }
        case .failed(let reason):
            stats.spansFailed.add(spans.count, ordering: .relaxed)
            logger.warning("OTLP export of \(spans.count) spans to \(settings.tracesURL) failed: \(reason)")
        }
    }

    private func exportHalves(
        _ batch: ArraySlice<Span>, sender: OTLPSender, writer: inout ProtobufWriter, json: inout [UInt8]
    ) {
        let mid = batch.startIndex + batch.count / 2
        export(batch[..<mid], sender: sender, writer: &writer, json: &json)
        export(batch[mid...], sender: sender, writer: &writer, json: &json)
    }

    private func encode(_ spans: ArraySlice<Span>, writer: inout ProtobufWriter, json: inout [UInt8]) -> Int {
        if settings.protocol_ == .httpProtobuf {
            writer.reset()
            OTLPTraceProtobufEncoder.encode(spans, into: &writer)
            return writer.count
        }
        json.removeAll(keepingCapacity: true)
        OTLPTraceJSONEncoder.encode(spans, into: &json)
        return json.count
    }

    /// The batch with each resource replaced by one carrying the settings' resource attributes underneath
    /// (span-side attributes win). Cached per resource object, so grouping by identity still works.
    private func withResource(_ batch: ArraySlice<Span>) -> [Span] {
        guard !settings.resourceAttributes.isEmpty else { return Array(batch) }
        return batch.map { span in
            var span = span
            let id = ObjectIdentifier(span.resource)
            if let (original, merged) = mergedResources[id], original === span.resource {
                span.resource = merged
            } else {
                var attributes = settings.resourceAttributes
                attributes.merge(span.resource.attributes)
                let merged = Resource(attributes: attributes)
                if mergedResources.count > 4096 { mergedResources.removeAll() }
                mergedResources[id] = (span.resource, merged)
                span.resource = merged
            }
            return span
        }
    }
}

/// FIFO of queued spans with their estimated sizes. Taking a batch advances a head index; the consumed prefix
/// is dropped once it is half the storage, so each span is moved at most about once.
struct SpanQueue {
    private var spans: [Span] = []
    private var sizes: [Int] = []
    private var head = 0
    private(set) var bytes = 0

    var count: Int { spans.count - head }
    var isEmpty: Bool { count == 0 }

    mutating func append(_ span: Span, bytes size: Int) {
        spans.append(span)
        sizes.append(size)
        bytes += size
    }

    /// Removes and returns up to `limit` spans from the front.
    mutating func take(_ limit: Int) -> [Span] {
        let end = head + min(limit, count)
        let batch = Array(spans[head..<end])
        for i in head..<end { bytes -= sizes[i] }
        head = end
        if head == spans.count {
            spans.removeAll(keepingCapacity: true)
            sizes.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= spans.count / 2 {
            spans.removeFirst(head)
            sizes.removeFirst(head)
            head = 0
        }
        return batch
    }
}
