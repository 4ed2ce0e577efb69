import Synchronization
import Telemetry
import TracerFramework

/// Claims connections whose first bytes are a memcached text-protocol command (a known command word followed
/// by a space or the end of the line) or a binary-protocol request header (magic 0x80, a known opcode): written
/// first, the process is the client; read first, the server (memcached).
struct MemcachedParser: ProtocolParser {
    var protocolName: String { "memcached" }
    let counters: MemcachedTracerCounters
    let queryText: DatabaseQueryText

    func claim(_ chunk: CaptureChunk, connection: CaptureConnection) -> (any ConnectionParser)? {
        let role: ExchangeRole = chunk.direction == .send ? .client : .server
        if MemcachedBinaryStream.Header.valid(chunk.data, magic: 0x80), MemcachedOpcodes.operation(chunk.data[1]) != nil {
            return MemcachedBinaryConnectionParser(connection: connection, role: role, queryText: queryText, counters: counters)
        }
        guard Self.startsWithCommand(chunk.data) else { return nil }
        return MemcachedConnectionParser(connection: connection, role: role, queryText: queryText, counters: counters)
    }

    /// A known command word, then a space, `\r\n` or `\n`.
    static func startsWithCommand(_ data: UnsafeRawBufferPointer) -> Bool {
        let word = data.prefix { $0 != 0x20 && $0 != 0x0D && $0 != 0x0A }
        guard word.count < data.count, MemcachedCommand(UnsafeRawBufferPointer(rebasing: word)) != nil else { return false }
        let after = data[word.count]
        return after == 0x20 || after == 0x0A || (after == 0x0D && word.count + 1 < data.count && data[word.count + 1] == 0x0A)
    }
}

/// The commands of the text protocol (memcached's doc/protocol.txt), with how their responses are shaped.
struct MemcachedCommand {
    enum Kind {
        /// `set`, `add`, `replace`, `append`, `prepend` (`cas` too): a data block follows the line.
        case storage(lengthWord: Int)
        /// `get`, `gets`, `gat`, `gats`: VALUE blocks up to END.
        case retrieval
        /// `stats [...]`: STAT (and other) lines up to END, or one line (RESET, OK).
        case statistics
        /// One response line: `delete`, `incr`, `decr`, `touch`, `flush_all`, `version`, `verbosity`.
        case single
        /// Meta commands (`mg`, `ma`, `md`, `mn`, `me`; `ms` carries a data block): one response line, VA with a
        /// data block.
        case meta(lengthWord: Int?)
        /// `quit`, `shutdown`: no response.
        case final
    }

    let name: String
    let kind: Kind

    init?(_ word: UnsafeRawBufferPointer) {
        guard word.count >= 2, word.count <= 9 else { return nil }
        let name = String(decoding: word, as: UTF8.self)
        switch name {
        case "set", "add", "replace", "append", "prepend": kind = .storage(lengthWord: 4)
        case "cas": kind = .storage(lengthWord: 4)
        case "get", "gets", "gat", "gats": kind = .retrieval
        case "stats": kind = .statistics
        case "delete", "incr", "decr", "touch", "flush_all", "version", "verbosity": kind = .single
        case "mg", "ma", "md", "mn", "me": kind = .meta(lengthWord: nil)
        case "ms": kind = .meta(lengthWord: 2)
        case "quit", "shutdown": kind = .final
        default: return nil
        }
        self.name = name
    }
}

/// One memcached connection: commands in order (several per read when pipelined), responses matched to them
/// in order. One exchange per command: its name; an ERROR, CLIENT_ERROR or SERVER_ERROR response as the status
/// code (error status). A command sent with `noreply` has no response: its exchange ends when it was sent
/// (or read). Bytes that are not the protocol break the stream: what was waiting is dropped and counted, and
/// parsing resumes at the next command that starts a write while nothing is waiting.
final class MemcachedConnectionParser: ConnectionParser {
    private struct Pending {
        var command: MemcachedCommand
        var text: String?
        var start: UInt64
        var pid: UInt32
        var identity: SpanIdentity
    }

    /// Most commands waiting for responses on one connection; older ones are dropped (and counted).
    static let maxPending = 1024

