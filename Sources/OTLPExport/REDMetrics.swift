import Foundation
import Synchronization
import Telemetry

/// One histogram series: OTLP `HistogramDataPoint` with cumulative temporality.
public struct HistogramPoint: Sendable, Equatable {
    public var attributes: Attributes
    /// Per-bucket counts; one more than the bounds (the last is +Inf), as in OTLP `bucket_counts`.
    public var bucketCounts: [UInt64]
    public var sum: Double
    public var count: UInt64
    /// Optional in OTLP (`min`/`max` fields 11/12); nil when not tracked.
    public var min: Double?
    public var max: Double?

    public init(attributes: Attributes, bucketCounts: [UInt64], sum: Double, count: UInt64, min: Double?, max: Double?) {
        (self.attributes, self.bucketCounts, self.sum, self.count, self.min, self.max) = (attributes, bucketCounts, sum, count, min, max)
    }
}

/// One metric and its points: OTLP `Metric` with a `Histogram` or a monotonic `Sum` / `Gauge` of integers.
public struct MetricData: Sendable, Equatable {
    public enum Points: Sendable, Equatable {
        case histogram(bounds: [Double], points: [HistogramPoint])
        /// Monotonic cumulative `Sum`.
        case counter([NumberPoint])
        case gauge([NumberPoint])
    }

    public struct NumberPoint: Sendable, Equatable {
        public var attributes: Attributes
        public var value: Double

        public init(attributes: Attributes = Attributes(), value: Double) {
            self.attributes = attributes
            self.value = value
        }
    }

    public var name: String
    public var description: String
    /// UCUM unit (`s`, `By`, `1`).
    public var unit: String
    public var points: Points

    public init(name: String, description: String, unit: String, points: Points) {
        self.name = name
        self.description = description
        self.unit = unit
        self.points = points
    }
}

/// Metrics of one resource (a service for RED metrics, the agent for self-metrics): OTLP `ResourceMetrics`.
public struct ResourceMetricsData: Sendable {
    public var resource: Resource
    public var metrics: [MetricData]

    public init(resource: Resource, metrics: [MetricData]) {
        self.resource = resource
        self.metrics = metrics
    }
}

