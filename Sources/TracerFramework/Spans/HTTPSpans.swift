#if canImport(Glibc)
import Glibc
#endif
import Telemetry

/// A span's ids: decided when its exchange starts (so calls made while serving it can name it as their
/// parent), or by BPF (context propagation).
public struct SpanIdentity: Sendable, Equatable {
    public var traceID: TraceID
    public var spanID: SpanID
    public var parentSpanID: SpanID
    public var flags: UInt32
    /// Where the parent came from (`tracer.parent.source`); nil for a root span or when unknown.
    public var parentSource: ParentSource?

    public init(traceID: TraceID, spanID: SpanID, parentSpanID: SpanID, flags: UInt32, parentSource: ParentSource? = nil) {
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.flags = flags
        self.parentSource = parentSpanID == .invalid ? nil : parentSource
    }
}

/// A W3C trace-context `traceparent` (version 00) read from a request.
public struct W3CTraceContext: Sendable, Equatable {
    public var traceID: TraceID
    public var parentSpanID: SpanID
    public var flags: UInt8

    public init(traceID: TraceID, parentSpanID: SpanID, flags: UInt8) {
        self.traceID = traceID
        self.parentSpanID = parentSpanID
        self.flags = flags
    }

    /// A `traceparent` header value, as every protocol carries it (HTTP/1 and 2, gRPC metadata, NATS headers):
    /// `00-<32 hex>-<16 hex>-<2 hex>`, lowercase hex, ids not all zero, optional whitespace after; nil otherwise.
    public init?(traceparent value: UnsafeRawBufferPointer) {
        guard value.count >= 55, value[0] == UInt8(ascii: "0"), value[1] == UInt8(ascii: "0"), value[2] == UInt8(ascii: "-"),
              value[35] == UInt8(ascii: "-"), value[52] == UInt8(ascii: "-"), value[55...].allSatisfy({ $0 == 0x20 || $0 == 0x09 }),
              let high = Self.hex(value, 3, 16), let low = Self.hex(value, 19, 16), let span = Self.hex(value, 36, 16),
              let flags = Self.hex(value, 53, 2)
        else { return nil }
        let traceID = TraceID(high: high, low: low)
        let spanID = SpanID(span)
        guard traceID.isValid, spanID != .invalid else { return nil }
        self.init(traceID: traceID, parentSpanID: spanID, flags: UInt8(flags))
    }

    /// `count` lowercase hex digits at `offset` (W3C trace-context allows no uppercase).
    private static func hex(_ bytes: UnsafeRawBufferPointer, _ offset: Int, _ count: Int) -> UInt64? {
        var value: UInt64 = 0
        for byte in bytes[offset..<(offset + count)] {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            default: return nil
            }
            value = value << 4 | UInt64(digit)
        }
        return value
    }
}

extension Attributes {
    /// `tracer.parent.source` when the span has a parent: where it came from. Shared by every span family's builder.
    mutating func appendParentSource(of identity: SpanIdentity) {
        if let source = identity.parentSource { appendUnchecked(ParentSource.attribute, .string(source.rawValue)) }
    }

    /// The ends of a span's connection (OTel general attributes), in this order: `server.address`/`server.port`,
    /// `client.address`/`client.port` (server spans), `network.peer.address`/`network.peer.port`; each pair
    /// only when that end is known. Shared by every span family's builder.
    mutating func appendConnectionEnds(server: SocketAddress?, client: SocketAddress?, peer: SocketAddress?) {
        if let server {
            appendUnchecked(SemanticConventions.serverAddress, .string(server.address))
            appendUnchecked(SemanticConventions.serverPort, .int(Int64(server.port)))
        }
        if let client {
            appendUnchecked(SemanticConventions.clientAddress, .string(client.address))
            appendUnchecked(SemanticConventions.clientPort, .int(Int64(client.port)))
        }
        if let peer {
            appendUnchecked(SemanticConventions.networkPeerAddress, .string(peer.address))
            appendUnchecked(SemanticConventions.networkPeerPort, .int(Int64(peer.port)))
        }
    }
}

/// One end of a connection as span attributes.
public struct SocketAddress: Sendable, Equatable {
    public let address: String
    public let port: UInt16
    public let isIPv6: Bool
    /// `host:port` for a URL (`[v6]:port`); made once, as a connection's spans name it each.
    public let authority: String

    /// From raw bytes: IPv4 in the first 4 bytes (`AF_INET`), or 16 bytes of IPv6 (`AF_INET6`; an
    /// IPv4-mapped address becomes IPv4). Nil when the family is unknown.
    public init?<Bytes>(family: UInt16, bytes: Bytes, port: UInt16) {
        var bytes = bytes
        let raw = withUnsafeBytes(of: &bytes) { Array($0.prefix(16)) }
        guard raw.count >= 4 else { return nil }
        switch Int32(family) {
        case AF_INET:
            address = raw[0..<4].map(String.init).joined(separator: ".")
            isIPv6 = false
        case AF_INET6 where raw.count == 16 && raw[0..<10].allSatisfy({ $0 == 0 }) && raw[10] == 0xFF && raw[11] == 0xFF:
            address = raw[12..<16].map(String.init).joined(separator: ".")
            isIPv6 = false
        case AF_INET6 where raw.count == 16:
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            guard raw.withUnsafeBytes({ inet_ntop(AF_INET6, $0.baseAddress, &text, socklen_t(text.count)) }) != nil else { return nil }
            address = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            isIPv6 = true
        default:
            return nil
        }
        self.port = port
        authority = Self.authority(address, port, isIPv6: isIPv6)
    }