    let kind: ExchangeKind
    private let connection: CaptureConnection
    private let role: ExchangeRole
    private let queryText: DatabaseQueryText
    private let counters: MemcachedTracerCounters
    private var commands = MemcachedLineStream()
    private var responses = MemcachedLineStream()
    private var pending: [Pending] = []
    private var head = 0
    /// A command the parser does not follow (quiet meta commands, administrative ones) was sent: no more spans.
    private var stopped = false

    init(connection: CaptureConnection, role: ExchangeRole, queryText: DatabaseQueryText, counters: MemcachedTracerCounters) {
        self.connection = connection
        self.role = role
        self.queryText = queryText
        self.counters = counters
        kind = ExchangeKind(.database, role)
        pending.reserveCapacity(16)
    }

    private var commandDirection: CaptureChunk.Direction { role == .client ? .send : .receive }

    func consume(_ chunk: CaptureChunk, context: ParserContext, into exchanges: inout [Exchange]) {
        guard !stopped else { return }
        if chunk.direction == commandDirection {
            if commands.broken || responses.broken {
                // Resume at a command that starts this read, once nothing waits (a response still on its way would
                // be taken for this command's).
                guard head == pending.count, MemcachedParser.startsWithCommand(chunk.data) else { return }
                commands.reset()
                responses.reset()
            }
            commands.feed(chunk.data, length: chunk.length, tail: chunk.tail, position: context.position) { line in
                command(line, chunk: chunk, context: context, into: &exchanges)
            }
            if commands.broken { desynchronized() }
        } else {
            guard !responses.broken, !commands.broken else { return }
            responses.feed(chunk.data, length: chunk.length, tail: chunk.tail, position: context.position) { line in
                response(line, at: chunk.timestamp, into: &exchanges)
            }
            if responses.broken { desynchronized() }
        }
    }

    func close(at timestamp: UInt64, context: ParserContext, into exchanges: inout [Exchange]) {
        dropPending()
    }

    /// The stream stopped being the protocol: what waits cannot be matched any more.
    private func desynchronized() {
        counters.malformed.add(1, ordering: .relaxed)
        dropPending()
    }

    /// Commands without a response made no exchange: their outcome is unknown.
    private func dropPending() {
        counters.withoutReply.add(UInt64(pending.count - head), ordering: .relaxed)
        pending.removeAll(keepingCapacity: true)
        head = 0
    }

    // MARK: Commands

    private func command(_ line: MemcachedLineStream.Line, chunk: CaptureChunk, context: ParserContext,
                         into exchanges: inout [Exchange]) -> MemcachedLineStream.Next {
        guard !stopped else { return .line }
        let words = MemcachedWords.all(line.bytes)
        guard let first = words.first, let command = MemcachedCommand(first) else { return .refuse }
        var dataLength: Int?
        switch command.kind {
        case .storage(let lengthWord), .meta(let lengthWord?):
            guard lengthWord < words.count, let length = MemcachedWords.number(words[lengthWord]) else { return .refuse }
            dataLength = length
        default:
            break
        }
        if case .meta = command.kind, words.dropFirst(2).contains(where: { $0.first == UInt8(ascii: "q") }) {
            // Quiet mode: the response of a success is left out, so responses cannot be matched in order.
            counters.unsupported.add(1, ordering: .relaxed)
            stopped = true
            dropPending()
            return .line
        }
        let noReply = words.count > 1 && words.last.map { $0.elementsEqual("noreply".utf8) } == true
        // Same-host linking knows the command by its first letters and its line's length.
        let fingerprint = command.name.utf8.prefix(4).reduce(UInt64(0)) { $0 << 8 | UInt64($1) } << 32 | UInt64(line.length)
        let identity = role == .server
            ? context.identity(incoming: nil, requestStart: line.start, fingerprint: fingerprint)
            : context.clientIdentity(goid: chunk.goid, carried: nil, requestStart: line.start, fingerprint: fingerprint)
        let item = Pending(command: command, text: text(line, words: words), start: chunk.timestamp, pid: chunk.pid, identity: identity)
        if case .final = command.kind {
            // No response; the connection ends.
        } else if noReply {
            exchanges.append(.database(exchange(item, failed: false, code: nil, end: chunk.timestamp)))
        } else {
            enqueue(item)
        }
        return dataLength.map { .data($0) } ?? .line
    }

