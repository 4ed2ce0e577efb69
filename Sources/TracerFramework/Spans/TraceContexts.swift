import Synchronization
import Telemetry

/// The trace context the framework keeps across tracers (they never call each other): which server span
/// each goroutine is serving — or, in processes that are not Go, each thread — so a call it makes (seen by
/// another tracer) becomes that span's child, and span ids decided in BPF (context propagation) for the spans
/// user space builds.
public final class TraceContexts: Sendable {
    /// What serves a request: a goroutine (Go), or a thread of a process that is not Go (``thread(_:)``).
    public struct Goroutine: Hashable, Sendable {
        public var pid: UInt32
        public var goid: UInt64

        public init(pid: UInt32, goid: UInt64) {
            self.pid = pid
            self.goid = goid
        }

        /// The key of thread `tid` (above every goroutine id): for processes that serve a request on the
        /// thread that read it (thread-per-connection servers: Python's, Java's, forking ones), never Go's.
        public static func thread(_ tid: UInt32) -> UInt64 { threadBit | UInt64(tid) }
        static let threadBit: UInt64 = 1 << 63

        var isThread: Bool { goid & Self.threadBit != 0 }
    }

    /// An HTTP/2 stream of process `pid`, named by the goroutine that moves its frames (a server connection's
    /// reader, a client connection's writer: one per connection in Go's HTTP/2 and gRPC) and its stream id.
    /// `mover` 0: the stream's connection is unknown (a reader that started before the agent).
    public struct Stream: Hashable, Sendable {
        public var pid: UInt32
        public var mover: UInt64
        public var id: UInt32

        public init(pid: UInt32, mover: UInt64, id: UInt32) {
            self.pid = pid
            self.mover = mover
            self.id = id
        }
    }

    struct ServedStream {
        var identity: SpanIdentity
        var handler: UInt64 = 0
    }

    struct Call {
        var identity: SpanIdentity
        var start: UInt64
        var claimed = false
    }

    private struct State {
        var serving: [Goroutine: SpanIdentity] = [:]
        /// Threads: the server spans each one has in flight. An event-loop thread (Node, nginx, asyncio) serves
        /// several at once, and then a call it makes names none of them (no guessing).
        var threads: [Goroutine: [SpanIdentity]] = [:]
        var decided: [Goroutine: SpanIdentity] = [:]
        /// Client calls another tracer is making (by process), for same-host linking of their connections.
        var calls: [UInt32: [Call]] = [:]
        /// Client spans whose traceparent BPF wrote into their request (by process and span id), with the
        /// parent the header cannot carry, until the parser that reads the request names them.
        var injected: [InjectedKey: SpanIdentity] = [:]
        /// HTTP/2 server streams, by the goroutine that read their request, until they end: their span, and the
        /// goroutine that handles them once a tracer names it (``handlesStream(_:handler:)``).
        var servedStreams: [Stream: ServedStream] = [:]
        var servedStreamsBySpan: [SpanID: Stream] = [:]
        /// HTTP/2 client streams, by the goroutine that writes their request: the goroutine that makes the call
        /// (``callsStream(_:caller:creator:)``), until the parser opens the stream.
        var calledStreams: [Stream: (caller: UInt64, creator: UInt64)] = [:]
        /// Processes whose calls asked for a parent (``serving(_:creator:)``): each is announced once.
        var calling: Set<UInt32> = []
        /// Ids: seeded once from the system generator (a getrandom(2) per id would cost a syscall per span).
        var random = SplitMix64()
    }

    /// Most goroutines remembered per table; beyond that a table is cleared (lost events can leave entries
    /// that nothing else removes).
    static let limit = 65536

    private let state = Mutex(State())
    private let firstCall = Mutex<(@Sendable (UInt32) -> Void)?>(nil)

    public init() {}

