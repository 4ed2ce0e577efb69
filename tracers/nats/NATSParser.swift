import Synchronization
import Telemetry
import TracerFramework

/// Claims connections whose first bytes are the NATS client protocol: the server's greeting `INFO {…}` (read
/// first: the process is a client; written first: the server), a client's `CONNECT {…}` (written: client; read:
/// server), or — a connection seen mid-stream — a whole well-formed `PUB`/`HPUB`/`SUB`/`UNSUB` line (written:
/// client) or `MSG`/`HMSG` line (read: client), the other way round for the server.
struct NATSParser: ProtocolParser {
    var protocolName: String { "nats" }
    let counters: NATSTracerCounters

    func claim(_ chunk: CaptureChunk, connection: CaptureConnection) -> (any ConnectionParser)? {
        guard let role = Self.role(chunk) else { return nil }
        return NATSConnectionParser(connection: connection, role: role, counters: counters)
    }

    /// The side of the connection the chunk's process is on, when the chunk starts with the NATS protocol.
    static func role(_ chunk: CaptureChunk) -> ExchangeRole? {
        let data = chunk.data
        guard let (verb, _) = NATSLine.verb(data) else { return nil }
        let sent = chunk.direction == .send
        switch verb {
        case .info, .connect:
            let line = data.firstIndex(of: 0x0A).map { UnsafeRawBufferPointer(rebasing: data[..<$0]) } ?? data
            guard NATSLine(line) != nil else { return nil }
            return (verb == .info) == sent ? .server : .client
        case .pub, .hpub, .sub, .unsub, .msg, .hmsg:
            guard let newline = data.firstIndex(of: 0x0A), newline > 0, data[newline - 1] == 0x0D,
                  NATSLine(UnsafeRawBufferPointer(rebasing: data[..<(newline - 1)])) != nil else { return nil }
            let fromClient = verb != .msg && verb != .hmsg
            return fromClient == sent ? .client : .server
        default:
            return nil
        }
    }
}

/// One NATS connection. A client (publisher, subscriber, or both) makes a PRODUCER span per `PUB`/`HPUB` it
/// writes and a CONSUMER span per `MSG`/`HMSG` delivered to it; the server (nats-server) makes a SERVER span per
/// `PUB`/`HPUB` it reads (deliveries it writes are the subscribers' spans). With `verbose` set in `CONNECT`, every
/// `CONNECT`, `PUB`, `HPUB`, `SUB` and `UNSUB` is answered `+OK` or `-ERR` in order: a publish span ends at its
/// answer, an error answer makes it an error. Without `verbose` nothing answers a publish: its span ends when its
/// payload was written (client) or read (server).
final class NATSConnectionParser: ConnectionParser {
    /// A message whose line went by and whose payload has not ended yet.
    private struct Message {
        var operation: MessagingExchange.Operation
        var destination: String
        var bodySize: Int
        var start: UInt64
        var pid: UInt32
        var lineStart: UInt64
        var fingerprint: UInt64
        /// A delivery's reply subject (a request's inbox).
        var reply: String?
    }

    /// An operation waiting for its `+OK`/`-ERR` (verbose mode): a publish, or another operation (`CONNECT`,
    /// `SUB`, `UNSUB`).
    private enum Pending {
        case publish(MessagingExchange)
        case other
    }

    /// Most operations waiting for answers on one connection; older ones are dropped (and counted).
    static let maxPending = 1024
    /// Most delivered requests remembered per connection for their replies; older ones are forgotten.
    static let maxRequests = 64
    /// Generated per-message reply subjects, by prefix, and the template that names them all: the clients'
    /// request/reply inboxes, and JetStream's acknowledgement subjects (stream, consumer and sequence numbers in them).
    static let temporaryDestinations = [("_INBOX.", "_INBOX.>"), ("$JS.ACK.", "$JS.ACK.>")]

    let kind: ExchangeKind
    private let connection: CaptureConnection
    private let role: ExchangeRole
    private let counters: NATSTracerCounters
    /// The client's operations (written by a client, read by the server), and what the server sends.
    private var operations = NATSStream()
    private var answers = NATSStream()
    private var publishing: Message?
    private var delivering: Message?
    private var pending: [Pending] = []
    private var head = 0
    /// Requests delivered to this client (reply subject, their process span), newest last: a publish to one of
    /// those subjects is its reply, the child of that span.
    private var requests: [(reply: String, identity: SpanIdentity)] = []
    /// `CONNECT` asked for `+OK` after every operation.
    private var verbose = false
    /// Answers can be matched with operations (false once a stream broke in verbose mode: publish spans then end
    /// when written, as without verbose).
    private var answersInStep = true

