import Synchronization
import Telemetry
import TracerFramework

/// Claims connections whose first bytes are a MySQL/MariaDB server greeting (Initial Handshake Packet,
/// protocol version 10: sequence 0, byte 10, a version string that starts with a digit). The server speaks
/// first: the process that writes the greeting is the server (mariadbd, mysqld), the one that reads it the
/// client. A connection seen mid-stream is not claimed.
struct MySQLParser: ProtocolParser {
    var protocolName: String { "mysql" }
    let counters: MySQLTracerCounters
    let queryText: DatabaseQueryText

    func claim(_ chunk: CaptureChunk, connection: CaptureConnection) -> (any ConnectionParser)? {
        guard Self.startsWithGreeting(chunk.data) else { return nil }
        return MySQLConnectionParser(connection: connection, role: chunk.direction == .send ? .server : .client,
                                     queryText: queryText, counters: counters)
    }

    /// A packet header (length 16 … 1024, sequence 0), protocol version 10, and a NUL-terminated version
    /// string of printable ASCII that starts with a digit.
    static func startsWithGreeting(_ data: UnsafeRawBufferPointer) -> Bool {
        guard data.count >= 16 else { return false }
        let length = Int(data[0]) | Int(data[1]) << 8 | Int(data[2]) << 16
        guard length >= 16, length <= 1024, data[3] == 0, data[4] == MySQLProtocol.handshakeVersion10,
              data[5] >= 0x30, data[5] <= 0x39 else { return false }
        var index = 6
        while index < data.count, index < 4 + min(length, 80) {
            let byte = data[index]
            if byte == 0 { return true }
            guard byte >= 0x20, byte < 0x7F else { return false }
            index += 1
        }
        return false
    }
}

/// One MySQL/MariaDB connection. The handshake gives the server's flavour (`MariaDB` in its version), the
/// capabilities both sides agreed on (CLIENT_DEPRECATE_EOF changes how result sets end) and the database;
/// then each command (sequence 0) waits in order, and the server's response ends it: OK, ERR, a result set
/// (column count, column definitions, rows, an EOF or OK terminator; more results while the status says so),
/// or a prepared statement's PREPARE_OK. One exchange per COM_QUERY and per COM_STMT_EXECUTE (and per
/// failed COM_STMT_PREPARE); prepared statements' texts are remembered by the id the server gave them.
final class MySQLConnectionParser: ConnectionParser {
    /// A statement's summary and shaped query text.
    struct Statement {
        var summary: SQLStatementSummary
        var text: String?
        /// `USE db`: the database it makes the connection's default.
        var database: String?
    }

    /// What a command waits for.
    private enum Command {
        /// COM_QUERY: OK, ERR or result sets.
        case query(Statement)
        /// COM_STMT_EXECUTE of a statement (nil when prepared before the agent saw it): OK, ERR or result sets.
        case execute(Statement?)
        /// COM_STMT_PREPARE: PREPARE_OK and its definitions, or ERR.
        case prepare(Statement)
        /// COM_STMT_FETCH: rows of an open cursor.
        case fetch
        /// COM_FIELD_LIST: column definitions up to an EOF.
        case fieldList
        /// One response packet (OK, ERR, EOF or a string): COM_PING, COM_INIT_DB (its database), COM_STMT_RESET, …
        case single(database: String?)
    }

    private struct Pending {
        var command: Command
        var start: UInt64
        var pid: UInt32
        var identity: SpanIdentity
        /// The sequence number of the command's last packet: the response continues from it.
        var sequence: UInt8
    }

    /// Where the response of the oldest command is.
    private enum ResponseState {
        /// Its first packet is next (or the next result's, after one that said more results exist).
        case first
        /// Column definitions to pass, then an EOF unless CLIENT_DEPRECATE_EOF, then rows.
        case columns(remaining: Int, eof: Bool)
        /// Rows up to the terminator (EOF, or OK with a 0xFE header).
        case rows
        /// A PREPARE_OK's parameter and column definitions (and their EOFs) to pass.
        case definitions(remaining: Int)
    }

    /// Most commands waiting for the server on one connection; older ones are dropped (and counted).
    static let maxPending = 1024
    /// Most prepared statements remembered per connection.
    static let maxStatements = 1024
    /// The server's own limit on a result's columns.
    static let maxColumns = 4096

