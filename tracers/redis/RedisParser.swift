import Synchronization
import Telemetry
import TracerFramework

/// Claims connections whose first bytes are a Redis command as RESP sends it (`*N\r\n$len\r\nNAME`, NAME a
/// known command): written first, the process is the client; read first, the server. An array reply of a
/// connection seen mid-stream does not start with a command name, so it is not mistaken for a command.
struct RedisParser: ProtocolParser {
    var protocolName: String { "redis" }
    let counters: RedisTracerCounters
    let queryText: DatabaseQueryText

    func claim(_ chunk: CaptureChunk, connection: CaptureConnection) -> (any ConnectionParser)? {
        guard Self.startsWithCommand(chunk.data) else { return nil }
        return RedisConnectionParser(connection: connection, role: chunk.direction == .send ? .client : .server,
                                     queryText: queryText, counters: counters)
    }

    /// `*<count>\r\n$<length>\r\n<known command>`.
    static func startsWithCommand(_ data: UnsafeRawBufferPointer) -> Bool {
        guard data.count >= 8, data[0] == UInt8(ascii: "*") else { return false }
        var index = 1
        func digits() -> Int? {
            var value = 0
            let start = index
            while index < data.count, data[index] >= 0x30, data[index] <= 0x39, index - start < 9 {
                value = value * 10 + Int(data[index] - 0x30)
                index += 1
            }
            return index > start ? value : nil
        }
        guard let count = digits(), count >= 1, index + 2 < data.count, data[index] == 0x0D, data[index + 1] == 0x0A,
              data[index + 2] == UInt8(ascii: "$") else { return false }
        index += 3
        guard let length = digits(), index + 2 + length <= data.count, data[index] == 0x0D, data[index + 1] == 0x0A else { return false }
        return RedisCommands.known(UnsafeRawBufferPointer(rebasing: data[(index + 2)..<(index + 2 + length)])) != nil
    }
}

/// One Redis connection: commands in order (several per read when pipelined; MULTI/EXEC commands each get
/// their `+QUEUED` reply), replies matched to them in order. One exchange per command: its name, the
/// database index once a SELECT told it, an error reply's prefix (`ERR`, `WRONGTYPE`) as the status code.
/// Bytes that are not RESP (or lengths beyond Redis' own limits) break the stream: what was waiting is
/// dropped and counted, and parsing resumes at the next command written while nothing is waiting.
final class RedisConnectionParser: ConnectionParser {
    private struct Pending {
        var operation: String?
        var namespace: Int?
        var text: String?
        /// The command is SELECT.
        var isSelect = false
        /// The command opens a subscription (SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE): no reply pairs follow.
        var subscribes = false
        var start: UInt64
        var pid: UInt32
        var identity: SpanIdentity
        /// SELECT: the index it selects, and the one before (restored when it fails).
        var selects: (index: Int, previous: Int?)? = nil

        init(start: UInt64, pid: UInt32, identity: SpanIdentity, namespace: Int? = nil) {
            self.start = start
            self.pid = pid
            self.identity = identity
            self.namespace = namespace
        }
    }

    /// Most commands waiting for replies on one connection; older ones are dropped (and counted).
    static let maxPending = 1024

    let kind: ExchangeKind
    private let connection: CaptureConnection
    private let role: ExchangeRole
    private let queryText: DatabaseQueryText
    private let counters: RedisTracerCounters
    private var commands = RESPStream()
    private var replies = RESPStream()
    /// Commands waiting for replies, oldest at `head`.
    private var pending: [Pending] = []
    private var head = 0
    /// The command being read, while `reading` (a stored value, filled in place as its arguments go by).
    private var current = Pending(start: 0, pid: 0, identity: SpanIdentity(traceID: .invalid, spanID: .invalid, parentSpanID: .invalid, flags: 0))
    private var reading = false
    private var currentText: [UInt8] = []
    /// The database index of the connection, once a SELECT said it.
    private var namespace: Int?
    /// The reply being read: an error's code.
    private var replyFailed = false
    private var replyCode: String?
    /// SUBSCRIBE turned the connection into a stream of messages: no more command/reply pairs.
    private var subscribed = false

