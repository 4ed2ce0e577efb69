import CTracerABI
import Synchronization
import Telemetry
import TracerFramework

/// Turns the go-nethttp events of all traced processes into client spans. A client call is keyed by
/// goroutine (process, goid); its parent is the server request that goroutine serves — net/http runs a
/// handler on the goroutine of its connection (net/http.(*conn).serve), whose reads the capture layer
/// names — or, for a goroutine the handler started (go1.21+ records its creator), the one its creator
/// serves. The framework's `TraceContexts` knows both; this tracer never sees the server's events. It tells
/// the framework which goroutine handles an HTTP/2 or gRPC server stream, and which one makes a gRPC call.
/// Events of one goroutine reach the ring buffer in program order, so no reordering is needed.
final class GoNetHTTPExchanges: Sendable {
    struct GoroutineKey: Hashable {
        var pid: UInt32
        var goid: UInt64
    }

    struct ClientCall {
        var start: UInt64
        /// The goroutine that started the calling one (go1.21+), 0 when unknown.
        var parentGoid: UInt64
        var identity: SpanIdentity
        var method: String
        var scheme: String
        var host: String
        var path: String
        var query: String
        var pathTruncated: Bool
        var queryTruncated: Bool
    }

    struct State {
        var clients: [GoroutineKey: ClientCall] = [:]
        var malformed: UInt64 = 0
        /// Calls dropped unfinished (the table overflowed).
        var abandoned: UInt64 = 0
    }

    /// Most calls kept in flight; beyond that the table is cleared (lost events can leave stale entries that
    /// nothing else removes).
    static let limit = 65536

    private let state = Mutex(State())

    /// Events that were too short, and calls abandoned unfinished.
    var counters: (malformed: UInt64, abandoned: UInt64) { state.withLock { ($0.malformed, $0.abandoned) } }

    func decode(_ event: UnsafeRawBufferPointer, context: DecodeContext) -> Span? {
        guard event.count >= MemoryLayout<tracer_event_header>.size else { return countMalformed() }
        let header = event.loadUnaligned(as: tracer_event_header.self)
        switch header.type {
        case UInt32(GO_NETHTTP_EVENT_SERVER_CONTEXT):
            guard event.count >= MemoryLayout<go_nethttp_context_event>.size else { return countMalformed() }
            let decided = event.loadUnaligned(as: go_nethttp_context_event.self)
            if let identity = Self.identity(decided.context) {
                context.traceContexts.decide(.init(pid: header.pid, goid: decided.goid), identity)
            }
            return nil
        case UInt32(GO_NETHTTP_EVENT_INJECTED):
            guard event.count >= MemoryLayout<go_nethttp_context_event>.size else { return countMalformed() }
            if let identity = Self.identity(event.loadUnaligned(as: go_nethttp_context_event.self).context) {
                context.traceContexts.injected(pid: header.pid, identity)
            }
            return nil
        case UInt32(GO_NETHTTP_EVENT_STREAM):
            guard event.count >= MemoryLayout<go_nethttp_stream_event>.size else { return countMalformed() }
            let owner = event.loadUnaligned(as: go_nethttp_stream_event.self)
            let stream = TraceContexts.Stream(pid: header.pid, mover: owner.mover_goid, id: owner.stream_id)
            switch owner.role {
            case UInt8(GO_NETHTTP_STREAM_SERVED): context.traceContexts.handlesStream(stream, handler: owner.goid)
            case UInt8(GO_NETHTTP_STREAM_CALLED): context.traceContexts.callsStream(stream, caller: owner.goid, creator: owner.parent_goid)
            default: return countMalformed()
            }
            return nil
        case UInt32(GO_NETHTTP_EVENT_CLIENT_START):
            guard event.count >= MemoryLayout<go_nethttp_client_start_event>.size else { return countMalformed() }
            clientStart(event.loadUnaligned(as: go_nethttp_client_start_event.self), context: context)
            return nil
        case UInt32(GO_NETHTTP_EVENT_CLIENT_END):
            guard event.count >= MemoryLayout<go_nethttp_client_end_event>.size else { return countMalformed() }
            return clientEnd(event.loadUnaligned(as: go_nethttp_client_end_event.self), context: context)
        default:
            return countMalformed()
        }
    }