    let kind: ExchangeKind
    private let connection: CaptureConnection
    private let role: ExchangeRole
    private let queryText: DatabaseQueryText
    private let counters: MySQLTracerCounters
    private var clientStream = MySQLPacketStream()
    private var serverStream = MySQLPacketStream()

    private enum Phase { case greeting, handshakeResponse, authentication, commands, stopped }
    private var phase = Phase.greeting
    /// `db.system.name`: `mariadb` when the greeting's version says so, else `mysql`.
    private var system = "mysql"
    private var serverCapabilities: UInt64 = 0
    /// Capabilities both sides declared (MariaDB's extended ones in bits 32…63).
    private var capabilities: UInt64 = 0
    /// The connection's default database: the handshake's, then each successful COM_INIT_DB's.
    private var namespace: String?
    private var statements: [UInt32: Statement] = [:]
    private var pending: [Pending] = []
    private var head = 0
    private var response = ResponseState.first
    /// The sequence number the server's next packet must have (nil: the next starts a response).
    private var expectedSequence: UInt8?
    /// The server's stream went past the capture (a packet header unseen): the head command ends with the
    /// server's last bytes before the client's next command.
    private var responseLost = false
    private var lastServerBytes: UInt64 = 0
    /// The client asked for TLS (SSLRequest): only TLS plaintext (libssl) is read from then on.
    private var encrypted = false
    /// The client's last packet was 0xFFFFFF long: the next continues it.
    private var clientContinues = false

    init(connection: CaptureConnection, role: ExchangeRole, queryText: DatabaseQueryText, counters: MySQLTracerCounters) {
        self.connection = connection
        self.role = role
        self.queryText = queryText
        self.counters = counters
        kind = ExchangeKind(.database, role)
        pending.reserveCapacity(16)
    }

    private var clientDirection: CaptureChunk.Direction { role == .client ? .send : .receive }

    func consume(_ chunk: CaptureChunk, context: ParserContext, into exchanges: inout [Exchange]) {
        guard phase != .stopped else { return }
        if encrypted && !chunk.isTLSPlaintext {
            // Ciphertext on the socket (the TLS handshake, then records): what counts is libssl's plaintext.
            if chunk.direction == clientDirection { clientStream.reset() } else { serverStream.reset() }
            return
        }
        if chunk.direction == clientDirection {
            if responseLost { resynchronize(at: chunk, into: &exchanges) }
            let plaintext = chunk.isTLSPlaintext
            clientStream.feed(chunk.data, length: chunk.length, position: context.position,
                              accept: { acceptClientHeader($0, plaintext: plaintext) }) { packet in
                clientPacket(packet, chunk: chunk, context: context)
            }
            // The SSLRequest's read may hold the start of the TLS handshake too: not packets.
            if encrypted && !chunk.isTLSPlaintext { clientStream.reset() }
            if clientStream.lost, phase != .stopped {
                // Commands went by unseen: their responses cannot be matched.
                counters.beyondCapture.add(1, ordering: .relaxed)
                stop()
            }
        } else {
            lastServerBytes = chunk.timestamp
            guard !responseLost else { return }
            serverStream.feed(chunk.data, length: chunk.length, position: context.position, accept: acceptServerHeader) { packet in
                serverPacket(packet, chunk: chunk, into: &exchanges)
            }
            if serverStream.lost, phase != .stopped { responseBeyondCapture() }
        }
    }

    func close(at timestamp: UInt64, context: ParserContext, into exchanges: inout [Exchange]) {
        if responseLost, pending.count - head == 1 { finishLost(into: &exchanges) }
        dropPending()
    }

    /// The stream stopped being the protocol, or went where it is not read: no more exchanges.
    private func stop() {
        phase = .stopped
        dropPending()
    }

    private func malformed() {
        counters.malformed.add(1, ordering: .relaxed)
        stop()
    }

    /// Commands waiting are dropped unanswered (their outcome is unknown).
    private func dropPending() {
        counters.withoutReply.add(UInt64(pending.count - head), ordering: .relaxed)
        pending.removeAll(keepingCapacity: true)
        head = 0
        response = .first
        expectedSequence = nil
        responseLost = false
    }

    // MARK: Client

