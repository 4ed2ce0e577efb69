import CTracerABI
import Synchronization
import Telemetry

/// The user-space half of the shared capture layer: the capture events of every selected process become
/// per-connection streams, in order, for the protocol parsers. A parser claims a connection from its first
/// readable bytes; a connection no parser claims within a few chunks is only counted from then on (the
/// kernel is told to stop copying its bytes), and counted per process.
/// Used on the agent's reader thread only; its counters may be read from anywhere.
public final class ConnectionTracker: @unchecked Sendable {
    /// Chunks with bytes offered to the parsers before a connection is given up as unknown.
    static let claimAttempts = 8
    /// Most connections followed at once; beyond that the oldest state is dropped (and counted).
    static let limit = 65536

    public final class Counters: Sendable {
        /// Capture events too short for their type, or whose sizes disagree.
        public let malformed = Atomic<UInt64>(0)
        /// Connections that no parser claimed (only counted from then on).
        public let unclaimedConnections = Atomic<UInt64>(0)
        /// TLS connections that ended without any plaintext read (``ProcessProtocols/unreadTLS``).
        public let unreadTLSConnections = Atomic<UInt64>(0)
        /// Connections whose exchanges another tracer of the process makes (e.g. Go's HTTP client).
        public let ownedElsewhere = Atomic<UInt64>(0)
        /// Connection states dropped because the table was full.
        public let evicted = Atomic<UInt64>(0)
        /// What each process's connections spoke (host PID), until it exits.
        let byProcess = Mutex<[UInt32: ProcessProtocols]>([:])

        public func unclaimed(pid: UInt32) -> UInt64 { protocols(pid: pid).unclaimed }
        /// The protocols seen on `pid`'s connections so far, and how many connections no parser understood.
        public func protocols(pid: UInt32) -> ProcessProtocols { byProcess.withLock { $0[pid] } ?? ProcessProtocols() }
    }

    /// What the capture layer saw of one process's connections (`tracer inspect --pid --watch`, the logs).
    public struct ProcessProtocols: Sendable, Equatable {
        /// A protocol, and the side the process is on.
        public struct Use: Hashable, Sendable, Comparable {
            /// The parser's ``ProtocolParser/protocolName``.
            public let name: String
            public let role: ExchangeRole

            public init(name: String, role: ExchangeRole) {
                self.name = name
                self.role = role
            }

            public static func < (a: Use, b: Use) -> Bool { (a.name, a.role == .server ? 0 : 1) < (b.name, b.role == .server ? 0 : 1) }
        }

        /// Connections claimed per protocol and side.
        public var connections: [Use: UInt64] = [:]
        /// Connections that carried bytes no parser understood.
        public var unclaimed: UInt64 = 0
        /// TLS connections whose plaintext no hook could read (a TLS library other than libssl or Go's).
        public var unreadTLS: UInt64 = 0

        public init() {}

        /// One line for people: `http/1 server 12, redis client 1; 2 connections not understood`.
        public var summary: String {
            let seen = connections.keys.sorted().map { "\($0.name) \($0.role == .server ? "server" : "client") \(connections[$0]!)" }
            func count(_ number: UInt64, _ what: String) -> String { "; \(number) \(what)\(number == 1 ? "" : "s")" }
            return (seen.isEmpty ? "no protocol seen" : seen.joined(separator: ", "))
                + (unclaimed == 0 ? "" : count(unclaimed, "connection") + " not understood")
                + (unreadTLS == 0 ? "" : count(unreadTLS, "TLS connection") + " without readable plaintext")
        }
    }

    /// Something seen for the first time of a process (the agent logs it once).
    public enum Sighting: Sendable {
        /// Its first connection of this protocol and side.
        case protocolSeen(ProcessProtocols.Use)
        /// Its first connection that no parser understood, and the other end when known.
        case firstUnclaimed(peer: SocketAddress?)
        /// Its first TLS connection whose plaintext no hook read.
        case firstUnreadTLS
    }

    /// What the framework knows of a process's parsers.
    public struct ProcessParsers: Sendable {
        public var parsers: [any ProtocolParser]
        /// Kinds of exchanges another tracer of the process makes: connections of that kind are left to it.
        public var ownedElsewhere: Set<ExchangeKind>
        /// The process is not Go: a request is served by the thread that read it, which keys its calls'
        /// parent (``TraceContexts/Goroutine/thread(_:)``; in Go the goroutine does, never the thread).
        public var servesOnThreads: Bool

