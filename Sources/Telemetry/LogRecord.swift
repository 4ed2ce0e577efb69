/// A log record's body: OTLP `AnyValue` in full (unlike attribute values, it may nest maps and mixed arrays).
public indirect enum LogValue: Hashable, Sendable {
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case bytes([UInt8])
    case array([LogValue])
    /// OTLP `KeyValueList`: keys in order, as the producer gave them.
    case map([LogEntry])
}

/// One key of a `LogValue.map`: OTLP `KeyValue` with an `AnyValue` that may nest.
public struct LogEntry: Hashable, Sendable {
    public var key: String
    public var value: LogValue

    public init(_ key: String, _ value: LogValue) {
        self.key = key
        self.value = value
    }
}

/// OTLP `SeverityNumber` (logs data model "Field: SeverityNumber"): the first number of each range.
public enum LogSeverity: Int32, Sendable, Hashable {
    case unspecified = 0
    case trace = 1
    case debug = 5
    case info = 9
    case warn = 13
    case error = 17
    case fatal = 21

    /// The short name the data model gives the range (`INFO`, …), empty for `unspecified`.
    public var text: String {
        switch self {
        case .unspecified: ""
        case .trace: "TRACE"
        case .debug: "DEBUG"
        case .info: "INFO"
        case .warn: "WARN"
        case .error: "ERROR"
        case .fatal: "FATAL"
        }
    }
}

/// One event as an OTLP `LogRecord` (opentelemetry-proto `logs/v1`): no trace context, which the agent's
/// records do not carry. `resource` and `scope` are shared references, as on `Span`.
public struct LogRecord: Sendable, Hashable {
    /// When the event happened; 0 when unknown (the data model then uses `observedTimeUnixNano`).
    public var timeUnixNano: UInt64
    /// When the agent read it.
    public var observedTimeUnixNano: UInt64
    public var severity: LogSeverity
    /// The severity as the source spelled it; empty to leave it out.
    public var severityText: String
    public var body: LogValue?
    public var attributes: Attributes
    public var resource: Resource
    public var scope: InstrumentationScope

    public init(
        timeUnixNano: UInt64 = 0, observedTimeUnixNano: UInt64, severity: LogSeverity = .unspecified,
        severityText: String = "", body: LogValue?, attributes: Attributes = Attributes(), resource: Resource,
        scope: InstrumentationScope
    ) {
        self.timeUnixNano = timeUnixNano
        self.observedTimeUnixNano = observedTimeUnixNano
        self.severity = severity
        self.severityText = severityText
        self.body = body
        self.attributes = attributes
        self.resource = resource
        self.scope = scope
    }
}

/// Where log records go (the OTLP logs exporter). Like `SpanSink`: `consume` must not block its caller.
public protocol LogSink: AnyObject, Sendable {
    /// Hands over records. Must not block; a sink that cannot keep up drops and counts.
    func consume(_ records: [LogRecord])
    /// Delivers what is buffered; returns false if `timeout` passed first.
    @discardableResult func flush(timeout: Duration) -> Bool
    /// Stops intake, flushes within `timeout` and releases resources. Further `consume` calls are dropped.
    func shutdown(timeout: Duration)
}
