#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Telemetry

/// The OTLP/HTTP payload encoding (`OTEL_EXPORTER_OTLP_PROTOCOL`). `grpc` is not supported by this agent.
public enum OTLPProtocol: String, Sendable, Equatable {
    case httpProtobuf = "http/protobuf"
    case httpJSON = "http/json"

    /// The request `Content-Type` the OTLP/HTTP spec requires.
    public var contentType: String { self == .httpProtobuf ? "application/x-protobuf" : "application/json" }
}

/// Request body compression (`OTEL_EXPORTER_OTLP_COMPRESSION`).
public enum OTLPCompression: String, Sendable, Equatable {
    case none
    case gzip
}

/// A setting the user got wrong: which setting, the bad value, and what is accepted.
public struct ExportSettingsError: Error, Equatable, CustomStringConvertible {
    public let setting: String
    public let problem: String

    public init(_ setting: String, _ problem: String) {
        self.setting = setting
        self.problem = problem
    }

    public var description: String { "invalid export setting \(setting): \(problem)" }
}

/// Export settings from one source (flags, environment or config file); nil means "not given here".
/// `ExportSettings.resolve` layers them: flag > environment > file > default.
public struct ExportSettingsLayer: Sendable, Equatable {
    /// Base URL; `/v1/traces`, `/v1/metrics` and `/v1/logs` are appended (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    public var endpoint: String?
    /// Full traces URL, used as is (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    public var tracesEndpoint: String?
    /// Full metrics URL, used as is (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`).
    public var metricsEndpoint: String?
    /// Full logs URL, used as is (`OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`).
    public var logsEndpoint: String?
    public var protocol_: String?
    public var headers: [(String, String)]?
    public var compression: String?
    /// Milliseconds, as the environment variable.
    public var timeoutMilliseconds: Int?
    public var certificate: String?
    public var clientCertificate: String?
    public var clientKey: String?
    public var serviceName: String?
    public var resourceAttributes: [(String, String)]?
    public var maxQueueSpans: Int?
    public var maxQueueBytes: Int?
    public var maxBatchSpans: Int?
    /// Milliseconds (`OTEL_BSP_SCHEDULE_DELAY`).
    public var scheduleDelayMilliseconds: Int?
    /// Milliseconds (`OTEL_METRIC_EXPORT_INTERVAL`).
    public var metricExportIntervalMilliseconds: Int?

    public init() {}

    public static func == (a: ExportSettingsLayer, b: ExportSettingsLayer) -> Bool {
        func same(_ x: [(String, String)]?, _ y: [(String, String)]?) -> Bool {
            x?.map { "\($0.0)=\($0.1)" } == y?.map { "\($0.0)=\($0.1)" }
        }
        return a.endpoint == b.endpoint && a.tracesEndpoint == b.tracesEndpoint && a.metricsEndpoint == b.metricsEndpoint
            && a.logsEndpoint == b.logsEndpoint && a.protocol_ == b.protocol_ && same(a.headers, b.headers) && a.compression == b.compression
            && a.timeoutMilliseconds == b.timeoutMilliseconds && a.certificate == b.certificate
            && a.clientCertificate == b.clientCertificate && a.clientKey == b.clientKey && a.serviceName == b.serviceName
            && same(a.resourceAttributes, b.resourceAttributes) && a.maxQueueSpans == b.maxQueueSpans
            && a.maxQueueBytes == b.maxQueueBytes && a.maxBatchSpans == b.maxBatchSpans
            && a.scheduleDelayMilliseconds == b.scheduleDelayMilliseconds
            && a.metricExportIntervalMilliseconds == b.metricExportIntervalMilliseconds
    }

