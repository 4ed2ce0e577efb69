import CTracerABI
import Synchronization
import Telemetry
import TracerFramework

#if canImport(Glibc)
import Glibc
#endif

/// Turns the go-nethttp events of all traced processes into spans. Server exchanges are keyed by
/// connection (process, fd): a request event opens one, write events complete it once the response's
/// framing says its last byte went out (Content-Length, the last chunk, or no body), a close or the
/// connection's next request completes a response without framing. Client calls are keyed by goroutine
/// (process, goid); the server exchange whose request that goroutine read is their parent, because
/// net/http runs a handler on the goroutine of its connection (net/http.(*conn).serve) — or, for a
/// goroutine the handler started (go1.21+ records its creator), the exchange its creator serves.
/// Events of one goroutine reach the ring buffer in program order, so no reordering is needed.
final class GoNetHTTPExchanges: Sendable {
    struct ConnectionKey: Hashable {
        var pid: UInt32
        var fd: UInt32

        /// One 64-bit word through the hasher instead of two (several lookups per request).
        func hash(into hasher: inout Hasher) { hasher.combine(UInt64(pid) << 32 | UInt64(fd)) }
    }

    struct GoroutineKey: Hashable {
        var pid: UInt32
        var goid: UInt64
    }

    struct ServerExchange {
        var start: UInt64
        var goid: UInt64
        var request: HTTPRequestHead
        var peer: Peer
        var identity: SpanIdentity
        var response: HTTPResponseHead?
        /// Bytes written since (and including) the response head.
        var responseBytes: UInt64 = 0
        var lastWrite: UInt64 = 0
    }

    /// A connection's addresses as span attributes, formatted once per connection (keep-alive
    /// connections carry many requests) and again only when the peer changes. Nil when the BPF side could
    /// not read the socket (its ports are then 0).
    struct Peer {
        var server: SocketAddress?
        var client: SocketAddress?

        init(_ addresses: go_nethttp_addresses) {
            // go_nethttp_addresses holds IPv4 as IPv4-mapped IPv6.
            let family = UInt8(addresses.local_port == 0 ? AF_UNSPEC : AF_INET6)
            server = SocketAddress(family: family, bytes: addresses.local_address, port: addresses.local_port)
            client = SocketAddress(family: family, bytes: addresses.remote_address, port: addresses.remote_port)
        }
    }

    /// A span's ids: from BPF when it decided them (context propagation), else chosen here.
    struct SpanIdentity {
        var traceID: TraceID
        var spanID: SpanID
        var parentSpanID: SpanID
        var flags: UInt32
    }

    struct ClientCall {
        var start: UInt64
        /// The goroutine that started the calling one (go1.21+), 0 when unknown.
        var parentGoid: UInt64
        var identity: SpanIdentity?
        var method: String
        var scheme: String
        var host: String
        var path: String
        var query: String
        var pathTruncated: Bool
        var queryTruncated: Bool
    }

    struct State {
        var servers: [ConnectionKey: ServerExchange] = [:]
        var peers: [ConnectionKey: Peer] = [:]
        /// The connection whose request a goroutine is serving.
        var serving: [GoroutineKey: ConnectionKey] = [:]
        var clients: [GoroutineKey: ClientCall] = [:]
        /// Span and trace ids: seeded once from the system generator (a getrandom(2) per id would cost
        /// a syscall per span).
        var random = SplitMix64()
        var malformed: UInt64 = 0
        /// Exchanges dropped unfinished (a request without a response, or the tables overflowed).
        var abandoned: UInt64 = 0
    }

    /// Most exchanges kept in flight per table; beyond that the tables are cleared (lost events can leave
    /// stale entries that nothing else removes).
    static let limit = 65536

    private let state = Mutex(State())

    /// Events that were too short or unparseable, and exchanges abandoned unfinished.
    var counters: (malformed: UInt64, abandoned: UInt64) { state.withLock { ($0.malformed, $0.abandoned) } }

