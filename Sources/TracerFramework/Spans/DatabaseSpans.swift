import Telemetry

/// Whether database spans carry `db.query.text` (`--db-query-text`, config key `db_query_text`). Query text
/// may hold personal data: off unless configured.
public enum DatabaseQueryText: String, Sendable, CaseIterable {
    /// No query text (the default).
    case off
    /// The text with its literals (strings, numbers) replaced by `?`; Redis/Memcached arguments as `?`.
    case sanitized
    /// The text as sent.
    case full

    /// Longest query text kept (bytes); longer text ends with `…`.
    public static let limit = 2048

    /// `sql` with every string literal (`'…'`, `''` escapes included, `E'…'`, `$$…$$` bodies) and every number
    /// that is not part of a name replaced by `?`. Identifiers (`"quoted"` ones too), keywords, `$1`-style
    /// placeholders and punctuation stay.
    public static func sanitize(_ sql: UnsafeRawBufferPointer) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(min(sql.count, limit))
        var index = 0
        func isNameByte(_ byte: UInt8) -> Bool {
            (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7A) || byte == 0x5F || byte >= 0x80
        }
        while index < sql.count && out.count < limit {
            let byte = sql[index]
            switch byte {
            case UInt8(ascii: "'"):
                // A string literal, '' inside it escapes a quote.
                index += 1
                while index < sql.count {
                    if sql[index] == UInt8(ascii: "'") {
                        if index + 1 < sql.count && sql[index + 1] == UInt8(ascii: "'") { index += 2; continue }
                        break
                    }
                    index += 1
                }
                index += 1
                out.append(UInt8(ascii: "?"))
            case UInt8(ascii: "\""), UInt8(ascii: "`"):
                // A quoted identifier: kept.
                let quote = byte
                out.append(byte)
                index += 1
                while index < sql.count && out.count < limit {
                    out.append(sql[index])
                    index += 1
                    if sql[index - 1] == quote { break }
                }
            case UInt8(ascii: "$") where index + 1 < sql.count && sql[index + 1] == UInt8(ascii: "$"):
                // A dollar-quoted body ($$ … $$): one literal.
                index += 2
                while index + 1 < sql.count && !(sql[index] == UInt8(ascii: "$") && sql[index + 1] == UInt8(ascii: "$")) { index += 1 }
                index = min(index + 2, sql.count)
                out.append(UInt8(ascii: "?"))
            case UInt8(ascii: "$"), UInt8(ascii: ":"):
                // A placeholder ($1) or a cast (::int): kept with its digits or name.
                out.append(byte)
                index += 1
                while index < sql.count && isNameByte(sql[index]) && out.count < limit {
                    out.append(sql[index])
                    index += 1
                }
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."):
                let startsNumber = byte != UInt8(ascii: ".") || (index + 1 < sql.count && sql[index + 1] >= 0x30 && sql[index + 1] <= 0x39)
                guard startsNumber else {
                    out.append(byte)
                    index += 1
                    continue
                }
                // A number not inside a name: digits, a decimal point, an exponent, hex digits.
                while index < sql.count && (isNameByte(sql[index]) || sql[index] == UInt8(ascii: ".")) { index += 1 }
                out.append(UInt8(ascii: "?"))
            default:
                if isNameByte(byte) {
                    // A name or keyword: copied whole, so digits inside it are no literal.
                    while index < sql.count && isNameByte(sql[index]) && out.count < limit {
                        out.append(sql[index])
                        index += 1
                    }
                    // E'…', B'…', X'…': a prefixed literal; drop the prefix letter.
                    if index < sql.count && sql[index] == UInt8(ascii: "'") && out.count >= 1,
                       let last = out.last, [UInt8(ascii: "E"), UInt8(ascii: "e"), UInt8(ascii: "B"), UInt8(ascii: "b"),
                                             UInt8(ascii: "X"), UInt8(ascii: "x"), UInt8(ascii: "N"), UInt8(ascii: "n")].contains(last),
                       out.count == 1 || !isNameByte(out[out.count - 2]) {
                        out.removeLast()
                    }
                } else {
                    out.append(byte)
                    index += 1
                }
            }
        }
        return text(out, truncated: index < sql.count)
    }

    /// `bytes` as text, at most ``limit`` bytes, with `…` when cut.
    public static func full(_ bytes: UnsafeRawBufferPointer) -> String {
        text(Array(bytes.prefix(limit)), truncated: bytes.count > limit)
    }

    private static func text(_ bytes: [UInt8], truncated: Bool) -> String {
        String(decoding: bytes, as: UTF8.self) + (truncated ? "…" : "")
    }
}