/// RED metrics (rate, errors, duration) derived from spans, as the semantic conventions define them, with
/// low-cardinality attributes only and one series set per `service.name`, cumulative since `startTimeUnixNano`:
/// - HTTP: `http.server.request.duration` / `http.client.request.duration` (seconds, buckets 5 ms … 10 s) and
///   the request/response body-size histograms; `http.request.method`, `http.route` (from the span or the
///   grouped `url.path`), `http.response.status_code`, and for clients `server.address`.
/// - Database clients: `db.client.operation.duration` (buckets 1 ms … 10 s); `db.system.name`,
///   `db.operation.name`, `db.collection.name`, `db.namespace`, `db.response.status_code`, `error.type`,
///   `server.address`, `server.port`.
/// - RPC: `rpc.server.call.duration` / `rpc.client.call.duration`; `rpc.system`, `rpc.service`, `rpc.method`,
///   `rpc.grpc.status_code`, `error.type`, and for clients `server.address`.
/// - Messaging: `messaging.client.operation.duration` (publish) and `messaging.process.duration` (delivery);
///   `messaging.system`, `messaging.operation.name`, `messaging.destination.name` (or, for a temporary destination,
///   `messaging.destination.template` instead), `error.type`, `server.address`.
public final class REDMetrics: SpanSink {
    /// Semantic-conventions advice for HTTP durations (seconds).
    public static let durationBounds: [Double] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
    /// Body sizes (bytes): powers of 4 from 64 B to 16 MiB.
    public static let sizeBounds: [Double] = (3...12).map { pow(4, Double($0)) }
    /// Methods kept as is; others become `_OTHER` (semconv `http.request.method`).
    static let knownMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]

    /// Database client durations (semconv advice for `db.client.operation.duration`, seconds).
    public static let databaseDurationBounds: [Double] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10]

    enum Instrument: Int, CaseIterable {
        case serverDuration, clientDuration, serverRequestSize, serverResponseSize, clientRequestSize, clientResponseSize
        case databaseClientDuration, rpcServerDuration, rpcClientDuration, messagingClientDuration, messagingProcessDuration

        var name: String {
            switch self {
            case .serverDuration: return "http.server.request.duration"
            case .clientDuration: return "http.client.request.duration"
            case .serverRequestSize: return "http.server.request.body.size"
            case .serverResponseSize: return "http.server.response.body.size"
            case .clientRequestSize: return "http.client.request.body.size"
            case .clientResponseSize: return "http.client.response.body.size"
            case .databaseClientDuration: return "db.client.operation.duration"
            case .rpcServerDuration: return "rpc.server.call.duration"
            case .rpcClientDuration: return "rpc.client.call.duration"
            case .messagingClientDuration: return "messaging.client.operation.duration"
            case .messagingProcessDuration: return "messaging.process.duration"
            }
        }

        var description: String {
            switch self {
            case .serverDuration: return "Duration of HTTP server requests."
            case .clientDuration: return "Duration of HTTP client requests."
            case .serverRequestSize, .clientRequestSize: return "Size of HTTP request bodies."
            case .serverResponseSize, .clientResponseSize: return "Size of HTTP response bodies."
            case .databaseClientDuration: return "Duration of database client operations."
            case .rpcServerDuration: return "Duration of RPC calls served."
            case .rpcClientDuration: return "Duration of RPC calls made."
            case .messagingClientDuration: return "Duration of messaging operations (publish)."
            case .messagingProcessDuration: return "Duration of processing delivered messages."
            }
        }

        var isSize: Bool { [.serverRequestSize, .serverResponseSize, .clientRequestSize, .clientResponseSize].contains(self) }
        var unit: String { isSize ? "By" : "s" }
        var bounds: [Double] {
            switch self {
            case .serverRequestSize, .serverResponseSize, .clientRequestSize, .clientResponseSize: REDMetrics.sizeBounds
            case .databaseClientDuration: REDMetrics.databaseDurationBounds
            default: REDMetrics.durationBounds
            }
        }

        /// The body-size instruments that go with an HTTP duration.
        var sizes: (request: Instrument, response: Instrument)? {
            switch self {
            case .serverDuration: (.serverRequestSize, .serverResponseSize)
            case .clientDuration: (.clientRequestSize, .clientResponseSize)
            default: nil
            }
        }
    }

    /// The attributes database, RPC and messaging series keep from a span, in this order.
    static let databaseKeys = [
        SemanticConventions.dbSystemName, SemanticConventions.dbOperationName, SemanticConventions.dbCollectionName,
        SemanticConventions.dbNamespace, SemanticConventions.dbResponseStatusCode, SemanticConventions.errorType,
        SemanticConventions.serverAddress, SemanticConventions.serverPort,
    ]
    static let rpcServerKeys = [
        SemanticConventions.rpcSystem, SemanticConventions.rpcService, SemanticConventions.rpcMethod,
        SemanticConventions.rpcGRPCStatusCode, SemanticConventions.errorType,
    ]
    static let rpcClientKeys = rpcServerKeys + [SemanticConventions.serverAddress]
    static let messagingKeys = [
        SemanticConventions.messagingSystem, SemanticConventions.messagingOperationName,
        SemanticConventions.messagingDestinationName, SemanticConventions.messagingDestinationTemplate,
        SemanticConventions.errorType, SemanticConventions.serverAddress,
    ]

    /// The attribute set of one series group: its duration instrument, service and attributes.
    struct SeriesKey: Hashable {
        var instrument: Instrument
        var service: String
        var attributes: Attributes

        /// Hashes the attribute values only (keys mostly follow from the values' order); equality still
        /// compares keys too.
        func hash(into hasher: inout Hasher) {
            hasher.combine(instrument)
            hasher.combine(service)
            for attribute in attributes { hasher.combine(attribute.value) }
        }
    }

    /// The histograms of one attribute set: the duration, and for HTTP the body sizes once spans carried them.
    struct SeriesGroup {
        var key: SeriesKey
        var duration: HistogramPoint
        var requestSize: HistogramPoint?
        var responseSize: HistogramPoint?
    }

    /// What decides an HTTP span's series, as the span has it (its path, not yet its route). Equal inputs always
    /// land in the same group: a route, once admitted or sent to overflow under the route limit, stays so.
    struct HTTPSeriesInput: Hashable {
        var server: Bool
        var service: String
        var method: String
        var route: String?
        var path: String?
        var status: Int64?
        var address: AttributeValue?
    }

    /// Most HTTP span inputs remembered (``State/httpGroups``).
    static let httpGroupsLimit = 16384

    struct State {
        /// Where each attribute set's group is in `groups`: one lookup per span.
        var groupIndex: [SeriesKey: Int] = [:]
        var groups: [SeriesGroup] = []
        var groupsPerService: [String: Int] = [:]
        /// Routes in use per service, configured templates aside (capped at `maxRoutesPerService`).
        var routesPerService: [String: Set<String>] = [:]
        /// HTTP spans: the group each span input went to, so route grouping, the route limit and the attribute
        /// set are worked out once per input (bounded: cleared when full, then filled again).
        var httpGroups: [HTTPSeriesInput: Int] = [:]
        /// The last HTTP inputs looked up and their groups: consecutive spans mostly repeat a few (a client's
        /// requests), and comparing is cheaper than hashing.
        var recentHTTP = RecentGroups<HTTPSeriesInput>()
        var overflowed = 0
        var closed = false
    }

    private let state = Mutex(State())
    public let routes: RouteGrouper
    /// Attribute sets per service and role beyond this go to one series marked `otel.metric.overflow=true`
    /// (the OTel SDK's cardinality limit per metric).
    public let maxSeriesPerService: Int
    public let startTimeUnixNano: UInt64
    /// Distinct `http.route` values per service beyond the configured templates; later ones are recorded as
    /// ``RouteGrouper/overflowRoute``, so unconfigured paths can never make more than this many routes.
    public let maxRoutesPerService: Int

    public init(routes: RouteGrouper = RouteGrouper(), maxSeriesPerService: Int = 2000, maxRoutesPerService: Int = 100) {
        self.routes = routes
        self.maxSeriesPerService = maxSeriesPerService
        self.maxRoutesPerService = maxRoutesPerService
        startTimeUnixNano = UInt64(Date().timeIntervalSince1970 * 1e9)
    }

    /// Records every HTTP server/client span (those with `http.request.method`), database client, RPC and
    /// messaging span; other spans are ignored.
    public func consume(_ spans: [Span]) {
        state.withLock { state in
            guard !state.closed else { return }
            for index in spans.indices {
                // The fields, not the span: an element passed whole is copied (a reference count per field).
                record(kind: spans[index].kind, spans[index].attributes, service: spans[index].resource.serviceName,
                       duration: spans[index].durationSeconds, &state)
            }
        }
    }

    private func record(kind: SpanKind, _ spanAttributes: borrowing Attributes, service: String?, duration: Double, _ state: inout State) {
        if let method = spanAttributes[SemanticConventions.httpRequestMethod]?.stringValue {
            recordHTTP(kind: kind, spanAttributes, service: service, duration: duration, method: method, &state)
            return
        }
        let (instrument, keys): (Instrument, [String])
        switch kind {
        case .client where spanAttributes[SemanticConventions.dbSystemName] != nil: (instrument, keys) = (.databaseClientDuration, Self.databaseKeys)
        case .server where spanAttributes[SemanticConventions.rpcSystem] != nil: (instrument, keys) = (.rpcServerDuration, Self.rpcServerKeys)
        case .client where spanAttributes[SemanticConventions.rpcSystem] != nil: (instrument, keys) = (.rpcClientDuration, Self.rpcClientKeys)
        case .producer where spanAttributes[SemanticConventions.messagingSystem] != nil: (instrument, keys) = (.messagingClientDuration, Self.messagingKeys)
        case .consumer where spanAttributes[SemanticConventions.messagingSystem] != nil: (instrument, keys) = (.messagingProcessDuration, Self.messagingKeys)
        default: return
        }
        // A destination with a template (a temporary one: NATS `_INBOX.…`) is named by its template only (semconv: the
        // name only when it is known to have low cardinality).
        let templated = spanAttributes[SemanticConventions.messagingDestinationTemplate] != nil
        var attributes = Attributes(capacity: keys.count)
        for key in keys where !(templated && key == SemanticConventions.messagingDestinationName) {
            if let value = spanAttributes[key] { attributes.appendUnchecked(key, value) }
        }
        let service = service ?? "unknown_service"
        let index = groupIndex(SeriesKey(instrument: instrument, service: service, attributes: attributes), &state)
        state.groups[index].duration.record(duration, bounds: instrument.bounds)
    }

    private func recordHTTP(kind: SpanKind, _ spanAttributes: borrowing Attributes, service: String?, duration: Double, method: String,
                            _ state: inout State) {
        let server: Bool
        switch kind {
        case .server: server = true
        case .client: server = false
        default: return
        }
        let service = service ?? "unknown_service"
        let givenRoute = spanAttributes[SemanticConventions.httpRoute]?.stringValue
        let input = HTTPSeriesInput(server: server, service: service, method: method, route: givenRoute,
                                    path: givenRoute == nil ? spanAttributes[SemanticConventions.urlPath]?.stringValue : nil,
                                    status: spanAttributes[SemanticConventions.httpResponseStatusCode]?.intValue,
                                    address: server ? nil : spanAttributes[SemanticConventions.serverAddress])
        let index: Int
        if let recent = state.recentHTTP[input] {
            index = recent
        } else if let known = state.httpGroups[input] {
            index = known
            state.recentHTTP.insert(input, index)
        } else {
            index = httpGroup(input, &state)
            if state.httpGroups.count >= Self.httpGroupsLimit { state.httpGroups.removeAll(keepingCapacity: true) }
            state.httpGroups[input] = index
            state.recentHTTP.insert(input, index)
        }
        let seriesAttributes = state.groups[index].key.attributes
        state.groups[index].duration.record(duration, bounds: Self.durationBounds)
        if let size = spanAttributes[SemanticConventions.httpRequestBodySize]?.intValue {
            state.groups[index].requestSize.record(Double(size), bounds: Self.sizeBounds, attributes: seriesAttributes)
        }
        if let size = spanAttributes[SemanticConventions.httpResponseBodySize]?.intValue {
            state.groups[index].responseSize.record(Double(size), bounds: Self.sizeBounds, attributes: seriesAttributes)
        }
    }

    /// The group of an HTTP span input: its method (`_OTHER` when unknown), its route (grouped from the path,
    /// under the route limit), status and, for a client, the server address.
    private func httpGroup(_ input: HTTPSeriesInput, _ state: inout State) -> Int {
        var attributes = Attributes(capacity: 4)
        attributes.appendUnchecked(
            SemanticConventions.httpRequestMethod, .string(Self.knownMethods.contains(input.method) ? input.method : "_OTHER"))
        let service = input.service
        if var route = input.route ?? input.path.map({ routes.route(for: $0) }) {
            if !routes.isConfigured(route), state.routesPerService[service]?.contains(route) != true {
                if state.routesPerService[service, default: []].count < maxRoutesPerService {
                    state.routesPerService[service, default: []].insert(route)
                } else {
                    route = RouteGrouper.overflowRoute
                }
            }
            attributes.appendUnchecked(SemanticConventions.httpRoute, .string(route))
        }
        if let status = input.status {
            attributes.appendUnchecked(SemanticConventions.httpResponseStatusCode, .int(status))
        }
        if let address = input.address {
            attributes.appendUnchecked(SemanticConventions.serverAddress, address)
        }
        return groupIndex(SeriesKey(instrument: input.server ? .serverDuration : .clientDuration, service: service, attributes: attributes), &state)
    }

    /// The group of `key`, created on first use; past the service's limit, its overflow group.
    private func groupIndex(_ key: SeriesKey, _ state: inout State) -> Int {
        if let index = state.groupIndex[key] { return index }
        var key = key
        let limitKey = "\(key.service)/\(key.instrument.rawValue)"
        if state.groupsPerService[limitKey, default: 0] >= maxSeriesPerService {
            state.overflowed += 1
            key.attributes = ["otel.metric.overflow": true]
            if let index = state.groupIndex[key] { return index }
        } else {
            state.groupsPerService[limitKey, default: 0] += 1
        }
        let index = state.groups.count
        state.groups.append(SeriesGroup(key: key, duration: .empty(key.attributes, bounds: key.instrument.bounds)))
        state.groupIndex[key] = index
        return index
    }

    /// Cumulative histograms per service, ordered by service, metric name and attributes.
    public func snapshot() -> [ResourceMetricsData] {
        let groups = state.withLock { $0.groups }
        var byService: [String: [Int: [HistogramPoint]]] = [:]
        for group in groups {
            var points = [(group.key.instrument, group.duration)]
            if let sizes = group.key.instrument.sizes {
                if let point = group.requestSize { points.append((sizes.request, point)) }
                if let point = group.responseSize { points.append((sizes.response, point)) }
            }
            for (instrument, point) in points { byService[group.key.service, default: [:]][instrument.rawValue, default: []].append(point) }
        }
        return byService.keys.sorted().map { service in
            let instruments = byService[service]!
            let metrics = Instrument.allCases.compactMap { instrument -> MetricData? in
                guard let points = instruments[instrument.rawValue] else { return nil }
                let sorted = points.sorted { $0.attributes.description < $1.attributes.description }
                return MetricData(
                    name: instrument.name, description: instrument.description, unit: instrument.unit,
                    points: .histogram(bounds: instrument.bounds, points: sorted))
            }
            return ResourceMetricsData(
                resource: Resource(attributes: [SemanticConventions.serviceName: .string(service)]), metrics: metrics)
        }
    }

    /// Spans whose measurements were folded into overflow series because of the cardinality limit.
    public var overflowCount: Int { state.withLock { $0.overflowed } }

    public func flush(timeout: Duration) -> Bool { true }

    public func shutdown(timeout: Duration) { state.withLock { $0.closed = true } }
}

