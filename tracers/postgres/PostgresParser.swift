import Synchronization
import Telemetry
import TracerFramework

/// Claims connections whose first bytes are a PostgreSQL startup-phase request (StartupMessage of protocol
/// 3.0, SSLRequest, GSSENCRequest): written first, the process is the client; read first, the server (a
/// postgres backend). A connection seen mid-stream is not claimed.
struct PostgresParser: ProtocolParser {
    var protocolName: String { "postgresql" }
    let counters: PostgresTracerCounters
    let queryText: DatabaseQueryText

    func claim(_ chunk: CaptureChunk, connection: CaptureConnection) -> (any ConnectionParser)? {
        guard Self.startsWithStartupRequest(chunk.data) else { return nil }
        return PostgresConnectionParser(connection: connection, role: chunk.direction == .send ? .client : .server,
                                        queryText: queryText, counters: counters)
    }

    /// A length (8 up to the startup limit; exactly 8 for the encryption requests) and a known request code.
    static func startsWithStartupRequest(_ data: UnsafeRawBufferPointer) -> Bool {
        guard data.count >= 8 else { return false }
        let length = PostgresMessageStream.int32(data, at: 0), code = PostgresMessageStream.int32(data, at: 4)
        switch code {
        case PostgresProtocol.protocolVersion3: return length > 8 && length <= UInt32(PostgresMessageStream.maxStartupLength)
        case PostgresProtocol.sslRequestCode, PostgresProtocol.gssEncryptionRequestCode: return length == 8
        default: return false
        }
    }
}

/// One PostgreSQL connection. The frontend's statements wait in order — a simple Query with each of its
/// statements, each Parse (until its ParseComplete) and Execute of the extended protocol, each Sync — and the
/// backend's CommandComplete and ErrorResponse messages end them in that order: one exchange per executed
/// statement, and one per statement that failed at its Parse. After an error in an extended-protocol batch the
/// server skips to Sync: the Executes in between make no exchange (counted).
final class PostgresConnectionParser: ConnectionParser {
    /// A statement's summary, shaped query text, as Parse or Query sent it.
    struct Statement {
        var summary: SQLStatementSummary
        var text: String?
    }

    /// What waits for the backend, in order.
    private enum Pending {
        /// A simple Query: its statements, and the next one to complete.
        case query(statements: [Statement], next: Int, start: UInt64, pid: UInt32, identity: SpanIdentity)
        /// An Execute of a portal bound to a statement (nil when it was prepared before the agent saw it).
        case execute(Statement?, start: UInt64, pid: UInt32, identity: SpanIdentity)
        /// A Parse, until its ParseComplete. Its ErrorResponse (a statement the server cannot prepare: pgx
        /// prepares each statement in a batch of its own, with no Execute) ends it as a failed statement; its
        /// span's ids are made only then, from where the Parse was (`goid`, `message`: stream position, and
        /// the type-and-length fingerprint of ``identity(goid:requestStart:fingerprint:context:)``).
        case parse(Statement, start: UInt64, pid: UInt32, goid: UInt64, message: UInt64, fingerprint: UInt64)
        /// A Sync: the backend answers it with ReadyForQuery.
        case sync
    }

    /// Most items waiting for the backend on one connection; older ones are dropped (and counted).
    static let maxPending = 1024
    /// Most named prepared statements (and named portals) remembered per connection.
    static let maxNamedStatements = 256
    /// Most statements of one simple Query whose summaries are kept.
    static let maxStatementsPerQuery = 64

    let kind: ExchangeKind
    private let connection: CaptureConnection
    private let role: ExchangeRole
    private let queryText: DatabaseQueryText
    private let counters: PostgresTracerCounters
    private var frontend = PostgresMessageStream(untyped: true) { type in
        type == UInt8(ascii: "Q") || type == UInt8(ascii: "P") || type == UInt8(ascii: "B") || type == UInt8(ascii: "E")
            || type == UInt8(ascii: "C")
    }
    private var backend = PostgresMessageStream(untyped: false) { type in
        type == UInt8(ascii: "C") || type == UInt8(ascii: "E")
    }
    private var pending: [Pending] = []
    private var head = 0
    /// `database` of the StartupMessage (else its `user`, the server's default database).
    private var namespace: String?
    /// Prepared statements by name ("" the unnamed one) and the statement bound to each portal.
    private var statements: [String: Statement] = [:]
    private var portals: [String: Statement] = [:]
    /// The connection went encrypted (SSL or GSS accepted): nothing more to read.
    private var encrypted = false