        public init(parsers: [any ProtocolParser], ownedElsewhere: Set<ExchangeKind> = [], servesOnThreads: Bool = false) {
            self.parsers = parsers
            self.ownedElsewhere = ownedElsewhere
            self.servesOnThreads = servesOnThreads
        }
    }

    private final class Entry {
        let connection: CaptureConnection
        let pid: UInt32
        var parser: (any ConnectionParser)?
        var attempts = 0
        var givenUp = false
        /// Another tracer makes this connection's spans: the parser runs for same-host linking only.
        var shadow = false
        /// ``ProcessParsers/ownedElsewhere`` of its process.
        var ownedElsewhere = ExchangeKinds()
        /// ``ProcessParsers/servesOnThreads`` of its process.
        var servesOnThreads = false
        /// Bytes sent and received since the connection was first seen (stream positions).
        var sent: UInt64 = 0
        var received: UInt64 = 0

        init(connection: CaptureConnection, pid: UInt32) {
            self.connection = connection
            self.pid = pid
        }
    }

    /// Ids the kernel decided for the next chunk of a connection (``KernelDecidedIdentity``), by connection id:
    /// announced just before that chunk, taken by it. Bounded: entries whose chunk never came go when full.
    private var decided: [UInt64: KernelDecidedIdentity] = [:]
    static let decidedLimit = 4096

    public let counters = Counters()
    /// Same-host linking of server spans to the traced clients at the other end of their connections.
    public let peerLinks: PeerLinks
    private var entries: [UInt64: Entry] = [:]
    /// Processes that exited, whose connections go at the next event (any thread may add).
    private let exited = Mutex<[UInt32]>([])
    /// Whether `exited` has any: read at every event without taking the lock.
    private let anyExited = Atomic<Bool>(false)
    private let parsersOf: (_ pid: UInt32, _ follows: UInt32) -> ProcessParsers?
    private let countOnly: (UInt64) -> Void
    private let traceContexts: TraceContexts
    /// Called on the reader thread when a process shows something new (``Sighting``); set before events flow.
    public var sighted: ((_ pid: UInt32, Sighting) -> Void)?

    /// `parsers`: the parsers of a process, given the selected process it follows when the kernel prepared
    /// it at fork (`capture_chunk_event.follows`, 0: none); nil when neither is selected. `countOnly`: tells
    /// the kernel to stop copying a connection's bytes (`capture_verdicts`).
    public init(traceContexts: TraceContexts, parsers: @escaping (_ pid: UInt32, _ follows: UInt32) -> ProcessParsers?,
                countOnly: @escaping (UInt64) -> Void) {
        self.traceContexts = traceContexts
        peerLinks = PeerLinks(traceContexts: traceContexts)
        parsersOf = parsers
        self.countOnly = countOnly
    }