    /// Sequence numbers: the handshake response is 1 (2 after an SSLRequest); a command starts at 0 (its
    /// continuations count on). Ciphertext after an SSLRequest in the same read is no packet to check.
    private func acceptClientHeader(_ header: MySQLPacketStream.Header, plaintext: Bool) -> Bool {
        let valid = switch phase {
        case .handshakeResponse: (encrypted && !plaintext) || header.sequence == (encrypted ? 2 : 1)
        case .commands: header.continuation || header.sequence == 0
        case .greeting, .authentication, .stopped: true
        }
        if !valid { malformed() }
        return valid
    }

    private func clientPacket(_ packet: MySQLPacketStream.Packet, chunk: CaptureChunk, context: ParserContext) {
        guard !encrypted || chunk.isTLSPlaintext else { return } // the TLS handshake after an SSLRequest
        let continues = clientContinues
        clientContinues = packet.length == MySQLPacketStream.maxPacketPayload
        switch phase {
        case .greeting:
            malformed() // the client spoke before the server's greeting
        case .handshakeResponse:
            handshakeResponse(packet)
        case .authentication, .stopped:
            break // authentication data
        case .commands:
            if continues {
                // The rest of a command longer than one packet: its response follows this packet.
                if head < pending.count { pending[pending.count - 1].sequence = packet.sequence }
                return
            }
            guard let code = packet.payload.first else { return malformed() }
            command(code, packet: packet, chunk: chunk, context: context)
        }
    }

    /// HandshakeResponse41 (or the SSLRequest that starts TLS): capabilities, then user, auth data, database.
    private func handshakeResponse(_ packet: MySQLPacketStream.Packet) {
        var reader = MySQLPayloadReader(packet.payload)
        guard let client = reader.integer(4) else { return malformed() }
        guard client & MySQLProtocol.clientProtocol41 != 0, packet.length >= 32 else {
            counters.unsupported.add(1, ordering: .relaxed)
            return stop() // the pre-4.1 handshake
        }
        if client & MySQLProtocol.clientSSL != 0 && packet.length == MySQLProtocol.sslRequestLength && !encrypted {
            // SSLRequest: TLS follows, ciphertext on the socket; the handshake response (sequence 2) and all after
            // it are read from libssl's plaintext when the process uses libssl (else nothing more comes).
            counters.encryptedConnections.add(1, ordering: .relaxed)
            encrypted = true
            return
        }
        _ = reader.skip(4 + 1 + 19) // max packet size, character set, filler
        let extended = reader.integer(4) ?? 0
        capabilities = (client | extended << 32) & serverCapabilities
        if capabilities & MySQLProtocol.clientCompress != 0 {
            counters.compressedConnections.add(1, ordering: .relaxed)
            return stop()
        }
        phase = .authentication
        guard client & MySQLProtocol.clientConnectWithDB != 0, reader.nullTerminated() != nil else { return }
        let authLength: UInt64?
        if client & MySQLProtocol.clientPluginAuthLengthEncoded != 0 {
            authLength = reader.lengthEncoded()
        } else if client & MySQLProtocol.clientSecureConnection != 0 {
            authLength = reader.integer(1)
        } else {
            authLength = reader.nullTerminated().map { _ in 0 }
        }
        guard let authLength, authLength < 4096, reader.skip(Int(authLength)), let database = reader.nullTerminated(),
              !database.isEmpty else { return }
        namespace = String(decoding: database, as: UTF8.self)
    }