    init(connection: CaptureConnection, role: ExchangeRole, queryText: DatabaseQueryText, counters: PostgresTracerCounters) {
        self.connection = connection
        self.role = role
        self.queryText = queryText
        self.counters = counters
        kind = ExchangeKind(.database, role)
        pending.reserveCapacity(16)
    }

    private var frontendDirection: CaptureChunk.Direction { role == .client ? .send : .receive }

    func consume(_ chunk: CaptureChunk, context: ParserContext, into exchanges: inout [Exchange]) {
        guard !encrypted, !frontend.broken, !backend.broken else { return }
        if chunk.direction == frontendDirection {
            frontend.feed(chunk.data, length: chunk.length, position: context.position) { message in frontendMessage(message, chunk: chunk, context: context) }
        } else {
            backend.feed(chunk.data, length: chunk.length, position: context.position) { message in backendMessage(message, chunk: chunk, context: context, into: &exchanges) }
        }
        if frontend.broken || backend.broken {
            // The stream stopped being the protocol: what waits cannot be matched any more.
            counters.malformed.add(1, ordering: .relaxed)
            dropPending()
        }
    }

    func close(at timestamp: UInt64, context: ParserContext, into exchanges: inout [Exchange]) {
        dropPending()
    }

    /// Statements waiting are dropped unanswered (their outcome is unknown).
    private func dropPending() {
        for item in pending[head...] {
            switch item {
            case .execute, .query: counters.withoutReply.add(1, ordering: .relaxed)
            case .parse, .sync: break
            }
        }
        pending.removeAll(keepingCapacity: true)
        head = 0
    }

    // MARK: Frontend

    private func frontendMessage(_ message: PostgresMessageStream.Message, chunk: CaptureChunk, context: ParserContext) {
        var fields = NullTerminatedFields(message.body)
        if message.untyped {
            guard message.body.count >= 4 else { return }
            switch PostgresMessageStream.int32(message.body, at: 0) {
            case PostgresProtocol.protocolVersion3:
                startup(UnsafeRawBufferPointer(rebasing: message.body[4...]))
            case PostgresProtocol.sslRequestCode, PostgresProtocol.gssEncryptionRequestCode:
                backend.awaitingEncryptionAnswer = true
            case PostgresProtocol.cancelRequestCode:
                break
            default:
                counters.unsupportedStartup.add(1, ordering: .relaxed)
                encrypted = true // an unknown protocol version: nothing more is read
            }
            return
        }
        switch message.type {
        case UInt8(ascii: "Q"):
            let text = fields.next() ?? message.body
            enqueue(.query(statements: statements(ofQuery: text, whole: message.whole), next: 0, start: chunk.timestamp, pid: chunk.pid,
                           identity: identity(goid: chunk.goid, requestStart: message.start, fingerprint: Self.fingerprint(message), context: context)))
        case UInt8(ascii: "P"):
            guard let name = fields.next() else { return }
            let text = fields.next() ?? UnsafeRawBufferPointer(rebasing: message.body[(name.count + 1)...])
            let parsed = statement(text, whole: message.whole && fields.count > 1)
            remember(parsed, named: name, in: &statements)
            enqueue(.parse(parsed, start: chunk.timestamp, pid: chunk.pid, goid: chunk.goid, message: message.start,
                           fingerprint: Self.fingerprint(message)))
        case UInt8(ascii: "B"):
            guard let portal = fields.next(), let name = fields.next() else { return }
            let statement = name.isEmpty ? statements[""] : statements[String(decoding: name, as: UTF8.self)]
            if let statement { remember(statement, named: portal, in: &portals) } else { forget(portal, in: &portals) }
        case UInt8(ascii: "E"):
            guard let portal = fields.next() else { return }
            let statement = portal.isEmpty ? portals[""] : portals[String(decoding: portal, as: UTF8.self)]
            enqueue(.execute(statement, start: chunk.timestamp, pid: chunk.pid,
                             identity: identity(goid: chunk.goid, requestStart: message.start, fingerprint: Self.fingerprint(message), context: context)))
        case UInt8(ascii: "S"):
            enqueue(.sync)
        case UInt8(ascii: "C"):
            // Close of a statement (`S`) or a portal (`P`).
            guard let kind = message.body.first else { return }
            fields = NullTerminatedFields(UnsafeRawBufferPointer(rebasing: message.body.dropFirst()))
            guard let name = fields.next() else { return }
            if kind == UInt8(ascii: "S") { forget(name, in: &statements) } else { forget(name, in: &portals) }
        default:
            break
        }
    }

