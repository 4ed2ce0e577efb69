import CTracerABI
import Telemetry

/// What parsers need from the framework while they handle one chunk of a connection: span identities
/// (goroutine context for calls made while a request is served, and same-host peers: ``PeerLinks``), and
/// where the chunk sits in its direction's byte stream.
/// Valid only during the call that receives it, like ``CaptureChunk``: it is made per chunk and passed down
/// per protocol element, so its references are not retained (the ``ConnectionTracker`` holds them, and the
/// connection's entry, for the whole call) — a copy costs no reference counting.
public struct ParserContext {
    public unowned(unsafe) let traceContexts: TraceContexts
    /// Bytes the connection carried in the current chunk's direction before this chunk (counted from when
    /// the capture layer first saw the connection): where the chunk starts in its byte stream.
    public let position: UInt64
    unowned(unsafe) let links: PeerLinks?
    unowned(unsafe) let connection: CaptureConnection?
    let pid: UInt32
    /// The network namespace the chunk's task was in (0: unknown; ``PeerLinks`` then asks /proc).
    let namespace: UInt32
    let timestamp: UInt64
    /// Another tracer makes this connection's spans (e.g. Go's HTTP client from uprobes): the parser's
    /// exchanges are dropped, its client requests only name that tracer's call for same-host linking.
    let shadow: Bool
    /// Kinds of exchanges another tracer makes in this process (``Tracer/ownedExchanges``), for a parser whose
    /// connection carries more than one kind (HTTP/2: HTTP and gRPC streams).
    let ownedElsewhere: ExchangeKinds
    /// Ids the kernel decided for a request starting at this chunk (network propagation): they went over
    /// the wire, so the span takes them.
    let decided: KernelDecidedIdentity?

    init(traceContexts: TraceContexts, links: PeerLinks?, connection: CaptureConnection?, pid: UInt32, namespace: UInt32,
         timestamp: UInt64, position: UInt64, shadow: Bool, ownedElsewhere: ExchangeKinds = ExchangeKinds(), decided: KernelDecidedIdentity? = nil) {
        self.decided = decided
        self.ownedElsewhere = ownedElsewhere
        self.traceContexts = traceContexts
        self.links = links
        self.connection = connection
        self.pid = pid
        self.namespace = namespace
        self.timestamp = timestamp
        self.position = position
        self.shadow = shadow
    }

    /// Ids for a server span whose request starts now: the child of the traced client span at the other end
    /// of the connection on this host (same-host linking wins over a traceparent, which in a proxy names the
    /// proxy's caller), else of `incoming` (a traceparent it carried), else a new trace. Ids the kernel decided
    /// (network propagation) are taken as they are, linked only to a client in their trace.
    /// `goid`: the goroutine serving it (Go), `requestStart`: where the request starts in the incoming byte
    /// stream (default: at this chunk), `fingerprint`: a hash of what identifies the request on both ends
    /// (e.g. HTTP's method and target; 0: none), so a side seen from mid-stream never links to another request.
    public func identity(incoming: W3CTraceContext?, goid: UInt64 = 0, requestStart: UInt64? = nil, fingerprint: UInt64 = 0) -> SpanIdentity {
        let decided = decidedIdentity(requestStart: requestStart)
        let provisional = decided
            ?? traceContexts.newIdentity(parent: incoming.map { ($0.traceID, $0.parentSpanID, UInt32($0.flags)) }, source: .traceparent)
        guard let links, let connection else { return provisional }
        return links.server(connection: connection, pid: pid, namespace: namespace, goid: goid, position: requestStart ?? position, timestamp: timestamp,
                            fingerprint: fingerprint, provisional: provisional, keepingTrace: decided != nil)
    }

    /// Whether another tracer makes the exchanges of `kind` in this process: the parser makes no span of them,
    /// and names that tracer's call (``clientIdentity(goid:carried:requestStart:fingerprint:ofAnotherTracer:)``).
    public func isOwnedElsewhere(_ kind: ExchangeKind) -> Bool { shadow || ownedElsewhere.contains(kind) }