    private func command(_ code: UInt8, packet: MySQLPacketStream.Packet, chunk: CaptureChunk, context: ParserContext) {
        let body = UnsafeRawBufferPointer(rebasing: packet.payload.dropFirst())
        let command: Command
        switch code {
        case MySQLProtocol.comQuit, MySQLProtocol.comStatementSendLongData:
            return // no response
        case MySQLProtocol.comStatementClose:
            var reader = MySQLPayloadReader(body)
            if let id = reader.integer(4) { statements[UInt32(id)] = nil }
            return // no response
        case MySQLProtocol.comQuery:
            command = .query(statement(queryText: body, whole: packet.whole && packet.length < MySQLPacketStream.maxPacketPayload))
        case MySQLProtocol.comStatementPrepare:
            command = .prepare(statement(body, whole: packet.whole && packet.length < MySQLPacketStream.maxPacketPayload))
        case MySQLProtocol.comStatementExecute, MySQLProtocol.comStatementBulkExecute:
            var reader = MySQLPayloadReader(body)
            guard let id = reader.integer(4) else { return malformed() }
            command = .execute(statements[UInt32(id)])
        case MySQLProtocol.comStatementFetch:
            command = .fetch
        case MySQLProtocol.comFieldList:
            command = .fieldList
        case MySQLProtocol.comInitDB:
            command = .single(database: body.isEmpty ? nil : String(decoding: body.prefix(256), as: UTF8.self))
        case MySQLProtocol.comPing, MySQLProtocol.comStatementReset, MySQLProtocol.comStatistics, MySQLProtocol.comRefresh,
             MySQLProtocol.comProcessKill, MySQLProtocol.comDebug, MySQLProtocol.comSetOption, MySQLProtocol.comResetConnection,
             MySQLProtocol.comShutdown:
            command = .single(database: nil)
        default:
            // COM_CHANGE_USER (a new authentication), replication streams, or not a command at all.
            counters.unsupported.add(1, ordering: .relaxed)
            return stop()
        }
        if pending.count - head >= Self.maxPending {
            head += 1
            counters.abandoned.add(1, ordering: .relaxed)
            response = .first
            expectedSequence = nil
        }
        if head > 64 && head * 2 > pending.count {
            pending.removeFirst(head)
            head = 0
        }
        let fingerprint = UInt64(code) << 32 | UInt64(packet.length)
        let identity = role == .server
            ? context.identity(incoming: nil, requestStart: packet.start, fingerprint: fingerprint)
            : context.clientIdentity(goid: chunk.goid, carried: nil, requestStart: packet.start, fingerprint: fingerprint)
        pending.append(Pending(command: command, start: chunk.timestamp, pid: chunk.pid, identity: identity, sequence: packet.sequence))
    }

    /// COM_QUERY's text; with CLIENT_QUERY_ATTRIBUTES (MySQL 8) a parameter count and set count come first,
    /// and a query with attributes is not summarized (their values stand before the text).
    private func statement(queryText body: UnsafeRawBufferPointer, whole: Bool) -> Statement {
        guard capabilities & MySQLProtocol.clientQueryAttributes != 0 else { return statement(body, whole: whole) }
        var reader = MySQLPayloadReader(body)
        guard reader.lengthEncoded() == 0, reader.lengthEncoded() != nil else {
            return Statement(summary: .init(operation: nil, collection: nil), text: nil, database: nil)
        }
        return statement(reader.rest(), whole: whole)
    }

    private func statement(_ text: UnsafeRawBufferPointer, whole: Bool) -> Statement {
        var shaped: String? = switch queryText {
        case .off: nil
        case .sanitized: DatabaseQueryText.sanitize(text)
        case .full: DatabaseQueryText.full(text)
        }
        // Text cut by the capture (or by the kept-payload bound) ends with `…`, once.
        if !whole, let cut = shaped, !cut.hasSuffix("…") { shaped = cut + "…" }
        let summary = SQLStatementSummary(text)
        return Statement(summary: summary, text: shaped, database: summary.operation == "USE" ? Self.database(inUse: text) : nil)
    }