    func decode(_ event: UnsafeRawBufferPointer, context: DecodeContext) -> Span? {
        guard event.count >= MemoryLayout<tracer_event_header>.size else { return countMalformed() }
        let header = event.loadUnaligned(as: tracer_event_header.self)
        switch Int32(header.type) {
        case GO_NETHTTP_EVENT_REQUEST:
            // The fixed part, then `captured` bytes (the record is reserved in size classes).
            let fixed = MemoryLayout<go_nethttp_request_event>.size
            guard event.count >= fixed else { return countMalformed() }
            let request = event.loadUnaligned(as: go_nethttp_request_event.self)
            guard Int(request.captured) <= event.count - fixed else { return countMalformed() }
            return self.request(request, data: UnsafeRawBufferPointer(rebasing: event[fixed..<(fixed + Int(request.captured))]),
                                context: context)
        case GO_NETHTTP_EVENT_WRITE:
            let fixed = MemoryLayout<go_nethttp_write_event>.size
            guard event.count >= fixed else { return countMalformed() }
            let write = event.loadUnaligned(as: go_nethttp_write_event.self)
            guard Int(write.captured) <= event.count - fixed, write.tail_captured <= UInt32(GO_NETHTTP_TAIL_CAPTURE) else {
                return countMalformed()
            }
            return self.write(write, data: UnsafeRawBufferPointer(rebasing: event[fixed..<(fixed + Int(write.captured))]),
                              context: context)
        case GO_NETHTTP_EVENT_CLOSE:
            guard event.count >= MemoryLayout<go_nethttp_close_event>.size else { return countMalformed() }
            let close = event.loadUnaligned(as: go_nethttp_close_event.self)
            let key = ConnectionKey(pid: header.pid, fd: close.fd)
            return state.withLock { state -> Span? in
                state.peers[key] = nil
                guard let exchange = state.servers.removeValue(forKey: key) else { return nil }
                state.serving[GoroutineKey(pid: header.pid, goid: exchange.goid)] = nil
                guard exchange.response != nil else {
                    state.abandoned += 1
                    return nil
                }
                return serverSpan(exchange, end: exchange.lastWrite, pid: header.pid, context: context)
            }
        case GO_NETHTTP_EVENT_CLIENT_START:
            guard event.count >= MemoryLayout<go_nethttp_client_start_event>.size else { return countMalformed() }
            clientStart(event.loadUnaligned(as: go_nethttp_client_start_event.self))
            return nil
        case GO_NETHTTP_EVENT_CLIENT_END:
            guard event.count >= MemoryLayout<go_nethttp_client_end_event>.size else { return countMalformed() }
            return clientEnd(event.loadUnaligned(as: go_nethttp_client_end_event.self), context: context)
        default:
            return countMalformed()
        }
    }

    /// Drops what is kept for a process that exited.
    func forget(pid: Int32) {
        state.withLock { state in
            state.servers = state.servers.filter { $0.key.pid != UInt32(pid) }
            state.peers = state.peers.filter { $0.key.pid != UInt32(pid) }
            state.serving = state.serving.filter { $0.key.pid != UInt32(pid) }
            state.clients = state.clients.filter { $0.key.pid != UInt32(pid) }
        }
    }

    private func countMalformed() -> Span? {
        state.withLock { $0.malformed += 1 }
        return nil
    }

    // MARK: Server