    public init(address: String, port: UInt16) {
        self.address = address
        self.port = port
        isIPv6 = address.contains(":")
        authority = Self.authority(address, port, isIPv6: isIPv6)
    }

    private static func authority(_ address: String, _ port: UInt16, isIPv6: Bool) -> String {
        isIPv6 ? "[\(address)]:\(port)" : "\(address):\(port)"
    }
}

/// One HTTP request/response exchange, whichever tracer saw it (a parser on the shared capture, or a
/// language runtime's client probe): the input of ``HTTPSpans``.
public struct HTTPExchange: Sendable {
    /// Host PID of the process that made the exchange.
    public var pid: UInt32
    public var role: ExchangeRole
    /// The method token as sent.
    public var method: String
    /// Server: the path and the query (redacted) of the request target.
    public var path: String
    public var query: String?
    /// Client: the request target as sent (origin form, or absolute form), used for `url.full`.
    public var target: String
    /// Client: scheme://authority when the caller knows it (a runtime probe); else built from the peer.
    public var urlPrefix: String?
    /// `1.0`, `1.1` or `2`; nil when unknown.
    public var protocolVersion: String?
    /// Nil when no response was seen before the exchange ended.
    public var statusCode: Int?
    public var requestBodySize: Int64?
    public var responseBodySize: Int64?
    /// This process's end and the other end of the connection, when known.
    public var local: SocketAddress?
    public var peer: SocketAddress?
    /// Client: the server named by the URL (runtime probes know it even without the socket).
    public var server: SocketAddress?
    public var tls: Bool
    /// The client call failed without a response (a transport error).
    public var failed = false
    /// CLOCK_MONOTONIC nanoseconds.
    public var start: UInt64
    public var end: UInt64
    public var identity: SpanIdentity

    /// The optional fields too, so that a parser builds the exchange in one expression (appended without a copy).
    @inlinable
    public init(pid: UInt32, role: ExchangeRole, method: String, path: String = "", query: String? = nil, target: String = "", tls: Bool = false,
                start: UInt64, end: UInt64, identity: SpanIdentity, protocolVersion: String? = nil, statusCode: Int? = nil,
                requestBodySize: Int64? = nil, responseBodySize: Int64? = nil, local: SocketAddress? = nil, peer: SocketAddress? = nil) {
        self.protocolVersion = protocolVersion
        self.statusCode = statusCode
        self.requestBodySize = requestBodySize
        self.responseBodySize = responseBodySize
        self.local = local
        self.peer = peer
        self.pid = pid
        self.role = role
        self.method = method
        self.path = path
        self.query = query
        self.target = target
        self.tls = tls
        self.start = start
        self.end = end
        self.identity = identity
    }
}

/// The one span builder of the HTTP semantic-convention family (OTel HTTP spans, stable 1.23+): every
/// HTTP span, from any tracer, carries the same attribute set and follows the same status rules.
public enum HTTPSpans {
    /// The nine RFC 9110/5789 methods as they are, everything else `_OTHER`.
    public static func semanticMethod(_ method: String) -> String {
        switch method {
        case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH": method
        default: "_OTHER"
        }
    }

    /// Query keys whose values are replaced by `REDACTED` (matched case-insensitively as substrings).
    public static let sensitiveQueryKeys = [
        "password", "passwd", "pwd", "secret", "token", "key", "auth", "sig", "credential", "session", "code",
    ]

    /// `query` with the values of sensitive keys replaced by `REDACTED`; the query itself (no copy made) when
    /// none of its keys is sensitive, the common case.
    public static func redactQuery(_ query: Substring) -> String {
        guard hasSensitiveKey(query) else { return String(query) }
        var out = ""
        out.reserveCapacity(query.utf8.count)
        var first = true
        for pair in query.split(separator: "&", omittingEmptySubsequences: false) {
            if !first { out += "&" }
            first = false
            guard let equals = pair.firstIndex(of: "=") else {
                out += pair
                continue
            }
            let key = pair[..<equals]
            out += key
            out += "="
            out += isSensitive(key) ? "REDACTED" : pair[pair.index(after: equals)...]
        }
        return out
    }