    /// The database `USE name` (or ``USE `name` ``) names: at most 64 characters, as the server allows.
    static func database(inUse text: UnsafeRawBufferPointer) -> String? {
        var index = 0
        func skipBlanks() { while index < text.count, [0x20, 0x09, 0x0A, 0x0D].contains(text[index]) { index += 1 } }
        skipBlanks()
        guard text.count >= index + 3, zip(text[index..<(index + 3)], "USE".utf8).allSatisfy({ $0 & 0xDF == $1 }) else {
            return nil // a comment first
        }
        index += 3
        skipBlanks()
        guard index < text.count else { return nil }
        let quoted = text[index] == UInt8(ascii: "`")
        if quoted { index += 1 }
        let start = index
        while index < text.count, index - start <= 64 {
            let byte = text[index]
            if quoted ? byte == UInt8(ascii: "`") : !(MySQLIdentifier.isNameByte(byte)) { break }
            index += 1
        }
        guard index > start, index - start <= 64, !quoted || (index < text.count && text[index] == UInt8(ascii: "`")) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(rebasing: text[start..<index]), as: UTF8.self)
    }

    // MARK: Server

    /// Sequence numbers: the greeting is 0; a response continues the sequence of its command's last packet.
    private func acceptServerHeader(_ header: MySQLPacketStream.Header) -> Bool {
        let valid = switch phase {
        case .greeting: header.sequence == 0
        case .commands: head == pending.count || header.sequence == expectedSequence ?? pending[head].sequence &+ 1
        case .handshakeResponse, .authentication, .stopped: true
        }
        if !valid { malformed() }
        return valid
    }

    private func serverPacket(_ packet: MySQLPacketStream.Packet, chunk: CaptureChunk, into exchanges: inout [Exchange]) {
        switch phase {
        case .greeting:
            greeting(packet)
        case .handshakeResponse:
            malformed() // the server spoke again before the client answered
        case .authentication:
            // AuthSwitchRequest (0xFE), more data (0x01), … until OK or ERR.
            switch packet.payload.first {
            case MySQLProtocol.ok?: phase = .commands
            case MySQLProtocol.error?:
                counters.failedHandshakes.add(1, ordering: .relaxed)
                stop()
            default: break
            }
        case .commands:
            response(packet, at: chunk.timestamp, into: &exchanges)
        case .stopped:
            break
        }
    }

    /// The Initial Handshake Packet (protocol 10): the server's version and capabilities.
    private func greeting(_ packet: MySQLPacketStream.Packet) {
        var reader = MySQLPayloadReader(packet.payload, at: 1)
        guard let version = reader.nullTerminated(), reader.skip(4 + 8 + 1), let lower = reader.integer(2) else { return malformed() }
        if version.count >= 7, contains(version, "MariaDB") { system = "mariadb" }
        serverCapabilities = lower
        if reader.skip(1 + 2), let upper = reader.integer(2) {
            serverCapabilities |= upper << 16
            // MariaDB: extended capabilities in the last 4 of the 10 reserved bytes, when it is not MySQL.
            if serverCapabilities & MySQLProtocol.clientMySQL == 0, reader.skip(1 + 6), let extended = reader.integer(4) {
                serverCapabilities |= extended << 32
            }
        }
        phase = .handshakeResponse
    }

    private func contains(_ bytes: UnsafeRawBufferPointer, _ word: String) -> Bool {
        let needle = Array(word.utf8)
        guard bytes.count >= needle.count else { return false }
        return (0...(bytes.count - needle.count)).contains { start in
            needle.indices.allSatisfy { bytes[start + $0] == needle[$0] }
        }
    }

    /// A packet of the response to the oldest command.
    private func response(_ packet: MySQLPacketStream.Packet, at end: UInt64, into exchanges: inout [Exchange]) {
        guard head < pending.count else {
            counters.unmatchedResponses.add(1, ordering: .relaxed)
            return
        }
        expectedSequence = packet.sequence &+ 1 // checked with the header
        if packet.continuation { return } // the rest of a payload longer than one packet
        let payload = packet.payload
        guard let first = payload.first else { return malformed() }
        let deprecateEOF = capabilities & MySQLProtocol.clientDeprecateEOF != 0
        // An ERR ends any response, except MariaDB's progress reports (error code 0xFFFF).
        if first == MySQLProtocol.error {
            guard payload.count < 3 || !(payload[1] == 0xFF && payload[2] == 0xFF) else { return }
            return finish(failed: true, code: Self.errorCode(payload), at: end, into: &exchanges)
        }
        switch response {
        case .first:
            firstPacket(packet, deprecateEOF: deprecateEOF, at: end, into: &exchanges)
        case .columns:
            columnDefinition(packet, deprecateEOF: deprecateEOF, at: end, into: &exchanges)
        case .rows:
            rowOrTerminator(packet, deprecateEOF: deprecateEOF, at: end, into: &exchanges)
        case .definitions(let remaining):
            if remaining <= 1 { return finish(failed: false, code: nil, at: end, into: &exchanges) }
            response = .definitions(remaining: remaining - 1)
        }
    }

    /// The first packet of a response (or of the next result set of one).
    private func firstPacket(_ packet: MySQLPacketStream.Packet, deprecateEOF: Bool, at end: UInt64, into exchanges: inout [Exchange]) {
        let payload = packet.payload
        switch pending[head].command {
        case .single:
            finish(failed: false, code: nil, at: end, into: &exchanges)
        case .fetch:
            response = .rows
            rowOrTerminator(packet, deprecateEOF: deprecateEOF, at: end, into: &exchanges)
        case .fieldList:
            response = .columns(remaining: Int.max, eof: true)
            columnDefinition(packet, deprecateEOF: deprecateEOF, at: end, into: &exchanges)
        case .prepare(let statement):
            // PREPARE_OK: 0x00, statement id, columns, parameters.
            var reader = MySQLPayloadReader(payload, at: 1)
            guard payload.first == MySQLProtocol.ok, let id = reader.integer(4), let columns = reader.integer(2),
                  let parameters = reader.integer(2) else { return malformed() }
            if statements.count < Self.maxStatements || statements[UInt32(id)] != nil {
                statements[UInt32(id)] = statement
            } else {
                counters.forgottenStatements.add(1, ordering: .relaxed)
            }
            let eofs = deprecateEOF ? 0 : (columns > 0 ? 1 : 0) + (parameters > 0 ? 1 : 0)
            let remaining = Int(columns + parameters) + eofs
            if remaining == 0 { return finish(failed: false, code: nil, at: end, into: &exchanges) }
            response = .definitions(remaining: remaining)
        case .query, .execute:
            if payload.first == MySQLProtocol.ok {
                return endOfResult(statusFlags: Self.okStatusFlags(payload), at: end, into: &exchanges)
            }
            guard payload.first != MySQLProtocol.localInfile else {
                // LOAD DATA LOCAL INFILE: the client sends a file now; not followed.
                counters.unsupported.add(1, ordering: .relaxed)
                return stop()
            }
            // A result set: its column count (MySQL's optional-metadata flag before it, MariaDB's cached-metadata
            // flag after it).
            var reader = MySQLPayloadReader(payload)
            var metadata = true
            if capabilities & MySQLProtocol.clientOptionalResultsetMetadata != 0 { metadata = reader.integer(1) != 0 }
            guard let columns = reader.lengthEncoded(), columns >= 1, columns <= UInt64(Self.maxColumns) else { return malformed() }
            if capabilities & MySQLProtocol.mariadbClientCacheMetadata != 0 { metadata = reader.integer(1) != 0 }
            if metadata {
                response = .columns(remaining: Int(columns), eof: !deprecateEOF)
            } else {
                response = deprecateEOF ? .rows : .columns(remaining: 0, eof: true)
            }
        }
    }

    /// A column definition, or the EOF after them (COM_FIELD_LIST: the EOF, or OK with CLIENT_DEPRECATE_EOF).
    private func columnDefinition(_ packet: MySQLPacketStream.Packet, deprecateEOF: Bool, at end: UInt64, into exchanges: inout [Exchange]) {
        guard case .columns(let remaining, let eof) = response else { return }
        var fieldList = false
        if case .fieldList = pending[head].command { fieldList = true }
        let terminator = isTerminator(packet, deprecateEOF: fieldList && deprecateEOF)
        if remaining > 0 && !terminator {
            response = remaining == 1 && !eof ? .rows : .columns(remaining: remaining - 1, eof: eof)
            return
        }
        guard terminator else { return malformed() }
        // A cursor was opened (COM_STMT_EXECUTE with a cursor type): the rows come with COM_STMT_FETCH.
        if fieldList || Self.eofStatusFlags(packet.payload) & MySQLProtocol.serverStatusCursorExists != 0 {
            return finish(failed: false, code: nil, at: end, into: &exchanges)
        }
        response = .rows
    }

    private func rowOrTerminator(_ packet: MySQLPacketStream.Packet, deprecateEOF: Bool, at end: UInt64, into exchanges: inout [Exchange]) {
        guard isTerminator(packet, deprecateEOF: deprecateEOF) else { return } // a row
        let flags = deprecateEOF ? Self.okStatusFlags(packet.payload) : Self.eofStatusFlags(packet.payload)
        if case .fetch = pending[head].command { return finish(failed: false, code: nil, at: end, into: &exchanges) }
        endOfResult(statusFlags: flags, at: end, into: &exchanges)
    }

    /// An EOF packet (0xFE, shorter than 9 bytes) or, with CLIENT_DEPRECATE_EOF, an OK packet with a 0xFE header
    /// (shorter than 0xFFFFFF: a text row whose first value is that long also starts with 0xFE).
    private func isTerminator(_ packet: MySQLPacketStream.Packet, deprecateEOF: Bool) -> Bool {
        packet.payload.first == MySQLProtocol.eof && packet.length < (deprecateEOF ? MySQLPacketStream.maxPacketPayload : 9)
    }

    /// One result ended: another follows when its status says more results exist (multi-statement queries,
    /// stored procedures).
    private func endOfResult(statusFlags: UInt16, at end: UInt64, into exchanges: inout [Exchange]) {
        if statusFlags & MySQLProtocol.serverMoreResultsExist != 0 {
            response = .first
            return
        }
        finish(failed: false, code: nil, at: end, into: &exchanges)
    }

    /// The oldest command's response ended: its exchange, if it makes one.
    private func finish(failed: Bool, code: String?, at end: UInt64, into exchanges: inout [Exchange]) {
        let item = pending[head]
        head += 1
        response = .first
        expectedSequence = nil
        if head == pending.count {
            pending.removeAll(keepingCapacity: true)
            head = 0
        }
        switch item.command {
        case .prepare(let statement) where failed:
            exchanges.append(.database(exchange(item, statement: statement, failed: failed, code: code, end: end)))
        case .query(let statement):
            if !failed, let database = statement.database { namespace = database }
            exchanges.append(.database(exchange(item, statement: statement, failed: failed, code: code, end: end)))
        case .execute(let statement):
            exchanges.append(.database(exchange(item, statement: statement, failed: failed, code: code, end: end)))
        case .single(let database?) where !failed:
            namespace = database
        default:
            break
        }
    }

    private func exchange(_ item: Pending, statement: Statement?, failed: Bool, code: String?, end: UInt64) -> DatabaseExchange {
        DatabaseExchange(pid: item.pid, role: role, system: system, operation: statement?.summary.operation, start: item.start, end: end,
                         identity: item.identity, collection: statement?.summary.collection, namespace: namespace, queryText: statement?.text,
                         failed: failed, statusCode: failed ? code : nil, local: connection.local, peer: connection.peer)
    }

    // MARK: Responses beyond the capture

    /// A packet header of the response went by uncaptured (a result set larger than a read's captured prefix).
    /// With one command waiting, its response ends with the server's last bytes before the client's next
    /// command; with more in flight nothing can be matched.
    private func responseBeyondCapture() {
        counters.beyondCapture.add(1, ordering: .relaxed)
        guard pending.count - head == 1 else { return stop() }
        responseLost = true
    }

    /// The client writes (or the server reads) again after a response that went past the capture: the response
    /// ended, and the server's stream starts again at a packet.
    private func resynchronize(at chunk: CaptureChunk, into exchanges: inout [Exchange]) {
        finishLost(into: &exchanges)
        serverStream.reset()
    }

    /// The waiting command ends when the server's bytes last came; its status is what was seen (a result set
    /// had begun: no error).
    private func finishLost(into exchanges: inout [Exchange]) {
        responseLost = false
        guard head < pending.count else { return }
        finish(failed: false, code: nil, at: lastServerBytes, into: &exchanges)
    }

    // MARK: Packet fields

    /// ERR packet: 0xFF, error code (2 bytes), then with CLIENT_PROTOCOL_41 `#` and a 5-character SQLSTATE.
    /// `db.response.status_code` is the error number as a string (`1146`), as the conventions for MySQL and
    /// MariaDB say (SQLSTATE has no attribute).
    static func errorCode(_ payload: UnsafeRawBufferPointer) -> String? {
        var reader = MySQLPayloadReader(payload, at: 1)
        guard let code = reader.integer(2) else { return nil }
        return String(code)
    }

    /// OK packet (0x00 or 0xFE header): affected rows and last insert id (length-encoded), then the status flags.
    static func okStatusFlags(_ payload: UnsafeRawBufferPointer) -> UInt16 {
        var reader = MySQLPayloadReader(payload, at: 1)
        guard reader.lengthEncoded() != nil, reader.lengthEncoded() != nil, let flags = reader.integer(2) else { return 0 }
        return UInt16(flags)
    }

    /// EOF packet: 0xFE, warnings (2 bytes), status flags (2 bytes).
    static func eofStatusFlags(_ payload: UnsafeRawBufferPointer) -> UInt16 {
        var reader = MySQLPayloadReader(payload, at: 3)
        return reader.integer(2).map { UInt16($0) } ?? 0
    }
}