extension HistogramPoint {
    /// A point with no measurements yet.
    static func empty(_ attributes: Attributes, bounds: [Double]) -> HistogramPoint {
        HistogramPoint(attributes: attributes, bucketCounts: Array(repeating: 0, count: bounds.count + 1), sum: 0, count: 0, min: nil, max: nil)
    }

    /// Counts `value` into its bucket (the first bound it does not exceed; +Inf past the last).
    mutating func record(_ value: Double, bounds: [Double]) {
        bucketCounts[bounds.firstIndex { value <= $0 } ?? bounds.count] += 1
        sum += value
        count += 1
        min = Swift.min(min ?? value, value)
        max = Swift.max(max ?? value, value)
    }
}

/// The last few keys looked up and their group indices (groups are never removed, so an index stays right).
struct RecentGroups<Key: Equatable> {
    private var entries: [(key: Key, index: Int)] = []
    private var next = 0
    static var capacity: Int { 4 }

    subscript(key: Key) -> Int? { entries.first { $0.key == key }?.index }

    mutating func insert(_ key: Key, _ index: Int) {
        if entries.count < Self.capacity {
            entries.append((key, index))
        } else {
            entries[next] = (key, index)
            next = (next + 1) % Self.capacity
        }
    }
}

extension HistogramPoint? {
    /// Counts `value` into the point, created with `attributes` on first use.
    mutating func record(_ value: Double, bounds: [Double], attributes: Attributes) {
        if case .none = self { self = .empty(attributes, bounds: bounds) } // not `== nil`: that compares a copy
        self!.record(value, bounds: bounds)
    }
}

extension Attributes {
    /// `k=v,…` in order: a stable sort key for series.
    var description: String { map { "\($0.key)=\($0.value)" }.joined(separator: ",") }
}