/// The operation of a SQL statement and the one table it names (for `db.operation.name` and
/// `db.collection.name`), read from its first bytes without copying them.
public struct SQLStatementSummary: Sendable, Equatable {
    /// The first keyword, upper-cased (`SELECT`, `INSERT`, …); nil when the text starts with none.
    public var operation: String?
    /// The table, for `SELECT … FROM t`, `INSERT INTO t`, `UPDATE t`, `DELETE FROM t` when the statement
    /// names no other table (no join, no second FROM, no list of tables); nil otherwise.
    public var collection: String?

    public init(operation: String?, collection: String?) {
        self.operation = operation
        self.collection = collection
    }

    /// Reads `sql` (a prefix is enough). The operation is the first word upper-cased (up to 16 letters).
    public init(_ sql: UnsafeRawBufferPointer) {
        var scanner = SQLTokenScanner(sql)
        guard let first = scanner.nextWord(), first.count <= 16 else {
            operation = nil
            collection = nil
            return
        }
        operation = String(unsafeUninitializedCapacity: first.count) { upper in
            for (index, byte) in first.enumerated() { upper[index] = byte >= 0x61 && byte <= 0x7A ? byte - 0x20 : byte }
            return first.count
        }
        // SELECT … FROM t, DELETE FROM t, INSERT INTO t, UPDATE t: the table follows the marker (UPDATE: at once).
        if Self.equalsIgnoringCase(first, "SELECT") || Self.equalsIgnoringCase(first, "DELETE") {
            collection = Self.table(after: "FROM", scanner)
        } else if Self.equalsIgnoringCase(first, "INSERT") {
            collection = Self.table(after: "INTO", scanner)
        } else if Self.equalsIgnoringCase(first, "UPDATE") {
            collection = Self.table(after: nil, scanner)
        } else {
            collection = nil
        }
    }

    /// The single table named after `marker` (nil: at once) by the rest of the statement, or nil.
    private static func table(after marker: StaticString?, _ scanner: SQLTokenScanner) -> String? {
        var scanner = scanner
        if let marker {
            var found = false
            while let word = scanner.nextWord() {
                if equalsIgnoringCase(word, marker) { found = true; break }
            }
            guard found else { return nil }
        }
        guard let name = scanner.nextName() else { return nil }
        // One table only: no list, no join, no further FROM (a subquery) after it.
        if scanner.peekByte() == UInt8(ascii: ",") { return nil }
        while let word = scanner.nextWord() {
            if equalsIgnoringCase(word, "JOIN") || equalsIgnoringCase(word, "FROM") { return nil }
        }
        return name
    }

    /// Whether `word` is `keyword` (upper case) in any case.
    static func equalsIgnoringCase(_ word: UnsafeRawBufferPointer, _ keyword: StaticString) -> Bool {
        guard word.count == keyword.utf8CodeUnitCount else { return false }
        let expected = keyword.utf8Start
        for index in 0..<word.count where (word[index] >= 0x61 && word[index] <= 0x7A ? word[index] - 0x20 : word[index]) != expected[index] {
            return false
        }
        return true
    }
}

/// Words and names of SQL text, skipping literals and comments.
struct SQLTokenScanner {
    let sql: UnsafeRawBufferPointer
    var index = 0