/// Bytes of an unquoted MySQL identifier: letters, digits, `_`, `$`, and any non-ASCII byte.
enum MySQLIdentifier {
    static func isNameByte(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7A) || byte == 0x5F || byte == 0x24 || byte >= 0x80
    }
}

/// Constants of the client/server protocol (dev.mysql.com "Capabilities Flags", "Text Protocol", "Prepared
/// Statements"; mariadb.com "Connection", "Result Set Packets").
enum MySQLProtocol {
    static let handshakeVersion10: UInt8 = 10

    static let clientMySQL: UInt64 = 1 // CLIENT_LONG_PASSWORD; MariaDB leaves it clear
    static let clientConnectWithDB: UInt64 = 1 << 3
    static let clientCompress: UInt64 = 1 << 5
    static let clientProtocol41: UInt64 = 1 << 9
    static let clientSSL: UInt64 = 1 << 11
    /// An SSLRequest is the fixed part of a handshake response only.
    static let sslRequestLength = 32
    static let clientSecureConnection: UInt64 = 1 << 15
    static let clientPluginAuthLengthEncoded: UInt64 = 1 << 21
    static let clientDeprecateEOF: UInt64 = 1 << 24
    static let clientOptionalResultsetMetadata: UInt64 = 1 << 25
    static let clientQueryAttributes: UInt64 = 1 << 27
    static let mariadbClientCacheMetadata: UInt64 = 1 << 36

