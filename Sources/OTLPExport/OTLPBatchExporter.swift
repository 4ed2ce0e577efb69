import Foundation
import Logging
import Telemetry

/// What the batching exporter needs to know about the items of one signal (spans, log records): where they go,
/// how they are counted, sized and encoded, and how their resource is replaced.
protocol OTLPBatchKind {
    associatedtype Item: Sendable
    static var signal: OTLPSignal { get }
    /// The items' name in log lines: `spans`, `log records`; one of them: `span`, `log record`.
    static var noun: String { get }
    static var singular: String { get }
    static func url(_ settings: ExportSettings) -> String
    /// A rough size of an item in the queue, for the byte limit (its encoded size plus bookkeeping).
    static func estimatedBytes(_ item: Item) -> Int
    static func resource(of item: Item) -> Resource
    static func setResource(_ resource: Resource, of item: inout Item)
    /// Appends the `Export*ServiceRequest` for `items` (protobuf).
    static func encode(_ items: ArraySlice<Item>, into writer: inout ProtobufWriter)
    /// Appends the `Export*ServiceRequest` for `items` (OTLP/JSON).
    static func encodeJSON(_ items: ArraySlice<Item>, into json: inout [UInt8])
}

/// The OTel SDK "Batching processor" + "OTLP exporter" in one, for any signal: a bounded queue filled by
/// `consume` without blocking, one worker thread that sends batches by size or schedule delay through
/// `OTLPSender` (the OTLP/HTTP retry rules), 413 and size splits, and a shutdown flush with a deadline.
/// `OTLPTraceExporter` and `OTLPLogExporter` are this with their item kind.
final class OTLPBatchExporter<Kind: OTLPBatchKind>: @unchecked Sendable {
    typealias Item = Kind.Item
    let settings: ExportSettings
    let stats: ExporterStats
    private let logger: Logger
    private let condition = NSCondition()
    // Guarded by `condition`:
    private var queue = BatchQueue<Item>()
    private var closed = false
    private var deadline: ContinuousClock.Instant?
    private var flushRequests = 0
    private var inFlight = 0
    private var workerDone = false
    private var lastDropLog: ContinuousClock.Instant?
    /// Resources with the settings' resource attributes layered on (`OTEL_RESOURCE_ATTRIBUTES`), by identity.
    /// Used by the worker thread only.
    private var mergedResources: [ObjectIdentifier: (Resource, Resource)] = [:]

    /// Starts the worker thread (named `threadName`), which creates its transport with `makeTransport`
    /// (libcurl by default). The thread runs until `shutdown`, which every owner must call.
    init(settings: ExportSettings, logger: Logger, threadName: String, makeTransport: (@Sendable () -> HTTPTransport)?) {
        self.settings = settings
        self.stats = ExporterStats()
        self.logger = logger
        let thread = Thread { [self] in
            self.run(transport: makeTransport?() ?? CurlTransport(settings: settings))
        }
        thread.name = threadName
        thread.start()
    }

    /// Queues items; when the queue is full (items or bytes) or intake stopped, they are dropped and counted.
    func consume(_ items: [Item]) {
        stats.spansReceived.add(items.count, ordering: .relaxed)
        var dropped = 0
        condition.lock()
        if closed {
            dropped = items.count
        } else {
            for item in items {
                let size = Kind.estimatedBytes(item)
                if queue.count >= settings.maxQueueSpans || queue.bytes + size > settings.maxQueueBytes {
                    dropped += 1
                } else {
                    queue.append(item, bytes: size)
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
                    "OTLP \(Kind.signal.rawValue) export queue full (\(settings.maxQueueSpans) \(Kind.noun) / \(settings.maxQueueBytes) bytes) or closed: dropped \(dropped) \(Kind.noun); total dropped \(stats.spansDropped.load(ordering: .relaxed))")
            }
        }
    }