    init(connection: CaptureConnection, role: ExchangeRole, counters: NATSTracerCounters) {
        self.connection = connection
        self.role = role
        self.counters = counters
        kind = ExchangeKind(.messaging, role)
    }

    private var operationDirection: CaptureChunk.Direction { role == .client ? .send : .receive }
    private var matchingAnswers: Bool { verbose && answersInStep }

    func consume(_ chunk: CaptureChunk, context: ParserContext, into exchanges: inout [Exchange]) {
        if chunk.direction == operationDirection {
            if operations.broken {
                guard NATSLine.verb(chunk.data) != nil else { return }
                operations.reset()
            }
            operations.feed(chunk.data, length: chunk.length, position: context.position) { item in
                operation(item, chunk: chunk, context: context, into: &exchanges)
            }
            if operations.broken { desynchronized(publishing: true) }
        } else {
            if answers.broken {
                guard NATSLine.verb(chunk.data) != nil else { return }
                answers.reset()
            }
            answers.feed(chunk.data, length: chunk.length, position: context.position) { item in
                answer(item, chunk: chunk, context: context, into: &exchanges)
            }
            if answers.broken { desynchronized(publishing: false) }
        }
    }

    func close(at timestamp: UInt64, context: ParserContext, into exchanges: inout [Exchange]) {
        dropPending()
    }

    /// A stream stopped being the protocol: its message in flight is lost, and answers can no longer be matched.
    private func desynchronized(publishing lost: Bool) {
        counters.malformed.add(1, ordering: .relaxed)
        if lost { publishing = nil } else { delivering = nil }
        if verbose { answersInStep = false }
        dropPending()
    }

    /// Operations without an answer made no span: their outcome is unknown.
    private func dropPending() {
        let publishes = pending[head...].reduce(0) { if case .publish = $1 { $0 + 1 } else { $0 } }
        counters.withoutReply.add(UInt64(publishes), ordering: .relaxed)
        pending.removeAll(keepingCapacity: true)
        head = 0
    }

    // MARK: Operations (client → server)

    private func operation(_ item: NATSStream.Item, chunk: CaptureChunk, context: ParserContext,
                           into exchanges: inout [Exchange]) -> NATSStream.Next {
        switch item {
        case .payloadEnd(let headers, _):
            guard let message = publishing else { return .line }
            publishing = nil
            published(message, traceparent: NATSHeaders.traceparent(headers), chunk: chunk, context: context, into: &exchanges)
            return .line
        case .line(let line):
            guard let parsed = NATSLine(line.bytes) else { return .refuse }
            switch parsed.verb {
            case .connect:
                verbose = NATSHeaders.verbose(parsed.argument)
                if matchingAnswers { enqueue(.other) }
            case .sub, .unsub:
                if matchingAnswers { enqueue(.other) }
            case .ping, .pong:
                break
            case .pub, .hpub:
                publishing = message(.publish, parsed, line: line, chunk: chunk)
                return .payload(headers: parsed.headerBytes, total: parsed.totalBytes)
            case .info, .msg, .hmsg, .ok, .err:
                return .refuse // the server's, never a client's
            }
            return .line
        }
    }

    private func message(_ operation: MessagingExchange.Operation, _ line: NATSLine, line raw: NATSStream.Line,
                         chunk: CaptureChunk) -> Message {
        Message(operation: operation, destination: String(decoding: line.subject, as: UTF8.self),
                bodySize: line.totalBytes - line.headerBytes, start: chunk.timestamp, pid: chunk.pid, lineStart: raw.start,
                fingerprint: Self.fingerprint(raw))
    }

    /// A published message's payload ended: a PRODUCER span (client) or SERVER span (server), now or at its answer.
    private func published(_ message: Message, traceparent: W3CTraceContext?, chunk: CaptureChunk, context: ParserContext,
                           into exchanges: inout [Exchange]) {
        let identity: SpanIdentity
        if role == .server {
            identity = context.identity(incoming: traceparent, goid: chunk.goid, requestStart: message.lineStart, fingerprint: message.fingerprint)
        } else if traceparent == nil, let request = requests.lastIndex(where: { $0.reply == message.destination }) {
            let parent = requests.remove(at: request).identity
            identity = context.clientIdentity(goid: chunk.goid, continuing: W3CTraceContext(traceID: parent.traceID, parentSpanID: parent.spanID,
                                                                                           flags: UInt8(truncatingIfNeeded: parent.flags)),
                                              source: .reply, requestStart: message.lineStart, fingerprint: message.fingerprint)
        } else {
            identity = context.clientIdentity(goid: chunk.goid, continuing: traceparent, requestStart: message.lineStart, fingerprint: message.fingerprint)
        }
        let exchange = exchange(message, end: chunk.timestamp, identity: identity)
        if matchingAnswers {
            enqueue(.publish(exchange))
        } else {
            exchanges.append(.messaging(exchange))
        }
    }