    /// `handler` learns of each process the first time a call of it asks for its parent (the agent then
    /// attaches the probes that matter only in processes that make calls, ``Tracer/attachedOnceCalling``).
    /// It runs on the caller's thread (a reader's): it must only hand the work over.
    public func onFirstCall(_ handler: @escaping @Sendable (UInt32) -> Void) {
        firstCall.withLock { $0 = handler }
    }

    /// New ids: a child of `parent` (trace id, parent span id, flags; found through `source`), or the root
    /// of a new trace.
    public func newIdentity(parent: (TraceID, SpanID, UInt32)?, source: ParentSource? = nil) -> SpanIdentity {
        state.withLock { state in
            SpanIdentity(traceID: parent?.0 ?? .random(using: &state.random), spanID: .random(using: &state.random),
                         parentSpanID: parent?.1 ?? .invalid, flags: parent?.2 ?? 1, parentSource: parent == nil ? nil : source)
        }
    }

    /// A new span that is the child of `parent`'s span (the one its goroutine or thread serves), or a new
    /// trace without one.
    public func child(of parent: SpanIdentity?) -> SpanIdentity {
        newIdentity(parent: parent.map { ($0.traceID, $0.spanID, $0.flags) }, source: .goroutine)
    }

    /// The server span `spanID` that `goroutine` serves took other ids after it started (``PeerLinks``):
    /// calls it makes from now on are their children.
    func replaceServing(_ goroutine: Goroutine, spanID: SpanID, with identity: SpanIdentity) {
        guard goroutine.goid != 0 else { return }
        state.withLock { state in
            if goroutine.isThread {
                if let index = state.threads[goroutine]?.firstIndex(where: { $0.spanID == spanID }) { state.threads[goroutine]![index] = identity }
            } else if state.serving[goroutine]?.spanID == spanID {
                state.serving[goroutine] = identity
            }
            if let stream = state.servedStreamsBySpan[spanID], var served = state.servedStreams[stream] {
                served.identity = identity
                state.servedStreams[stream] = served
                let handler = Goroutine(pid: stream.pid, goid: served.handler)
                if served.handler != 0, state.serving[handler]?.spanID == spanID { state.serving[handler] = identity }
            }
        }
    }

    /// The capture layer opened server stream `stream` with span `identity`: the goroutine a tracer names as its
    /// handler (``handlesStream(_:handler:)``) serves it from then on.
    public func openServedStream(_ stream: Stream, _ identity: SpanIdentity) {
        guard stream.mover != 0, !Goroutine(pid: stream.pid, goid: stream.mover).isThread else { return }
        state.withLock { state in
            if state.servedStreams.count >= Self.streamLimit {
                state.servedStreams.removeAll()
                state.servedStreamsBySpan.removeAll()
            }
            if let previous = state.servedStreams.updateValue(ServedStream(identity: identity), forKey: stream) {
                state.servedStreamsBySpan[previous.identity.spanID] = nil
            }
            state.servedStreamsBySpan[identity.spanID] = stream
        }
    }

    /// Goroutine `handler` handles server stream `stream` (a tracer saw its handler start): it serves that
    /// stream's span. A stream whose reader is unknown, or was read by another goroutine than the one named (a
    /// connection's first frames read during its handshake), is the one open stream of the process with that
    /// id, else none (no guessing).
    public func handlesStream(_ stream: Stream, handler: UInt64) {
        guard handler != 0 else { return }
        state.withLock { state in
            var key = stream
            if state.servedStreams[key] == nil {
                let candidates = state.servedStreams.filter { $0.key.pid == stream.pid && $0.key.id == stream.id && $0.value.handler == 0 }
                guard candidates.count == 1, let only = candidates.first else { return }
                key = only.key
            }
            guard var served = state.servedStreams[key], served.handler == 0 else { return }
            served.handler = handler
            state.servedStreams[key] = served
            if state.serving.count >= Self.limit { state.serving.removeAll() }
            state.serving[Goroutine(pid: stream.pid, goid: handler)] = served.identity
        }
    }