    static let serverMoreResultsExist: UInt16 = 0x0008
    static let serverStatusCursorExists: UInt16 = 0x0040

    static let ok: UInt8 = 0x00
    static let eof: UInt8 = 0xFE
    static let error: UInt8 = 0xFF
    static let localInfile: UInt8 = 0xFB

    static let comQuit: UInt8 = 0x01
    static let comInitDB: UInt8 = 0x02
    static let comQuery: UInt8 = 0x03
    static let comFieldList: UInt8 = 0x04
    static let comRefresh: UInt8 = 0x07
    static let comShutdown: UInt8 = 0x08
    static let comStatistics: UInt8 = 0x09
    static let comProcessKill: UInt8 = 0x0C
    static let comDebug: UInt8 = 0x0D
    static let comPing: UInt8 = 0x0E
    static let comStatementPrepare: UInt8 = 0x16
    static let comStatementExecute: UInt8 = 0x17
    static let comStatementSendLongData: UInt8 = 0x18
    static let comStatementClose: UInt8 = 0x19
    static let comStatementReset: UInt8 = 0x1A
    static let comSetOption: UInt8 = 0x1B
    static let comStatementFetch: UInt8 = 0x1C
    static let comResetConnection: UInt8 = 0x1F
    static let comStatementBulkExecute: UInt8 = 0xFA
}