    /// StartupMessage parameters: name/value pairs, each NUL-terminated, then a NUL.
    private func startup(_ parameters: UnsafeRawBufferPointer) {
        var fields = NullTerminatedFields(parameters)
        var user: String?
        while let name = fields.next(), !name.isEmpty, let value = fields.next() {
            if name.elementsEqual("database".utf8), !value.isEmpty { namespace = String(decoding: value, as: UTF8.self) }
            if name.elementsEqual("user".utf8), !value.isEmpty { user = String(decoding: value, as: UTF8.self) }
        }
        if namespace == nil { namespace = user }
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

    private func remember(_ statement: Statement, named name: UnsafeRawBufferPointer, in table: inout [String: Statement]) {
        let key = String(decoding: name, as: UTF8.self)
        guard table.count < Self.maxNamedStatements || table[key] != nil || key.isEmpty else {
            counters.forgottenStatements.add(1, ordering: .relaxed)
            return
        }
        table[key] = statement
    }

    private func forget(_ name: UnsafeRawBufferPointer, in table: inout [String: Statement]) {
        table[String(decoding: name, as: UTF8.self)] = nil
    }

    /// The statements of a simple Query's text, split at the semicolons outside literals and comments.
    private func statements(ofQuery text: UnsafeRawBufferPointer, whole: Bool) -> [Statement] {
        var result: [Statement] = []
        var scanner = SQLStatementSplitter(text)
        while let piece = scanner.next(), result.count < Self.maxStatementsPerQuery {
            result.append(statement(piece, whole: whole || scanner.index < text.count))
        }
        return result
    }

    private func statement(_ text: UnsafeRawBufferPointer, whole: Bool) -> Statement {
        var shaped: String? = switch queryText {
        case .off: nil
        case .sanitized: DatabaseQueryText.sanitize(text)
        case .full: DatabaseQueryText.full(text)
        }
        // Text cut by the capture (or by the kept-body bound) ends with `…`, once.
        if !whole, let cut = shaped, !cut.hasSuffix("…") { shaped = cut + "…" }
        return Statement(summary: SQLStatementSummary(text), text: shaped)
    }

    /// A client statement made while its thread serves a request is that request's child; a server span is
    /// the child of the traced client's span at the other end of the connection on this host (the same
    /// message at the same place of the byte stream: ``PeerLinks``), else it starts a trace (the protocol
    /// carries no trace context).
    /// `goid` made the request that starts at `requestStart` of the frontend's byte stream.
    private func identity(goid: UInt64, requestStart: UInt64, fingerprint: UInt64, context: ParserContext) -> SpanIdentity {
        if role == .server { return context.identity(incoming: nil, requestStart: requestStart, fingerprint: fingerprint) }
        return context.clientIdentity(goid: goid, carried: nil, requestStart: requestStart, fingerprint: fingerprint)
    }

    /// What both ends know of a frontend message: its type and length.
    private static func fingerprint(_ message: PostgresMessageStream.Message) -> UInt64 {
        UInt64(message.type) << 32 | UInt64(message.length)
    }

    // MARK: Backend

    private func backendMessage(_ message: PostgresMessageStream.Message, chunk: CaptureChunk, context: ParserContext,
                                into exchanges: inout [Exchange]) {
        if message.encryptionAnswer {
            if message.type != UInt8(ascii: "N") {
                encrypted = true // `S` (SSL) or `G` (GSS): the rest is ciphertext
                counters.encryptedConnections.add(1, ordering: .relaxed)
            }
            return
        }
        switch message.type {
        case UInt8(ascii: "C"):
            var fields = NullTerminatedFields(message.body)
            complete(tag: fields.next(), failed: false, code: nil, at: chunk.timestamp, context: context, into: &exchanges)
        case UInt8(ascii: "s"):
            complete(tag: nil, failed: false, code: nil, at: chunk.timestamp, context: context, into: &exchanges) // PortalSuspended
        case UInt8(ascii: "E"):
            complete(tag: nil, failed: true, code: Self.sqlState(message.body), at: chunk.timestamp, context: context, into: &exchanges)
        case UInt8(ascii: "1"):
            parseComplete()
        case UInt8(ascii: "Z"):
            readyForQuery()
        default:
            break
        }
    }

    /// The head statement completed (CommandComplete, PortalSuspended) or failed (ErrorResponse).
    private func complete(tag: UnsafeRawBufferPointer?, failed: Bool, code: String?, at end: UInt64, context: ParserContext,
                          into exchanges: inout [Exchange]) {
        guard head < pending.count else {
            counters.unmatchedResponses.add(1, ordering: .relaxed)
            return
        }
        let statement: Statement?
        let start: UInt64, pid: UInt32, identity: SpanIdentity
        switch pending[head] {
        case .query(let statements, let next, let queryStart, let queryPID, let queryIdentity):
            statement = next < statements.count ? statements[next] : nil
            (start, pid, identity) = (queryStart, queryPID, queryIdentity)
            // The next statement of the query starts now, a sibling of this one; after an error none runs.
            let nextIdentity = role == .client
                ? context.traceContexts.child(of: context.traceContexts.serving(.init(pid: queryPID, goid: 0)))
                : context.traceContexts.newIdentity(parent: nil)
            pending[head] = .query(statements: statements, next: failed ? statements.count : next + 1, start: end, pid: queryPID,
                                   identity: nextIdentity)
        case .execute(let executed, let executeStart, let executePID, let executeIdentity):
            statement = executed
            (start, pid, identity) = (executeStart, executePID, executeIdentity)
            head += 1
            if failed { skipToSync() }
        case .parse(let parsed, let parseStart, let parsePID, let goid, let message, let fingerprint):
            // Only an error ends a Parse here (ParseComplete removed the ones that succeeded).
            guard failed else {
                counters.unmatchedResponses.add(1, ordering: .relaxed)
                return
            }
            statement = parsed
            (start, pid) = (parseStart, parsePID)
            identity = self.identity(goid: goid, requestStart: message, fingerprint: fingerprint, context: context)
            head += 1
            skipToSync()
        case .sync:
            // An error of a Bind with no Execute after it in the batch, or a response nothing asked for.
            counters.unmatchedResponses.add(1, ordering: .relaxed)
            return
        }
        exchanges.append(.database(DatabaseExchange(
            pid: pid, role: role, system: "postgresql", operation: statement?.summary.operation ?? tag.flatMap(Self.commandWord),
            start: start, end: end, identity: identity, collection: statement?.summary.collection, namespace: namespace,
            queryText: statement?.text, failed: failed, statusCode: failed ? code : nil, local: connection.local, peer: connection.peer)))
    }

    /// After an error the server skips to Sync: the batch's other Parses and Executes get no answer (the
    /// Executes are counted).
    private func skipToSync() {
        while head < pending.count {
            switch pending[head] {
            case .execute: counters.skippedAfterError.add(1, ordering: .relaxed)
            case .parse: break
            case .query, .sync: return
            }
            head += 1
        }
    }

    /// ParseComplete: the oldest Parse succeeded (its statement's span comes with its Execute).
    private func parseComplete() {
        guard head < pending.count, case .parse = pending[head] else { return }
        head += 1
        compact()
    }

    /// ReadyForQuery ends the oldest Query or Sync (and whatever of it never completed).
    private func readyForQuery() {
        while head < pending.count {
            let item = pending[head]
            head += 1
            switch item {
            case .execute: counters.withoutReply.add(1, ordering: .relaxed)
            case .parse: break
            case .query, .sync: return compact()
            }
        }
        compact()
    }

    private func compact() {
        if head == pending.count {
            pending.removeAll(keepingCapacity: true)
            head = 0
        }
    }

    /// The first word of a CommandComplete tag (`SELECT 1` → `SELECT`), when it is one (upper-case letters).
    static func commandWord(_ tag: UnsafeRawBufferPointer) -> String? {
        let word = tag.prefix { $0 != 0x20 }
        guard !word.isEmpty, word.count <= 16, word.allSatisfy({ $0 >= 0x41 && $0 <= 0x5A }) else { return nil }
        return String(decoding: word, as: UTF8.self)
    }

    /// The SQLSTATE (field `C`) of an ErrorResponse body: fields of a type byte and a NUL-terminated value.
    static func sqlState(_ body: UnsafeRawBufferPointer) -> String? {
        var index = 0
        while index < body.count, body[index] != 0 {
            let field = body[index]
            index += 1
            let rest = UnsafeRawBufferPointer(rebasing: body[index...])
            guard let end = rest.firstIndex(of: 0) else { return nil }
            if field == UInt8(ascii: "C") {
                let value = UnsafeRawBufferPointer(rebasing: rest[..<end])
                guard value.count == 5, value.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) }) else { return nil }
                return String(decoding: value, as: UTF8.self)
            }
            index += end + 1
        }
        return nil
    }
}