    /// Handles one capture event (`CAPTURE_EVENT_CHUNK`, `_CLOSE`, or `_CONTEXT` for the chunk after it); appends the exchanges it
    /// completes.
    public func handle(_ event: UnsafeRawBufferPointer, into exchanges: inout [Exchange]) {
        if anyExited.load(ordering: .acquiring) {
            let gone = exited.withLock { exited in
                defer { exited.removeAll() }
                anyExited.store(false, ordering: .relaxed)
                return exited
            }
            entries = entries.filter { !gone.contains($0.value.pid) }
            for pid in gone { peerLinks.forget(pid: pid) }
        }
        guard event.count >= MemoryLayout<tracer_event_header>.size else { return malformed() }
        // The type as it is: a value past Int32.max is one more malformed event, not a trap.
        switch event.loadUnaligned(as: UInt32.self) {
        case UInt32(CAPTURE_EVENT_CHUNK):
            let fixed = MemoryLayout<capture_chunk_event>.size
            guard event.count >= fixed else { return malformed() }
            let chunk = event.loadUnaligned(as: capture_chunk_event.self)
            guard Int(chunk.captured) <= event.count - fixed, chunk.captured <= chunk.length,
                  chunk.tail_captured <= UInt8(CAPTURE_TAIL) else { return malformed() }
            let data = UnsafeRawBufferPointer(rebasing: event[fixed..<(fixed + Int(chunk.captured))])
            if chunk.captured == chunk.length {
                // The whole transfer was captured: its last bytes are data's.
                handle(chunk, data: data, tail: UnsafeRawBufferPointer(rebasing: data.suffix(Int(CAPTURE_TAIL))), into: &exchanges)
            } else {
                withUnsafeBytes(of: chunk.tail) { tail in
                    handle(chunk, data: data, tail: UnsafeRawBufferPointer(rebasing: tail.prefix(Int(chunk.tail_captured))), into: &exchanges)
                }
            }
        case UInt32(CAPTURE_EVENT_CONTEXT):
            guard event.count >= MemoryLayout<capture_context_event>.size else { return malformed() }
            let context = event.loadUnaligned(as: capture_context_event.self)
            if decided.count >= Self.decidedLimit { decided.removeAll(keepingCapacity: true) }
            decided[context.connection] = KernelDecidedIdentity(context)
        case UInt32(CAPTURE_EVENT_CLOSE):
            guard event.count >= MemoryLayout<capture_close_event>.size else { return malformed() }
            let close = event.loadUnaligned(as: capture_close_event.self)
            let closed = entries.removeValue(forKey: close.connection)
            peerLinks.closed(connection: close.connection, closed?.connection)
            guard let entry = closed else {
                // TLS whose plaintext no hook read (neither libssl nor Go's crypto/tls): not traced, and said so.
                if close.flags & UInt8(CAPTURE_FLAG_TLS) != 0, close.bytes_sent &+ close.bytes_received > 0 {
                    countUnreadTLS(pid: close.header.pid)
                }
                return
            }
            if let parser = entry.parser {
                let first = exchanges.count
                parser.close(at: close.header.timestamp_ns,
                             context: context(entry, pid: close.header.pid, timestamp: close.header.timestamp_ns, position: entry.received),
                             into: &exchanges)
                finish(entry, exchanges: &exchanges, from: first)
            } else if !entry.givenUp && entry.attempts > 0 {
                countUnclaimed(entry) // it carried bytes, and ended before any parser recognised them
            }
        default:
            malformed()
        }
    }

    private func handle(_ event: capture_chunk_event, data: UnsafeRawBufferPointer, tail: UnsafeRawBufferPointer,
                        into exchanges: inout [Exchange]) {
        let entry: Entry
        if let known = entries[event.connection] {
            entry = known
        } else {
            if entries.count >= Self.limit {
                counters.evicted.add(UInt64(entries.count), ordering: .relaxed)
                entries.removeAll(keepingCapacity: true)
            }
            entry = Entry(connection: CaptureConnection(id: event.connection, tuple: event.tuple,
                                                        isTLS: event.flags & UInt8(CAPTURE_FLAG_TLS) != 0),
                          pid: event.header.pid)
            entries[event.connection] = entry
        }
        if event.flags & UInt8(CAPTURE_FLAG_TLS) != 0 { entry.connection.isTLS = true }
        var chunk = CaptureChunk(
            pid: event.header.pid, tid: event.header.tid, goid: entry.servesOnThreads ? TraceContexts.Goroutine.thread(event.header.tid) : event.goid,
            direction: event.direction == UInt8(CAPTURE_DIRECTION_SEND) ? .send : .receive,
            isTLSPlaintext: event.source != UInt8(CAPTURE_SOURCE_SOCKET), length: UInt64(event.length), data: data, tail: tail,
            timestamp: event.header.timestamp_ns)
        let position = chunk.direction == .send ? entry.sent : entry.received
        let decided = decided.isEmpty ? nil : takeDecided(for: event)
        if chunk.direction == .send {
            entry.sent &+= chunk.length &+ UInt64(decided?.injectedBytes ?? 0)
        } else {
            entry.received &+= chunk.length
        }
        if let parser = entry.parser {
            let first = exchanges.count
            parser.consume(chunk, context: context(entry, pid: chunk.pid, timestamp: chunk.timestamp, position: position, namespace: event.netns,
                                                   decided: decided),
                           into: &exchanges)
            finish(entry, exchanges: &exchanges, from: first)
            return
        }
        guard !entry.givenUp, !data.isEmpty else { return }
        guard let process = parsersOf(entry.pid, event.follows) else { return }
        if process.servesOnThreads && event.goid == 0 {
            entry.servesOnThreads = true
            chunk.goid = TraceContexts.Goroutine.thread(event.header.tid)
        }
        for candidate in process.parsers {
            guard let parser = candidate.claim(chunk, connection: entry.connection) else { continue }
            entry.ownedElsewhere = ExchangeKinds(process.ownedElsewhere)
            if process.ownedElsewhere.contains(parser.kind) {
                counters.ownedElsewhere.add(1, ordering: .relaxed)
                // A client connection stays parsed, its exchanges dropped: its requests name the other tracer's
                // calls, so a traced server on this host that reads them links to those spans.
                guard parser.kind.role == .client else {
                    giveUp(entry)
                    return
                }
                entry.shadow = true
            }
            entry.parser = parser
            recordClaim(entry, protocol: .init(name: candidate.protocolName, role: parser.kind.role))
            let first = exchanges.count
            parser.consume(chunk, context: context(entry, pid: chunk.pid, timestamp: chunk.timestamp, position: position, namespace: event.netns,
                                                   decided: decided),
                           into: &exchanges)
            finish(entry, exchanges: &exchanges, from: first)
            return
        }
        entry.attempts += 1
        if entry.attempts >= Self.claimAttempts {
            countUnclaimed(entry)
            giveUp(entry)
        }
    }

