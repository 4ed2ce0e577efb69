import Telemetry

/// One RPC call (a gRPC call over HTTP/2), whichever tracer saw it: the input of ``RPCSpans``.
public struct RPCExchange: Sendable {
    /// Host PID of the process that made the call.
    public var pid: UInt32
    public var role: ExchangeRole
    /// `rpc.system` (`grpc`).
    public var system: String
    /// The fully qualified service (`etcdserverpb.KV`) and the method (`Range`); nil when the request's
    /// `:path` was not known (headers compressed against a table the agent never saw).
    public var service: String?
    public var method: String?
    /// The gRPC status from the trailers (`grpc-status`); nil when none was seen (reset stream, cut trailers).
    public var grpcStatusCode: Int?
    /// The stream was reset (RST_STREAM) or its connection closed before the call ended.
    public var failed = false
    /// Some request or response headers could not be decoded (a connection opened before the agent: its
    /// HPACK dynamic table is unknown); the span carries what was known.
    public var partialHeaders = false
    /// `network.protocol.version` of the transport (`2` for HTTP/2).
    public var protocolVersion: String?
    public var local: SocketAddress?
    public var peer: SocketAddress?
    public var tls: Bool
    /// CLOCK_MONOTONIC nanoseconds.
    public var start: UInt64
    public var end: UInt64
    public var identity: SpanIdentity

    public init(pid: UInt32, role: ExchangeRole, system: String, tls: Bool = false, start: UInt64, end: UInt64, identity: SpanIdentity) {
        self.pid = pid
        self.role = role
        self.system = system
        self.tls = tls
        self.start = start
        self.end = end
        self.identity = identity
    }
}

/// The one span builder of the RPC semantic-convention family (OTel RPC and gRPC spans): name
/// `{rpc.service}/{rpc.method}`, `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`, the
/// network attributes of the call.
public enum RPCSpans {
    /// The attribute marking a span whose headers were only partly decoded (not an OTel convention: the
    /// agent's own, so a user sees why `rpc.service` is missing).
    public static let partialHeadersAttribute = "tracer.partial_headers"

    /// gRPC codes that make a server span an error (OTel gRPC conventions): UNKNOWN, DEADLINE_EXCEEDED,
    /// UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS. On a client every code but OK is an error.
    public static let serverErrorCodes: Set<Int> = [2, 4, 12, 13, 14, 15]

    /// The names of the gRPC status codes (grpc/doc/statuscodes.md), for error descriptions.
    public static let grpcCodeNames = [
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
    ]

    /// The span name: `{service}/{method}`, or the RPC system when the path was not known.
    public static func name(_ exchange: RPCExchange) -> String {
        guard let service = exchange.service, let method = exchange.method else { return exchange.system }
        return "\(service)/\(method)"
    }

    /// The span of `exchange`. Status: an error for a reset or unfinished call, for any non-OK code on a
    /// client, and for the server error codes above on a server; the description names the code.
    public static func span(_ exchange: RPCExchange, resource: Resource, scope: InstrumentationScope,
                            unixNanoseconds: (UInt64) -> UInt64) -> Span {
        let isServer = exchange.role == .server
        var attributes = Attributes(capacity: 12)
        attributes.appendUnchecked(SemanticConventions.rpcSystem, .string(exchange.system))
        if let service = exchange.service { attributes.appendUnchecked(SemanticConventions.rpcService, .string(service)) }
        if let method = exchange.method { attributes.appendUnchecked(SemanticConventions.rpcMethod, .string(method)) }
        if let code = exchange.grpcStatusCode {
            attributes.appendUnchecked(SemanticConventions.rpcGRPCStatusCode, .int(Int64(code)))
        }
        attributes.appendUnchecked(SemanticConventions.networkProtocolName, "http")
        if let version = exchange.protocolVersion {
            attributes.appendUnchecked(SemanticConventions.networkProtocolVersion, .string(version))
        }
        attributes.appendUnchecked(SemanticConventions.networkTransport, "tcp")
        attributes.appendConnectionEnds(server: isServer ? exchange.local : exchange.peer, client: nil, peer: exchange.peer)
        if exchange.partialHeaders { attributes.appendUnchecked(partialHeadersAttribute, .bool(true)) }
        var status = SpanStatus.unset
        if let code = exchange.grpcStatusCode {
            if code != 0 && (!isServer || serverErrorCodes.contains(code)) {
                status = .error(message: code < grpcCodeNames.count ? grpcCodeNames[code] : "gRPC status \(code)")
                attributes.appendUnchecked(SemanticConventions.errorType, .string(String(code)))
            }
        } else if exchange.failed {
            status = .error(message: "the call ended without a gRPC status (stream reset or connection closed)")
            attributes.appendUnchecked(SemanticConventions.errorType, "_OTHER")
        }
        let start = unixNanoseconds(exchange.start)
        let end = max(unixNanoseconds(exchange.end), start)
        let identity = exchange.identity
        attributes.appendParentSource(of: identity)
        return Span(name: name(exchange), kind: isServer ? .server : .client,
                    traceID: identity.traceID, spanID: identity.spanID, parentSpanID: identity.parentSpanID,
                    flags: identity.flags, startTimeUnixNano: start, endTimeUnixNano: end, status: status,
                    attributes: attributes, resource: resource, scope: scope)
    }
}
