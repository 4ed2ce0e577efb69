#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Telemetry

/// Where a span's parent came from (`tracer.parent.source`), so a wrong link can be diagnosed.
public enum ParentSource: String, Sendable {
    /// A W3C `traceparent` the request carried.
    case traceparent
    /// The server request the calling goroutine (or thread) serves.
    case goroutine
    /// A traced client's socket on this host: the other end of the server's connection (``PeerLinks``).
    case sameHostPeer = "same-host-peer"
    /// Ids decided in BPF and written into the request by the agent (context propagation).
    case injected
    /// The message this one answers, on the same connection (NATS: a publish to the reply subject of a message
    /// delivered before).
    case reply

    /// The span attribute naming it.
    public static let attribute = "tracer.parent.source"
}

/// Both ends of a TCP connection as the capture layer saw them from one side (`capture_tuple`), raw:
/// the key of same-host linking. The other side of the same connection sees them `reversed`.
struct ConnectionEnds: Hashable {
    var localHigh: UInt64
    var localLow: UInt64
    var remoteHigh: UInt64
    var remoteLow: UInt64
    var localPort: UInt16
    var remotePort: UInt16

    var reversed: ConnectionEnds {
        ConnectionEnds(localHigh: remoteHigh, localLow: remoteLow, remoteHigh: localHigh, remoteLow: localLow,
                       localPort: remotePort, remotePort: localPort)
    }
}

/// Same-host linking, with no write into any process: a traced server that reads a request on a connection
/// whose other end is a traced client's socket on this host makes that client's span its parent (and takes
/// its trace id), whatever the protocol. The two ends are matched exactly: the same connection seen from
/// the other side (the 4-tuple reversed) in the same network namespace (a process's `/proc/PID/ns/net`),
/// and the same place in its byte stream (the request starts at the byte offset where the client wrote
/// it), within a time window (the client's write ends at most `lateTolerance` after the server's read, at
/// most `staleness` before it). Anything else gives no link — never a guessed one — and is counted:
/// connections first seen mid-stream on one side only, lost events, NAT (the tuples differ), equal ports
/// in another namespace, a tuple reused after a close (the newer connection's requests replace the older's).
///
/// The client's write and the server's read reach the events ring in either order (the client's hook runs
/// when its send returns, after loopback already delivered the bytes): a server read with no client
/// request yet waits (`waiting`), and a client request that arrives within `lateTolerance` resolves it —
/// the server span keeps its span id and takes the client's trace id and parent when it ends, and calls it
/// makes from then on are children in that trace.
///
/// Used on the agent's reader thread only (from ``ConnectionTracker``); counters may be read from anywhere.
public final class PeerLinks: @unchecked Sendable {
    public final class Counters: Sendable {
        /// Server spans linked to a client span when their request was read.
        public let linked = Atomic<UInt64>(0)
        /// Server spans linked when the client's request arrived after the server's read.
        public let linkedLate = Atomic<UInt64>(0)
        /// Same tuple and stream position, but the client is in another network namespace: not linked.
        public let otherNamespace = Atomic<UInt64>(0)
        /// Same tuple and stream position, but the times disagree (a reused tuple, lost events): not linked.
        public let outOfWindow = Atomic<UInt64>(0)
        /// Same tuple, stream position and time, but the requests differ (one side seen from mid-stream).
        public let mismatched = Atomic<UInt64>(0)
        /// Client requests on a connection another tracer makes the spans of, with no single call of that
        /// tracer in flight to name (concurrent calls): not linked.
        public let ambiguousCalls = Atomic<UInt64>(0)
        /// Entries dropped because a table was full.
        public let evicted = Atomic<UInt64>(0)
        /// A server span whose ids the kernel decided and may already have sent on (network propagation), and a
        /// client in another trace: not linked, so the server's own calls stay in its trace.
        public let otherTrace = Atomic<UInt64>(0)
    }

