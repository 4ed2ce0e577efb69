import CTracerABI
import Foundation
import Glibc
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// The PostgreSQL parser: capture events replayed through the connection tracker (no kernel), and Debian's
/// Postgres 15 with psql and psycopg traced end to end.
final class PostgresTracerTests: XCTestCase {
    private final class Replay {
        let tracker: ConnectionTracker
        let tracer: PostgresTracer
        var spans: [Span] = []

        init(queryText: DatabaseQueryText = .off) {
            tracer = PostgresTracer(queryText: queryText)
            let parser = tracer.parser!
            tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: [parser]) }, countOnly: { _ in })
        }

        func feed(_ direction: CaptureChunk.Direction, _ bytes: [UInt8], length: Int? = nil, connection: UInt64 = 1, pid: UInt32 = 7,
                  tuple: capture_tuple = PostgresTracerTests.clientTuple, time: UInt64) {
            var exchanges: [Exchange] = []
            CaptureEvents.chunk(connection: connection, pid: pid, direction: direction, data: bytes, length: length, timestamp: time,
                                tuple: tuple).withUnsafeBytes { tracker.handle($0, into: &exchanges) }
            for case .database(let exchange) in exchanges {
                spans.append(DatabaseSpans.span(exchange, resource: .empty, scope: InstrumentationScope(name: "test")) { $0 })
            }
        }
    }

    /// Both ends of one loopback connection (the server's is the client's reversed).
    private static let clientTuple = CaptureEvents.tuple(local: [127, 0, 0, 1], localPort: 40_000, remote: [127, 0, 0, 1], remotePort: 5432)
    private static let serverTuple = CaptureEvents.tuple(local: [127, 0, 0, 1], localPort: 5432, remote: [127, 0, 0, 1], remotePort: 40_000)

    /// A typed message: type byte, Int32 length (counting itself), body.
    private static func message(_ type: Character, _ body: [UInt8]) -> [UInt8] {
        [type.asciiValue!] + int32(body.count + 4) + body
    }

    private static func int32(_ value: Int) -> [UInt8] {
        [UInt8(value >> 24 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }

    /// NUL-terminated strings.
    private static func strings(_ values: String...) -> [UInt8] { values.flatMap { Array($0.utf8) + [0] } }

    private static let sslRequest = int32(8) + int32(80_877_103)
    private static func startup(user: String, database: String) -> [UInt8] {
        let body = int32(196_608) + strings("user", user, "database", database) + [0]
        return int32(body.count + 4) + body
    }
    private static let ready = message("Z", [UInt8(ascii: "I")])
    private static func complete(_ tag: String) -> [UInt8] { message("C", strings(tag)) }
    private static func error(_ sqlState: String) -> [UInt8] {
        message("E", [UInt8(ascii: "S")] + strings("ERROR") + [UInt8(ascii: "C")] + strings(sqlState) + [UInt8(ascii: "M")] + strings("failed") + [0])
    }
    private static func parse(_ name: String, _ query: String) -> [UInt8] { message("P", strings(name, query) + [0, 0]) }
    private static func bind(_ portal: String, _ statement: String) -> [UInt8] { message("B", strings(portal, statement) + [0, 0, 0, 0, 0, 0]) }
    private static func execute(_ portal: String) -> [UInt8] { message("E", strings(portal) + [0, 0, 0, 0]) }
    private static let sync = message("S", [])

    /// Connects as psql does over TCP: SSLRequest refused (`N`), StartupMessage split over two writes.
    private func connect(_ replay: Replay, connection: UInt64 = 1) {
        replay.feed(.send, Self.sslRequest, connection: connection, time: 1)
        replay.feed(.receive, [UInt8(ascii: "N")], connection: connection, time: 2)
        let startup = Self.startup(user: "app", database: "shop")
        replay.feed(.send, Array(startup.prefix(6)), connection: connection, time: 3)
        replay.feed(.send, Array(startup.dropFirst(6)), connection: connection, time: 4)
        replay.feed(.receive, Self.message("R", Self.int32(0)) + Self.message("S", Self.strings("server_version", "15")) + Self.ready,
                    connection: connection, time: 5)
    }

    func testSimpleQueryStatementsSplitRepliesAndUncapturedRows() {
        let replay = Replay(queryText: .sanitized)
        connect(replay)
        replay.feed(.send, Self.message("Q", Self.strings("CREATE TABLE items (id int, name text); INSERT INTO items VALUES (1, 'a;b'); SELECT name FROM items")),
                    time: 10)
        let replies = Self.complete("CREATE TABLE") + Self.complete("INSERT 0 1")
        replay.feed(.receive, Array(replies.prefix(20)), time: 20)
        replay.feed(.receive, Array(replies.dropFirst(20)), time: 30)
        // A row description, then a 5000-byte DataRow of which only the first bytes were captured.
        let row = Self.message("D", [0, 1] + Self.int32(4990) + Array(repeating: 0x61, count: 4990))
        let description = Self.message("T", Array(repeating: 0, count: 30))
        replay.feed(.receive, description + Array(row.prefix(100)), length: description.count + row.count, time: 40)
        replay.feed(.receive, Self.complete("SELECT 1") + Self.ready, time: 50)
        XCTAssertEqual(replay.spans.map(\.name), ["CREATE shop", "INSERT items", "SELECT items"])
        XCTAssertEqual(replay.spans.map { $0.attributes[SemanticConventions.dbNamespace]?.stringValue }, ["shop", "shop", "shop"])
        XCTAssertEqual(replay.spans[1].attributes[SemanticConventions.dbSystemName]?.stringValue, "postgresql")
        XCTAssertEqual(replay.spans[1].attributes[SemanticConventions.dbOperationName]?.stringValue, "INSERT")
        XCTAssertEqual(replay.spans[1].attributes[SemanticConventions.dbCollectionName]?.stringValue, "items")
        XCTAssertEqual(replay.spans[1].attributes[SemanticConventions.dbQueryText]?.stringValue, "INSERT INTO items VALUES (?, ?)")
        XCTAssertEqual(replay.spans[1].endTimeUnixNano, 30, "the second CommandComplete ended in the second read")
        XCTAssertEqual(replay.spans[2].startTimeUnixNano, 30, "a statement starts when the one before it completed")
        XCTAssertEqual(replay.spans[2].endTimeUnixNano, 50)
        XCTAssertEqual(replay.spans[2].kind, .client)
        XCTAssertEqual(replay.spans[2].attributes[SemanticConventions.serverPort]?.intValue, 5432)
        XCTAssertNil(replay.spans[0].attributes[SemanticConventions.dbCollectionName])
        // A failing simple query: SQLSTATE as the status code.
        replay.feed(.send, Self.message("Q", Self.strings("SELECT * FROM missing")), time: 60)
        replay.feed(.receive, Self.error("42P01") + Self.ready, time: 70)
        XCTAssertEqual(replay.spans.last?.name, "SELECT missing")
        XCTAssertEqual(replay.spans.last?.status, .error(message: ""))
        XCTAssertEqual(replay.spans.last?.attributes[SemanticConventions.dbResponseStatusCode]?.stringValue, "42P01")
        XCTAssertEqual(replay.spans.last?.attributes[SemanticConventions.errorType]?.stringValue, "42P01")
        // A 3000-byte statement of which the capture kept the first 1 KiB: summarized from that prefix.
        let long = Self.message("Q", Self.strings("INSERT INTO items VALUES " + Array(repeating: "(1, 'x')", count: 400).joined(separator: ", ")))
        replay.feed(.send, Array(long.prefix(1024)), length: long.count, time: 80)
        replay.feed(.receive, Self.complete("INSERT 0 400") + Self.ready, time: 90)
        XCTAssertEqual(replay.spans.last?.name, "INSERT items")
        let text = replay.spans.last?.attributes[SemanticConventions.dbQueryText]?.stringValue ?? ""
        XCTAssertTrue(text.hasPrefix("INSERT INTO items VALUES (?, ?), (?, ?)"), text)
        XCTAssertTrue(text.hasSuffix("…"), text)
        XCTAssertLessThan(text.utf8.count, 1100, "only the captured prefix")
        XCTAssertFalse(text.hasSuffix("……"), text)
        XCTAssertEqual(replay.tracer.statistics.malformed.load(ordering: .relaxed), 0)
    }

    func testPipelinedExtendedQueryNamedStatementsAndErrorMidBatch() {
        let replay = Replay(queryText: .full)
        connect(replay)
        // A named statement, bound and executed twice, and an unnamed one: one batch, one Sync.
        replay.feed(.send, Self.parse("s1", "SELECT name FROM items WHERE id = $1") + Self.bind("", "s1") + Self.execute("")
                    + Self.bind("", "s1") + Self.execute("") + Self.parse("", "UPDATE items SET name = $1") + Self.bind("", "")
                    + Self.execute("") + Self.sync, time: 10)
        replay.feed(.receive, Self.message("1", []) + Self.message("2", []) + Self.complete("SELECT 1") + Self.message("2", []), time: 20)
        replay.feed(.receive, Self.complete("SELECT 0") + Self.message("1", []) + Self.message("2", []) + Self.complete("UPDATE 3") + Self.ready,
                    time: 30)
        XCTAssertEqual(replay.spans.map(\.name), ["SELECT items", "SELECT items", "UPDATE items"])
        XCTAssertEqual(replay.spans[0].attributes[SemanticConventions.dbQueryText]?.stringValue, "SELECT name FROM items WHERE id = $1")
        XCTAssertEqual(replay.spans.map(\.endTimeUnixNano), [20, 30, 30])
        // The statement stays known in the next batch; the first Execute fails: the server skips the second.
        replay.feed(.send, Self.bind("", "s1") + Self.execute("") + Self.bind("", "s1") + Self.execute("") + Self.sync, time: 40)
        replay.feed(.receive, Self.error("22P02") + Self.ready, time: 50)
        XCTAssertEqual(replay.spans.count, 4)
        XCTAssertEqual(replay.spans.last?.name, "SELECT items")
        XCTAssertEqual(replay.spans.last?.attributes[SemanticConventions.dbResponseStatusCode]?.stringValue, "22P02")
        XCTAssertEqual(replay.tracer.statistics.skippedAfterError.load(ordering: .relaxed), 1)
        // The connection goes on: a batch after the failed one matches its own replies.
        replay.feed(.send, Self.bind("", "s1") + Self.execute("") + Self.sync, time: 60)
        replay.feed(.receive, Self.message("2", []) + Self.complete("SELECT 1") + Self.ready, time: 70)
        XCTAssertEqual(replay.spans.count, 5)
        XCTAssertEqual(replay.spans.last?.status, .unset)
        // Closing the statement forgets it: an Execute of it names only what the server's tag says.
        replay.feed(.send, Self.message("C", [UInt8(ascii: "S")] + Self.strings("s1")) + Self.bind("", "s1") + Self.execute("") + Self.sync, time: 80)
        replay.feed(.receive, Self.message("3", []) + Self.message("2", []) + Self.complete("SELECT 1") + Self.ready, time: 90)
        XCTAssertEqual(replay.spans.last?.attributes[SemanticConventions.dbOperationName]?.stringValue, "SELECT")
        XCTAssertNil(replay.spans.last?.attributes[SemanticConventions.dbCollectionName])
        XCTAssertNil(replay.spans.last?.attributes[SemanticConventions.dbQueryText])
    }

    /// Bytes written as hex digits (whitespace ignored).
    private static func hex(_ digits: String) -> [UInt8] {
        let clean = Array(digits.filter { !$0.isWhitespace })
        return stride(from: 0, to: clean.count, by: 2).map { UInt8(String(clean[$0...$0 + 1]), radix: 16)! }
    }

    /// The bytes pgx v4.15 (Debian's golang-github-jackc-pgx-v4-dev) wrote and read on one connection, as
    /// strace showed them: its statement cache prepares each new statement under a name (Parse + Describe +
    /// Sync, answered ParseComplete, ParameterDescription, RowDescription, ReadyForQuery), then runs it (Bind +
    /// Describe + Execute + Sync); the next call only binds and executes. A statement the server cannot
    /// prepare fails at its Parse, with no Execute ever sent: still one failed span.
    func testPgxStatementCacheAndAFailedPrepareReplayed() {
        let replay = Replay(queryText: .full)
        replay.feed(.send, Self.hex("00000029000300007573657200706f73746772657300646174616261736500706f7374677265730000"), time: 1)
        replay.feed(.receive, Self.message("R", Self.int32(0)) + Self.ready, time: 2)
        let prepare = Self.hex("""
            50000000456c72757073635f315f300053454c45435420636f756e74282a292046524f4d2070675f6461746162617365205748455245206461746e
            616d65203d2024310000004400000010536c72757073635f315f30005300000004
            """)
        let prepared = Self.hex("""
            3100000004740000000a000100000013540000001e0001636f756e7400000000000000000000140008ffffffff00005a0000000549
            """)
        let run = Self.hex("""
            4200000026006c72757073635f315f300000010000000100000008706f7374677265730001000144000000065000450000000900000000005300000004
            """)
        let result = Self.hex("""
            3200000004540000001e0001636f756e7400000000000000000000140008ffffffff000144000000120001000000080000000000000001430000000d
            53454c4543542031005a0000000549
            """)
        replay.feed(.send, prepare, time: 10)
        replay.feed(.receive, prepared, time: 20)
        XCTAssertTrue(replay.spans.isEmpty, "preparing executes nothing")
        replay.feed(.send, run, time: 30)
        replay.feed(.receive, result, time: 40)
        replay.feed(.send, run, time: 50)
        replay.feed(.receive, result, time: 60)
        XCTAssertEqual(replay.spans.map(\.name), ["SELECT pg_database", "SELECT pg_database"])
        XCTAssertEqual(replay.spans.map(\.startTimeUnixNano), [30, 50])
        XCTAssertEqual(replay.spans.map(\.endTimeUnixNano), [40, 60])
        for span in replay.spans {
            XCTAssertEqual(span.attributes[SemanticConventions.dbOperationName]?.stringValue, "SELECT")
            XCTAssertEqual(span.attributes[SemanticConventions.dbCollectionName]?.stringValue, "pg_database")
            XCTAssertEqual(span.attributes[SemanticConventions.dbNamespace]?.stringValue, "postgres")
            XCTAssertEqual(span.attributes[SemanticConventions.dbQueryText]?.stringValue, "SELECT count(*) FROM pg_database WHERE datname = $1")
            XCTAssertEqual(span.status, .unset)
        }
        // A prepare the server refuses (42P01): ErrorResponse and ReadyForQuery in two reads.
        replay.feed(.send, Self.hex("""
            500000003b6c72757073635f325f310053454c454354202a2046524f4d206d697373696e675f7461626c65205748455245206964203d202431000000
            4400000010536c72757073635f325f31005300000004
            """), time: 70)
        replay.feed(.receive, Self.hex("""
            4500000070534552524f5200564552524f5200433432503031004d72656c6174696f6e20226d697373696e675f7461626c652220646f6573206e6f74
            20657869737400503135004670617273655f72656c6174696f6e2e63004c3133393200527061727365724f70656e5461626c650000
            """), time: 80)
        replay.feed(.receive, Self.ready, time: 90)
        XCTAssertEqual(replay.spans.count, 3)
        XCTAssertEqual(replay.spans.last?.name, "SELECT missing_table")
        XCTAssertEqual(replay.spans.last?.status, .error(message: ""))
        XCTAssertEqual(replay.spans.last?.attributes[SemanticConventions.dbResponseStatusCode]?.stringValue, "42P01")
        XCTAssertEqual(replay.spans.last?.attributes[SemanticConventions.dbQueryText]?.stringValue, "SELECT * FROM missing_table WHERE id = $1")
        XCTAssertEqual(replay.spans.last?.startTimeUnixNano, 70)
        XCTAssertEqual(replay.spans.last?.endTimeUnixNano, 80)
        // The cached statement still runs afterwards, matched with its own reply.
        replay.feed(.send, run, time: 100)
        replay.feed(.receive, result, time: 110)
        XCTAssertEqual(replay.spans.map(\.name), ["SELECT pg_database", "SELECT pg_database", "SELECT missing_table", "SELECT pg_database"])
        XCTAssertEqual(replay.spans.last?.status, .unset)
        XCTAssertEqual(replay.tracer.statistics.unmatchedResponses.load(ordering: .relaxed), 0)
        XCTAssertEqual(replay.tracer.statistics.malformed.load(ordering: .relaxed), 0)
        // A failed Parse pipelined with its Bind and Execute (lib/pq, psycopg): one span; the server skips the
        // Execute, which makes none.
        replay.feed(.send, Self.parse("", "DELETE FROM missing_table") + Self.bind("", "") + Self.execute("") + Self.sync, time: 120)
        replay.feed(.receive, Self.error("42P01") + Self.ready, time: 130)
        XCTAssertEqual(replay.spans.count, 5)
        XCTAssertEqual(replay.spans.last?.name, "DELETE missing_table")
        XCTAssertEqual(replay.spans.last?.attributes[SemanticConventions.dbResponseStatusCode]?.stringValue, "42P01")
        XCTAssertEqual(replay.tracer.statistics.skippedAfterError.load(ordering: .relaxed), 1)
        XCTAssertEqual(replay.tracer.statistics.withoutReply.load(ordering: .relaxed), 0)
    }

    func testLengthBelowFourAbsurdLengthsAndGarbageAreCountedNeverSpans() {
        let replay = Replay()
        connect(replay, connection: 1)
        replay.feed(.send, [UInt8(ascii: "Q")] + Self.int32(3) + Self.strings("SELECT 1"), connection: 1, time: 10) // length below 4
        replay.feed(.receive, Self.complete("SELECT 1") + Self.ready, connection: 1, time: 20)
        XCTAssertTrue(replay.spans.isEmpty)
        XCTAssertEqual(replay.tracer.statistics.malformed.load(ordering: .relaxed), 1)
        connect(replay, connection: 2)
        replay.feed(.send, Self.message("Q", Self.strings("SELECT 1")), connection: 2, time: 30)
        replay.feed(.receive, [UInt8(ascii: "C"), 0x7F, 0xFF, 0xFF, 0xFF], connection: 2, time: 40) // 2 GiB
        XCTAssertTrue(replay.spans.isEmpty)
        XCTAssertEqual(replay.tracer.statistics.malformed.load(ordering: .relaxed), 2)
        XCTAssertEqual(replay.tracer.statistics.withoutReply.load(ordering: .relaxed), 1)
        connect(replay, connection: 3)
        replay.feed(.send, Array("GET / HTTP/1.1\r\n\r\n".utf8), connection: 3, time: 50)
        XCTAssertEqual(replay.tracer.statistics.malformed.load(ordering: .relaxed), 3)
        // A message header hidden in the uncaptured part of a read: counted, the connection makes no more spans.
        connect(replay, connection: 4)
        replay.feed(.send, Self.message("Q", Self.strings("SELECT 1")), length: 3000, connection: 4, time: 60)
        replay.feed(.receive, Self.complete("SELECT 1") + Self.ready, connection: 4, time: 70)
        XCTAssertTrue(replay.spans.isEmpty)
        XCTAssertEqual(replay.tracer.statistics.malformed.load(ordering: .relaxed), 4)
        // An SSL-accepted connection is ciphertext: counted, never parsed.
        replay.feed(.send, Self.sslRequest, connection: 5, time: 80)
        replay.feed(.receive, [UInt8(ascii: "S")], connection: 5, time: 81)
        replay.feed(.send, Self.message("Q", Self.strings("SELECT 1")), connection: 5, time: 82)
        replay.feed(.receive, Self.complete("SELECT 1") + Self.ready, connection: 5, time: 83)
        XCTAssertTrue(replay.spans.isEmpty)
        XCTAssertEqual(replay.tracer.statistics.encryptedConnections.load(ordering: .relaxed), 1)
        // Sanity: a well-formed connection after all that still makes its span.
        connect(replay, connection: 6)
        replay.feed(.send, Self.message("Q", Self.strings("SELECT 1")), connection: 6, time: 90)
        replay.feed(.receive, Self.complete("SELECT 1") + Self.ready, connection: 6, time: 91)
        XCTAssertEqual(replay.spans.map(\.name), ["SELECT shop"])
    }

    /// Both ends of the same connection replayed (real PIDs, so both sides are in this network namespace):
    /// each backend span is the child of the client span of the same message; a backend whose capture
    /// started after the SSLRequest (its stream positions differ) makes unlinked spans, never wrong ones.
    func testServerSpansAreTheChildrenOfTheClientSpansOfTheSameMessages() throws {
        let replay = Replay()
        let me = UInt32(getpid())
        var time: UInt64 = 1_000
        func both(_ bytes: [UInt8], fromClient: Bool, client: UInt64 = 1, server: UInt64 = 2, serverSees: Bool = true) {
            time += 10
            let clientSide = { replay.feed(fromClient ? .send : .receive, bytes, connection: client, pid: me, tuple: Self.clientTuple, time: time) }
            let serverSide = { replay.feed(fromClient ? .receive : .send, bytes, connection: server, pid: me, tuple: Self.serverTuple, time: time + 1) }
            if fromClient { clientSide(); if serverSees { serverSide() } } else { if serverSees { serverSide() }; clientSide() }
        }
        func conversation(client: UInt64, server: UInt64, serverSeesSSLRequest: Bool) {
            both(Self.sslRequest, fromClient: true, client: client, server: server, serverSees: serverSeesSSLRequest)
            both([UInt8(ascii: "N")], fromClient: false, client: client, server: server, serverSees: serverSeesSSLRequest)
            both(Self.startup(user: "app", database: "shop"), fromClient: true, client: client, server: server)
            both(Self.message("R", Self.int32(0)) + Self.ready, fromClient: false, client: client, server: server)
            both(Self.parse("", "SELECT name FROM items WHERE id = $1") + Self.bind("", "") + Self.execute("") + Self.bind("", "")
                 + Self.execute("") + Self.sync, fromClient: true, client: client, server: server)
            both(Self.message("1", []) + Self.message("2", []) + Self.complete("SELECT 1") + Self.message("2", []) + Self.complete("SELECT 1")
                 + Self.ready, fromClient: false, client: client, server: server)
            both(Self.message("Q", Self.strings("DELETE FROM items")), fromClient: true, client: client, server: server)
            both(Self.complete("DELETE 1") + Self.ready, fromClient: false, client: client, server: server)
        }
        conversation(client: 1, server: 2, serverSeesSSLRequest: true)
        let clients = replay.spans.filter { $0.kind == .client }, servers = replay.spans.filter { $0.kind == .server }
        XCTAssertEqual(clients.map(\.name), ["SELECT items", "SELECT items", "DELETE items"])
        XCTAssertEqual(servers.map(\.name), ["SELECT items", "SELECT items", "DELETE items"])
        XCTAssertEqual(servers.map(\.parentSpanID), clients.map(\.spanID))
        XCTAssertEqual(servers.map(\.traceID), clients.map(\.traceID))
        XCTAssertEqual(replay.tracker.peerLinks.counters.linked.load(ordering: .relaxed), 3)
        // The backend's capture starts at the StartupMessage: still claimed and parsed, but no link.
        replay.spans.removeAll()
        conversation(client: 3, server: 4, serverSeesSSLRequest: false)
        XCTAssertEqual(replay.spans.filter { $0.kind == .server }.map(\.name), ["SELECT items", "SELECT items", "DELETE items"])
        XCTAssertTrue(replay.spans.filter { $0.kind == .server }.allSatisfy { $0.parentSpanID == .invalid })
        XCTAssertEqual(replay.tracker.peerLinks.counters.linked.load(ordering: .relaxed), 3)
    }

    // MARK: End to end

    /// Debian's Postgres 15 in a scratch directory, run as the `postgres` user, on 127.0.0.1:`port`.
    private final class PostgresServer {
        static let bin = "/usr/lib/postgresql/15/bin"
        let process: Process
        let port: Int

        init(directory: URL) throws {
            port = unusedTCPPort()
            let data = directory.appendingPathComponent("data").path
            try TestSupport.run("/bin/chown", ["-R", "postgres:postgres", directory.path])
            try TestSupport.run("/usr/bin/setpriv", ["--reuid=postgres", "--regid=postgres", "--init-groups", Self.bin + "/initdb",
                                                     "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"])
            process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments = ["--reuid=postgres", "--regid=postgres", "--init-groups", Self.bin + "/postgres", "-D", data,
                                 "-h", "127.0.0.1", "-p", String(port), "-k", directory.path, "-c", "fsync=off"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            guard waitUntil(timeout: 30, { (try? TestSupport.run("/usr/bin/psql", self.arguments("SELECT 1"))) != nil }) else {
                try prerequisiteMissing("postgresql", "postgres did not accept connections on 127.0.0.1:\(port) within 30 s")
            }
        }

        var pid: Int32 { process.processIdentifier }

        func arguments(_ command: String) -> [String] {
            ["-X", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "postgres", "-c", command]
        }

        deinit {
            // Fast shutdown (SIGINT): the sessions end, then the server.
            if process.isRunning { kill(process.processIdentifier, SIGINT) }
            process.waitUntilExit()
        }
    }

    private func startPostgres() throws -> PostgresServer {
        try requireBPF()
        try requireExecutable(PostgresServer.bin + "/initdb", package: "postgresql")
        try requireExecutable("/usr/bin/psql", package: "postgresql-client")
        try requireExecutable("/usr/bin/setpriv", package: "util-linux")
        return try PostgresServer(directory: try temporaryDirectory(self))
    }

    /// The server spans of the postgres backends (children of the postmaster) that ran `operations`.
    private func serverSpans(_ harness: TracingHarness, count: Int) -> [Span] {
        func spans() -> [Span] {
            harness.collector.spans.filter { $0.kind == .server && $0.attributes[SemanticConventions.dbSystemName]?.stringValue == "postgresql" }
                .sorted { $0.startTimeUnixNano < $1.startTimeUnixNano }
        }
        _ = waitUntil(timeout: 10) { spans().count >= count }
        usleep(200_000)
        return spans()
    }

    func testPsqlAgainstPostgresGivesClientAndServerSpans() throws {
        let server = try startPostgres()
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", "/usr/bin/psql"]
                                      + server.arguments("CREATE TABLE items (id int, name text); INSERT INTO items VALUES (1, 'a'); SELECT name FROM items")
                                      + ["-c", "SELECT * FROM missing_table"])
        let harness = try TracingHarness(pids: [server.pid, client.pid])
        client.release()
        XCTAssertNotNil(client.waitForExit())
        let clientSpans = harness.waitForSpans(of: client.pid, kind: .client, count: 4)
        XCTAssertEqual(clientSpans.map(\.name), ["CREATE postgres", "INSERT items", "SELECT items", "SELECT missing_table"])
        XCTAssertEqual(clientSpans.compactMap { $0.attributes[SemanticConventions.dbCollectionName]?.stringValue }, ["items", "items", "missing_table"])
        XCTAssertEqual(clientSpans.last?.attributes[SemanticConventions.dbResponseStatusCode]?.stringValue, "42P01")
        XCTAssertEqual(clientSpans.last?.status, .error(message: ""))
        XCTAssertEqual(clientSpans.first?.status, .unset)
        XCTAssertTrue(clientSpans.allSatisfy { $0.attributes[SemanticConventions.serverPort]?.intValue == Int64(server.port) })
        XCTAssertTrue(clientSpans.allSatisfy { $0.attributes[SemanticConventions.dbQueryText] == nil }, "no query text unless configured")
        let serverSpans = serverSpans(harness, count: 4)
        XCTAssertEqual(serverSpans.compactMap { $0.attributes[SemanticConventions.dbOperationName]?.stringValue }, ["CREATE", "INSERT", "SELECT", "SELECT"])
        XCTAssertEqual(serverSpans.last?.attributes[SemanticConventions.dbResponseStatusCode]?.stringValue, "42P01")
        XCTAssertEqual(serverSpans.first?.attributes[SemanticConventions.serverPort]?.intValue, Int64(server.port))
        XCTAssertTrue(serverSpans.allSatisfy { $0.attributes[SemanticConventions.dbNamespace]?.stringValue == "postgres" })
        XCTAssertFalse(serverSpans.contains { $0.resource.attributes[SemanticConventions.processPID]?.intValue == Int64(client.pid) })
        // Same-host linking, when the agent saw the backend's connection from its first byte (a backend forked
        // just before it reads the SSLRequest may be selected a moment late): never a wrong parent.
        for span in serverSpans where span.parentSpanID != .invalid {
            let parent = clientSpans.first { $0.spanID == span.parentSpanID }
            XCTAssertEqual(parent?.name, span.name, "a server span's parent is the client span of the same statement")
            XCTAssertEqual(parent?.traceID, span.traceID)
        }
        XCTAssertEqual(harness.agent.unclaimedConnections(pid: client.pid), 0)
    }

    func testPsycopgParameterizedQueriesUseTheExtendedProtocol() throws {
        let server = try startPostgres()
        guard (try? TestSupport.run("/usr/bin/python3", ["-c", "import psycopg"])) != nil else {
            try prerequisiteMissing("python3-psycopg", "Python's psycopg module is missing (apt-get install python3-psycopg)")
        }
        let directory = try temporaryDirectory(self)
        let script = directory.appendingPathComponent("client.py")
        try """
        import psycopg, sys
        with psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE TABLE pets (id int, name text)")
            conn.execute("INSERT INTO pets VALUES (%s, %s)", (1, "rex"))
            assert conn.execute("SELECT name FROM pets WHERE id = %s", (1,)).fetchone() == ("rex",)
            try:
                conn.execute("SELECT name FROM pets WHERE id = %s", ("not a number",))
            except psycopg.errors.InvalidTextRepresentation:
                pass
        """.write(to: script, atomically: true, encoding: .utf8)
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", "/usr/bin/python3", script.path, String(server.port)])
        let harness = try TracingHarness(pids: [client.pid], tracers: [PostgresTracer(queryText: .full)])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)
        let spans = harness.waitForSpans(of: client.pid, kind: .client, count: 4)
        XCTAssertEqual(spans.map(\.name), ["CREATE postgres", "INSERT pets", "SELECT pets", "SELECT pets"])
        // `$1` placeholders exist only in the Parse message of the extended protocol.
        XCTAssertEqual(spans[2].attributes[SemanticConventions.dbQueryText]?.stringValue, "SELECT name FROM pets WHERE id = $1")
        XCTAssertEqual(spans[1].attributes[SemanticConventions.dbQueryText]?.stringValue, "INSERT INTO pets VALUES ($1, $2)")
        XCTAssertEqual(spans[3].attributes[SemanticConventions.dbResponseStatusCode]?.stringValue, "22P02")
        XCTAssertEqual(spans[3].status, .error(message: ""))
        XCTAssertTrue(spans.allSatisfy { $0.attributes[SemanticConventions.dbNamespace]?.stringValue == "postgres" })
    }

    func testPgbenchPreparedStatementsGiveOneSpanPerExecute() throws {
        let server = try startPostgres()
        let pgbench = PostgresServer.bin + "/pgbench"
        try requireExecutable(pgbench, package: "postgresql")
        let connection = ["-h", "127.0.0.1", "-p", String(server.port), "-U", "postgres"]
        try TestSupport.run(pgbench, ["-i", "-q", "-s", "1"] + connection + ["postgres"])
        // Two connections, 25 select-only transactions each, with named prepared statements (Parse once,
        // then Bind/Execute/Sync per transaction).
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", pgbench, "-n", "-S", "-M", "prepared", "-c", "2", "-t", "25"]
                                      + connection + ["postgres"])
        let harness = try TracingHarness(pids: [server.pid, client.pid])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)
        func selects(_ kind: SpanKind) -> [Span] {
            harness.collector.spans.filter { $0.kind == kind && $0.name == "SELECT pgbench_accounts" }
        }
        _ = waitUntil(timeout: 10) { selects(.client).count >= 50 && selects(.server).count >= 50 }
        usleep(200_000)
        XCTAssertEqual(selects(.client).count, 50)
        XCTAssertEqual(selects(.server).count, 50)
        // Same-host linking (when both ends were seen from the connection's first byte): never a wrong parent.
        let clientSpanIDs = Set(selects(.client).map(\.spanID))
        XCTAssertTrue(selects(.server).allSatisfy { $0.parentSpanID == .invalid || clientSpanIDs.contains($0.parentSpanID) })
        XCTAssertTrue(selects(.client).allSatisfy {
            $0.resource.attributes[SemanticConventions.processPID]?.intValue == Int64(client.pid) && $0.status == .unset
                && $0.attributes[SemanticConventions.dbNamespace]?.stringValue == "postgres"
                && $0.attributes[SemanticConventions.dbOperationName]?.stringValue == "SELECT"
        })
    }

    /// A Go HTTP server whose handlers query Postgres through database/sql and lib/pq (Debian's
    /// golang-github-lib-pq-dev, GOPATH mode): its arguments are the connection string; it prints its port.
    private static let goSQLServer = """
    package main

    import (
    \t"database/sql"
    \t"fmt"
    \t"net"
    \t"net/http"
    \t"os"

    \t_ "github.com/lib/pq"
    )

    func main() {
    \tdb, err := sql.Open("postgres", os.Args[1])
    \tif err != nil {
    \t\tpanic(err)
    \t}
    \tdb.SetMaxOpenConns(1)
    \thttp.HandleFunc("/databases", func(w http.ResponseWriter, r *http.Request) {
    \t\tvar n int
    \t\tif err := db.QueryRow("SELECT count(*) FROM pg_database WHERE datname = $1", "postgres").Scan(&n); err != nil {
    \t\t\thttp.Error(w, err.Error(), http.StatusInternalServerError)
    \t\t\treturn
    \t\t}
    \t\tfmt.Fprintf(w, "%d", n)
    \t})
    \thttp.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) {
    \t\tif _, err := db.Exec("SELECT * FROM missing_table"); err != nil {
    \t\t\thttp.Error(w, "query failed", http.StatusInternalServerError)
    \t\t\treturn
    \t\t}
    \t})
    \tlistener, err := net.Listen("tcp", "127.0.0.1:0")
    \tif err != nil {
    \t\tpanic(err)
    \t}
    \tfmt.Println(listener.Addr().(*net.TCPAddr).Port)
    \thttp.Serve(listener, nil)
    }
    """

    /// Go's database/sql with lib/pq inside HTTP handlers (issue 14): each query is a client span parented to
    /// the request being served (the driver writes on the handler's goroutine), and the Postgres backend's
    /// server span is that client span's child.
    func testGoLibPQQueriesAreChildrenOfTheRequestBeingServed() throws {
        if !FileManager.default.fileExists(atPath: "/usr/share/gocode/src/github.com/lib/pq/conn.go") {
            try prerequisiteMissing("golang-github-lib-pq-dev", "lib/pq is not in /usr/share/gocode (apt-get install golang-github-lib-pq-dev)")
        }
        let postgres = try startPostgres()
        let binary = try GoServerBuild.binary(stripped: false, program: ("libpq-server", Self.goSQLServer), gopath: "/usr/share/gocode")
        let service = try GoServerProcess(binary: binary, arguments: [
            "host=127.0.0.1 port=\(postgres.port) user=postgres dbname=postgres sslmode=disable",
        ])
        let harness = try TracingHarness(pids: [service.pid, postgres.pid])
        XCTAssertEqual(try curl(["\(service.base)/databases"]), "1")
        XCTAssertEqual(try curl(["\(service.base)/databases"]), "1")
        try curl(["-o", "/dev/null", "\(service.base)/broken"])

        let spans = harness.waitForSpans(of: service.pid, count: 6)
        let requests = spans.filter { $0.kind == .server }
        let queries = spans.filter { $0.kind == .client }
        XCTAssertEqual(requests.compactMap { $0.attributes[SemanticConventions.urlPath]?.stringValue }, ["/databases", "/databases", "/broken"])
        XCTAssertEqual(queries.map(\.name), ["SELECT pg_database", "SELECT pg_database", "SELECT missing_table"], "\(spans.map(\.name))")
        for (request, query) in zip(requests, queries) {
            XCTAssertEqual(query.parentSpanID, request.spanID, "the query is the child of the request it serves: \(query)")
            XCTAssertEqual(query.traceID, request.traceID)
            XCTAssertEqual(query.attributes[ParentSource.attribute]?.stringValue, "goroutine")
            XCTAssertEqual(query.attributes[SemanticConventions.dbSystemName]?.stringValue, "postgresql")
            XCTAssertEqual(query.attributes[SemanticConventions.serverPort]?.intValue, Int64(postgres.port))
        }
        XCTAssertEqual(queries.last?.attributes[SemanticConventions.dbResponseStatusCode]?.stringValue, "42P01")
        XCTAssertEqual(queries.last?.status, .error(message: ""))
        // The backend's spans continue those traces, each the child of its query.
        let backend = serverSpans(harness, count: 3)
        XCTAssertEqual(backend.count, 3, "\(backend.map(\.name))")
        for span in backend {
            let parent = queries.first { $0.spanID == span.parentSpanID }
            XCTAssertEqual(parent?.name, span.name, "the backend's span is the child of the query it answers: \(span)")
            XCTAssertEqual(parent?.traceID, span.traceID)
        }
    }

    /// A Go HTTP server whose handlers query Postgres through pgx v4 (Debian's golang-github-jackc-pgx-v4-dev,
    /// GOPATH mode): `/sql` through database/sql with pgx's stdlib driver, `/native` and `/broken` through one
    /// `pgx.Conn` opened by the first request that needs it. pgx prepares every statement under a name of its
    /// statement cache (Parse + Describe + Sync, then Bind + Describe + Execute + Sync; later calls skip the
    /// Parse). Its arguments are the connection string; it prints its port.
    private static let goPgxServer = """
    package main

    import (
    \t"context"
    \t"database/sql"
    \t"fmt"
    \t"net"
    \t"net/http"
    \t"os"
    \t"sync"

    \t"github.com/jackc/pgx/v4"
    \t_ "github.com/jackc/pgx/v4/stdlib"
    )

    func main() {
    \tdb, err := sql.Open("pgx", os.Args[1])
    \tif err != nil {
    \t\tpanic(err)
    \t}
    \tdb.SetMaxOpenConns(1)
    \tvar mutex sync.Mutex
    \tvar native *pgx.Conn
    \tnativeConn := func(ctx context.Context) (*pgx.Conn, error) {
    \t\tif native == nil {
    \t\t\tconn, err := pgx.Connect(ctx, os.Args[1])
    \t\t\tif err != nil {
    \t\t\t\treturn nil, err
    \t\t\t}
    \t\t\tnative = conn
    \t\t}
    \t\treturn native, nil
    \t}
    \thttp.HandleFunc("/sql", func(w http.ResponseWriter, r *http.Request) {
    \t\tvar n int
    \t\tif err := db.QueryRow("SELECT count(*) FROM pg_database WHERE datname = $1", "postgres").Scan(&n); err != nil {
    \t\t\thttp.Error(w, err.Error(), http.StatusInternalServerError)
    \t\t\treturn
    \t\t}
    \t\tfmt.Fprintf(w, "%d", n)
    \t})
    \thttp.HandleFunc("/native", func(w http.ResponseWriter, r *http.Request) {
    \t\tmutex.Lock()
    \t\tdefer mutex.Unlock()
    \t\tconn, err := nativeConn(r.Context())
    \t\tif err != nil {
    \t\t\thttp.Error(w, err.Error(), http.StatusInternalServerError)
    \t\t\treturn
    \t\t}
    \t\trows, err := conn.Query(r.Context(), "SELECT nspname FROM pg_namespace WHERE nspname = $1", "public")
    \t\tif err != nil {
    \t\t\thttp.Error(w, err.Error(), http.StatusInternalServerError)
    \t\t\treturn
    \t\t}
    \t\tn := 0
    \t\tfor rows.Next() {
    \t\t\tn++
    \t\t}
    \t\trows.Close()
    \t\tfmt.Fprintf(w, "%d", n)
    \t})
    \thttp.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) {
    \t\tmutex.Lock()
    \t\tdefer mutex.Unlock()
    \t\tconn, err := nativeConn(r.Context())
    \t\tif err != nil {
    \t\t\thttp.Error(w, err.Error(), http.StatusInternalServerError)
    \t\t\treturn
    \t\t}
    \t\tif _, err := conn.Exec(r.Context(), "SELECT * FROM missing_table WHERE id = $1", 1); err != nil {
    \t\t\thttp.Error(w, "query failed", http.StatusInternalServerError)
    \t\t\treturn
    \t\t}
    \t})
    \tlistener, err := net.Listen("tcp", "127.0.0.1:0")
    \tif err != nil {
    \t\tpanic(err)
    \t}
    \tfmt.Println(listener.Addr().(*net.TCPAddr).Port)
    \thttp.Serve(listener, nil)
    }
    """

    /// pgx inside HTTP handlers (issue 14): through database/sql and natively, each query is one client span
    /// parented to the request being served, with the DB attributes; a cached statement executed again (Bind
    /// and Execute of the named statement, no Parse) is named as the first; the backend's span is the query's
    /// child.
    func testGoPgxQueriesAreChildrenOfTheRequestBeingServed() throws {
        if !FileManager.default.fileExists(atPath: "/usr/share/gocode/src/github.com/jackc/pgx/v4/stdlib/sql.go") {
            try prerequisiteMissing("golang-github-jackc-pgx-v4-dev", "pgx v4 is not in /usr/share/gocode (apt-get install golang-github-jackc-pgx-v4-dev)")
        }
        let postgres = try startPostgres()
        let binary = try GoServerBuild.binary(stripped: false, program: ("pgx-server", Self.goPgxServer), gopath: "/usr/share/gocode")
        let service = try GoServerProcess(binary: binary, arguments: [
            "host=127.0.0.1 port=\(postgres.port) user=postgres dbname=postgres sslmode=disable",
        ])
        let harness = try TracingHarness(pids: [service.pid, postgres.pid])
        XCTAssertEqual(try curl(["\(service.base)/sql"]), "1")
        XCTAssertEqual(try curl(["\(service.base)/sql"]), "1")
        XCTAssertEqual(try curl(["\(service.base)/native"]), "1")
        XCTAssertEqual(try curl(["\(service.base)/native"]), "1")
        try curl(["-o", "/dev/null", "\(service.base)/broken"])

        let spans = harness.waitForSpans(of: service.pid, count: 10)
        let requests = spans.filter { $0.kind == .server }
        let queries = spans.filter { $0.kind == .client }
        XCTAssertEqual(requests.compactMap { $0.attributes[SemanticConventions.urlPath]?.stringValue }, ["/sql", "/sql", "/native", "/native", "/broken"])
        XCTAssertEqual(queries.map(\.name), ["SELECT pg_database", "SELECT pg_database", "SELECT pg_namespace", "SELECT pg_namespace", "SELECT missing_table"],
                       "\(spans.map(\.name))")
        XCTAssertEqual(queries.count, requests.count)
        for (request, query) in zip(requests, queries) {
            XCTAssertEqual(query.parentSpanID, request.spanID, "the query is the child of the request it serves: \(query)")
            XCTAssertEqual(query.traceID, request.traceID)
            XCTAssertEqual(query.attributes[ParentSource.attribute]?.stringValue, "goroutine")
            XCTAssertEqual(query.attributes[SemanticConventions.dbSystemName]?.stringValue, "postgresql")
            XCTAssertEqual(query.attributes[SemanticConventions.dbOperationName]?.stringValue, "SELECT")
            XCTAssertEqual(query.attributes[SemanticConventions.dbNamespace]?.stringValue, "postgres")
            XCTAssertEqual(query.attributes[SemanticConventions.serverAddress]?.stringValue, "127.0.0.1")
            XCTAssertEqual(query.attributes[SemanticConventions.serverPort]?.intValue, Int64(postgres.port))
        }
        XCTAssertEqual(queries.dropLast().map(\.status), Array(repeating: .unset, count: 4))
        XCTAssertEqual(queries.last?.attributes[SemanticConventions.dbCollectionName]?.stringValue, "missing_table")
        XCTAssertEqual(queries.last?.attributes[SemanticConventions.dbResponseStatusCode]?.stringValue, "42P01")
        XCTAssertEqual(queries.last?.status, .error(message: ""))
        // The backend's spans continue those traces, each the child of its query. The failed prepare's backend
        // span ends when the backend writes the error, before pgx's query is known as a span (its ids are made
        // when the error arrives): linked only if that arrived first, never to another span.
        let backend = serverSpans(harness, count: 5)
        XCTAssertEqual(backend.map(\.name), queries.map(\.name))
        XCTAssertEqual(backend.last?.attributes[SemanticConventions.dbResponseStatusCode]?.stringValue, "42P01")
        for span in backend.dropLast() {
            let parent = queries.first { $0.spanID == span.parentSpanID }
            XCTAssertEqual(parent?.name, span.name, "the backend's span is the child of the query it answers: \(span)")
            XCTAssertEqual(parent?.traceID, span.traceID)
        }
        if let failed = backend.last, failed.parentSpanID != .invalid {
            XCTAssertEqual(failed.parentSpanID, queries.last?.spanID)
            XCTAssertEqual(failed.traceID, queries.last?.traceID)
        }
    }
}
