import CTracerABI
import Foundation
import Glibc
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// The memcached parser: capture events replayed through the connection tracker (no kernel), and Debian's
/// memcached with libmemcached's tools and Python's pymemcache traced end to end.
final class MemcachedTracerTests: XCTestCase {
    private final class Replay {
        let tracker: ConnectionTracker
        let tracer: MemcachedTracer
        var spans: [Span] = []

        init(queryText: DatabaseQueryText = .off) {
            tracer = MemcachedTracer(queryText: queryText)
            let parser = tracer.parser!
            tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: [parser]) }, countOnly: { _ in })
        }

        func feed(_ direction: CaptureChunk.Direction, _ text: String, length: Int? = nil, connection: UInt64 = 1, pid: UInt32 = 7,
                  tuple: capture_tuple = MemcachedTracerTests.clientTuple, time: UInt64) {
            feed(direction, Array(text.utf8), length: length, connection: connection, pid: pid, tuple: tuple, time: time)
        }

        func feed(_ direction: CaptureChunk.Direction, _ bytes: [UInt8], length: Int? = nil, connection: UInt64 = 1, pid: UInt32 = 7,
                  tuple: capture_tuple = MemcachedTracerTests.clientTuple, time: UInt64) {
            var exchanges: [Exchange] = []
            CaptureEvents.chunk(connection: connection, pid: pid, direction: direction, data: bytes, length: length, timestamp: time,
                                tuple: tuple).withUnsafeBytes { tracker.handle($0, into: &exchanges) }
            for case .database(let exchange) in exchanges {
                spans.append(DatabaseSpans.span(exchange, resource: .empty, scope: InstrumentationScope(name: "test")) { $0 })
            }
        }

        var counters: MemcachedTracerCounters { tracer.statistics }
    }

    private static let clientTuple = CaptureEvents.tuple(local: [127, 0, 0, 1], localPort: 40_000, remote: [127, 0, 0, 1], remotePort: 11211)

    private func attribute(_ span: Span?, _ key: String) -> String? { span?.attributes[key]?.stringValue }

    /// A retrieval whose value is longer than what the capture keeps of a read (`CAPTURE_MAX_DATA`), answered in
    /// one read as memcaslap's 1 KiB values are: the block ends uncaptured and `END` is read from the
    /// transfer's last bytes. Keys may hold control bytes (memcached only splits on spaces; memcaslap sends them).
    func testAValueLongerThanTheCaptureEndsAtTheEndInTheTransfersLastBytes() {
        let replay = Replay()
        let key: [UInt8] = Array(repeating: 0x10, count: 8) + Array("BK2CoJZMj9rV".utf8)
        for round in 0..<3 {
            let time = UInt64(100 * round)
            replay.feed(.send, Array("get ".utf8) + key + Array("\r\n".utf8), time: time + 10)
            let value = Array(repeating: UInt8(ascii: "v"), count: 1024)
            replay.feed(.receive, Array("VALUE ".utf8) + key + Array(" 0 1024\r\n".utf8) + value + Array("\r\nEND\r\n".utf8), time: time + 20)
        }
        XCTAssertEqual(replay.spans.count, 3)
        XCTAssertEqual(replay.spans.map(\.endTimeUnixNano), [20, 120, 220])
        XCTAssertTrue(replay.spans.allSatisfy { $0.status == .unset && attribute($0, SemanticConventions.dbOperationName) == "get" })
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 0)
        // More uncaptured than a block and the 8 bytes of the tail can hold: the stream is given up, counted.
        replay.feed(.send, "get k\r\n", time: 400)
        replay.feed(.receive, Array("VALUE k 0 1024\r\n".utf8) + Array(repeating: 0x61, count: 1024) + Array("\r\nEND\r\nEND\r\nEND\r\n".utf8), time: 410)
        XCTAssertEqual(replay.spans.count, 3)
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 1)
    }

    func testPipelinedCommandsValuesSplitOverReadsNoreplyAndErrors() {
        let replay = Replay(queryText: .sanitized)
        // A pipeline of three commands in one write, the set's data block included.
        replay.feed(.send, "set user:1 0 0 5\r\nhello\r\nget user:1 user:2\r\nincr visits 1\r\n", time: 10)
        // The responses split over reads, one of them inside a data block.
        replay.feed(.receive, "STORED\r\nVALUE user:1 0 5\r\nhel", time: 20)
        XCTAssertEqual(replay.spans.map(\.name), ["set 127.0.0.1:11211"])
        replay.feed(.receive, "lo\r\nEND\r\n", time: 30)
        replay.feed(.receive, "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n", time: 40)
        XCTAssertEqual(replay.spans.compactMap { attribute($0, SemanticConventions.dbOperationName) }, ["set", "get", "incr"])
        XCTAssertEqual(replay.spans.map(\.endTimeUnixNano), [20, 30, 40])
        XCTAssertEqual(replay.spans.map(\.startTimeUnixNano), [10, 10, 10])
        XCTAssertTrue(replay.spans.allSatisfy { attribute($0, SemanticConventions.dbSystemName) == "memcached" && $0.kind == .client })
        XCTAssertEqual(replay.spans.map { attribute($0, SemanticConventions.dbQueryText) }, ["set ? ? ? ?", "get ? ?", "incr ? ?"])
        XCTAssertEqual(replay.spans[2].status, .error(message: ""))
        XCTAssertEqual(attribute(replay.spans[2], SemanticConventions.dbResponseStatusCode), "CLIENT_ERROR")
        XCTAssertEqual(replay.spans[1].status, .unset)
        XCTAssertNil(attribute(replay.spans[1], SemanticConventions.dbResponseStatusCode))
        XCTAssertEqual(replay.spans[0].attributes[SemanticConventions.serverPort]?.intValue, 11211)
        // noreply: no response comes; the span ends when the command was sent.
        replay.feed(.send, "delete user:1 noreply\r\nversion\r\n", time: 50)
        replay.feed(.receive, "VERSION 1.6.18\r\n", time: 60)
        XCTAssertEqual(replay.spans.suffix(2).compactMap { attribute($0, SemanticConventions.dbOperationName) }, ["delete", "version"])
        XCTAssertEqual(replay.spans.suffix(2).map(\.endTimeUnixNano), [50, 60])
        XCTAssertEqual(attribute(replay.spans.suffix(2).first, SemanticConventions.dbQueryText), "delete ? noreply")
        // A large value whose bytes the capture did not keep: skipped by its length; stats lines up to END.
        let value = String(repeating: "v", count: 5000)
        replay.feed(.send, "gets big\r\nstats\r\n", time: 70)
        let reply = "VALUE big 0 5000 42\r\n\(value)\r\nEND\r\n"
        replay.feed(.receive, Array(reply.utf8.prefix(1024)), length: reply.utf8.count - 5, time: 80)
        replay.feed(.receive, "END\r\n", time: 81)
        replay.feed(.receive, "STAT pid 1\r\nSTAT uptime 5\r\nEND\r\n", time: 90)
        XCTAssertEqual(replay.spans.suffix(2).compactMap { attribute($0, SemanticConventions.dbOperationName) }, ["gets", "stats"])
        XCTAssertEqual(replay.spans.suffix(2).map(\.endTimeUnixNano), [81, 90])
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 0)
        XCTAssertEqual(replay.counters.withoutReply.load(ordering: .relaxed), 0)
    }

    func testMetaCommandsAndFullText() {
        let replay = Replay(queryText: .full)
        replay.feed(.send, "ms k 2 T0\r\nhi\r\nmg k v\r\nmg missing v\r\nmn\r\n", time: 10)
        replay.feed(.receive, "HD\r\nVA 2\r\nhi\r\nEN\r\nMN\r\n", time: 20)
        XCTAssertEqual(replay.spans.compactMap { attribute($0, SemanticConventions.dbOperationName) }, ["ms", "mg", "mg", "mn"])
        XCTAssertEqual(replay.spans.map { attribute($0, SemanticConventions.dbQueryText) }, ["ms k 2 T0", "mg k v", "mg missing v", "mn"])
        // Quiet mode leaves responses out: the connection is not followed further (counted).
        replay.feed(.send, "mg k v q\r\nmn\r\n", time: 30)
        replay.feed(.receive, "MN\r\n", time: 40)
        XCTAssertEqual(replay.spans.count, 4)
        XCTAssertEqual(replay.counters.unsupported.load(ordering: .relaxed), 1)
    }

    func testGarbageAbsurdLengthsAndUncapturedLinesAreCountedThenParsingResumes() {
        let replay = Replay()
        // Not a command: not claimed.
        replay.feed(.send, "GET / HTTP/1.1\r\n\r\n", connection: 1, time: 1)
        replay.feed(.send, [0x80, 0x00, 0x00, 0x01] + Array(repeating: 0, count: 20), connection: 2, time: 1) // a binary key beyond its body
        // A data block of 2^62 bytes.
        replay.feed(.send, "set k 0 0 4611686018427387904\r\nx\r\n", connection: 3, time: 10)
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 1)
        // A response that is no response: counted, what waited is dropped; parsing resumes at the next command.
        replay.feed(.send, "get k\r\n", connection: 4, time: 20)
        replay.feed(.receive, "garbage\r\n", connection: 4, time: 21)
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 2)
        XCTAssertEqual(replay.counters.withoutReply.load(ordering: .relaxed), 1)
        replay.feed(.send, "get k\r\n", connection: 4, time: 30)
        replay.feed(.receive, "END\r\n", connection: 4, time: 31)
        XCTAssertEqual(replay.spans.map(\.name), ["get 127.0.0.1:11211"])
        // Lines hidden in the uncaptured part of a read (a pipeline longer than the capture).
        let pipeline = String(repeating: "get k\r\n", count: 300)
        replay.feed(.send, Array(pipeline.utf8.prefix(1024)), length: pipeline.utf8.count, connection: 5, time: 40)
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 3)
        // A line without end beyond the bound.
        replay.feed(.send, "get " + String(repeating: "k", count: 2000), connection: 6, time: 50)
        for time in 51...90 { replay.feed(.send, String(repeating: "k", count: 2000), connection: 6, time: UInt64(time)) }
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 4)
        XCTAssertEqual(replay.spans.count, 1)
        XCTAssertEqual(replay.tracker.counters.unclaimedConnections.load(ordering: .relaxed), 0)
    }

    /// Commands pipelined without end are bounded: beyond 1024 waiting, the oldest are dropped and counted.
    func testUnansweredPipelinedCommandsAreBounded() {
        let replay = Replay()
        let pipeline = Array(String(repeating: "get k\r\n", count: 1100).utf8)
        for (index, start) in stride(from: 0, to: pipeline.count, by: 1000).enumerated() {
            replay.feed(.send, Array(pipeline[start..<min(start + 1000, pipeline.count)]), time: 10 + UInt64(index))
        }
        XCTAssertEqual(replay.counters.abandoned.load(ordering: .relaxed), 76)
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 0)
    }

    /// A binary-protocol message: the 24-byte header, extras, key, value.
    private static func binary(_ magic: UInt8, _ opcode: UInt8, key: String = "", extras: [UInt8] = [], value: [UInt8] = [],
                               status: UInt16 = 0, opaque: UInt32) -> [UInt8] {
        let body = extras + Array(key.utf8) + value
        func be(_ value: Int, _ width: Int) -> [UInt8] { (0..<width).reversed().map { UInt8(value >> (8 * $0) & 0xFF) } }
        return [magic, opcode] + be(key.utf8.count, 2) + [UInt8(extras.count), 0] + be(Int(status), 2) + be(body.count, 4)
            + be(Int(opaque), 4) + Array(repeating: 0, count: 8) + body
    }

    func testBinaryProtocolOpaqueMatchingQuietCommandsAndErrors() {
        let replay = Replay(queryText: .full)
        // GetK hit and miss, a quiet SetQ, then Noop (which answers for it), an increment of a non-number.
        replay.feed(.send, Self.binary(0x80, 0x0C, key: "user:1", opaque: 1) + Self.binary(0x80, 0x0C, key: "user:2", opaque: 2), time: 10)
        let hit = Self.binary(0x81, 0x0C, key: "user:1", extras: [0, 0, 0, 0], value: Array("alice".utf8), opaque: 1)
        replay.feed(.receive, Array(hit.prefix(30)), time: 20)
        replay.feed(.receive, Array(hit.dropFirst(30)) + Self.binary(0x81, 0x0C, value: Array("Not found".utf8), status: 1, opaque: 2), time: 30)
        replay.feed(.send, Self.binary(0x80, 0x11, key: "user:3", extras: Array(repeating: 0, count: 8), value: Array("bob".utf8), opaque: 3)
                    + Self.binary(0x80, 0x0A, opaque: 4), time: 40)
        replay.feed(.receive, Self.binary(0x81, 0x0A, opaque: 4), time: 50)
        replay.feed(.send, Self.binary(0x80, 0x05, key: "user:1", extras: Array(repeating: 0, count: 20), opaque: 5), time: 60)
        replay.feed(.receive, Self.binary(0x81, 0x05, value: Array("Non-numeric server-side value for incr or decr".utf8), status: 6, opaque: 5),
                    time: 70)
        XCTAssertEqual(replay.spans.compactMap { attribute($0, SemanticConventions.dbOperationName) }, ["get", "get", "set", "noop", "incr"])
        XCTAssertEqual(replay.spans.map { attribute($0, SemanticConventions.dbQueryText) }, ["get user:1", "get user:2", "set user:3", "noop", "incr user:1"])
        XCTAssertEqual(replay.spans.map(\.endTimeUnixNano), [30, 30, 50, 50, 70])
        XCTAssertEqual(replay.spans.map(\.status), [.unset, .unset, .unset, .unset, .error(message: "")])
        XCTAssertEqual(attribute(replay.spans[4], SemanticConventions.dbResponseStatusCode), "0x0006")
        XCTAssertNil(attribute(replay.spans[1], SemanticConventions.dbResponseStatusCode), "a miss is no error")
        // Stat: one response per statistic, the last without key or body.
        replay.feed(.send, Self.binary(0x80, 0x10, opaque: 6), time: 80)
        replay.feed(.receive, Self.binary(0x81, 0x10, key: "pid", value: Array("1".utf8), opaque: 6)
                    + Self.binary(0x81, 0x10, key: "uptime", value: Array("5".utf8), opaque: 6) + Self.binary(0x81, 0x10, opaque: 6), time: 90)
        XCTAssertEqual(replay.spans.last.flatMap { attribute($0, SemanticConventions.dbOperationName) }, "stats")
        XCTAssertEqual(replay.spans.last?.endTimeUnixNano, 90)
        // A key longer than memcached allows: the stream is broken and counted; a later request resumes it.
        replay.feed(.send, Self.binary(0x80, 0x00, key: String(repeating: "k", count: 300), opaque: 7), time: 100)
        XCTAssertEqual(replay.counters.malformed.load(ordering: .relaxed), 1)
        replay.feed(.send, Self.binary(0x80, 0x0B, opaque: 8), time: 110)
        replay.feed(.receive, Self.binary(0x81, 0x0B, value: Array("1.6.18".utf8), opaque: 8), time: 120)
        XCTAssertEqual(replay.spans.last.flatMap { attribute($0, SemanticConventions.dbOperationName) }, "version")
        XCTAssertEqual(replay.spans.count, 7)
    }

    /// Both ends of one connection replayed (real PIDs, so both sides are in this network namespace): each server
    /// span is the child of the client span of the same command, a noreply one too.
    func testServerSpansAreTheChildrenOfTheClientSpansOfTheSameCommands() {
        let replay = Replay()
        let me = UInt32(getpid())
        let serverTuple = CaptureEvents.tuple(local: [127, 0, 0, 1], localPort: 11211, remote: [127, 0, 0, 1], remotePort: 40_000)
        var time: UInt64 = 1_000
        func both(_ text: String, fromClient: Bool) {
            time += 10
            let clientSide = { replay.feed(fromClient ? .send : .receive, text, connection: 1, pid: me, time: time) }
            let serverSide = { replay.feed(fromClient ? .receive : .send, text, connection: 2, pid: me, tuple: serverTuple, time: time + 1) }
            if fromClient { clientSide(); serverSide() } else { serverSide(); clientSide() }
        }
        both("set k 0 0 2 noreply\r\nhi\r\n", fromClient: true)
        both("get k\r\n", fromClient: true)
        both("VALUE k 0 2\r\nhi\r\nEND\r\n", fromClient: false)
        let clients = replay.spans.filter { $0.kind == .client }, servers = replay.spans.filter { $0.kind == .server }
        XCTAssertEqual(clients.compactMap { attribute($0, SemanticConventions.dbOperationName) }, ["set", "get"])
        XCTAssertEqual(servers.compactMap { attribute($0, SemanticConventions.dbOperationName) }, ["set", "get"])
        XCTAssertEqual(servers.map(\.parentSpanID), clients.map(\.spanID))
        XCTAssertEqual(replay.tracker.peerLinks.counters.linked.load(ordering: .relaxed), 2)
    }

    // MARK: End to end

    /// Debian's memcached on 127.0.0.1:`port` (no UDP).
    private func startMemcached() throws -> (ChildProcess, Int) {
        try requireBPF()
        try requireExecutable("/usr/bin/memcached", package: "memcached")
        let port = unusedTCPPort()
        let server = try ChildProcess("/usr/bin/memcached", ["-u", "root", "-l", "127.0.0.1", "-p", String(port), "-U", "0", "-t", "2"])
        let ready = waitUntil(timeout: 10) { acceptsTCPConnections(port: port) }
        guard ready else { try prerequisiteMissing("memcached", "memcached did not listen on 127.0.0.1:\(port) within 10 s") }
        return (server, port)
    }

    func testLibmemcachedToolsAgainstMemcachedGiveClientAndServerSpans() throws {
        let (server, port) = try startMemcached()
        try requireExecutable("/usr/bin/memccp", package: "libmemcached-tools")
        let directory = try temporaryDirectory(self)
        let file = directory.appendingPathComponent("greeting.txt")
        try "hello".write(to: file, atomically: true, encoding: .utf8)
        // memccp stores the file (set), memccat reads it and a missing key (get, get); one shell, traced from the start.
        let client = try ChildProcess("/bin/sh", ["-c", "read go; /usr/bin/memccp --servers=127.0.0.1:\(port) \(file.path) && "
                                                  + "/usr/bin/memccat --servers=127.0.0.1:\(port) greeting.txt missing; sleep 1"])
        let harness = try TracingHarness(pids: [server.pid, client.pid])
        client.release()
        XCTAssertNotNil(client.waitForExit())
        func spans(_ kind: SpanKind) -> [Span] {
            harness.collector.spans.filter { $0.kind == kind && attribute($0, SemanticConventions.dbSystemName) == "memcached" }
                .sorted { $0.startTimeUnixNano < $1.startTimeUnixNano }
        }
        _ = waitUntil(timeout: 10) { spans(.client).count >= 3 && spans(.server).count >= 3 }
        usleep(200_000)
        let operations = { (spans: [Span]) in spans.compactMap { self.attribute($0, SemanticConventions.dbOperationName) }.filter { $0 != "quit" } }
        XCTAssertEqual(operations(spans(.client)), ["set", "get", "get"])
        XCTAssertEqual(operations(spans(.server)), ["set", "get", "get"])
        XCTAssertTrue(spans(.client).allSatisfy {
            $0.attributes[SemanticConventions.serverPort]?.intValue == Int64(port) && $0.status == .unset && $0.attributes[SemanticConventions.dbQueryText] == nil
        })
        XCTAssertTrue(spans(.client).allSatisfy { $0.resource.attributes[SemanticConventions.processPID]?.intValue != Int64(server.pid) })
        XCTAssertTrue(spans(.server).allSatisfy { $0.resource.attributes[SemanticConventions.processPID]?.intValue == Int64(server.pid) })
        // Same-host linking: a linked server span's parent is the client span of the same command.
        let clientSpans = spans(.client)
        for span in spans(.server) where span.parentSpanID != .invalid {
            XCTAssertEqual(clientSpans.first { $0.spanID == span.parentSpanID }?.name, span.name)
        }
    }

    /// memcaslap's 1 KiB values against the traced server: memcached answers a get with three iovec segments,
    /// the last being `END\r\n` (5 bytes), so the response's end is read from the last two segments. Every get and
    /// set memcaslap made is one server span, and nothing is malformed.
    func testMemcaslapGetsWithValuesLongerThanTheCaptureAreEachOneSpan() throws {
        let (server, port) = try startMemcached()
        try requireExecutable("/usr/bin/memcaslap", package: "libmemcached-tools")
        let tracer = MemcachedTracer(queryText: .off)
        let harness = try TracingHarness(pids: [server.pid], tracers: [tracer])
        // 600 operations (1.3 MB of events): what the 2 MiB events ring holds if a debug build of the agent falls behind.
        let report = try TestSupport.run("/usr/bin/memcaslap", ["-s", "127.0.0.1:\(port)", "-T", "1", "-c", "1", "-x", "600"])
        // Its own count of the gets and sets it made (`cmd_get: N`, `cmd_set: M`).
        let counted = report.split(separator: "\n").filter { $0.hasPrefix("cmd_get:") || $0.hasPrefix("cmd_set:") }
            .compactMap { Int($0.split(separator: " ").last ?? "") }
        XCTAssertEqual(counted.count, 2, report)
        let operations = counted.reduce(0, +)
        XCTAssertGreaterThanOrEqual(operations, 600)
        func served() -> Int {
            harness.collector.spans.filter { $0.kind == .server && ["get", "set"].contains(attribute($0, SemanticConventions.dbOperationName)) }.count
        }
        _ = waitUntil(timeout: 20) { served() >= operations }
        usleep(300_000)
        XCTAssertEqual(served(), operations)
        XCTAssertEqual(tracer.statistics.malformed.load(ordering: .relaxed), 0)
        XCTAssertEqual(harness.agent.metricsSnapshot.eventsDroppedKernel, 0)
    }

    func testLibmemcachedToolsOverTheBinaryProtocol() throws {
        let (server, port) = try startMemcached()
        try requireExecutable("/usr/bin/memccp", package: "libmemcached-tools")
        let directory = try temporaryDirectory(self)
        let file = directory.appendingPathComponent("greeting.txt")
        try "hello".write(to: file, atomically: true, encoding: .utf8)
        let client = try ChildProcess("/bin/sh", ["-c", "read go; /usr/bin/memccp --binary --servers=127.0.0.1:\(port) \(file.path) && "
                                                  + "/usr/bin/memccat --binary --servers=127.0.0.1:\(port) greeting.txt missing; sleep 1"])
        let harness = try TracingHarness(pids: [server.pid, client.pid], tracers: [MemcachedTracer(queryText: .full)])
        client.release()
        XCTAssertNotNil(client.waitForExit())
        func spans(_ kind: SpanKind) -> [Span] {
            harness.collector.spans.filter { $0.kind == kind && attribute($0, SemanticConventions.dbSystemName) == "memcached" }
                .sorted { $0.startTimeUnixNano < $1.startTimeUnixNano }
        }
        _ = waitUntil(timeout: 10) { spans(.client).count >= 3 && spans(.server).count >= 3 }
        usleep(200_000)
        for kind in [SpanKind.client, .server] {
            XCTAssertEqual(spans(kind).map { attribute($0, SemanticConventions.dbQueryText) }, ["set greeting.txt", "get greeting.txt", "get missing"])
            XCTAssertTrue(spans(kind).allSatisfy { $0.status == .unset && $0.attributes[SemanticConventions.serverPort]?.intValue == Int64(port) })
        }
    }

    func testPymemcacheNoreplyMultiGetAndClientError() throws {
        let (server, port) = try startMemcached()
        guard (try? TestSupport.run("/usr/bin/python3", ["-c", "import pymemcache"])) != nil else {
            try prerequisiteMissing("python3-pymemcache", "Python's pymemcache module is missing (apt-get install python3-pymemcache)")
        }
        let directory = try temporaryDirectory(self)
        let script = directory.appendingPathComponent("client.py")
        try """
        import sys, time
        from pymemcache.client.base import Client
        from pymemcache.exceptions import MemcacheClientError
        client = Client(("127.0.0.1", int(sys.argv[1])))
        client.set("user:1", "alice")
        assert client.get_many(["user:1", "user:2"]) == {"user:1": b"alice"}
        try:
            client.incr("user:1", 1)
        except MemcacheClientError:
            pass
        client.delete("user:1", noreply=False)
        time.sleep(1)
        """.write(to: script, atomically: true, encoding: .utf8)
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", "/usr/bin/python3", script.path, String(port)])
        let harness = try TracingHarness(pids: [server.pid, client.pid], tracers: [MemcachedTracer(queryText: .sanitized)])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)
        let clientSpans = harness.waitForSpans(of: client.pid, kind: .client, count: 4)
        XCTAssertEqual(clientSpans.compactMap { attribute($0, SemanticConventions.dbOperationName) }, ["set", "get", "incr", "delete"])
        XCTAssertEqual(clientSpans.map { attribute($0, SemanticConventions.dbQueryText) }, ["set ? ? ? ? noreply", "get ? ?", "incr ? ?", "delete ?"])
        XCTAssertEqual(clientSpans.map(\.status), [.unset, .unset, .error(message: ""), .unset])
        XCTAssertEqual(attribute(clientSpans[2], SemanticConventions.dbResponseStatusCode), "CLIENT_ERROR")
        let serverSpans = harness.waitForSpans(of: server.pid, kind: .server, count: 4)
        XCTAssertEqual(serverSpans.compactMap { attribute($0, SemanticConventions.dbOperationName) }, ["set", "get", "incr", "delete"])
        XCTAssertEqual(attribute(serverSpans[2], SemanticConventions.dbResponseStatusCode), "CLIENT_ERROR")
        // Same-host linking: a linked server span is the child of the client span of the same command. (Under load the
        // server may answer before the agent reads the client's write, and then makes unlinked spans: never wrong ones.)
        for (server, client) in zip(serverSpans, clientSpans) {
            XCTAssertTrue(server.parentSpanID == .invalid || (server.parentSpanID == client.spanID && server.traceID == client.traceID))
        }
    }
}