    init(connection: CaptureConnection, role: ExchangeRole, queryText: DatabaseQueryText, counters: RedisTracerCounters) {
        self.connection = connection
        self.role = role
        self.queryText = queryText
        self.counters = counters
        kind = ExchangeKind(.database, role)
        pending.reserveCapacity(16)
    }

    private var commandDirection: CaptureChunk.Direction { role == .client ? .send : .receive }

    func consume(_ chunk: CaptureChunk, context: ParserContext, into exchanges: inout [Exchange]) {
        guard !subscribed else { return }
        if chunk.direction == commandDirection {
            if commands.broken || replies.broken {
                // Resume at a command that starts this read, once nothing waits (a reply still on its way would
                // be taken for this command's).
                guard head == pending.count, RedisParser.startsWithCommand(chunk.data) else { return }
                commands.reset()
                replies.reset()
            }
            commands.feed(chunk.data, length: chunk.length) { item in command(item, chunk: chunk, context: context) }
            if commands.broken { desynchronized() }
        } else {
            guard !replies.broken, !commands.broken else { return }
            replies.feed(chunk.data, length: chunk.length) { item in reply(item, chunk: chunk, into: &exchanges) }
            if replies.broken { desynchronized() }
        }
    }

    func close(at timestamp: UInt64, context: ParserContext, into exchanges: inout [Exchange]) {
        // Commands without a reply made no exchange: their outcome is unknown.
        counters.withoutReply.add(UInt64(pending.count - head), ordering: .relaxed)
        pending.removeAll()
        head = 0
    }

    /// The stream stopped being RESP: what waits cannot be matched any more.
    private func desynchronized() {
        counters.malformed.add(1, ordering: .relaxed)
        counters.withoutReply.add(UInt64(pending.count - head), ordering: .relaxed)
        pending.removeAll(keepingCapacity: true)
        head = 0
        reading = false
    }

    // MARK: Commands

    private func command(_ item: RESPStream.Item, chunk: CaptureChunk, context: ParserContext) {
        switch item {
        case .start:
            current = Pending(start: chunk.timestamp, pid: chunk.pid, identity: identity(chunk: chunk, context: context),
                              namespace: namespace)
            reading = true
            currentText.removeAll(keepingCapacity: true)
        case .bulk(_, let depth, let index, let bytes, let whole) where depth == 1:
            argument(index: index, bytes, whole: whole)
        case .line(_, let depth, _, let bytes) where depth == 0:
            // An inline command: its words are the arguments.
            for (position, word) in bytes.split(separator: 0x20, omittingEmptySubsequences: true).enumerated() {
                argument(index: position, UnsafeRawBufferPointer(rebasing: word), whole: true)
            }
        case .end:
            guard reading else { return }
            reading = false
            if queryText != .off && !currentText.isEmpty { current.text = String(decoding: currentText, as: UTF8.self) }
            if let selects = current.selects { namespace = selects.index }
            if current.subscribes {
                subscribed = true
                counters.subscribedConnections.add(1, ordering: .relaxed)
                return
            }
            if pending.count - head >= Self.maxPending {
                head += 1
                counters.abandoned.add(1, ordering: .relaxed)
            }
            if head > 64 && head * 2 > pending.count {
                pending.removeFirst(head)
                head = 0
            }
            pending.append(current)
        default:
            break
        }
    }

