/// What a span describes: OTLP `Span.SpanKind` (raw values are the OTLP enum numbers).
public enum SpanKind: Int32, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case internal_ = 1
    case server = 2
    case client = 3
    case producer = 4
    case consumer = 5

    /// The lowercase name used by the span printers (`server`, `client`, …).
    public var description: String {
        switch self {
        case .internal_: return "internal"
        case .server: return "server"
        case .client: return "client"
        case .producer: return "producer"
        case .consumer: return "consumer"
        }
    }
}

/// The outcome of a span: OTLP `Status` (code `STATUS_CODE_UNSET` = 0, `OK` = 1, `ERROR` = 2, plus a message
/// that only errors carry).
public enum SpanStatus: Hashable, Sendable, CustomStringConvertible {
    case unset
    case ok
    case error(message: String)

    /// The OTLP `Status.StatusCode` number.
    public var code: Int32 {
        switch self {
        case .unset: return 0
        case .ok: return 1
        case .error: return 2
        }
    }

    /// The error message, empty unless `.error`.
    public var message: String {
        if case .error(let message) = self { return message }
        return ""
    }

    /// `unset`, `ok` or `error`, as printed by the span printers.
    public var description: String {
        switch self {
        case .unset: return "unset"
        case .ok: return "ok"
        case .error: return "error"
        }
    }
}

/// One finished operation: the fields of OTLP `Span` that the agent produces (no events or links).
/// A value type; `resource` and `scope` are shared references, so copying a span is cheap.
public struct Span: Sendable, Hashable {
    public var name: String
    public var kind: SpanKind
    public var traceID: TraceID
    public var spanID: SpanID
    /// `SpanID.invalid` for a root span.
    public var parentSpanID: SpanID
    /// W3C `tracestate`, empty when none.
    public var traceState: String
    /// OTLP `Span.flags`: the W3C trace flags in the low byte (bit 0 = sampled).
    public var flags: UInt32
    public var startTimeUnixNano: UInt64
    public var endTimeUnixNano: UInt64
    public var status: SpanStatus
    public var attributes: Attributes
    public var resource: Resource
    public var scope: InstrumentationScope

    public init(
        name: String, kind: SpanKind, traceID: TraceID, spanID: SpanID, parentSpanID: SpanID = .invalid,
        traceState: String = "", flags: UInt32 = 1, startTimeUnixNano: UInt64, endTimeUnixNano: UInt64,
        status: SpanStatus = .unset, attributes: Attributes = Attributes(), resource: Resource,
        scope: InstrumentationScope
    ) {
        self.name = name
        self.kind = kind
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.traceState = traceState
        self.flags = flags
        self.startTimeUnixNano = startTimeUnixNano
        self.endTimeUnixNano = endTimeUnixNano
        self.status = status
        self.attributes = attributes
        self.resource = resource
        self.scope = scope
    }

    /// End minus start in seconds (0 if the clock went backwards).
    public var durationSeconds: Double {
        endTimeUnixNano >= startTimeUnixNano ? Double(endTimeUnixNano - startTimeUnixNano) / 1e9 : 0
    }
}

/// Where spans go: a printer, an exporter, the metrics aggregator. The pipeline calls `consume` from its
/// event thread, so implementations must never block it (queue and return).
public protocol SpanSink: AnyObject, Sendable {
    /// Hands over finished spans. Must not block; a sink that cannot keep up drops and counts.
    func consume(_ spans: [Span])
    /// Delivers what is buffered; returns false if `timeout` passed first.
    @discardableResult func flush(timeout: Duration) -> Bool
    /// Stops intake, flushes within `timeout` and releases resources. Further `consume` calls are dropped.
    func shutdown(timeout: Duration)
}