    struct StreamKey: Hashable {
        /// The client's view of the connection.
        var ends: ConnectionEnds
        /// Where the request starts in the client-to-server byte stream.
        var position: UInt64
    }

    struct ClientRequest {
        var namespace: UInt64
        var identity: SpanIdentity
        var timestamp: UInt64
        var connection: UInt64
        var fingerprint: UInt64
    }

    struct WaitingServer {
        /// The server's connection (marked ``CaptureConnection/peerUntraced`` when its span ends unlinked).
        var connection: CaptureConnection
        var namespace: UInt64
        var spanID: SpanID
        var goroutine: TraceContexts.Goroutine
        var timestamp: UInt64
        var fingerprint: UInt64
        /// The trace the server span must stay in (its ids went over the wire), if any.
        var keptTrace: TraceID?
    }

    /// How much later than the server's read the client's write may end (its hook runs when the send returns).
    static let lateTolerance: UInt64 = 20_000_000
    /// How much earlier than the server's read the client's write may end (a busy server reads late).
    static let staleness: UInt64 = 10_000_000_000
    /// Most entries per table; beyond that a table is cleared (and counted).
    static let limit = 65536

    public let counters = Counters()
    private let traceContexts: TraceContexts
    private let namespaceOf: (UInt32) -> UInt64?
    private var namespaces: [UInt32: UInt64?] = [:]
    private var requests: [StreamKey: [ClientRequest]] = [:]
    private var requestsByConnection: [UInt64: [StreamKey]] = [:]
    private var waiting: [StreamKey: WaitingServer] = [:]
    private var waitingBySpan: [SpanID: StreamKey] = [:]
    private var resolved: [SpanID: SpanIdentity] = [:]
    /// Server connections whose first waiting read ended with no client request, by the client's view of their
    /// ends: a client request with those ends makes them look again.
    private var untracedServers: [ConnectionEnds: CaptureConnection] = [:]
    private var newest: UInt64 = 0
    private var insertsSinceSweep = 0

    /// `namespaceOf`: the network namespace of a process (default: the inode of `/proc/PID/ns/net`).
    public init(traceContexts: TraceContexts, namespaceOf: @escaping (UInt32) -> UInt64? = PeerLinks.networkNamespace(pid:)) {
        self.traceContexts = traceContexts
        self.namespaceOf = namespaceOf
    }

    /// The inode of `/proc/PID/ns/net` (namespaces(7)), nil when the process is gone.
    public static func networkNamespace(pid: UInt32) -> UInt64? {
        var info = stat()
        guard stat("/proc/\(pid)/ns/net", &info) == 0 else { return nil }
        return UInt64(info.st_ino)
    }

    /// The network namespace of a chunk: as the kernel saw it (`chunkNamespace`), else that of process `pid`
    /// now (a process that is gone has none).
    private func namespace(_ chunkNamespace: UInt32, _ pid: UInt32) -> UInt64? {
        if chunkNamespace != 0 { return UInt64(chunkNamespace) }
        if let known = namespaces[pid] { return known }
        if namespaces.count >= Self.limit { namespaces.removeAll() }
        let found = namespaceOf(pid)
        namespaces[pid] = found
        return found
    }

    /// Whether two requests may be the same (`0`: the parser gave no fingerprint).
    private static func agree(_ a: UInt64, _ b: UInt64) -> Bool { a == 0 || b == 0 || a == b }