    /// `namespace`: the chunk's network namespace (`capture_chunk_event.netns`; 0: unknown).
    private func context(_ entry: Entry, pid: UInt32, timestamp: UInt64, position: UInt64, namespace: UInt32 = 0,
                         decided: KernelDecidedIdentity? = nil) -> ParserContext {
        ParserContext(traceContexts: traceContexts, links: peerLinks, connection: entry.connection, pid: pid, namespace: namespace,
                      timestamp: timestamp, position: position, shadow: entry.shadow,
                      ownedElsewhere: entry.ownedElsewhere, decided: decided)
    }

    /// The ids announced for this chunk: only for its direction (a stale announcement is dropped).
    private func takeDecided(for event: capture_chunk_event) -> KernelDecidedIdentity? {
        guard let found = decided.removeValue(forKey: event.connection) else { return nil }
        return found.direction == event.direction ? found : nil
    }

    /// The exchanges a parser of `entry` appended from `first` on: dropped for a shadow connection; a server
    /// span linked to its client after its read (``PeerLinks``) takes those ids.
    private func finish(_ entry: Entry, exchanges: inout [Exchange], from first: Int) {
        guard first < exchanges.count else { return }
        if entry.shadow {
            exchanges.removeSubrange(first...)
            return
        }
        guard peerLinks.hasServersToFinish else { return }
        for index in first..<exchanges.count {
            if let linked = peerLinks.finish(exchanges[index].identity.spanID) { exchanges[index].identity = linked }
        }
    }

    private func recordClaim(_ entry: Entry, protocol use: ProcessProtocols.Use) {
        let first = counters.byProcess.withLock { byProcess in
            defer { byProcess[entry.pid, default: ProcessProtocols()].connections[use, default: 0] += 1 }
            return byProcess[entry.pid]?.connections[use] == nil
        }
        if first { sighted?(entry.pid, .protocolSeen(use)) }
    }

    private func countUnclaimed(_ entry: Entry) {
        counters.unclaimedConnections.add(1, ordering: .relaxed)
        let first = counters.byProcess.withLock { byProcess in
            byProcess[entry.pid, default: ProcessProtocols()].unclaimed += 1
            return byProcess[entry.pid]?.unclaimed == 1
        }
        if first { sighted?(entry.pid, .firstUnclaimed(peer: entry.connection.peer)) }
    }

    private func countUnreadTLS(pid: UInt32) {
        counters.unreadTLSConnections.add(1, ordering: .relaxed)
        let first = counters.byProcess.withLock { byProcess in
            byProcess[pid, default: ProcessProtocols()].unreadTLS += 1
            return byProcess[pid]?.unreadTLS == 1
        }
        if first { sighted?(pid, .firstUnreadTLS) }
    }

    /// No parser will take this connection: the kernel only counts its bytes from now on.
    private func giveUp(_ entry: Entry) {
        entry.givenUp = true
        countOnly(entry.connection.id)
    }

    private func malformed() { counters.malformed.add(1, ordering: .relaxed) }

    /// Drops the connections of a process that exited (their close may never be seen); any thread.
    public func forget(pid: UInt32) {
        exited.withLock {
            $0.append(pid)
            anyExited.store(true, ordering: .releasing)
        }
        counters.byProcess.withLock { $0[pid] = nil }
    }
}
