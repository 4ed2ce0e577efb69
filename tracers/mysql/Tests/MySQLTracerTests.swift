import CTracerABI
import Foundation
import Glibc
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// The MySQL/MariaDB parser: capture events replayed through the connection tracker (no kernel), and Debian's
/// MariaDB 10.11 with the `mariadb` client, PyMySQL and libmariadb's prepared statements traced end to end.
final class MySQLTracerTests: XCTestCase {
    private final class Replay {
        let tracker: ConnectionTracker
        let tracer: MySQLTracer
        var spans: [Span] = []

        init(queryText: DatabaseQueryText = .off) {
            tracer = MySQLTracer(queryText: queryText)
            let parser = tracer.parser!
            tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: [parser]) }, countOnly: { _ in })
        }

        func feed(_ direction: CaptureChunk.Direction, _ bytes: [UInt8], length: Int? = nil, connection: UInt64 = 1, pid: UInt32 = 7,
                  tuple: capture_tuple = MySQLTracerTests.clientTuple, tls: Bool = false, time: UInt64) {
            var exchanges: [Exchange] = []
            CaptureEvents.chunk(connection: connection, pid: pid, direction: direction, data: bytes, length: length, timestamp: time,
                                tls: tls, tuple: tuple).withUnsafeBytes { tracker.handle($0, into: &exchanges) }
            for case .database(let exchange) in exchanges {
                spans.append(DatabaseSpans.span(exchange, resource: .empty, scope: InstrumentationScope(name: "test")) { $0 })
            }
        }

        func close(connection: UInt64 = 1, time: UInt64) {
            var exchanges: [Exchange] = []
            CaptureEvents.close(connection: connection, pid: 7, timestamp: time).withUnsafeBytes { tracker.handle($0, into: &exchanges) }
            for case .database(let exchange) in exchanges {
                spans.append(DatabaseSpans.span(exchange, resource: .empty, scope: InstrumentationScope(name: "test")) { $0 })
            }
        }

        var counters: MySQLTracerCounters { tracer.statistics }
    }

    private static let clientTuple = CaptureEvents.tuple(local: [127, 0, 0, 1], localPort: 40_000, remote: [127, 0, 0, 1], remotePort: 3306)

    // MARK: Packets (dev.mysql.com "MySQL Packets")

    private static func packet(_ sequence: UInt8, _ payload: [UInt8]) -> [UInt8] {
        [UInt8(payload.count & 0xFF), UInt8(payload.count >> 8 & 0xFF), UInt8(payload.count >> 16 & 0xFF), sequence] + payload
    }

    private static func le(_ value: UInt64, _ width: Int) -> [UInt8] { (0..<width).map { UInt8(value >> (8 * $0) & 0xFF) } }
    private static func lenenc(_ text: String) -> [UInt8] { [UInt8(text.utf8.count)] + Array(text.utf8) }
    private static func cstring(_ text: String) -> [UInt8] { Array(text.utf8) + [0] }

    static let protocol41: UInt64 = 1 << 9, secureConnection: UInt64 = 1 << 15, connectWithDB: UInt64 = 1 << 3
    static let deprecateEOF: UInt64 = 1 << 24, ssl: UInt64 = 1 << 11, pluginAuth: UInt64 = 1 << 19
    static let baseCapabilities = protocol41 | secureConnection | pluginAuth

    /// HandshakeV10 (sequence 0): version, thread id, auth data, capabilities (MariaDB's extended ones when
    /// the CLIENT_MYSQL bit is clear).
    private static func greeting(version: String, capabilities: UInt64) -> [UInt8] {
        var payload: [UInt8] = [10] + cstring(version) + le(42, 4) + Array(repeating: 0x41, count: 8) + [0]
        payload += le(capabilities & 0xFFFF, 2) + [45] + le(2, 2) + le(capabilities >> 16 & 0xFFFF, 2) + [21]
        payload += Array(repeating: 0, count: 6) + le(capabilities >> 32, 4) + Array(repeating: 0x42, count: 12) + [0]
        payload += cstring("mysql_native_password")
        return packet(0, payload)
    }

    /// HandshakeResponse41 (sequence 1) with a 20-byte auth response and the database.
    private static func handshakeResponse(capabilities: UInt64, user: String = "app", database: String?, sequence: UInt8 = 1) -> [UInt8] {
        let flags = capabilities | (database == nil ? 0 : connectWithDB)
        var payload = le(flags & 0xFFFF_FFFF, 4) + le(16 << 20, 4) + [45] + Array(repeating: 0, count: 19) + le(flags >> 32, 4)
        payload += cstring(user) + [20] + Array(repeating: 0x55, count: 20)
        if let database { payload += cstring(database) }
        return packet(sequence, payload + cstring("mysql_native_password"))
    }

    private static func ok(_ sequence: UInt8, header: UInt8 = 0, status: UInt64 = 2) -> [UInt8] {
        packet(sequence, [header, 0, 0] + le(status, 2) + le(0, 2))
    }
    private static func eof(_ sequence: UInt8, status: UInt64 = 2) -> [UInt8] { packet(sequence, [0xFE, 0, 0] + le(status, 2)) }
    private static func error(_ sequence: UInt8, code: UInt64, state: String) -> [UInt8] {
        packet(sequence, [0xFF] + le(code, 2) + Array("#\(state)".utf8) + Array("Table 'shop.missing' doesn't exist".utf8))
    }
    private static func command(_ code: UInt8, _ body: [UInt8]) -> [UInt8] { packet(0, [code] + body) }
    private static func query(_ text: String) -> [UInt8] { command(0x03, Array(text.utf8)) }
    private static func column(_ sequence: UInt8, _ name: String) -> [UInt8] {
        packet(sequence, lenenc("def") + lenenc("shop") + lenenc("items") + lenenc("items") + lenenc(name) + lenenc(name)
               + [0x0C] + le(45, 2) + le(255, 4) + [0xFD] + le(0, 2) + [0] + [0, 0])
    }
    /// A text result set of one column, its rows, EOF framing (no CLIENT_DEPRECATE_EOF).
    private static func textResult(first: UInt8, rows: [String], status: UInt64 = 2) -> [UInt8] {
        var bytes = packet(first, [1]) + column(first + 1, "name") + eof(first + 2)
        var sequence = first + 3
        for row in rows {
            bytes += packet(sequence, lenenc(row))
            sequence += 1
        }
        return bytes + eof(sequence, status: status)
    }

    /// Connects as the mariadb client does over TCP (greeting, response, OK), optionally split over reads.
    private func connect(_ replay: Replay, connection: UInt64 = 1, version: String = "5.5.5-10.11.6-MariaDB-0+deb12u1",
                         capabilities: UInt64 = baseCapabilities, database: String? = "shop") {
        let greeting = Self.greeting(version: version, capabilities: capabilities | Self.deprecateEOF | Self.connectWithDB)
        replay.feed(.receive, Array(greeting.prefix(40)), connection: connection, time: 1)
        replay.feed(.receive, Array(greeting.dropFirst(40)), connection: connection, time: 2)
        replay.feed(.send, Self.handshakeResponse(capabilities: capabilities, database: database), connection: connection, time: 3)
        replay.feed(.receive, Self.ok(2), connection: connection, time: 4)
    }

    private func attribute(_ span: Span?, _ key: String) -> String? { span?.attributes[key]?.stringValue }

    func testQueriesResultSetsErrorsAndTheDatabaseOfTheConnection() {
        let replay = Replay(queryText: .sanitized)
        connect(replay)
        replay.feed(.send, Self.query("CREATE TABLE items (id int, name text)"), time: 10)
        replay.feed(.receive, Self.ok(1), time: 11)
        replay.feed(.send, Self.query("INSERT INTO items VALUES (1, 'a;b')"), time: 20)
        replay.feed(.receive, Self.ok(1), time: 21)
        // A result set split over three reads, one of them in the middle of a packet header.
        let result = Self.textResult(first: 1, rows: ["a;b", "c"])
        replay.feed(.send, Self.query("SELECT name FROM items"), time: 30)
        replay.feed(.receive, Array(result.prefix(10)), time: 31)
        replay.feed(.receive, Array(result[10..<50]), time: 32)
        XCTAssertEqual(replay.spans.count, 2, "the result set has not ended")
        replay.feed(.receive, Array(result.dropFirst(50)), time: 33)
        replay.feed(.send, Self.query("SELECT * FROM missing"), time: 40)
        replay.feed(.receive, Self.error(1, code: 1146, state: "42S02"), time: 41)
        // COM_PING and COM_INIT_DB make no span; a successful COM_INIT_DB is the connection's database from now on.
        replay.feed(.send, Self.command(0x0E, []), time: 50)
        replay.feed(.receive, Self.ok(1), time: 51)
        replay.feed(.send, Self.command(0x02, Array("missingdb".utf8)), time: 52)
        replay.feed(.receive, Self.error(1, code: 1049, state: "42000"), time: 53)
        replay.feed(.send, Self.command(0x02, Array("archive".utf8)), time: 54)
        replay.feed(.receive, Self.ok(1), time: 55)
        replay.feed(.send, Self.query("DELETE FROM items WHERE id = 7"), time: 60)
        replay.feed(.receive, Self.ok(1), time: 61)
        // `USE` sent as a query: the database changes when the server says OK (not when it fails).
        replay.feed(.send, Self.query("USE `missing db`"), time: 62)
        replay.feed(.receive, Self.error(1, code: 1049, state: "42000"), time: 63)
        replay.feed(.send, Self.query("use reports"), time: 64)
        replay.feed(.receive, Self.ok(1), time: 65)
        replay.feed(.send, Self.query("SELECT 1"), time: 66)
        replay.feed(.receive, Self.packet(1, [1]) + Self.column(2, "1") + Self.eof(3) + Self.packet(4, Self.lenenc("1")) + Self.eof(5), time: 67)
        XCTAssertEqual(replay.spans.suffix(3).map(\.name), ["USE archive", "USE reports", "SELECT reports"])
        replay.spans.removeLast(3)
        XCTAssertEqual(replay.spans.map(\.name), ["CREATE shop", "INSERT items", "SELECT items", "SELECT missing", "DELETE items"])
        XCTAssertTrue(replay.spans.allSatisfy { attribute($0, SemanticConventions.dbSystemName) == "mariadb" && $0.kind == .client })
        XCTAssertEqual(replay.spans.map { attribute($0, SemanticConventions.dbNamespace) }, ["shop", "shop", "shop", "shop", "archive"])
        XCTAssertEqual(attribute(replay.spans[1], SemanticConventions.dbQueryText), "INSERT INTO items VALUES (?, ?)")
        XCTAssertEqual(attribute(replay.spans[1], SemanticConventions.dbOperationName), "INSERT")
        XCTAssertEqual(attribute(replay.spans[1], SemanticConventions.dbCollectionName), "items")
        XCTAssertEqual(replay.spans[2].startTimeUnixNano, 30)
        XCTAssertEqual(replay.spans[2].endTimeUnixNano, 33, "the result set ended with its last EOF")
        XCTAssertEqual(replay.spans[2].status, .unset)
        XCTAssertEqual(replay.spans[3].status, .error(message: ""))
        XCTAssertEqual(attribute(replay.spans[3], SemanticConventions.dbResponseStatusCode), "1146")
        XCTAssertEqual(attribute(replay.spans[3], SemanticConventions.errorType), "1146")
        XCTAssertNil(attribute(replay.spans[2], SemanticConventions.dbResponseStatusCode))
        XCTAssertEqual(replay.spans[4].attributes[SemanticConventions.serverPort]?.intValue, 3306)
        // A result set larger than the capture (rows' packet headers in the uncaptured part of a read): the
        // statement ends with the server's last bytes before the next command, which is matched again.
        let big = Self.textResult(first: 1, rows: Array(repeating: String(repeating: "x", count: 200), count: 40))
        replay.feed(.send, Self.query("SELECT name FROM items"), time: 70)
        replay.feed(.receive, Array(big.prefix(1024)), length: 6000, time: 71)
        replay.feed(.receive, Array(big.dropFirst(6000).prefix(1024)), length: big.count - 6000, time: 72)
        replay.feed(.send, Self.query("UPDATE items SET name = 'z'"), time: 80)
        replay.feed(.receive, Self.ok(1), time: 81)
        XCTAssertEqual(replay.spans.suffix(2).map(\.name), ["SELECT items", "UPDATE items"])
        XCTAssertEqual(replay.spans.suffix(2).map(\.endTimeUnixNano), [72, 81])
        XCTAssertEqual(replay.counters.beyondCapture.load(ordering: .relaxed), 1)
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 0)
        XCTAssertEqual(replay.tracker.counters.unclaimedConnections.load(ordering: .relaxed), 0)
    }

    /// Prepared statements with CLIENT_DEPRECATE_EOF (result sets end with an OK packet with a 0xFE header),
    /// against a MySQL server: PREPARE_OK's id names the statement of each COM_STMT_EXECUTE, pipelined too.
    func testPreparedStatementsPipelinedWithDeprecatedEOF() {
        let replay = Replay(queryText: .full)
        connect(replay, version: "8.0.36", capabilities: Self.baseCapabilities | Self.deprecateEOF, database: nil)
        // PREPARE: id 5, one column, one parameter (their definitions, no EOFs).
        replay.feed(.send, Self.command(0x16, Array("SELECT name FROM items WHERE id = ?".utf8)), time: 10)
        replay.feed(.receive, Self.packet(1, [0] + Self.le(5, 4) + Self.le(1, 2) + Self.le(1, 2) + [0] + Self.le(0, 2))
                    + Self.column(2, "?") + Self.column(3, "name"), time: 11)
        XCTAssertTrue(replay.spans.isEmpty, "a successful prepare makes no span")
        // Two executes in one write; both binary result sets in one read.
        let execute = Self.command(0x17, Self.le(5, 4) + [0] + Self.le(1, 4) + [0, 1, 3, 0] + Self.le(1, 4))
        replay.feed(.send, execute + execute, time: 20)
        let binary = Self.packet(1, [1]) + Self.column(2, "name") + Self.packet(3, [0, 0] + Self.lenenc("a")) + Self.ok(4, header: 0xFE)
        replay.feed(.receive, binary + binary, time: 21)
        XCTAssertEqual(replay.spans.map(\.name), ["SELECT items", "SELECT items"])
        XCTAssertEqual(attribute(replay.spans[0], SemanticConventions.dbSystemName), "mysql")
        XCTAssertEqual(attribute(replay.spans[0], SemanticConventions.dbQueryText), "SELECT name FROM items WHERE id = ?")
        XCTAssertNil(attribute(replay.spans[0], SemanticConventions.dbNamespace), "no database was named")
        // A failing PREPARE makes a span with the error; an EXECUTE of a statement never seen names no operation.
        replay.feed(.send, Self.command(0x16, Array("SELECT * FROM missing WHERE id = ?".utf8)), time: 30)
        replay.feed(.receive, Self.error(1, code: 1146, state: "42S02"), time: 31)
        replay.feed(.send, Self.command(0x17, Self.le(99, 4) + [0] + Self.le(1, 4)), time: 40)
        replay.feed(.receive, Self.ok(1), time: 41)
        XCTAssertEqual(replay.spans.count, 4)
        XCTAssertEqual(replay.spans[2].name, "SELECT missing")
        XCTAssertEqual(attribute(replay.spans[2], SemanticConventions.dbResponseStatusCode), "1146")
        XCTAssertNil(attribute(replay.spans[3], SemanticConventions.dbOperationName))
        // COM_STMT_CLOSE (no response) forgets the statement; COM_STMT_RESET is answered by OK and makes no span.
        replay.feed(.send, Self.command(0x1A, Self.le(5, 4)) + Self.command(0x19, Self.le(5, 4)) + execute, time: 50)
        replay.feed(.receive, Self.ok(1) + Self.ok(1), time: 51)
        XCTAssertEqual(replay.spans.count, 5)
        XCTAssertNil(attribute(replay.spans[4], SemanticConventions.dbOperationName))
        // A multi-statement query: one span, ended by the last result (the first OK says more results exist).
        replay.feed(.send, Self.query("DELETE FROM items; SELECT 1"), time: 60)
        replay.feed(.receive, Self.ok(1, status: 0x000A) + Self.packet(2, [1]) + Self.column(3, "1") + Self.packet(4, Self.lenenc("1"))
                    + Self.ok(5, header: 0xFE), time: 61)
        XCTAssertEqual(replay.spans.count, 6)
        XCTAssertEqual(replay.spans[5].endTimeUnixNano, 61)
        XCTAssertEqual(attribute(replay.spans[5], SemanticConventions.dbOperationName), "DELETE")
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 0)
        XCTAssertEqual(replay.counters.withoutReply.load(ordering: .relaxed), 0)
    }

    func testGarbageTruncatedPacketsAndEncryptionAreCountedNeverSpans() {
        let replay = Replay()
        // Not a greeting: not claimed.
        replay.feed(.receive, Array("HTTP/1.1 200 OK\r\n\r\n".utf8), connection: 1, time: 1)
        replay.feed(.receive, Self.packet(0, [9] + Self.cstring("4.0.1")), connection: 2, time: 1) // protocol 9
        // Garbage after the handshake: sequence numbers out of order.
        connect(replay, connection: 3)
        replay.feed(.send, Self.query("SELECT 1"), connection: 3, time: 10)
        replay.feed(.receive, Array("garbage that is not a packet".utf8), connection: 3, time: 11)
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 1)
        XCTAssertEqual(replay.counters.withoutReply.load(ordering: .relaxed), 1)
        replay.feed(.send, Self.query("SELECT 1"), connection: 3, time: 12)
        replay.feed(.receive, Self.ok(1), connection: 3, time: 13)
        // A column count beyond the server's limit, and a command byte that is none.
        connect(replay, connection: 4)
        replay.feed(.send, Self.query("SELECT 1"), connection: 4, time: 20)
        replay.feed(.receive, Self.packet(1, [0xFE] + Self.le(1 << 40, 8)), connection: 4, time: 21)
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 2)
        connect(replay, connection: 5)
        replay.feed(.send, Self.packet(0, [0x99, 1, 2, 3]), connection: 5, time: 30)
        XCTAssertEqual(replay.counters.unsupported.load(ordering: .relaxed), 1)
        // An absurd 16 MiB packet of which 30 bytes came, then the connection closed: no span.
        connect(replay, connection: 6)
        replay.feed(.send, Self.query("SELECT 1"), connection: 6, time: 40)
        replay.feed(.receive, [0xFF, 0xFF, 0xFF, 1] + Array(repeating: 0xFB, count: 26), connection: 6, time: 41)
        replay.close(connection: 6, time: 42)
        XCTAssertEqual(replay.counters.withoutReply.load(ordering: .relaxed), 3)
        // SSLRequest: TLS follows; the socket's ciphertext is never parsed.
        replay.feed(.receive, Self.greeting(version: "10.11.6-MariaDB", capabilities: Self.baseCapabilities | Self.ssl), connection: 7, time: 50)
        replay.feed(.send, Self.packet(1, Self.le(Self.baseCapabilities | Self.ssl, 4) + Self.le(1 << 24, 4) + [45] + Array(repeating: 0, count: 23)),
                    connection: 7, time: 51)
        replay.feed(.send, [0x16, 0x03, 0x01, 0x02, 0x00] + Array(repeating: 0x11, count: 60), connection: 7, time: 52)
        XCTAssertEqual(replay.counters.encryptedConnections.load(ordering: .relaxed), 1)
        // A refused login.
        replay.feed(.receive, Self.greeting(version: "10.11.6-MariaDB", capabilities: Self.baseCapabilities), connection: 8, time: 60)
        replay.feed(.send, Self.handshakeResponse(capabilities: Self.baseCapabilities, database: "shop"), connection: 8, time: 61)
        replay.feed(.receive, Self.error(2, code: 1045, state: "28000"), connection: 8, time: 62)
        XCTAssertEqual(replay.counters.failedHandshakes.load(ordering: .relaxed), 1)
        XCTAssertTrue(replay.spans.isEmpty)
        XCTAssertEqual(replay.tracker.counters.unclaimedConnections.load(ordering: .relaxed), 0, "still offered to other parsers")
        // A well-formed connection after all that still makes its span.
        connect(replay, connection: 9)
        replay.feed(.send, Self.query("SELECT 1"), connection: 9, time: 70)
        replay.feed(.receive, Self.packet(1, [1]) + Self.column(2, "1") + Self.eof(3) + Self.packet(4, Self.lenenc("1")) + Self.eof(5),
                    connection: 9, time: 71)
        XCTAssertEqual(replay.spans.map(\.name), ["SELECT shop"])
    }

    /// Commands pipelined without end are bounded: beyond 1024 waiting, the oldest are dropped and counted.
    func testUnansweredPipelinedCommandsAreBounded() {
        let replay = Replay()
        connect(replay)
        let pings = Array((0..<1100).map { _ in Self.command(0x0E, []) }.joined())
        for (index, start) in stride(from: 0, to: pings.count, by: 1000).enumerated() {
            replay.feed(.send, Array(pings[start..<min(start + 1000, pings.count)]), time: 10 + UInt64(index))
        }
        XCTAssertEqual(replay.counters.abandoned.load(ordering: .relaxed), 76)
        replay.close(time: 100)
        XCTAssertEqual(replay.counters.withoutReply.load(ordering: .relaxed), 1024)
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 0)
    }

    /// After an SSLRequest the socket carries TLS: its ciphertext (the handshake in the SSLRequest's own write too)
    /// is skipped, and libssl's plaintext is parsed from the handshake response (sequence 2) on.
    func testTLSIsFollowedThroughLibsslPlaintext() {
        let replay = Replay()
        let capabilities = Self.baseCapabilities | Self.ssl
        replay.feed(.receive, Self.greeting(version: "10.11.6-MariaDB", capabilities: capabilities | Self.connectWithDB), time: 1)
        let clientHello: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01] + Array(repeating: 0x33, count: 80)
        replay.feed(.send, Self.packet(1, Self.le(capabilities, 4) + Self.le(1 << 24, 4) + [45] + Array(repeating: 0, count: 23)) + clientHello,
                    time: 2)
        replay.feed(.receive, [0x16, 0x03, 0x03, 0x00, 0x7A] + Array(repeating: 0x44, count: 122), time: 3)
        replay.feed(.send, Self.handshakeResponse(capabilities: capabilities, database: "shop", sequence: 2), tls: true, time: 4)
        replay.feed(.send, [0x17, 0x03, 0x03, 0x00, 0x40] + Array(repeating: 0x55, count: 64), time: 4)
        replay.feed(.receive, [0x17, 0x03, 0x03, 0x00, 0x20] + Array(repeating: 0x66, count: 32), time: 5)
        replay.feed(.receive, Self.ok(3), tls: true, time: 5)
        replay.feed(.send, [0x17, 0x03, 0x03, 0x00, 0x30] + Array(repeating: 0x77, count: 48), time: 6)
        replay.feed(.send, Self.query("SELECT name FROM items"), tls: true, time: 6)
        replay.feed(.receive, Self.textResult(first: 1, rows: ["a"]), tls: true, time: 7)
        XCTAssertEqual(replay.spans.map(\.name), ["SELECT items"])
        XCTAssertEqual(attribute(replay.spans.first, SemanticConventions.dbNamespace), "shop")
        XCTAssertEqual(replay.counters.encryptedConnections.load(ordering: .relaxed), 1)
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 0)
    }

    /// Both ends of one connection replayed (real PIDs, so both sides are in this network namespace): each server
    /// span is the child of the client span of the same command; a server seen from mid-stream is never claimed.
    func testServerSpansAreTheChildrenOfTheClientSpansOfTheSameCommands() {
        let replay = Replay()
        let me = UInt32(getpid())
        let serverTuple = CaptureEvents.tuple(local: [127, 0, 0, 1], localPort: 3306, remote: [127, 0, 0, 1], remotePort: 40_000)
        var time: UInt64 = 1_000
        func both(_ bytes: [UInt8], fromClient: Bool) {
            time += 10
            let clientSide = { replay.feed(fromClient ? .send : .receive, bytes, connection: 1, pid: me, tuple: Self.clientTuple, time: time) }
            let serverSide = { replay.feed(fromClient ? .receive : .send, bytes, connection: 2, pid: me, tuple: serverTuple, time: time + 1) }
            if fromClient { clientSide(); serverSide() } else { serverSide(); clientSide() }
        }
        both(Self.greeting(version: "5.5.5-10.11.6-MariaDB", capabilities: Self.baseCapabilities | Self.connectWithDB), fromClient: false)
        both(Self.handshakeResponse(capabilities: Self.baseCapabilities, database: "shop"), fromClient: true)
        both(Self.ok(2), fromClient: false)
        both(Self.query("INSERT INTO items VALUES (1, 'a')"), fromClient: true)
        both(Self.ok(1), fromClient: false)
        both(Self.command(0x16, Array("SELECT * FROM missing WHERE id = ?".utf8)), fromClient: true)
        both(Self.error(1, code: 1146, state: "42S02"), fromClient: false)
        let clients = replay.spans.filter { $0.kind == .client }, servers = replay.spans.filter { $0.kind == .server }
        XCTAssertEqual(clients.map(\.name), ["INSERT items", "SELECT missing"])
        XCTAssertEqual(servers.map(\.name), ["INSERT items", "SELECT missing"])
        XCTAssertEqual(servers.map(\.parentSpanID), clients.map(\.spanID))
        XCTAssertEqual(servers.map(\.traceID), clients.map(\.traceID))
        XCTAssertEqual(replay.tracker.peerLinks.counters.linked.load(ordering: .relaxed), 2)
    }

    // MARK: End to end

    /// Debian's MariaDB 10.11 in a scratch directory on 127.0.0.1:`port` (no TLS, grant tables skipped: any
    /// user logs in), with database `shop` and table `items` (one row).
    private final class MariaDBServer {
        let process: Process
        let port: Int

        /// `certificate`: PEM certificate and key files for TLS (none: the server offers no TLS).
        init(directory: URL, certificate: (certificate: String, key: String)? = nil) throws {
            port = unusedTCPPort()
            let data = directory.appendingPathComponent("data").path
            try TestSupport.run("/usr/bin/mariadb-install-db", ["--no-defaults", "--datadir=" + data, "--user=root", "--skip-test-db",
                                                                 "--auth-root-authentication-method=normal"])
            process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/mariadbd")
            process.arguments = ["--no-defaults", "--datadir=" + data, "--user=root", "--bind-address=127.0.0.1", "--port=\(port)",
                                 "--socket=" + directory.appendingPathComponent("mariadb.sock").path, "--skip-grant-tables",
                                 "--innodb-buffer-pool-size=16M", "--pid-file=" + directory.appendingPathComponent("mariadb.pid").path]
                + (certificate.map { ["--ssl-cert=" + $0.certificate, "--ssl-key=" + $0.key] } ?? [])
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            guard waitUntil(timeout: 30, { (try? TestSupport.run("/usr/bin/mariadb", self.arguments("SELECT 1"))) != nil }) else {
                try prerequisiteMissing("mariadb-server", "mariadbd did not accept connections on 127.0.0.1:\(port) within 30 s")
            }
            try TestSupport.run("/usr/bin/mariadb", arguments("CREATE DATABASE shop; CREATE TABLE shop.items (id int, name text); "
                                                              + "INSERT INTO shop.items VALUES (1, 'apple')"))
        }

        var pid: Int32 { process.processIdentifier }

        /// The `mariadb` client's arguments (`--no-defaults` must come first); plain TCP unless `tls`.
        func arguments(_ statements: String, database: String? = nil, options: [String] = [], tls: Bool = false) -> [String] {
            ["--no-defaults", "-h", "127.0.0.1", "-P", String(port), "-u", "root", tls ? "--ssl" : "--skip-ssl"]
                + (database.map { ["-D", $0] } ?? []) + options + ["-e", statements]
        }

        deinit {
            if process.isRunning { kill(process.processIdentifier, SIGTERM) }
            process.waitUntilExit()
        }
    }

    private func startMariaDB(tls: Bool = false) throws -> MariaDBServer {
        try requireBPF()
        try requireExecutable("/usr/sbin/mariadbd", package: "mariadb-server")
        try requireExecutable("/usr/bin/mariadb-install-db", package: "mariadb-server")
        try requireExecutable("/usr/bin/mariadb", package: "mariadb-client")
        let directory = try temporaryDirectory(self)
        guard tls else { return try MariaDBServer(directory: directory) }
        try requireExecutable("/usr/bin/openssl", package: "openssl")
        let certificate = directory.appendingPathComponent("cert.pem").path, key = directory.appendingPathComponent("key.pem").path
        try TestSupport.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", certificate,
                                                 "-days", "1", "-subj", "/CN=localhost"])
        return try MariaDBServer(directory: directory, certificate: (certificate, key))
    }

    /// Spans of `pid` of `kind` whose operation is not one of the client's own start-up queries.
    private func spans(_ harness: TracingHarness, of pid: Int32, kind: SpanKind, count: Int) -> [Span] {
        _ = harness.waitForSpans(of: pid, kind: kind, count: count)
        return harness.spans(of: pid, kind: kind).filter { attribute($0, SemanticConventions.dbSystemName) == "mariadb" }
            .sorted { $0.startTimeUnixNano < $1.startTimeUnixNano }
    }

    func testMariadbClientAgainstMariaDBGivesClientAndServerSpans() throws {
        let server = try startMariaDB()
        // --force goes on after the error; the client then stays a second, so the agent reads its commands while
        // it lives (same-host linking looks up its network namespace).
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", "/usr/bin/mariadb"]
                                      + server.arguments("INSERT INTO items VALUES (2, 'pear'); SELECT name FROM items WHERE id = 2; "
                                                         + "SELECT * FROM missing_table; DO SLEEP(1)", database: "shop", options: ["--force"]))
        let harness = try TracingHarness(pids: [server.pid, client.pid])
        client.release()
        XCTAssertEqual(client.waitForExit(), 1, "a statement failed")
        let clientSpans = spans(harness, of: client.pid, kind: .client, count: 3).filter { attribute($0, SemanticConventions.dbCollectionName) != nil }
        XCTAssertEqual(clientSpans.map(\.name), ["INSERT items", "SELECT items", "SELECT missing_table"])
        XCTAssertTrue(clientSpans.allSatisfy { attribute($0, SemanticConventions.dbNamespace) == "shop" })
        XCTAssertTrue(clientSpans.allSatisfy { $0.attributes[SemanticConventions.serverPort]?.intValue == Int64(server.port) })
        XCTAssertTrue(clientSpans.allSatisfy { $0.attributes[SemanticConventions.dbQueryText] == nil }, "no query text unless configured")
        XCTAssertEqual(clientSpans.map(\.status), [.unset, .unset, .error(message: "")])
        XCTAssertEqual(attribute(clientSpans.last, SemanticConventions.dbResponseStatusCode), "1146")
        let serverSpans = spans(harness, of: server.pid, kind: .server, count: 3).filter { attribute($0, SemanticConventions.dbCollectionName) != nil }
        XCTAssertEqual(serverSpans.map(\.name), ["INSERT items", "SELECT items", "SELECT missing_table"])
        XCTAssertEqual(attribute(serverSpans.last, SemanticConventions.dbResponseStatusCode), "1146")
        XCTAssertEqual(serverSpans.first?.attributes[SemanticConventions.serverPort]?.intValue, Int64(server.port))
        // Same-host linking: a linked server span is the child of the client span of the same command. (Under load the
        // server may answer before the agent reads the client's write, and then makes unlinked spans: never wrong ones.)
        XCTAssertEqual(serverSpans.count, clientSpans.count)
        for (server, client) in zip(serverSpans, clientSpans) {
            XCTAssertTrue(server.parentSpanID == .invalid || (server.parentSpanID == client.spanID && server.traceID == client.traceID))
        }
        XCTAssertEqual(harness.agent.unclaimedConnections(pid: client.pid), 0)
    }

    /// The mariadb client over TLS (OpenSSL's libssl): followed through the libssl plaintext. (mariadbd's side is
    /// not asserted: its non-blocking SSL_read returns -1, which the capture layer's uretprobe reads as a 4 GiB
    /// read; see tracers/mysql/README.md.)
    func testMariadbClientOverTLSIsFollowedThroughLibsslPlaintext() throws {
        let server = try startMariaDB(tls: true)
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", "/usr/bin/mariadb"]
                                      + server.arguments("SELECT name FROM items WHERE id = 1; SHOW STATUS LIKE 'Ssl_cipher'; DO SLEEP(1)",
                                                         database: "shop", tls: true))
        // The server is selected too: its libssl (the same file) is then probed before the client execs mariadb.
        let harness = try TracingHarness(pids: [server.pid, client.pid])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)
        XCTAssertTrue(client.output().contains("TLS_"), "the session used TLS")
        let clientSpans = spans(harness, of: client.pid, kind: .client, count: 3)
        XCTAssertEqual(clientSpans.map(\.name), ["SELECT items", "SHOW shop", "DO shop"])
        XCTAssertTrue(clientSpans.allSatisfy { attribute($0, SemanticConventions.dbNamespace) == "shop" && $0.status == .unset })
        XCTAssertTrue(clientSpans.allSatisfy { $0.attributes[SemanticConventions.serverPort]?.intValue == Int64(server.port) })
    }

    func testPyMySQLQueriesErrorsAndSelectDB() throws {
        let server = try startMariaDB()
        guard (try? TestSupport.run("/usr/bin/python3", ["-c", "import pymysql"])) != nil else {
            try prerequisiteMissing("PyMySQL", "Python's pymysql module is missing (apt-get install python3-pymysql, or scripts/install-deps.sh)")
        }
        let directory = try temporaryDirectory(self)
        let script = directory.appendingPathComponent("client.py")
        try """
        import pymysql, sys
        conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="app", database="shop", autocommit=True)
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO items VALUES (%s, %s)", (3, "plum"))
            cursor.execute("SELECT name FROM items WHERE id = %s", (3,))
            assert cursor.fetchone() == ("plum",)
            try:
                cursor.execute("UPDATE missing SET name = %s", ("x",))
            except pymysql.err.ProgrammingError:
                pass
            conn.select_db("mysql")
            cursor.execute("DELETE FROM shop.items WHERE id = %s", (3,))
        conn.ping()
        conn.close()
        """.write(to: script, atomically: true, encoding: .utf8)
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", "/usr/bin/python3", script.path, String(server.port)])
        let harness = try TracingHarness(pids: [client.pid], tracers: [MySQLTracer(queryText: .sanitized)])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)
        let spans = spans(harness, of: client.pid, kind: .client, count: 4).filter { attribute($0, SemanticConventions.dbCollectionName) != nil }
        XCTAssertEqual(spans.map(\.name), ["INSERT items", "SELECT items", "UPDATE missing", "DELETE shop.items"])
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.dbNamespace) }, ["shop", "shop", "shop", "mysql"], "COM_INIT_DB changes it")
        XCTAssertEqual(attribute(spans[0], SemanticConventions.dbQueryText), "INSERT INTO items VALUES (?, ?)", "PyMySQL interpolates: literals")
        XCTAssertEqual(attribute(spans[2], SemanticConventions.dbResponseStatusCode), "1146")
        XCTAssertEqual(spans[2].status, .error(message: ""))
        XCTAssertEqual(spans[3].status, .unset)
    }

    /// libmariadb's binary protocol (mysql_stmt_prepare/execute): each execute a span named by its statement.
    func testLibmariadbPreparedStatementsGiveOneSpanPerExecute() throws {
        let server = try startMariaDB()
        guard FileManager.default.fileExists(atPath: "/usr/include/mariadb/mysql.h") else {
            try prerequisiteMissing("libmariadb-dev", "/usr/include/mariadb/mysql.h is missing (apt-get install libmariadb-dev)")
        }
        let directory = try temporaryDirectory(self)
        let program = try compileC("""
            #include <mysql.h>
            #include <stdio.h>
            #include <stdlib.h>
            #include <string.h>
            #include <unistd.h>
            static int fail(MYSQL *db, const char *what) { fprintf(stderr, "%s: %s\\n", what, mysql_error(db)); return 1; }
            int main(int argc, char **argv) {
                MYSQL *db = mysql_init(NULL);
                if (!mysql_real_connect(db, "127.0.0.1", "app", "", "shop", (unsigned)atoi(argv[1]), NULL, 0)) return fail(db, "connect");
                const char *text = "SELECT name FROM items WHERE id = ?";
                MYSQL_STMT *select = mysql_stmt_init(db);
                if (mysql_stmt_prepare(select, text, strlen(text))) return fail(db, "prepare");
                int id = 1;
                MYSQL_BIND parameter;
                memset(&parameter, 0, sizeof parameter);
                parameter.buffer_type = MYSQL_TYPE_LONG;
                parameter.buffer = &id;
                if (mysql_stmt_bind_param(select, &parameter)) return fail(db, "bind");
                for (int round = 0; round < 3; round++) {
                    if (mysql_stmt_execute(select) || mysql_stmt_store_result(select)) return fail(db, "execute");
                    mysql_stmt_free_result(select);
                }
                mysql_stmt_close(select);
                const char *missing = "SELECT name FROM missing WHERE id = ?";
                MYSQL_STMT *bad = mysql_stmt_init(db);
                if (mysql_stmt_prepare(bad, missing, strlen(missing)) == 0) return 2;
                mysql_stmt_close(bad);
                sleep(1); /* alive while the agent reads its commands (same-host linking looks up its namespace) */
                mysql_close(db);
                return 0;
            }
            """, name: "prepared", in: directory, flags: ["-I/usr/include/mariadb", "-lmariadb"])
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", program.path, String(server.port)])
        let harness = try TracingHarness(pids: [server.pid, client.pid], tracers: [MySQLTracer(queryText: .full)])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)
        let clientSpans = spans(harness, of: client.pid, kind: .client, count: 4)
        XCTAssertEqual(clientSpans.map(\.name), ["SELECT items", "SELECT items", "SELECT items", "SELECT missing"])
        XCTAssertTrue(clientSpans.prefix(3).allSatisfy {
            attribute($0, SemanticConventions.dbQueryText) == "SELECT name FROM items WHERE id = ?" && $0.status == .unset
                && attribute($0, SemanticConventions.dbNamespace) == "shop"
        })
        XCTAssertEqual(attribute(clientSpans.last, SemanticConventions.dbResponseStatusCode), "1146", "the failed prepare")
        let serverSpans = spans(harness, of: server.pid, kind: .server, count: 4)
        XCTAssertEqual(serverSpans.map(\.name), ["SELECT items", "SELECT items", "SELECT items", "SELECT missing"])
        XCTAssertEqual(serverSpans.count, clientSpans.count)
        for (server, client) in zip(serverSpans, clientSpans) {
            XCTAssertTrue(server.parentSpanID == .invalid || (server.parentSpanID == client.spanID && server.traceID == client.traceID))
        }
        XCTAssertEqual(harness.agent.unclaimedConnections(pid: client.pid), 0)
    }
}
