import Foundation
import Logging
import Telemetry

/// The OTLP/HTTP span exporter (OTel SDK "Batching processor" + "OTLP exporter" in one): a bounded queue filled
/// by `consume` without blocking, one worker thread that sends batches by size or schedule delay, the OTLP
/// retry rules, and a shutdown flush with a deadline (`OTLPBatchExporter` for spans, to `tracesURL`).
public final class OTLPTraceExporter: SpanSink, @unchecked Sendable {
    private let core: OTLPBatchExporter<SpanBatch>
    public var settings: ExportSettings { core.settings }
    public var stats: ExporterStats { core.stats }

    /// Starts the worker thread, which creates its transport with `makeTransport` (libcurl by default; tests
    /// pass fakes). The thread runs until `shutdown`, which every owner must call.
    public init(
        settings: ExportSettings, logger: Logger = Logger(label: "tracer.otlp"),
        makeTransport: (@Sendable () -> HTTPTransport)? = nil
    ) {
        core = OTLPBatchExporter(settings: settings, logger: logger, threadName: "otlp-traces", makeTransport: makeTransport)
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
    public func consume(_ spans: [Span]) { core.consume(spans) }

    /// Sends everything queued now; true when the queue drained and no request is in flight before `timeout`.
    @discardableResult public func flush(timeout: Duration) -> Bool { core.flush(timeout: timeout) }

    /// Stops intake, sends what is queued until `timeout` passes (retries included), then drops and counts the
    /// rest and stops the worker. Returns once the worker has stopped (at most a moment after the deadline).
    public func shutdown(timeout: Duration) { core.shutdown(timeout: timeout) }

    /// Shutdown with the configured timeout (default 10 s).
    public func shutdown() { shutdown(timeout: settings.shutdownTimeout) }
}

/// Spans for `OTLPBatchExporter`: `ExportTraceServiceRequest` to `tracesURL`.
enum SpanBatch: OTLPBatchKind {
    static var signal: OTLPSignal { .traces }
    static var noun: String { "spans" }
    static var singular: String { "span" }
    static func url(_ settings: ExportSettings) -> String { settings.tracesURL }
    static func estimatedBytes(_ span: Span) -> Int { OTLPTraceExporter.estimatedBytes(span) }
    static func resource(of span: Span) -> Resource { span.resource }
    static func setResource(_ resource: Resource, of span: inout Span) { span.resource = resource }
    static func encode(_ spans: ArraySlice<Span>, into writer: inout ProtobufWriter) {
        OTLPTraceProtobufEncoder.encode(spans, into: &writer)
    }
    static func encodeJSON(_ spans: ArraySlice<Span>, into json: inout [UInt8]) {
        OTLPTraceJSONEncoder.encode(spans, into: &json)
    }
}