    /// Whether any `key=value` pair of `query` has a sensitive key (a scan of its bytes, nothing allocated).
    static func hasSensitiveKey(_ query: Substring) -> Bool {
        var query = query
        return query.withUTF8 { bytes in
            var pairStart = 0
            var index = 0
            while index < bytes.count {
                switch bytes[index] {
                case UInt8(ascii: "="):
                    if isSensitive(UnsafeBufferPointer(rebasing: bytes[pairStart..<index])) { return true }
                    // Skip the value.
                    while index < bytes.count && bytes[index] != UInt8(ascii: "&") { index += 1 }
                    pairStart = index + 1
                case UInt8(ascii: "&"):
                    pairStart = index + 1
                default:
                    break
                }
                index += 1
            }
            return false
        }
    }

    /// The sensitive keys as bytes, for a search that allocates nothing (`lowercased().contains` went through
    /// Foundation's CFString search: 3/4 of the CPU of decoding a span with a query).
    private static let sensitiveKeyBytes = sensitiveQueryKeys.map { Array($0.utf8) }

    /// Whether `key` contains a sensitive key, ASCII letters compared case-insensitively.
    static func isSensitive(_ key: Substring) -> Bool {
        var key = key
        return key.withUTF8 { isSensitive($0) }
    }

    private static func isSensitive(_ key: UnsafeBufferPointer<UInt8>) -> Bool {
        for needle in sensitiveKeyBytes where needle.count <= key.count {
            for start in 0...(key.count - needle.count) {
                var matched = true
                for (offset, expected) in needle.enumerated() {
                    let byte = key[start + offset]
                    if (byte >= 65 && byte <= 90 ? byte | 0x20 : byte) != expected {
                        matched = false
                        break
                    }
                }
                if matched { return true }
            }
        }
        return false
    }

    /// The span of `exchange`. Status (OTel HTTP conventions): a server span is an error for 5xx, a
    /// client span for 4xx and 5xx, with `error.type` the status code and no description (the code says
    /// it); an exchange without a response is an error of type `_OTHER` with a description.
    public static func span(_ exchange: HTTPExchange, resource: Resource, scope: InstrumentationScope,
                            unixNanoseconds: (UInt64) -> UInt64) -> Span {
        let isServer = exchange.role == .server
        let method = semanticMethod(exchange.method)
        var attributes = Attributes(capacity: 16)
        attributes.appendUnchecked(SemanticConventions.httpRequestMethod, .string(method))
        if method != exchange.method {
            attributes.appendUnchecked(SemanticConventions.httpRequestMethodOriginal, .string(exchange.method))
        }
        let scheme = exchange.tls ? "https" : "http"
        if isServer {
            attributes.appendUnchecked(SemanticConventions.urlPath, .string(exchange.path))
            if let query = exchange.query { attributes.appendUnchecked(SemanticConventions.urlQuery, .string(query)) }
            attributes.appendUnchecked(SemanticConventions.urlScheme, .string(scheme))
        } else {
            let prefix = exchange.urlPrefix ?? "\(scheme)://\((exchange.peer ?? exchange.server)?.authority ?? "unknown")"
            let target = exchange.target.first == "/" || exchange.target.isEmpty ? exchange.target : ""
            attributes.appendUnchecked(SemanticConventions.urlFull, .string(target.isEmpty && exchange.target.contains("://") ? exchange.target : prefix + target))
        }
        if let code = exchange.statusCode {
            attributes.appendUnchecked(SemanticConventions.httpResponseStatusCode, .int(Int64(code)))
        }
        attributes.appendUnchecked(SemanticConventions.networkProtocolName, "http")
        if let version = exchange.protocolVersion {
            attributes.appendUnchecked(SemanticConventions.networkProtocolVersion, .string(version))
        }
        attributes.appendUnchecked(SemanticConventions.networkTransport, "tcp")
        attributes.appendConnectionEnds(server: isServer ? exchange.local : (exchange.server ?? exchange.peer),
                                        client: isServer ? exchange.peer : nil, peer: exchange.peer)
        if let size = exchange.requestBodySize {
            attributes.appendUnchecked(SemanticConventions.httpRequestBodySize, .int(size))
        }
        if let size = exchange.responseBodySize {
            attributes.appendUnchecked(SemanticConventions.httpResponseBodySize, .int(size))
        }
        var status = SpanStatus.unset
        if let code = exchange.statusCode {
            if code >= 500 || (!isServer && code >= 400) {
                status = .error(message: "")
                attributes.appendUnchecked(SemanticConventions.errorType, .string(String(code)))
            }
        } else {
            status = .error(message: exchange.failed ? "the HTTP call failed without a response"
                                                     : "no HTTP response seen before the exchange ended")
            attributes.appendUnchecked(SemanticConventions.errorType, "_OTHER")
        }
        let start = unixNanoseconds(exchange.start)
        let end = max(unixNanoseconds(exchange.end), start)
        let identity = exchange.identity
        attributes.appendParentSource(of: identity)
        return Span(name: method == "_OTHER" ? "HTTP" : method, kind: isServer ? .server : .client,
                    traceID: identity.traceID, spanID: identity.spanID, parentSpanID: identity.parentSpanID,
                    flags: identity.flags, startTimeUnixNano: start, endTimeUnixNano: end, status: status,
                    attributes: attributes, resource: resource, scope: scope)
    }
}