    private func request(_ event: go_nethttp_request_event, data: UnsafeRawBufferPointer, context: DecodeContext) -> Span? {
        let captured = data.count
        let parsed: HTTPRequestHead?
        if event.prefix != 0 {
            // net/http's background read took the first byte; put it back in front.
            var joined = [UInt8](repeating: event.prefix, count: captured + 1)
            joined.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: 1).copyMemory(from: data.baseAddress!, byteCount: captured) }
            parsed = joined.withUnsafeBytes { HTTPMessageParser.parseRequest($0) }
        } else {
            parsed = HTTPMessageParser.parseRequest(data)
        }
        guard let head = parsed else { return countMalformed() }
        let incoming = head.traceContext
        let decided = Self.identity(event.context)
        let key = ConnectionKey(pid: event.header.pid, fd: event.fd)
        return state.withLock { state -> Span? in
            if state.peers.count >= Self.limit { state.peers.removeAll() }
            var peer = state.peers[key]
            if peer == nil || peer?.client?.port != event.addresses.remote_port {
                peer = Peer(event.addresses)
                state.peers[key] = peer
            }
            let identity = decided ?? SpanIdentity(
                traceID: incoming?.traceID ?? .random(using: &state.random), spanID: .random(using: &state.random),
                parentSpanID: incoming?.parentSpanID ?? .invalid, flags: UInt32(incoming?.flags ?? 1))
            let exchange = ServerExchange(
                start: event.header.timestamp_ns, goid: event.goid, request: head, peer: peer!, identity: identity)
            if state.servers.count >= Self.limit || state.serving.count >= Self.limit {
                state.abandoned += UInt64(state.servers.count)
                state.servers.removeAll()
                state.serving.removeAll()
            }
            // The previous exchange of this connection ends here if its response had no framing.
            let previous = state.servers.updateValue(exchange, forKey: key)
            if let previous { state.serving[GoroutineKey(pid: key.pid, goid: previous.goid)] = nil }
            state.serving[GoroutineKey(pid: key.pid, goid: event.goid)] = key
            guard let previous else { return nil }
            guard previous.response != nil else {
                state.abandoned += 1
                return nil
            }
            return serverSpan(previous, end: previous.lastWrite, pid: key.pid, context: context)
        }
    }

    private func write(_ event: go_nethttp_write_event, data: UnsafeRawBufferPointer, context: DecodeContext) -> Span? {
        let key = ConnectionKey(pid: event.header.pid, fd: event.fd)
        var tailBytes = event.tail
        return withUnsafeBytes(of: &tailBytes) { tailStorage in
            write(event, key: key, data: data, tail: UnsafeRawBufferPointer(rebasing: tailStorage.prefix(Int(event.tail_captured))),
                  context: context)
        }
    }

    private func write(_ event: go_nethttp_write_event, key: ConnectionKey, data: UnsafeRawBufferPointer, tail: UnsafeRawBufferPointer,
                       context: DecodeContext) -> Span? {
        // The exchange is updated in place (one hash lookup, no copy of its strings) and removed by index.
        let completed: ServerExchange? = state.withLock { state in
            guard let index = state.servers.index(forKey: key) else { return nil }
            return Self.record(event, data: data, tail: tail, in: &state.servers.values[index])
                ? state.servers.remove(at: index).value : nil
        }
        guard let exchange = completed else { return nil }
        state.withLock { $0.serving[GoroutineKey(pid: key.pid, goid: exchange.goid)] = nil }
        return serverSpan(exchange, end: event.header.timestamp_ns, pid: key.pid, context: context)
    }

    /// Adds a response write to `exchange`; returns whether the response is complete.
    private static func record(_ event: go_nethttp_write_event, data: UnsafeRawBufferPointer, tail: UnsafeRawBufferPointer,
                               in exchange: inout ServerExchange) -> Bool {
        exchange.lastWrite = event.header.timestamp_ns
        if exchange.response == nil {
            // An unparsable write, or an interim response (100 Continue): the final one follows.
            guard let head = HTTPMessageParser.parseResponse(data), !(100..<200).contains(head.statusCode) else { return false }
            exchange.response = head
        }
        exchange.responseBytes += UInt64(event.length)
        return isComplete(exchange, writeLength: event.length, tail: tail)
    }

    /// Whether the response's last byte has been written (RFC 9112 §6.3 message body length), given the
    /// latest write's length and its last bytes.
    static func isComplete(_ exchange: ServerExchange, writeLength: UInt32, tail: UnsafeRawBufferPointer) -> Bool {
        guard let response = exchange.response else { return false }
        if exchange.request.method == "HEAD" || response.statusCode == 204 || response.statusCode == 304 { return true }
        if response.isChunked {
            // The last chunk: "0\r\n\r\n" written alone, or after the CRLF that ends the previous chunk.
            return (writeLength == 5 && tail.elementsEqual("0\r\n\r\n".utf8))
                || (tail.count >= 7 && tail.suffix(7).elementsEqual("\r\n0\r\n\r\n".utf8))
        }
        guard let length = response.contentLength, let headLength = response.headLength else { return false }
        return exchange.responseBytes >= UInt64(headLength) + UInt64(max(length, 0))
    }

    private func serverSpan(_ exchange: ServerExchange, end: UInt64, pid: UInt32, context: DecodeContext) -> Span {
        let request = exchange.request
        var attributes = Attributes(capacity: 14)
        let method = HTTPMethod(request.method).semanticValue
        attributes.appendUnchecked(SemanticConventions.httpRequestMethod, .string(method))
        if method != request.method { attributes.appendUnchecked(SemanticConventions.httpRequestMethodOriginal, .string(request.method)) }
        attributes.appendUnchecked(SemanticConventions.urlPath, .string(request.path))
        if let query = request.query { attributes.appendUnchecked(SemanticConventions.urlQuery, .string(query)) }
        attributes.appendUnchecked(SemanticConventions.urlScheme, .string("http"))
        let status = exchange.response?.statusCode ?? 0
        if status > 0 { attributes.appendUnchecked(SemanticConventions.httpResponseStatusCode, .int(Int64(status))) }
        if let server = exchange.peer.server {
            attributes.appendUnchecked(SemanticConventions.serverAddress, .string(server.address))
            attributes.appendUnchecked(SemanticConventions.serverPort, .int(Int64(server.port)))
        }
        if let client = exchange.peer.client {
            attributes.appendUnchecked(SemanticConventions.clientAddress, .string(client.address))
            attributes.appendUnchecked(SemanticConventions.clientPort, .int(Int64(client.port)))
            attributes.appendUnchecked(SemanticConventions.networkPeerAddress, .string(client.address))
            attributes.appendUnchecked(SemanticConventions.networkPeerPort, .int(Int64(client.port)))
        }
        if let version = request.version { attributes.appendUnchecked(SemanticConventions.networkProtocolVersion, .string(version)) }
        if let length = request.contentLength { attributes.appendUnchecked(SemanticConventions.httpRequestBodySize, .int(Int64(length))) }
        if let length = exchange.response?.contentLength {
            attributes.appendUnchecked(SemanticConventions.httpResponseBodySize, .int(Int64(length)))
        }
        var spanStatus = SpanStatus.unset
        if status >= 500 {
            attributes.appendUnchecked(SemanticConventions.errorType, .string(String(status)))
            spanStatus = .error(message: "HTTP \(status)")
        }
        return Span(
            name: method == HTTPMethod.other ? "HTTP" : method, kind: .server, traceID: exchange.identity.traceID,
            spanID: exchange.identity.spanID, parentSpanID: exchange.identity.parentSpanID, flags: exchange.identity.flags,
            startTimeUnixNano: context.unixNanoseconds(monotonic: exchange.start),
            endTimeUnixNano: context.unixNanoseconds(monotonic: max(end, exchange.start + 1)),
            status: spanStatus, attributes: attributes, resource: context.resource(Int32(bitPattern: pid)) ?? .empty,
            scope: context.scope)
    }

    // MARK: Client

    private func clientStart(_ event: go_nethttp_client_start_event) {
        var copy = event
        let call = ClientCall(
            start: event.header.timestamp_ns, parentGoid: event.parent_goid, identity: Self.identity(event.context),
            method: string(&copy.method, length: event.method_length),
            scheme: string(&copy.scheme, length: event.scheme_length),
            host: string(&copy.host, length: event.host_length),
            path: string(&copy.path, length: event.path_length),
            query: string(&copy.query, length: event.query_length),
            pathTruncated: event.path_truncated != 0, queryTruncated: event.query_truncated != 0)
        let key = GoroutineKey(pid: event.header.pid, goid: event.goid)
        state.withLock { state in
            if state.clients.count >= Self.limit {
                state.abandoned += UInt64(state.clients.count)
                state.clients.removeAll()
            }
            // A second entry without a return is the same call re-entered after runtime.morestack.
            if let pending = state.clients[key], pending.method == call.method, pending.host == call.host, pending.path == call.path {
                return
            }
            state.clients[key] = call
        }
    }

    private func clientEnd(_ event: go_nethttp_client_end_event, context: DecodeContext) -> Span? {
        let key = GoroutineKey(pid: event.header.pid, goid: event.goid)
        let found: (ClientCall, SpanIdentity)? = state.withLock { state in
            guard let call = state.clients.removeValue(forKey: key) else { return nil }
            if let decided = call.identity { return (call, decided) }
            // The request the calling goroutine serves, or else the one its creator serves.
            let creator = GoroutineKey(pid: key.pid, goid: call.parentGoid)
            let connection = state.serving[key] ?? (call.parentGoid == 0 ? nil : state.serving[creator])
            let parent = connection.flatMap { state.servers[$0] }?.identity
            return (call, SpanIdentity(traceID: parent?.traceID ?? .random(using: &state.random), spanID: .random(using: &state.random),
                                       parentSpanID: parent?.spanID ?? .invalid, flags: parent?.flags ?? 1))
        }
        guard let (call, identity) = found else { return nil }
        var attributes = Attributes(capacity: 8)
        let method = HTTPMethod(call.method.isEmpty ? "GET" : call.method).semanticValue
        attributes.appendUnchecked(SemanticConventions.httpRequestMethod, .string(method))
        if method != call.method && !call.method.isEmpty {
            attributes.appendUnchecked(SemanticConventions.httpRequestMethodOriginal, .string(call.method))
        }
        let scheme = call.scheme.isEmpty ? "http" : call.scheme
        var full = "\(scheme)://\(call.host)\(call.path)"
        if !call.query.isEmpty { full += "?" + HTTPMessageParser.redactQuery(call.query[...]) + (call.queryTruncated ? "…" : "") }
        attributes.appendUnchecked(SemanticConventions.urlFull, .string(full))
        let (host, port) = splitHostPort(call.host[...])
        attributes.appendUnchecked(SemanticConventions.serverAddress, .string(String(host)))
        attributes.appendUnchecked(SemanticConventions.serverPort, .int(Int64(port ?? (scheme == "https" ? 443 : 80))))
        var status = SpanStatus.unset
        if event.status_code > 0 { attributes.appendUnchecked(SemanticConventions.httpResponseStatusCode, .int(event.status_code)) }
        if event.failed != 0 {
            attributes.appendUnchecked(SemanticConventions.errorType, .string("_OTHER"))
            status = .error(message: "net/http: round trip failed")
        } else if event.status_code >= 400 {
            attributes.appendUnchecked(SemanticConventions.errorType, .string(String(event.status_code)))
            status = .error(message: "HTTP \(event.status_code)")
        }
        return Span(
            name: method == HTTPMethod.other ? "HTTP" : method, kind: .client, traceID: identity.traceID, spanID: identity.spanID,
            parentSpanID: identity.parentSpanID, flags: identity.flags, startTimeUnixNano: context.unixNanoseconds(monotonic: call.start),
            endTimeUnixNano: context.unixNanoseconds(monotonic: max(event.header.timestamp_ns, call.start + 1)),
            status: status, attributes: attributes, resource: context.resource(Int32(bitPattern: event.header.pid)) ?? .empty,
            scope: context.scope)
    }

    /// The ids BPF decided for a span, nil when it left them to user space.
    static func identity(_ context: go_nethttp_span_context) -> SpanIdentity? {
        guard context.valid != 0 else { return nil }
        return SpanIdentity(traceID: TraceID(high: context.trace_id_high, low: context.trace_id_low), spanID: SpanID(context.span_id),
                            parentSpanID: SpanID(context.parent_span_id), flags: UInt32(context.flags))
    }

    /// The first `length` bytes of a fixed C char array.
    private func string<T>(_ field: inout T, length: UInt16) -> String {
        withUnsafeBytes(of: &field) { String(decoding: $0.prefix(Int(length)), as: UTF8.self) }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014), seeded from the system generator: ids must be unique and
/// unpredictable enough for tracing, not secret.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init() {
        var system = SystemRandomNumberGenerator()
        state = system.next()
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// `host[:port]` of a client URL split, with IPv6 brackets removed (`[::1]:80` → `::1`, 80).
func splitHostPort(_ authority: Substring) -> (host: Substring, port: Int?) {
    if authority.first == "[", let close = authority.firstIndex(of: "]") {
        let host = authority[authority.index(after: authority.startIndex)..<close]
        let rest = authority[authority.index(after: close)...]
        return (host, rest.first == ":" ? Int(rest.dropFirst()) : nil)
    }
    if let colon = authority.lastIndex(of: ":"), authority.firstIndex(of: ":") == colon {
        return (authority[..<colon], Int(authority[authority.index(after: colon)...]))
    }
    return (authority, nil)
}