    /// A traced client wrote a request (ids `identity`; `fingerprint` from its first bytes) starting at byte
    /// `position` of `connection`'s outgoing stream; its write ended at `timestamp`.
    func clientRequest(connection: CaptureConnection, pid: UInt32, namespace chunkNamespace: UInt32, position: UInt64, timestamp: UInt64,
                       fingerprint: UInt64, identity: SpanIdentity) {
        guard let ends = connection.ends, let namespace = namespace(chunkNamespace, pid) else { return }
        let key = StreamKey(ends: ends, position: position)
        if !untracedServers.isEmpty, let server = untracedServers.removeValue(forKey: ends) { server.peerUntraced = false }
        note(timestamp)
        if requests.count >= Self.limit {
            counters.evicted.add(UInt64(requests.count), ordering: .relaxed)
            requests.removeAll()
            requestsByConnection.removeAll()
        }
        // One connection per tuple and namespace at a time: a newer connection's request replaces the older's.
        requests[key] = (requests[key] ?? []).filter { $0.namespace != namespace }
            + [ClientRequest(namespace: namespace, identity: identity, timestamp: timestamp, connection: connection.id, fingerprint: fingerprint)]
        requestsByConnection[connection.id, default: []].append(key)
        guard let server = waiting[key], server.namespace == namespace else { return }
        waiting[key] = nil
        waitingBySpan[server.spanID] = nil
        guard Self.agree(fingerprint, server.fingerprint) else {
            counters.mismatched.add(1, ordering: .relaxed)
            return
        }
        guard timestamp >= server.timestamp ? timestamp - server.timestamp <= Self.lateTolerance
                                            : server.timestamp - timestamp <= Self.staleness else {
            counters.outOfWindow.add(1, ordering: .relaxed)
            return
        }
        guard server.keptTrace == nil || server.keptTrace == identity.traceID else {
            counters.otherTrace.add(1, ordering: .relaxed)
            return
        }
        let linked = Self.child(of: identity, spanID: server.spanID)
        resolved[server.spanID] = linked
        traceContexts.replaceServing(server.goroutine, spanID: server.spanID, with: linked)
        counters.linkedLate.add(1, ordering: .relaxed)
    }

    /// Ids of a server span whose request starts at byte `position` of `connection`'s incoming stream, read
    /// at `timestamp`: the child of the client span at the other end, or else `provisional` (which waits for
    /// that client's request for a little while). `keepingTrace`: `provisional` holds ids the kernel decided,
    /// which its calls may already carry (network propagation): a client in another trace is not linked.
    /// A connection whose earlier request found no client by the end of its span (an untraced client, as
    /// most are) costs nothing more here until a traced client's request with its ends is seen.
    func server(connection: CaptureConnection, pid: UInt32, namespace chunkNamespace: UInt32, goid: UInt64, position: UInt64,
                timestamp: UInt64, fingerprint: UInt64, provisional: SpanIdentity, keepingTrace: Bool = false) -> SpanIdentity {
        guard !connection.peerUntraced, let ends = connection.ends, let namespace = namespace(chunkNamespace, pid) else { return provisional }
        let key = StreamKey(ends: ends.reversed, position: position)
        note(timestamp)
        if let candidates = requests[key] {
            if let client = candidates.first(where: { $0.namespace == namespace }) {
                let early = timestamp >= client.timestamp ? timestamp - client.timestamp <= Self.staleness
                                                          : client.timestamp - timestamp <= Self.lateTolerance
                guard early else {
                    counters.outOfWindow.add(1, ordering: .relaxed)
                    return provisional
                }
                guard Self.agree(fingerprint, client.fingerprint) else {
                    counters.mismatched.add(1, ordering: .relaxed)
                    return provisional
                }
                guard !keepingTrace || client.identity.traceID == provisional.traceID else {
                    counters.otherTrace.add(1, ordering: .relaxed)
                    return provisional
                }
                counters.linked.add(1, ordering: .relaxed)
                return Self.child(of: client.identity, spanID: provisional.spanID)
            }
            counters.otherNamespace.add(1, ordering: .relaxed)
            return provisional
        }
        if waiting.count >= Self.limit {
            counters.evicted.add(UInt64(waiting.count), ordering: .relaxed)
            waiting.removeAll()
            waitingBySpan.removeAll()
        }
        if let earlier = waiting[key] { waitingBySpan[earlier.spanID] = nil }
        waiting[key] = WaitingServer(connection: connection, namespace: namespace, spanID: provisional.spanID, goroutine: .init(pid: pid, goid: goid),
                                     timestamp: timestamp, fingerprint: fingerprint, keptTrace: keepingTrace ? provisional.traceID : nil)
        waitingBySpan[provisional.spanID] = key
        return provisional
    }