    /// Drops what is kept for a process that exited.
    func forget(pid: Int32) {
        state.withLock { state in state.clients = state.clients.filter { $0.key.pid != UInt32(pid) } }
    }

    private func countMalformed() -> Span? {
        state.withLock { $0.malformed += 1 }
        return nil
    }

    /// A call starts: its ids are decided now (by BPF with context propagation, else as the child of the request
    /// its goroutine or the goroutine's creator serves), and the framework learns of it, so a traced server on
    /// this host that reads its request links to it.
    private func clientStart(_ event: go_nethttp_client_start_event, context: DecodeContext) {
        var copy = event
        let key = GoroutineKey(pid: event.header.pid, goid: event.goid)
        let identity = Self.identity(event.context) ?? context.traceContexts.child(
            of: context.traceContexts.serving(.init(pid: key.pid, goid: key.goid), creator: event.parent_goid))
        let call = ClientCall(
            start: event.header.timestamp_ns, parentGoid: event.parent_goid, identity: identity,
            method: string(&copy.method, length: event.method_length),
            scheme: string(&copy.scheme, length: event.scheme_length),
            host: string(&copy.host, length: event.host_length),
            path: string(&copy.path, length: event.path_length),
            query: string(&copy.query, length: event.query_length),
            pathTruncated: event.path_truncated != 0, queryTruncated: event.query_truncated != 0)
        let started = state.withLock { state in
            if state.clients.count >= Self.limit {
                state.abandoned += UInt64(state.clients.count)
                state.clients.removeAll()
            }
            // A second entry without a return is the same call re-entered after runtime.morestack.
            if let pending = state.clients[key], pending.method == call.method, pending.host == call.host, pending.path == call.path {
                return false
            }
            state.clients[key] = call
            return true
        }
        if started { context.traceContexts.startCall(pid: key.pid, identity: identity, at: call.start) }
    }

    private func clientEnd(_ event: go_nethttp_client_end_event, context: DecodeContext) -> Span? {
        let key = GoroutineKey(pid: event.header.pid, goid: event.goid)
        guard let call = state.withLock({ $0.clients.removeValue(forKey: key) }) else { return nil }
        let identity = call.identity
        context.traceContexts.endCall(pid: key.pid, spanID: identity.spanID)
        let scheme = call.scheme.isEmpty ? "http" : call.scheme
        var query = ""
        if !call.query.isEmpty { query = "?" + HTTPSpans.redactQuery(call.query[...]) + (call.queryTruncated ? "…" : "") }
        var exchange = HTTPExchange(pid: key.pid, role: .client, method: call.method.isEmpty ? "GET" : call.method,
                                    target: call.path + query, tls: scheme == "https", start: call.start,
                                    end: max(event.header.timestamp_ns, call.start + 1), identity: identity)
        exchange.urlPrefix = "\(scheme)://\(call.host)"
        let (host, port) = splitHostPort(call.host[...])
        exchange.server = SocketAddress(address: String(host), port: UInt16(clamping: port ?? (scheme == "https" ? 443 : 80)))
        exchange.statusCode = event.status_code > 0 ? Int(event.status_code) : nil
        exchange.failed = event.failed != 0
        return HTTPSpans.span(exchange, resource: context.resource(Int32(bitPattern: key.pid)) ?? .empty, scope: context.scope,
                              unixNanoseconds: context.unixNanoseconds(monotonic:))
    }

    /// The ids BPF decided for a span, nil when it left them to user space.
    static func identity(_ context: go_nethttp_span_context) -> SpanIdentity? {
        guard context.valid != 0 else { return nil }
        return SpanIdentity(traceID: TraceID(high: context.trace_id_high, low: context.trace_id_low), spanID: SpanID(context.span_id),
                            parentSpanID: SpanID(context.parent_span_id), flags: UInt32(context.flags), parentSource: .injected)
    }

    /// The first `length` bytes of a fixed C char array.
    private func string<T>(_ field: inout T, length: UInt16) -> String {
        withUnsafeBytes(of: &field) { String(decoding: $0.prefix(Int(length)), as: UTF8.self) }
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