    private func enqueue(_ item: Pending) {
        if pending.count - head >= Self.maxPending {
            head += 1
            counters.abandoned.add(1, ordering: .relaxed)
        }
        if head > 64 && head * 2 > pending.count {
            pending.removeFirst(head)
            head = 0
        }
        pending.append(item)
    }

    /// `db.query.text`: the command line without its data block; sanitized, the arguments are `?`
    /// (`noreply` kept).
    private func text(_ line: MemcachedLineStream.Line, words: MemcachedWords.List) -> String? {
        switch queryText {
        case .off:
            return nil
        case .full:
            let text = DatabaseQueryText.full(line.bytes)
            return line.whole || text.hasSuffix("…") ? text : text + "…"
        case .sanitized:
            var text = String(decoding: words[0], as: UTF8.self)
            for word in words.dropFirst() {
                text += word.elementsEqual("noreply".utf8) ? " noreply" : " ?"
            }
            return text
        }
    }

    // MARK: Responses

    private func response(_ line: MemcachedLineStream.Line, at end: UInt64, into exchanges: inout [Exchange]) -> MemcachedLineStream.Next {
        guard !stopped else { return .line }
        let words = MemcachedWords.all(line.bytes, limit: 5)
        guard let first = words.first, first.first.map({ ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x30 && $0 <= 0x39) }) == true else {
            return .refuse // responses are upper-case words or numbers
        }
        guard head < pending.count else {
            counters.unmatchedResponses.add(1, ordering: .relaxed)
            return .line
        }
        let word = String(decoding: first.prefix(16), as: UTF8.self)
        if word == "ERROR" || word == "CLIENT_ERROR" || word == "SERVER_ERROR" {
            finish(failed: true, code: word, at: end, into: &exchanges)
            return .line
        }
        switch pending[head].command.kind {
        case .retrieval:
            if word == "VALUE" {
                guard words.count >= 4, let length = MemcachedWords.number(words[3]) else { return .refuse }
                return .data(length)
            }
            guard word == "END" else { return .refuse }
        case .statistics:
            guard word == "END" || word == "RESET" || word == "OK" else { return .line } // STAT, ITEM, PREFIX lines
        case .meta:
            finish(failed: false, code: nil, at: end, into: &exchanges)
            if word == "VA" {
                guard words.count >= 2, let length = MemcachedWords.number(words[1]) else { return .refuse }
                return .data(length)
            }
            return .line
        case .storage, .single, .final:
            break
        }
        finish(failed: false, code: nil, at: end, into: &exchanges)
        return .line
    }

    /// The oldest command's response ended.
    private func finish(failed: Bool, code: String?, at end: UInt64, into exchanges: inout [Exchange]) {
        let item = pending[head]
        head += 1
        if head == pending.count {
            pending.removeAll(keepingCapacity: true)
            head = 0
        }
        exchanges.append(.database(exchange(item, failed: failed, code: code, end: end)))
    }

    private func exchange(_ item: Pending, failed: Bool, code: String?, end: UInt64) -> DatabaseExchange {
        DatabaseExchange(pid: item.pid, role: role, system: "memcached", operation: item.command.name, start: item.start, end: end,
                         identity: item.identity, queryText: item.text, failed: failed, statusCode: code, local: connection.local,
                         peer: connection.peer)
    }
}

/// Counters of the memcached parser, for the agent's self-metrics.
public final class MemcachedTracerCounters: Sendable {
    /// Streams that stopped being the protocol (garbage, absurd lengths, uncaptured lines): parsing resumed later.
    public let malformed = Atomic<UInt64>(0)
    /// Commands whose response was never matched (connection closed, stream broken).
    public let withoutReply = Atomic<UInt64>(0)
    /// Responses with no command waiting.
    public let unmatchedResponses = Atomic<UInt64>(0)
    /// Commands dropped because too many were pipelined unanswered.
    public let abandoned = Atomic<UInt64>(0)
    /// Connections that sent a command not followed (quiet meta commands): no more spans.
    public let unsupported = Atomic<UInt64>(0)

    public init() {}
}