    /// Sends everything queued now; true when the queue drained and no request is in flight before `timeout`.
    @discardableResult func flush(timeout: Duration) -> Bool {
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
    func shutdown(timeout: Duration) {
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

    private func run(transport: HTTPTransport) {
        let sender = OTLPSender(
            transport: transport, settings: settings, url: Kind.url(settings), signal: Kind.signal, stats: stats,
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
                queue = BatchQueue()
                stats.queued.store(0, ordering: .relaxed)
                stats.spansDropped.add(left, ordering: .relaxed)  // counted before shutdown() can return
                workerDone = true
                condition.broadcast()
                condition.unlock()
                if left > 0 { logger.warning("OTLP shutdown timeout: dropped \(left) queued \(Kind.noun)") }
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

    /// Waits until `instant` or until woken (shutdown, new items); the caller re-checks why.
    private func sleep(until instant: ContinuousClock.Instant) {
        condition.lock()
        _ = condition.wait(until: Date(timeIntervalSinceNow: (instant - ContinuousClock.now).seconds))
        condition.unlock()
    }

    /// Encodes and sends one batch; splits it when the body is over `maxRequestBytes` or the server says 413.
    private func export(
        _ batch: ArraySlice<Item>, sender: OTLPSender, writer: inout ProtobufWriter, json: inout [UInt8]
    ) {
        let items = withResource(batch)
        let size = encode(items[...], writer: &writer, json: &json)
        if size > settings.maxRequestBytes {
            guard items.count > 1 else {
                stats.spansFailed.add(1, ordering: .relaxed)
                logger.warning("OTLP: dropped a \(Kind.singular) whose request (\(size) bytes) exceeds \(settings.maxRequestBytes) bytes")
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
            let rejectedCount = min(max(rejected, 0), items.count)
            stats.spansExported.add(items.count - rejectedCount, ordering: .relaxed)
            if rejectedCount > 0 || !message.isEmpty {
                stats.spansRejected.add(rejectedCount, ordering: .relaxed)
                logger.warning("OTLP partial success: collector rejected \(rejectedCount) \(Kind.noun): \(message)")
            }
        case .tooLarge:
            if items.count > 1 {
                logger.info("OTLP: collector answered 413 for \(items.count) \(Kind.noun); sending halves")
                exportHalves(batch, sender: sender, writer: &writer, json: &json)
            } else {
                stats.spansFailed.add(1, ordering: .relaxed)
                logger.warning("OTLP: collector answered 413 for a single \(Kind.singular); dropped")
            }
        case .failed(let reason):
            stats.spansFailed.add(items.count, ordering: .relaxed)
            logger.warning("OTLP export of \(items.count) \(Kind.noun) to \(Kind.url(settings)) failed: \(reason)")
        }
    }

    private func exportHalves(
        _ batch: ArraySlice<Item>, sender: OTLPSender, writer: inout ProtobufWriter, json: inout [UInt8]
    ) {
        let mid = batch.startIndex + batch.count / 2
        export(batch[..<mid], sender: sender, writer: &writer, json: &json)
        export(batch[mid...], sender: sender, writer: &writer, json: &json)
    }

    private func encode(_ items: ArraySlice<Item>, writer: inout ProtobufWriter, json: inout [UInt8]) -> Int {
        if settings.protocol_ == .httpProtobuf {
            writer.reset()
            Kind.encode(items, into: &writer)
            return writer.count
        }
        json.removeAll(keepingCapacity: true)
        Kind.encodeJSON(items, into: &json)
        return json.count
    }

    /// The batch with each resource replaced by one carrying the settings' resource attributes underneath
    /// (item-side attributes win). Cached per resource object, so grouping by identity still works.
    private func withResource(_ batch: ArraySlice<Item>) -> [Item] {
        guard !settings.resourceAttributes.isEmpty else { return Array(batch) }
        return batch.map { item in
            var item = item
            let resource = Kind.resource(of: item)
            let id = ObjectIdentifier(resource)
            if let (original, merged) = mergedResources[id], original === resource {
                Kind.setResource(merged, of: &item)
            } else {
                var attributes = settings.resourceAttributes
                attributes.merge(resource.attributes)
                let merged = Resource(attributes: attributes)
                if mergedResources.count > 4096 { mergedResources.removeAll() }
                mergedResources[id] = (resource, merged)
                Kind.setResource(merged, of: &item)
            }
            return item
        }
    }
}

/// FIFO of queued items with their estimated sizes. Taking a batch advances a head index; the consumed prefix
/// is dropped once it is half the storage, so each item is moved at most about once.
struct BatchQueue<Item> {
    private var items: [Item] = []
    private var sizes: [Int] = []
    private var head = 0
    private(set) var bytes = 0

    var count: Int { items.count - head }
    var isEmpty: Bool { count == 0 }

    mutating func append(_ item: Item, bytes size: Int) {
        items.append(item)
        sizes.append(size)
        bytes += size
    }

    /// Removes and returns up to `limit` items from the front.
    mutating func take(_ limit: Int) -> [Item] {
        let end = head + min(limit, count)
        let batch = Array(items[head..<end])
        for i in head..<end { bytes -= sizes[i] }
        head = end
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            sizes.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= items.count / 2 {
            items.removeFirst(head)
            sizes.removeFirst(head)
            head = 0
        }
        return batch
    }
}