    /// Whether some server span waits for its client or took ids late: ``finish(_:)`` has work.
    var hasServersToFinish: Bool { !waitingBySpan.isEmpty || !resolved.isEmpty }

    /// The server span `spanID` ended: the ids it took after its read (its client's request came later), once;
    /// a request still waiting for its client stops waiting, and its connection is taken for one whose client is
    /// not traced.
    func finish(_ spanID: SpanID) -> SpanIdentity? {
        if !waitingBySpan.isEmpty, let key = waitingBySpan.removeValue(forKey: spanID), let server = waiting.removeValue(forKey: key) {
            if untracedServers.count >= Self.limit {
                counters.evicted.add(UInt64(untracedServers.count), ordering: .relaxed)
                for connection in untracedServers.values { connection.peerUntraced = false }
                untracedServers.removeAll()
            }
            server.connection.peerUntraced = true
            untracedServers[key.ends] = server.connection
        }
        return resolved.isEmpty ? nil : resolved.removeValue(forKey: spanID)
    }

    /// The connection `id` closed (`connection`: its state, when the tracker followed it): its requests can no
    /// longer be read by anyone.
    func closed(connection id: UInt64, _ connection: CaptureConnection? = nil) {
        if let connection, connection.peerUntraced, let ends = connection.ends { untracedServers[ends.reversed] = nil }
        guard let keys = requestsByConnection.removeValue(forKey: id) else { return }
        for key in keys {
            guard let remaining = requests[key]?.filter({ $0.connection != id }) else { continue }
            requests[key] = remaining.isEmpty ? nil : remaining
        }
    }

    /// Forgets a process that exited.
    func forget(pid: UInt32) {
        namespaces[pid] = nil
    }

    private static func child(of client: SpanIdentity, spanID: SpanID) -> SpanIdentity {
        SpanIdentity(traceID: client.traceID, spanID: spanID, parentSpanID: client.spanID, flags: client.flags, parentSource: .sameHostPeer)
    }

    /// Keeps the newest timestamp, and now and then drops what is too old to match anything.
    private func note(_ timestamp: UInt64) {
        newest = max(newest, timestamp)
        insertsSinceSweep += 1
        guard insertsSinceSweep >= 4096 else { return }
        insertsSinceSweep = 0
        let horizon = newest > Self.staleness ? newest - Self.staleness : 0
        waiting = waiting.filter { $0.value.timestamp + Self.lateTolerance >= newest }
        waitingBySpan = waitingBySpan.filter { waiting[$0.value] != nil }
        requests = requests.compactMapValues { list in
            let kept = list.filter { $0.timestamp >= horizon }
            return kept.isEmpty ? nil : kept
        }
        requestsByConnection = requestsByConnection.compactMapValues { keys in
            let kept = keys.filter { requests[$0] != nil }
            return kept.isEmpty ? nil : kept
        }
        if resolved.count >= Self.limit { resolved.removeAll() }
    }
}

extension Exchange {
    /// Host PID of the process that made the exchange, whatever its family.
    var pid: UInt32 {
        switch self {
        case .http(let http): http.pid
        case .database(let database): database.pid
        case .messaging(let message): message.pid
        case .rpc(let rpc): rpc.pid
        }
    }

    /// The exchange's span ids, whatever its family.
    var identity: SpanIdentity {
        get {
            switch self {
            case .http(let http): http.identity
            case .database(let database): database.identity
            case .messaging(let message): message.identity
            case .rpc(let rpc): rpc.identity
            }
        }
        set {
            switch self {
            case .http(var http):
                http.identity = newValue
                self = .http(http)
            case .database(var database):
                database.identity = newValue
                self = .database(database)
            case .messaging(var message):
                message.identity = newValue
                self = .messaging(message)
            case .rpc(var rpc):
                rpc.identity = newValue
                self = .rpc(rpc)
            }
        }
    }
}