/// Counters of the MySQL/MariaDB parser, for the agent's self-metrics.
public final class MySQLTracerCounters: Sendable {
    /// Streams that stopped being the protocol (sequence numbers out of order, a bad column count, garbage).
    public let malformed = Atomic<UInt64>(0)
    /// Commands whose response was never matched (connection closed, stream broken).
    public let withoutReply = Atomic<UInt64>(0)
    /// Response packets with no command waiting.
    public let unmatchedResponses = Atomic<UInt64>(0)
    /// Commands dropped because too many were pipelined unanswered.
    public let abandoned = Atomic<UInt64>(0)
    /// Prepared statements not remembered (more than 1024 on one connection).
    public let forgottenStatements = Atomic<UInt64>(0)
    /// Connections that switched to TLS (SSLRequest): followed only through libssl's plaintext.
    public let encryptedConnections = Atomic<UInt64>(0)
    /// Connections that negotiated the compressed protocol (not parsed).
    public let compressedConnections = Atomic<UInt64>(0)
    /// Commands or handshakes not followed (COM_CHANGE_USER, replication, LOAD DATA LOCAL, pre-4.1 handshakes).
    public let unsupported = Atomic<UInt64>(0)
    /// Handshakes the server refused (ERR during authentication).
    public let failedHandshakes = Atomic<UInt64>(0)
    /// Responses (or commands) longer than the capture with packet headers in the uncaptured part.
    public let beyondCapture = Atomic<UInt64>(0)

    public init() {}
}