    /// Ids for a client span whose request starts now (at `requestStart` of the outgoing byte stream; default:
    /// at this chunk), made by goroutine `goid`: the child of the request that goroutine serves, or a new
    /// trace. A request that `carried` a traceparent names the span the caller's own instrumentation (or a
    /// tracer's context propagation) made for this call: the span takes its ids. A traced server on this host that reads the request becomes
    /// its child (`fingerprint` as in ``identity(incoming:goid:requestStart:fingerprint:)``). A request
    /// `ofAnotherTracer` (``isOwnedElsewhere(_:)``) names that tracer's call. An HTTP/2 `streamID` whose caller
    /// a tracer named (``TraceContexts/callsStream(_:caller:creator:)``) is the child of what that caller serves.
    public func clientIdentity(goid: UInt64, carried: W3CTraceContext?, requestStart: UInt64? = nil, fingerprint: UInt64 = 0,
                               ofAnotherTracer: Bool = false, streamID: UInt32? = nil) -> SpanIdentity {
        let caller = streamID.flatMap { traceContexts.servingCaller(of: TraceContexts.Stream(pid: pid, mover: goid, id: $0)) }
        let identity: SpanIdentity
        if shadow || ofAnotherTracer {
            // The call is another tracer's span: name it, if exactly one is in flight.
            guard let call = traceContexts.claimCall(pid: pid, before: timestamp) else {
                links?.counters.ambiguousCalls.add(1, ordering: .relaxed)
                return traceContexts.newIdentity(parent: nil)
            }
            identity = call
        } else if let carried {
            // A traceparent a tracer wrote (context propagation) comes with its parent.
            identity = traceContexts.takeInjected(pid: pid, spanID: carried.parentSpanID).flatMap { $0.traceID == carried.traceID ? $0 : nil }
                ?? SpanIdentity(traceID: carried.traceID, spanID: carried.parentSpanID, parentSpanID: .invalid, flags: UInt32(carried.flags))
        } else if let decided = decidedIdentity(requestStart: requestStart) {
            identity = decided
        } else {
            identity = traceContexts.child(of: caller ?? traceContexts.serving(.init(pid: pid, goid: goid)))
        }
        if let links, let connection {
            links.clientRequest(connection: connection, pid: pid, namespace: namespace, position: requestStart ?? position, timestamp: timestamp,
                                fingerprint: fingerprint, identity: identity)
        }
        return identity
    }
}

extension ParserContext {
    /// The kernel's ids when they name a request that starts at this chunk.
    private func decidedIdentity(requestStart: UInt64?) -> SpanIdentity? {
        guard let decided, requestStart == nil || requestStart == position else { return nil }
        return decided.identity
    }
}

/// Span ids the kernel decided for a request (bpf/capture_propagation.bpf.h, `CAPTURE_EVENT_CONTEXT`): a
/// server request's, its parent from the traceparent it carried; or a client request's, inserted into it
/// as a traceparent, its parent the request its thread serves.
struct KernelDecidedIdentity {
    let identity: SpanIdentity
    /// `CAPTURE_DIRECTION_*` of the chunk it names.
    let direction: UInt8
    /// Bytes the kernel added to the outgoing stream (the traceparent line).
    let injectedBytes: UInt32

    init(_ event: capture_context_event) {
        func bigEndian(_ bytes: some Collection<UInt8>) -> UInt64 { bytes.reduce(0) { $0 << 8 | UInt64($1) } }
        let (trace, span, parent) = withUnsafeBytes(of: event.trace_id) { trace in
            withUnsafeBytes(of: event.span_id) { span in
                withUnsafeBytes(of: event.parent_span_id) { parent in
                    (TraceID(high: bigEndian(trace.prefix(8)), low: bigEndian(trace.suffix(8))), SpanID(bigEndian(span)), SpanID(bigEndian(parent)))
                }
            }
        }
        let flags = Int32(event.flags)
        let source: ParentSource? = if flags & CAPTURE_CONTEXT_TRACEPARENT != 0 {
            .traceparent
        } else if flags & CAPTURE_CONTEXT_INJECTED != 0 {
            .injected
        } else {
            nil
        }
        identity = SpanIdentity(traceID: trace, spanID: span, parentSpanID: parent, flags: 1, parentSource: source)
        direction = event.direction
        injectedBytes = event.injected
    }
}

extension ParserContext {
    /// Ids for a client span that continues `parent`: a trace context the message itself carried as its creation
    /// context (a NATS `traceparent` header; the span is its child, not the span it names), or another span the
    /// parser knows it belongs to (`source`). Without one, as ``clientIdentity(goid:carried:requestStart:fingerprint:)``.
    /// A traced server on this host that reads the request becomes this span's child either way.
    public func clientIdentity(goid: UInt64, continuing parent: W3CTraceContext?, source: ParentSource = .traceparent,
                               requestStart: UInt64? = nil, fingerprint: UInt64 = 0) -> SpanIdentity {
        guard let parent, !shadow else {
            return clientIdentity(goid: goid, carried: nil, requestStart: requestStart, fingerprint: fingerprint)
        }
        let identity = traceContexts.newIdentity(parent: (parent.traceID, parent.parentSpanID, UInt32(parent.flags)), source: source)
        if let links, let connection {
            links.clientRequest(connection: connection, pid: pid, namespace: namespace, position: requestStart ?? position, timestamp: timestamp,
                                fingerprint: fingerprint, identity: identity)
        }
        return identity
    }
}

extension ConnectionEnds {
    init(_ tuple: capture_tuple) {
        func halves<T>(_ address: T) -> (UInt64, UInt64) {
            withUnsafeBytes(of: address) { ($0.loadUnaligned(fromByteOffset: 0, as: UInt64.self), $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
        }
        let local = halves(tuple.local_address)
        let remote = halves(tuple.remote_address)
        self.init(localHigh: local.0, localLow: local.1, remoteHigh: remote.0, remoteLow: remote.1,
                  localPort: tuple.local_port, remotePort: tuple.remote_port)
    }
}