    /// Server stream `stream` ended: its handler serves it no more.
    public func closeServedStream(_ stream: Stream) {
        guard stream.mover != 0 else { return }
        state.withLock { state in
            guard let served = state.servedStreams.removeValue(forKey: stream) else { return }
            state.servedStreamsBySpan[served.identity.spanID] = nil
            let handler = Goroutine(pid: stream.pid, goid: served.handler)
            if served.handler != 0, state.serving[handler]?.spanID == served.identity.spanID { state.serving[handler] = nil }
        }
    }

    /// Goroutine `caller` (started by `creator`, go1.21+, else 0) makes client stream `stream` (a tracer saw the
    /// writer goroutine open it): the parser's span of that stream is the child of the request `caller` serves.
    public func callsStream(_ stream: Stream, caller: UInt64, creator: UInt64) {
        state.withLock { state in
            if state.calledStreams.count >= Self.streamLimit { state.calledStreams.removeAll() }
            state.calledStreams[stream] = (caller, creator)
        }
    }

    /// The server span whose goroutine makes client stream `stream` (``callsStream(_:caller:creator:)``), once.
    func servingCaller(of stream: Stream) -> SpanIdentity? {
        guard let caller = state.withLock({ state in state.calledStreams.isEmpty ? nil : state.calledStreams.removeValue(forKey: stream) }) else {
            return nil
        }
        return serving(Goroutine(pid: stream.pid, goid: caller.caller), creator: caller.creator)
    }

    /// Most HTTP/2 streams remembered per table (in flight, or lost without an end).
    static let streamLimit = 16384

    /// A tracer that makes client spans itself (from probes, not the capture layer) started a call of process
    /// `pid` with ids `identity` at `start`: the request it writes may be a traced server's parent.
    public func startCall(pid: UInt32, identity: SpanIdentity, at start: UInt64) {
        state.withLock { state in
            if state.calls.count >= Self.limit { state.calls.removeAll() }
            var calls = state.calls[pid, default: []]
            if calls.count >= 256 { calls.removeFirst() }
            calls.append(Call(identity: identity, start: start))
            state.calls[pid] = calls
        }
    }

    /// The call of `startCall` ended.
    public func endCall(pid: UInt32, spanID: SpanID) {
        state.withLock { state in
            guard var calls = state.calls[pid] else { return }
            calls.removeAll { $0.identity.spanID == spanID }
            state.calls[pid] = calls.isEmpty ? nil : calls
        }
    }

    /// The ids of the one call of `pid` in flight, started before `timestamp` and not yet named by a request
    /// (it is named by this one from now on); nil when there is none or more than one (no guessing).
    func claimCall(pid: UInt32, before timestamp: UInt64) -> SpanIdentity? {
        state.withLock { state in
            guard var calls = state.calls[pid] else { return nil }
            let open = calls.indices.filter { !calls[$0].claimed && calls[$0].start <= timestamp }
            guard open.count == 1, let index = open.first else { return nil }
            calls[index].claimed = true
            state.calls[pid] = calls
            return calls[index].identity
        }
    }

    struct InjectedKey: Hashable {
        var pid: UInt32
        var spanID: SpanID
    }

    /// A tracer wrote a traceparent naming the client span `identity` into a request of process `pid`, which a
    /// parser of the capture layer will read (``ParserContext/clientIdentity(goid:carried:requestStart:fingerprint:)``).
    public func injected(pid: UInt32, _ identity: SpanIdentity) {
        state.withLock { state in
            if state.injected.count >= Self.injectedLimit { state.injected.removeAll() }
            state.injected[InjectedKey(pid: pid, spanID: identity.spanID)] = identity
        }
    }

    /// The ids of ``injected(pid:_:)`` for the span `spanID` of `pid`, once.
    func takeInjected(pid: UInt32, spanID: SpanID) -> SpanIdentity? {
        state.withLock { state in state.injected.isEmpty ? nil : state.injected.removeValue(forKey: InjectedKey(pid: pid, spanID: spanID)) }
    }