    init(_ sql: UnsafeRawBufferPointer) { self.sql = sql }

    static func isWordByte(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7A) || byte == 0x5F
    }

    /// Skips blanks, comments (`--`, `/* */`) and string literals.
    mutating func skipNoise() {
        while index < sql.count {
            let byte = sql[index]
            if byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D || byte == UInt8(ascii: "(") || byte == UInt8(ascii: ")")
                || byte == UInt8(ascii: ";") {
                index += 1
            } else if byte == UInt8(ascii: "-") && index + 1 < sql.count && sql[index + 1] == UInt8(ascii: "-") {
                while index < sql.count && sql[index] != 0x0A { index += 1 }
            } else if byte == UInt8(ascii: "/") && index + 1 < sql.count && sql[index + 1] == UInt8(ascii: "*") {
                index += 2
                while index + 1 < sql.count && !(sql[index] == UInt8(ascii: "*") && sql[index + 1] == UInt8(ascii: "/")) { index += 1 }
                index = min(index + 2, sql.count)
            } else if byte == UInt8(ascii: "'") {
                index += 1
                while index < sql.count && sql[index] != UInt8(ascii: "'") { index += 1 }
                index = min(index + 1, sql.count)
            } else {
                return
            }
        }
    }

    /// The next bare word (letters, digits, `_`), skipping anything else; nil at the end.
    mutating func nextWord() -> UnsafeRawBufferPointer? {
        while true {
            skipNoise()
            guard index < sql.count else { return nil }
            if Self.isWordByte(sql[index]) {
                let start = index
                while index < sql.count && Self.isWordByte(sql[index]) { index += 1 }
                return UnsafeRawBufferPointer(rebasing: sql[start..<index])
            }
            if sql[index] == UInt8(ascii: "\"") || sql[index] == UInt8(ascii: "`") {
                let quote = sql[index]
                index += 1
                while index < sql.count && sql[index] != quote { index += 1 }
            }
            index += 1
        }
    }

    /// A (possibly schema-qualified, possibly quoted) name right here, as written; nil when none.
    mutating func nextName() -> String? {
        skipNoise()
        let start = index
        while index < sql.count {
            let byte = sql[index]
            if Self.isWordByte(byte) || byte == UInt8(ascii: ".") || byte >= 0x80 {
                index += 1
            } else if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "`") {
                index += 1
                while index < sql.count && sql[index] != byte { index += 1 }
                guard index < sql.count else { return nil } // cut off: not the whole name
                index += 1
            } else {
                break
            }
        }
        guard index > start, index < sql.count || index - start < 64 else { return nil }
        return String(decoding: UnsafeRawBufferPointer(rebasing: sql[start..<index]), as: UTF8.self)
    }

    mutating func peekByte() -> UInt8? {
        while index < sql.count && (sql[index] == 0x20 || sql[index] == 0x0A || sql[index] == 0x09 || sql[index] == 0x0D) { index += 1 }
        return index < sql.count ? sql[index] : nil
    }
}

/// One database operation (a SQL statement, a Redis command, a Memcached command), whichever parser saw it:
/// the input of ``DatabaseSpans``.
public struct DatabaseExchange: Sendable {
    /// Host PID of the process that made the exchange.
    public var pid: UInt32
    /// Client: the process sent the operation; server: it answered it.
    public var role: ExchangeRole
    /// `db.system.name` (`postgresql`, `mysql`, `mariadb`, `redis`, `memcached`).
    public var system: String
    public var operation: String?
    public var collection: String?
    public var namespace: String?
    /// Already shaped by the configured ``DatabaseQueryText`` (nil when off).
    public var queryText: String?
    /// The database's code for a failed (or warning) response: SQLSTATE, MySQL error number, Redis error prefix.
    public var statusCode: String?
    /// The operation failed (its status code, if any, says how).
    public var failed = false
    /// Operations sent together as one (a pipeline's count when several share one span; nil for one).
    public var batchSize: Int?
    public var local: SocketAddress?
    public var peer: SocketAddress?
    /// CLOCK_MONOTONIC nanoseconds.
    public var start: UInt64
    public var end: UInt64
    public var identity: SpanIdentity