/// NUL-terminated strings of a message body, in order (an unterminated rest is not a field).
struct NullTerminatedFields {
    private let body: UnsafeRawBufferPointer
    private var index = 0
    /// Fields read so far.
    private(set) var count = 0

    init(_ body: UnsafeRawBufferPointer) { self.body = body }

    mutating func next() -> UnsafeRawBufferPointer? {
        guard index < body.count else { return nil }
        let rest = UnsafeRawBufferPointer(rebasing: body[index...])
        guard let end = rest.firstIndex(of: 0) else { return nil }
        index += end + 1
        count += 1
        return UnsafeRawBufferPointer(rebasing: rest[..<end])
    }
}

/// The statements of SQL text, split at semicolons outside string literals, quoted identifiers, dollar-quoted
/// bodies and comments; blank statements are skipped.
struct SQLStatementSplitter {
    let sql: UnsafeRawBufferPointer
    private(set) var index = 0

    init(_ sql: UnsafeRawBufferPointer) { self.sql = sql }

    mutating func next() -> UnsafeRawBufferPointer? {
        while index < sql.count {
            let start = index
            scanToSemicolon()
            var piece = UnsafeRawBufferPointer(rebasing: sql[start..<index])
            index += 1 // the semicolon
            while let first = piece.first, first == 0x20 || first == 0x0A || first == 0x09 || first == 0x0D {
                piece = UnsafeRawBufferPointer(rebasing: piece.dropFirst())
            }
            while let last = piece.last, last == 0x20 || last == 0x0A || last == 0x09 || last == 0x0D {
                piece = UnsafeRawBufferPointer(rebasing: piece.dropLast())
            }
            if !piece.isEmpty { return piece }
        }
        return nil
    }