    /// Reads the OpenTelemetry SDK environment variables (signal-specific `…_TRACES_…` variables win over the
    /// generic ones, as the SDK configuration spec says). Malformed values are errors naming the variable.
    public static func fromEnvironment(_ env: [String: String]) throws -> ExportSettingsLayer {
        func value(_ name: String) -> String? {
            guard let v = env[name]?.trimmingWhitespace, !v.isEmpty else { return nil }
            return v
        }
        func traces(_ suffix: String) -> (name: String, value: String)? {
            if let v = value("OTEL_EXPORTER_OTLP_TRACES_\(suffix)") { return ("OTEL_EXPORTER_OTLP_TRACES_\(suffix)", v) }
            if let v = value("OTEL_EXPORTER_OTLP_\(suffix)") { return ("OTEL_EXPORTER_OTLP_\(suffix)", v) }
            return nil
        }
        func integer(_ name: String, _ text: String?) throws -> Int? {
            guard let text else { return nil }
            guard let n = Int(text), n >= 0 else { throw ExportSettingsError(name, "'\(text)' is not a non-negative integer") }
            return n
        }
        var layer = ExportSettingsLayer()
        layer.endpoint = value("OTEL_EXPORTER_OTLP_ENDPOINT")
        layer.tracesEndpoint = value("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        layer.metricsEndpoint = value("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        layer.logsEndpoint = value("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
        layer.protocol_ = traces("PROTOCOL")?.value
        if let h = traces("HEADERS") { layer.headers = try parseKeyValueList(h.value, setting: h.name) }
        layer.compression = traces("COMPRESSION")?.value
        if let t = traces("TIMEOUT") { layer.timeoutMilliseconds = try integer(t.name, t.value) }
        layer.certificate = traces("CERTIFICATE")?.value
        layer.clientCertificate = traces("CLIENT_CERTIFICATE")?.value
        layer.clientKey = traces("CLIENT_KEY")?.value
        layer.serviceName = value("OTEL_SERVICE_NAME")
        if let r = value("OTEL_RESOURCE_ATTRIBUTES") {
            layer.resourceAttributes = try parseKeyValueList(r, setting: "OTEL_RESOURCE_ATTRIBUTES")
        }
        layer.maxQueueSpans = try integer("OTEL_BSP_MAX_QUEUE_SIZE", value("OTEL_BSP_MAX_QUEUE_SIZE"))
        layer.maxBatchSpans = try integer("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", value("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"))
        layer.scheduleDelayMilliseconds = try integer("OTEL_BSP_SCHEDULE_DELAY", value("OTEL_BSP_SCHEDULE_DELAY"))
        layer.metricExportIntervalMilliseconds = try integer(
            "OTEL_METRIC_EXPORT_INTERVAL", value("OTEL_METRIC_EXPORT_INTERVAL"))
        return layer
    }

    /// Parses the W3C-baggage-like list used by `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES`:
    /// `key1=value1,key2=value2`, values percent-decoded, whitespace around items ignored.
    public static func parseKeyValueList(_ text: String, setting: String) throws -> [(String, String)] {
        var result: [(String, String)] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: true) {
            let trimmed = String(item).trimmingWhitespace
            if trimmed.isEmpty { continue }
            guard let eq = trimmed.firstIndex(of: "=") else {
                throw ExportSettingsError(setting, "item '\(trimmed)' is not key=value")
            }
            let key = String(trimmed[..<eq]).trimmingWhitespace
            guard !key.isEmpty else { throw ExportSettingsError(setting, "item '\(trimmed)' has an empty key") }
            guard let decoded = percentDecode(String(trimmed[trimmed.index(after: eq)...]).trimmingWhitespace) else {
                throw ExportSettingsError(setting, "item '\(trimmed)' has a malformed %-escape")
            }
            result.append((key, decoded))
        }
        return result
    }

    static func percentDecode(_ s: String) -> String? {
        var out: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let c = it.popFirst() {
            if c == UInt8(ascii: "%") {
                guard it.count >= 2, let h = hexNibble(it.removeFirst()), let l = hexNibble(it.removeFirst()) else {
                    return nil
                }
                out.append(h << 4 | l)
            } else {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func hexNibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

extension String {
    var trimmingWhitespace: String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}

/// Retry policy for retryable OTLP failures (OTLP/HTTP spec "Retryable Response Codes" and "Failures"):
/// exponential backoff with jitter, capped, bounded by a total elapsed time.
public struct RetryPolicy: Sendable, Equatable {
    public var initialBackoff: Duration
    public var maxBackoff: Duration
    public var multiplier: Double
    /// Fraction of the backoff randomised (±): 0.2 means 80 %–120 %.
    public var jitter: Double
    /// No attempt starts after this much time since the first one; the batch is then dropped and counted.
    public var maxElapsed: Duration

    public init(
        initialBackoff: Duration = .seconds(1), maxBackoff: Duration = .seconds(30), multiplier: Double = 2,
        jitter: Double = 0.2, maxElapsed: Duration = .seconds(60)
    ) {
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.multiplier = multiplier
        self.jitter = jitter
        self.maxElapsed = maxElapsed
    }

    /// The delay before retry number `attempt` (1 = first retry), jittered.
    public func backoff(attempt: Int, random: Double = Double.random(in: 0...1)) -> Duration {
        let base = initialBackoff.seconds * pow(multiplier, Double(max(attempt - 1, 0)))
        let capped = min(base, maxBackoff.seconds)
        let factor = 1 - jitter + 2 * jitter * random
        return .nanoseconds(Int64(capped * factor * 1e9))
    }
}

extension Duration {
    /// The duration in (fractional) seconds.
    public var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}

/// The resolved, validated settings of the OTLP exporter and the RED-metrics pipeline.
public struct ExportSettings: Sendable {
    public var tracesURL: String
    public var metricsURL: String
    public var logsURL: String
    public var protocol_: OTLPProtocol
    public var headers: [(String, String)]
    public var compression: OTLPCompression
    /// Per-request timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`, default 10 s).
    public var timeout: Duration
    public var certificatePath: String?
    public var clientCertificatePath: String?
    public var clientKeyPath: String?
    /// Attributes every span's resource is layered on: `OTEL_RESOURCE_ATTRIBUTES`, with `OTEL_SERVICE_NAME`
    /// as `service.name` when given.
    public var resourceAttributes: Attributes
    /// Queue limits: a span arriving when either is reached is dropped and counted.
    public var maxQueueSpans: Int
    public var maxQueueBytes: Int
    public var maxBatchSpans: Int
    /// A batch is sent when it is full or when the oldest queued span waited this long (`OTEL_BSP_SCHEDULE_DELAY`).
    public var scheduleDelay: Duration
    /// Encoded request bodies larger than this are split; a single span larger than this is dropped.
    public var maxRequestBytes: Int
    /// At most this much of a response body is read (the rest is discarded).
    public var maxResponseBytes: Int
    public var retry: RetryPolicy
    public var shutdownTimeout: Duration
    public var metricExportInterval: Duration

    /// Defaults of the OTel SDK spec (endpoint `http://localhost:4318`, 10 s timeout, BSP 2048/512/5 s,
    /// metric interval 60 s).
    public init() {
        tracesURL = "http://localhost:4318/v1/traces"
        metricsURL = "http://localhost:4318/v1/metrics"
        logsURL = "http://localhost:4318/v1/logs"
        protocol_ = .httpProtobuf
        headers = []
        compression = .none
        timeout = .seconds(10)
        resourceAttributes = Attributes()
        maxQueueSpans = 2048
        maxQueueBytes = 8 << 20
        maxBatchSpans = 512
        scheduleDelay = .seconds(5)
        maxRequestBytes = 4 << 20
        maxResponseBytes = 4 << 20
        retry = RetryPolicy()
        shutdownTimeout = .seconds(10)
        metricExportInterval = .seconds(60)
    }

    /// Layers `flags` over `environment` over `file` over the defaults, then validates.
    public static func resolve(
        flags: ExportSettingsLayer = ExportSettingsLayer(), environment: ExportSettingsLayer = ExportSettingsLayer(),
        file: ExportSettingsLayer = ExportSettingsLayer()
    ) throws -> ExportSettings {
        let layers = [flags, environment, file]
        func pick<T>(_ path: KeyPath<ExportSettingsLayer, T?>) -> T? { layers.lazy.compactMap { $0[keyPath: path] }.first }
        var s = ExportSettings()
        // A signal-specific URL from any layer is used as is; otherwise the base endpoint gets the signal path.
        // Precedence still goes by layer: a flag's base endpoint beats an env traces endpoint.
        for layer in layers {
            if let url = layer.tracesEndpoint { s.tracesURL = url; break }
            if let base = layer.endpoint { s.tracesURL = appendPath(base, "v1/traces"); break }
        }
        for layer in layers {
            if let url = layer.metricsEndpoint { s.metricsURL = url; break }
            if let base = layer.endpoint { s.metricsURL = appendPath(base, "v1/metrics"); break }
        }
        for layer in layers {
            if let url = layer.logsEndpoint { s.logsURL = url; break }
            if let base = layer.endpoint { s.logsURL = appendPath(base, "v1/logs"); break }
        }
        if let p = pick(\.protocol_) {
            guard let parsed = OTLPProtocol(rawValue: p) else {
                throw ExportSettingsError(
                    "protocol", "'\(p)' is not supported; use http/protobuf (default) or http/json"
                        + (p == "grpc" ? " (this agent exports over HTTP only)" : ""))
            }
            s.protocol_ = parsed
        }
        s.headers = pick(\.headers) ?? []
        if let c = pick(\.compression) {
            guard let parsed = OTLPCompression(rawValue: c) else {
                throw ExportSettingsError("compression", "'\(c)' is not supported; use gzip or none")
            }
            s.compression = parsed
        }
        if let t = pick(\.timeoutMilliseconds) { s.timeout = .milliseconds(t) }
        s.certificatePath = pick(\.certificate)
        s.clientCertificatePath = pick(\.clientCertificate)
        s.clientKeyPath = pick(\.clientKey)
        var resource = Attributes()
        for (k, v) in pick(\.resourceAttributes) ?? [] { resource[k] = .string(v) }
        if let name = pick(\.serviceName) { resource[SemanticConventions.serviceName] = .string(name) }
        s.resourceAttributes = resource
        if let n = pick(\.maxQueueSpans) { s.maxQueueSpans = n }
        if let n = pick(\.maxQueueBytes) { s.maxQueueBytes = n }
        if let n = pick(\.maxBatchSpans) { s.maxBatchSpans = n }
        if let n = pick(\.scheduleDelayMilliseconds) { s.scheduleDelay = .milliseconds(n) }
        if let n = pick(\.metricExportIntervalMilliseconds) { s.metricExportInterval = .milliseconds(n) }
        try s.validate()
        return s
    }

    static func appendPath(_ base: String, _ path: String) -> String {
        base.hasSuffix("/") ? base + path : base + "/" + path
    }

    /// Rejects settings that cannot work, with the setting's name and the fix.
    public func validate() throws {
        for (name, url) in [("traces endpoint", tracesURL), ("metrics endpoint", metricsURL), ("logs endpoint", logsURL)] {
            guard url.hasPrefix("http://") || url.hasPrefix("https://"), url.count > 8 else {
                throw ExportSettingsError(name, "'\(url)' must be an http:// or https:// URL")
            }
        }
        if maxQueueSpans < 1 { throw ExportSettingsError("max queue size", "must be at least 1, got \(maxQueueSpans)") }
        if maxBatchSpans < 1 { throw ExportSettingsError("max batch size", "must be at least 1, got \(maxBatchSpans)") }
        if maxBatchSpans > maxQueueSpans {
            throw ExportSettingsError(
                "max batch size", "\(maxBatchSpans) spans is larger than the queue (\(maxQueueSpans) spans)")
        }
        if maxQueueBytes < 1024 { throw ExportSettingsError("max queue bytes", "must be at least 1024, got \(maxQueueBytes)") }
        if maxRequestBytes < 1024 { throw ExportSettingsError("max request bytes", "must be at least 1024, got \(maxRequestBytes)") }
        if timeout <= .zero { throw ExportSettingsError("timeout", "must be positive") }
        if scheduleDelay <= .zero { throw ExportSettingsError("schedule delay", "must be positive") }
        if metricExportInterval <= .zero { throw ExportSettingsError("metric export interval", "must be positive") }
        for (name, path) in [
            ("certificate", certificatePath), ("client certificate", clientCertificatePath), ("client key", clientKeyPath),
        ] {
            if let path, access(path, R_OK) != 0 {
                throw ExportSettingsError(name, "cannot read '\(path)'")
            }
        }
        if (clientCertificatePath == nil) != (clientKeyPath == nil) {
            throw ExportSettingsError("client certificate", "a client certificate needs a client key and vice versa")
        }
    }
}