    /// The fields a parser knows at the end of an operation, in one expression (appended without a copy).
    @inlinable
    public init(pid: UInt32, role: ExchangeRole, system: String, operation: String?, start: UInt64, end: UInt64, identity: SpanIdentity,
                collection: String? = nil, namespace: String? = nil, queryText: String? = nil, failed: Bool = false,
                statusCode: String? = nil, local: SocketAddress? = nil, peer: SocketAddress? = nil) {
        self.collection = collection
        self.pid = pid
        self.role = role
        self.system = system
        self.operation = operation
        self.start = start
        self.end = end
        self.identity = identity
        self.namespace = namespace
        self.queryText = queryText
        self.failed = failed
        self.statusCode = statusCode
        self.local = local
        self.peer = peer
    }
}

/// The one span builder of the database semantic-convention family (OTel database spans, stable):
/// name `{db.operation.name} {target}` (target: the collection, else the namespace, else `server.address:port`),
/// `db.system.name`, `db.operation.name`, `db.collection.name`, `db.namespace`, `db.query.text` when
/// configured, `db.response.status_code` and `error.type` for failures, `server.*` and `network.peer.*`.
/// The server process of a connection gets a SERVER span with the same attributes.
public enum DatabaseSpans {
    public static func span(_ exchange: DatabaseExchange, resource: Resource, scope: InstrumentationScope,
                            unixNanoseconds: (UInt64) -> UInt64) -> Span {
        let isServer = exchange.role == .server
        var attributes = Attributes(capacity: 14)
        attributes.appendUnchecked(SemanticConventions.dbSystemName, .string(exchange.system))
        if let operation = exchange.operation { attributes.appendUnchecked(SemanticConventions.dbOperationName, .string(operation)) }
        if let collection = exchange.collection { attributes.appendUnchecked(SemanticConventions.dbCollectionName, .string(collection)) }
        if let namespace = exchange.namespace { attributes.appendUnchecked(SemanticConventions.dbNamespace, .string(namespace)) }
        if let text = exchange.queryText { attributes.appendUnchecked(SemanticConventions.dbQueryText, .string(text)) }
        if let size = exchange.batchSize { attributes.appendUnchecked(SemanticConventions.dbOperationBatchSize, .int(Int64(size))) }
        if let code = exchange.statusCode { attributes.appendUnchecked(SemanticConventions.dbResponseStatusCode, .string(code)) }
        let server = isServer ? exchange.local : exchange.peer
        attributes.appendConnectionEnds(server: server, client: isServer ? exchange.peer : nil, peer: exchange.peer)
        var status = SpanStatus.unset
        if exchange.failed {
            status = .error(message: "")
            attributes.appendUnchecked(SemanticConventions.errorType, .string(exchange.statusCode ?? "_OTHER"))
        }
        let target = exchange.collection ?? exchange.namespace ?? server?.authority
        let name = switch (exchange.operation, target) {
        case (let operation?, let target?): operation + " " + target
        case (let operation?, nil): operation
        case (nil, let target?): target
        case (nil, nil): exchange.system
        }
        let start = unixNanoseconds(exchange.start)
        let end = max(unixNanoseconds(exchange.end), start)
        let identity = exchange.identity
        attributes.appendParentSource(of: identity)
        return Span(name: name, kind: isServer ? .server : .client, traceID: identity.traceID, spanID: identity.spanID,
                    parentSpanID: identity.parentSpanID, flags: identity.flags, startTimeUnixNano: start, endTimeUnixNano: end,
                    status: status, attributes: attributes, resource: resource, scope: scope)
    }
}