    private mutating func scanToSemicolon() {
        while index < sql.count {
            let byte = sql[index]
            switch byte {
            case UInt8(ascii: ";"):
                return
            case UInt8(ascii: "'"), UInt8(ascii: "\""):
                index += 1
                while index < sql.count && sql[index] != byte { index += 1 }
                index += 1
            case UInt8(ascii: "-") where index + 1 < sql.count && sql[index + 1] == UInt8(ascii: "-"):
                while index < sql.count && sql[index] != 0x0A { index += 1 }
            case UInt8(ascii: "/") where index + 1 < sql.count && sql[index + 1] == UInt8(ascii: "*"):
                index += 2
                while index + 1 < sql.count && !(sql[index] == UInt8(ascii: "*") && sql[index + 1] == UInt8(ascii: "/")) { index += 1 }
                index += 2
            case UInt8(ascii: "$") where index + 1 < sql.count && sql[index + 1] == UInt8(ascii: "$"):
                index += 2
                while index + 1 < sql.count && !(sql[index] == UInt8(ascii: "$") && sql[index + 1] == UInt8(ascii: "$")) { index += 1 }
                index += 2
            default:
                index += 1
            }
        }
        index = sql.count
    }
}

/// Counters of the PostgreSQL parser, for the agent's self-metrics.
public final class PostgresTracerCounters: Sendable {
    /// Streams that stopped being the protocol (garbage, a length below 4 or absurd, uncaptured headers).
    public let malformed = Atomic<UInt64>(0)
    /// Statements whose response was never matched (connection closed, stream broken).
    public let withoutReply = Atomic<UInt64>(0)
    /// Executes of an extended-protocol batch the server skipped after an earlier error.
    public let skippedAfterError = Atomic<UInt64>(0)
    /// Responses with no statement waiting (errors of a Bind without an Execute, connections seen mid-stream).
    public let unmatchedResponses = Atomic<UInt64>(0)
    /// Statements dropped because too many were pipelined unanswered.
    public let abandoned = Atomic<UInt64>(0)
    /// Named statements or portals not remembered (more than 256 on one connection).
    public let forgottenStatements = Atomic<UInt64>(0)
    /// Connections that went encrypted after SSLRequest/GSSENCRequest (not readable here).
    public let encryptedConnections = Atomic<UInt64>(0)
    /// StartupMessages of an unknown protocol version.
    public let unsupportedStartup = Atomic<UInt64>(0)

    public init() {}
}