    /// Argument `index` of the current command (0: its name).
    private func argument(index: Int, _ bytes: UnsafeRawBufferPointer, whole: Bool) {
        guard reading else { return }
        if index == 0 {
            current.operation = whole ? RedisCommands.name(bytes) : nil
            let key = whole ? RedisCommands.Key(bytes) : nil
            current.isSelect = key == .select
            current.subscribes = key.map(RedisCommands.Key.subscriptions.contains) ?? false
        } else if index == 1, current.isSelect, whole, let database = RESPStream.number(bytes), database >= 0,
                  database < Int64(Int32.max) {
            current.selects = (Int(database), namespace)
        }
        guard queryText != .off, currentText.count < DatabaseQueryText.limit else { return }
        if index > 0 { currentText.append(0x20) }
        if index == 0, let operation = current.operation {
            currentText.append(contentsOf: operation.utf8) // the name as db.operation.name spells it
        } else if index == 0 || queryText == .full {
            currentText.append(contentsOf: bytes.prefix(DatabaseQueryText.limit - currentText.count))
            if !whole { currentText.append(contentsOf: "…".utf8) }
        } else {
            currentText.append(UInt8(ascii: "?"))
        }
    }

    /// A client command made while its thread serves a request is that request's child; a server span starts
    /// a trace (RESP carries no trace context).
    private func identity(chunk: CaptureChunk, context: ParserContext) -> SpanIdentity {
        if role == .server { return context.identity(incoming: nil) }
        return context.traceContexts.child(of: context.traceContexts.serving(.init(pid: chunk.pid, goid: chunk.goid)))
    }

    // MARK: Replies

    private func reply(_ item: RESPStream.Item, chunk: CaptureChunk, into exchanges: inout [Exchange]) {
        switch item {
        case .start(let type):
            replyFailed = type == UInt8(ascii: "-") || type == UInt8(ascii: "!")
            replyCode = nil
        case .line(let type, let depth, _, let bytes) where depth == 0 && type == UInt8(ascii: "-"):
            replyCode = Self.errorCode(bytes)
        case .bulk(let type, let depth, _, let bytes, _) where depth == 0 && type == UInt8(ascii: "!"):
            replyCode = Self.errorCode(bytes)
        case .end(let outOfBand):
            guard !outOfBand else { return }
            guard head < pending.count else {
                counters.unmatchedReplies.add(1, ordering: .relaxed)
                return
            }
            let command = pending[head]
            head += 1
            if head == pending.count {
                pending.removeAll(keepingCapacity: true)
                head = 0
            }
            if replyFailed, let selects = command.selects, namespace == selects.index { namespace = selects.previous }
            exchanges.append(.database(DatabaseExchange(
                pid: command.pid, role: role, system: "redis", operation: command.operation, start: command.start, end: chunk.timestamp,
                identity: command.identity, namespace: command.namespace.map { String($0) }, queryText: command.text, failed: replyFailed,
                statusCode: replyFailed ? replyCode : nil, local: connection.local, peer: connection.peer)))
        default:
            break
        }
    }

    /// The first word of an error reply (`ERR`, `WRONGTYPE`, `NOAUTH`) when it is one (upper-case letters).
    static func errorCode(_ message: UnsafeRawBufferPointer) -> String? {
        let word = message.prefix { $0 != 0x20 }
        guard !word.isEmpty, word.count <= 32, word.allSatisfy({ $0 >= 0x41 && $0 <= 0x5A }) else { return nil }
        return String(decoding: word, as: UTF8.self)
    }
}

/// Counters of the Redis parser, for the agent's self-metrics.
public final class RedisTracerCounters: Sendable {
    /// Streams that stopped being RESP (garbage, absurd lengths, uncaptured headers): parsing resumed later.
    public let malformed = Atomic<UInt64>(0)
    /// Commands whose reply was never matched (connection closed, stream broken).
    public let withoutReply = Atomic<UInt64>(0)
    /// Replies with no command waiting (a connection seen mid-stream).
    public let unmatchedReplies = Atomic<UInt64>(0)
    /// Commands dropped because too many were pipelined unanswered.
    public let abandoned = Atomic<UInt64>(0)
    /// Connections that entered SUBSCRIBE mode (their messages make no spans).
    public let subscribedConnections = Atomic<UInt64>(0)

    public init() {}
}
