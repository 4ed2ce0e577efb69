#if canImport(Glibc)
import Glibc
#endif
import CTracerABI
import Telemetry

/// One read or write of a connection, as the shared capture layer (bpf/capture.bpf.c) reported it:
/// a prefix of its bytes and its full length. Valid only during the call that receives it.
public struct CaptureChunk {
    public enum Direction: Sendable, Equatable {
        /// The process read these bytes.
        case receive
        /// The process wrote these bytes.
        case send
    }

    /// Host TGID and thread of the task that moved the bytes.
    public var pid: UInt32
    public var tid: UInt32
    /// What moved the bytes and serves the request they carry: in Go the goroutine (runtime.g.goid); in a
    /// process that is not Go, its thread (``TraceContexts/Goroutine/thread(_:)``); 0 when unknown.
    public var goid: UInt64
    public var direction: Direction
    /// TLS plaintext (from libssl), not socket bytes.
    public var isTLSPlaintext: Bool
    /// Bytes transferred (sendfile and splice transfers have no `data`).
    public var length: UInt64
    /// A prefix of the bytes (at most `CAPTURE_MAX_DATA`).
    public var data: UnsafeRawBufferPointer
    /// The last bytes of the transfer (at most `CAPTURE_TAIL`).
    public var tail: UnsafeRawBufferPointer
    /// CLOCK_MONOTONIC nanoseconds when the transfer returned.
    public var timestamp: UInt64

    public init(pid: UInt32, tid: UInt32 = 0, goid: UInt64 = 0, direction: Direction, isTLSPlaintext: Bool = false,
                length: UInt64, data: UnsafeRawBufferPointer, tail: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                timestamp: UInt64) {
        self.pid = pid
        self.tid = tid
        self.goid = goid
        self.direction = direction
        self.isTLSPlaintext = isTLSPlaintext
        self.length = length
        self.data = data
        self.tail = tail
        self.timestamp = timestamp
    }

    /// Whether the whole transfer is in `data`.
    public var isComplete: Bool { UInt64(data.count) == length }
}

/// A connection of the capture layer, as parsers see it: its addresses, formatted once.
public final class CaptureConnection: @unchecked Sendable {
    /// Unique while the agent runs (bpf/capture.bpf.c `capture_next_id`).
    public let id: UInt64
    /// This process's end and the other end (nil when unknown: TLS whose socket was never seen).
    public let local: SocketAddress?
    public let peer: SocketAddress?
    /// The connection carries TLS (its spans are `https`).
    public internal(set) var isTLS: Bool
    /// Both ends, raw (same-host linking, ``PeerLinks``); nil when unknown.
    let ends: ConnectionEnds?
    /// Same-host linking found no traced client at the other end of this server connection: its reads skip
    /// the lookup until a client request with these ends shows up (``PeerLinks``).
    var peerUntraced = false

    public init(id: UInt64, local: SocketAddress?, peer: SocketAddress?, isTLS: Bool) {
        self.id = id
        self.local = local
        self.peer = peer
        self.isTLS = isTLS
        ends = nil
    }

    init(id: UInt64, tuple: capture_tuple, isTLS: Bool) {
        let family = tuple.family == 0 ? 0 : UInt16(AF_INET6)
        self.id = id
        local = SocketAddress(family: family, bytes: tuple.local_address, port: tuple.local_port)
        peer = SocketAddress(family: family, bytes: tuple.remote_address, port: tuple.remote_port)
        self.isTLS = isTLS
        ends = family == 0 ? nil : ConnectionEnds(tuple)
    }
}

/// What a protocol parser hands the framework: finished exchanges of a semantic-convention family.
public enum Exchange: Sendable {
    case http(HTTPExchange)
    /// A database operation (SQL statement, Redis command, …): ``DatabaseSpans``.
    case database(DatabaseExchange)
    /// A message published or delivered (NATS, …): ``MessagingSpans``.
    case messaging(MessagingExchange)
    /// A remote procedure call (gRPC, …): ``RPCSpans``.
    case rpc(RPCExchange)

    /// Its span, by its semantic-convention family, with `resource`: its process's.
    public func span(resource: Resource, scope: InstrumentationScope, unixNanoseconds: (UInt64) -> UInt64) -> Span {
        switch self {
        case .http(let http): HTTPSpans.span(http, resource: resource, scope: scope, unixNanoseconds: unixNanoseconds)
        case .database(let database): DatabaseSpans.span(database, resource: resource, scope: scope, unixNanoseconds: unixNanoseconds)
        case .messaging(let message): MessagingSpans.span(message, resource: resource, scope: scope, unixNanoseconds: unixNanoseconds)
        case .rpc(let rpc): RPCSpans.span(rpc, resource: resource, scope: scope, unixNanoseconds: unixNanoseconds)
        }
    }
}

/// The side of a connection a process is on in an exchange, for every protocol family: the server answers
/// requests it reads (SpanKind SERVER), the client sends them (SpanKind CLIENT).
public enum ExchangeRole: Sendable, Hashable { case server, client }

/// Which kind of exchanges a parser makes on a connection once it knows its side.
public struct ExchangeKind: Hashable, Sendable {
    public enum Family: String, Sendable { case http, database, messaging, rpc }
    public let family: Family
    public let role: ExchangeRole

    public init(_ family: Family, _ role: ExchangeRole) {
        self.family = family
        self.role = role
    }
}

/// A set of exchange kinds as bits, cheap to copy into every ``ParserContext``.
struct ExchangeKinds: Sendable {
    private var bits: UInt8 = 0

    init(_ kinds: Set<ExchangeKind> = []) {
        for kind in kinds { bits |= Self.bit(kind) }
    }

    func contains(_ kind: ExchangeKind) -> Bool { bits & Self.bit(kind) != 0 }

    private static func bit(_ kind: ExchangeKind) -> UInt8 {
        let family: UInt8 = switch kind.family {
        case .http: 0
        case .database: 1
        case .messaging: 2
        case .rpc: 3
        }
        return 1 << (family * 2 + (kind.role == .client ? 1 : 0))
    }
}

/// A protocol parser of the shared capture layer (one per tracer folder, e.g. tracers/http): it claims a
/// connection from its first bytes and then parses its chunks in order.
public protocol ProtocolParser: Sendable {
    /// The protocol's name in reports (`tracer inspect --watch`, the agent's logs), e.g. `redis`, `http/2`.
    var protocolName: String { get }
    /// A parser for the connection whose first readable chunk is `chunk`, or nil when these bytes are not
    /// this protocol's (the framework then offers the next chunks, and gives up after a few).
    func claim(_ chunk: CaptureChunk, connection: CaptureConnection) -> (any ConnectionParser)?
}

/// The state of one claimed connection. Called on the agent's reader thread only, in event order.
public protocol ConnectionParser: AnyObject {
    /// The kind of exchanges this connection makes (its side is known from the claiming chunk).
    var kind: ExchangeKind { get }
    /// Consumes the next chunk; appends the exchanges it completes.
    func consume(_ chunk: CaptureChunk, context: ParserContext, into exchanges: inout [Exchange])
    /// The connection was closed at `timestamp`: appends what it completes; nothing more will come.
    func close(at timestamp: UInt64, context: ParserContext, into exchanges: inout [Exchange])
}