    private func enqueue(_ item: Pending) {
        if pending.count - head >= Self.maxPending {
            if case .publish = pending[head] { counters.abandoned.add(1, ordering: .relaxed) }
            head += 1
        }
        if head > 64 && head * 2 > pending.count {
            pending.removeFirst(head)
            head = 0
        }
        pending.append(item)
    }

    // MARK: Answers and deliveries (server → client)

    private func answer(_ item: NATSStream.Item, chunk: CaptureChunk, context: ParserContext,
                        into exchanges: inout [Exchange]) -> NATSStream.Next {
        switch item {
        case .payloadEnd(let headers, _):
            guard let message = delivering else { return .line }
            delivering = nil
            let identity = context.identity(incoming: NATSHeaders.traceparent(headers), goid: chunk.goid, requestStart: message.lineStart,
                                            fingerprint: message.fingerprint)
            if let reply = message.reply {
                if requests.count >= Self.maxRequests { requests.removeFirst() }
                requests.append((reply, identity))
            }
            exchanges.append(.messaging(exchange(message, end: chunk.timestamp, identity: identity)))
            return .line
        case .line(let line):
            guard let parsed = NATSLine(line.bytes) else { return .refuse }
            switch parsed.verb {
            case .info, .ping, .pong:
                break
            case .ok:
                answered(error: nil, at: chunk.timestamp, into: &exchanges)
            case .err:
                counters.serverErrors.add(1, ordering: .relaxed)
                let text = NATSHeaders.errorText(parsed.argument)
                // A stale connection is announced, not an answer.
                if !text.hasPrefix("Stale Connection") { answered(error: text, at: chunk.timestamp, into: &exchanges) }
            case .msg, .hmsg:
                // The server's deliveries are the subscribers' spans: skipped on its side.
                if role == .client {
                    delivering = message(.process, parsed, line: line, chunk: chunk)
                    delivering?.reply = parsed.reply.map { String(decoding: $0, as: UTF8.self) }
                }
                return .payload(headers: parsed.headerBytes, total: parsed.totalBytes)
            case .connect, .pub, .hpub, .sub, .unsub:
                return .refuse // a client's, never the server's
            }
            return .line
        }
    }

    /// The oldest waiting operation got its answer (`error`: the `-ERR` text).
    private func answered(error: String?, at end: UInt64, into exchanges: inout [Exchange]) {
        guard matchingAnswers else { return }
        guard head < pending.count else {
            counters.unmatchedResponses.add(1, ordering: .relaxed)
            return
        }
        let item = pending[head]
        head += 1
        if head == pending.count {
            pending.removeAll(keepingCapacity: true)
            head = 0
        }
        guard case .publish(var exchange) = item else { return }
        exchange.end = end
        if let error {
            exchange.failed = true
            exchange.errorMessage = error
            exchange.errorType = NATSHeaders.errorType(error)
        }
        exchanges.append(.messaging(exchange))
    }

    private func exchange(_ message: Message, end: UInt64, identity: SpanIdentity) -> MessagingExchange {
        var exchange = MessagingExchange(pid: message.pid, system: "nats", operation: message.operation, destination: message.destination,
                                         start: message.start, end: end, identity: identity)
        exchange.bodySize = message.bodySize
        exchange.role = role
        exchange.local = connection.local
        exchange.peer = connection.peer
        if let (_, template) = Self.temporaryDestinations.first(where: { message.destination.hasPrefix($0.0) }) {
            exchange.destinationTemplate = template
            exchange.temporaryDestination = true
        }
        return exchange
    }

    /// Same-host linking knows a message by its control line (the same bytes on both ends): FNV-1a of it and its
    /// length.
    static func fingerprint(_ line: NATSStream.Line) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in line.bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash ^ UInt64(line.length)
    }
}

/// Counters of the NATS parser, for the agent's self-metrics.
public final class NATSTracerCounters: Sendable {
    /// Streams that stopped being the protocol (garbage, absurd sizes, uncaptured lines): parsing resumed later.
    public let malformed = Atomic<UInt64>(0)
    /// Publishes waiting for their `+OK` when the connection closed or its stream broke (verbose mode).
    public let withoutReply = Atomic<UInt64>(0)
    /// `+OK`/`-ERR` answers with no operation waiting (verbose mode).
    public let unmatchedResponses = Atomic<UInt64>(0)
    /// Publishes dropped unanswered because more than 1024 waited (verbose mode).
    public let abandoned = Atomic<UInt64>(0)
    /// `-ERR` messages from the server.
    public let serverErrors = Atomic<UInt64>(0)

    public init() {}
}