    /// Most injected spans remembered unread (requests whose client span another tracer makes are never read).
    static let injectedLimit = 4096

    /// Goroutine `goroutine` started serving the server span `identity`.
    public func startServing(_ goroutine: Goroutine, _ identity: SpanIdentity) {
        guard goroutine.goid != 0 else { return }
        state.withLock { state in
            if goroutine.isThread {
                if state.threads.count >= Self.limit { state.threads.removeAll() }
                // A span whose end was never seen (its connection lost) must not hold the thread forever.
                if state.threads[goroutine, default: []].count >= Self.threadInFlightLimit { state.threads[goroutine] = nil }
                state.threads[goroutine, default: []].append(identity)
                return
            }
            if state.serving.count >= Self.limit { state.serving.removeAll() }
            state.serving[goroutine] = identity
        }
    }

    /// Most server spans remembered in flight on one thread.
    static let threadInFlightLimit = 16

    /// The server span `goroutine` serves, or else the one its creator (`parentGoid`, go1.21+) serves. A thread:
    /// the one span it has in flight (nil with several).
    public func serving(_ goroutine: Goroutine, creator parentGoid: UInt64 = 0) -> SpanIdentity? {
        let (serving, first) = state.withLock { state -> (SpanIdentity?, Bool) in
            let first = state.calling.insert(goroutine.pid).inserted
            if goroutine.isThread {
                guard let inFlight = state.threads[goroutine], inFlight.count == 1 else { return (nil, first) }
                return (inFlight[0], first)
            }
            return (state.serving[goroutine] ?? (parentGoid == 0 ? nil : state.serving[Goroutine(pid: goroutine.pid, goid: parentGoid)]), first)
        }
        if first, let handler = firstCall.withLock({ $0 }) { handler(goroutine.pid) }
        return serving
    }

    /// BPF decided the ids of the server span `goroutine` is serving (context propagation).
    public func decide(_ goroutine: Goroutine, _ identity: SpanIdentity) {
        state.withLock { state in
            if state.decided.count >= Self.limit { state.decided.removeAll() }
            state.decided[goroutine] = identity
        }
    }

    /// The server span `spanID` that `goroutine` served ended; returns the ids BPF decided for it (context
    /// propagation), once. One lock per server span.
    public func finishServing(_ goroutine: Goroutine, spanID: SpanID) -> SpanIdentity? {
        guard goroutine.goid != 0 else { return nil }
        return state.withLock { state in
            if goroutine.isThread {
                state.threads[goroutine]?.removeAll { $0.spanID == spanID }
                if state.threads[goroutine]?.isEmpty == true { state.threads[goroutine] = nil }
                return nil
            }
            if state.serving[goroutine]?.spanID == spanID { state.serving[goroutine] = nil }
            return state.decided.isEmpty ? nil : state.decided.removeValue(forKey: goroutine)
        }
    }

    /// Forgets the goroutines of a process that exited.
    public func forget(pid: UInt32) {
        state.withLock { state in
            state.serving = state.serving.filter { $0.key.pid != pid }
            state.threads = state.threads.filter { $0.key.pid != pid }
            state.decided = state.decided.filter { $0.key.pid != pid }
            state.injected = state.injected.filter { $0.key.pid != pid }
            state.servedStreams = state.servedStreams.filter { $0.key.pid != pid }
            state.servedStreamsBySpan = state.servedStreamsBySpan.filter { $0.value.pid != pid }
            state.calledStreams = state.calledStreams.filter { $0.key.pid != pid }
            state.calling.remove(pid)
            state.calls[pid] = nil
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014), seeded from the system generator: ids must be unique and
/// unpredictable enough for tracing, not secret.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init() {
        var system = SystemRandomNumberGenerator()
        state = system.next()
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
