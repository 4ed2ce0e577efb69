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
        /// Ids: seeded once from the system generator (a getrandom(2) per id would cost a syscall per span).
        var random = SplitMix64()
    }

    /// Most goroutines remembered per table; beyond that a table is cleared (lost events can leave entries
    /// that nothing else removes).
    static let limit = 65536

    private let state = Mutex(State())

    public init() {}

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
        }
    }

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
        state.withLock { state in
            if goroutine.isThread {
                guard let inFlight = state.threads[goroutine], inFlight.count == 1 else { return nil }
                return inFlight[0]
            }
            return state.serving[goroutine] ?? (parentGoid == 0 ? nil : state.serving[Goroutine(pid: goroutine.pid, goid: parentGoid)])
        }
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
