import Foundation
import OTLPExport
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// The Redis parser: capture events replayed through the connection tracker (no kernel), and redis-server
/// with redis-cli traced end to end.
final class RedisTracerTests: XCTestCase {
    private final class Replay {
        let tracker: ConnectionTracker
        let tracer: RedisTracer
        var spans: [Span] = []

        init(queryText: DatabaseQueryText = .off) {
            tracer = RedisTracer(queryText: queryText)
            let parser = tracer.parser!
            tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: [parser]) }, countOnly: { _ in })
        }

        func feed(_ direction: CaptureChunk.Direction, _ text: String, length: Int? = nil, time: UInt64) {
            var exchanges: [Exchange] = []
            let tuple = CaptureEvents.tuple(local: [127, 0, 0, 1], localPort: 40_000, remote: [127, 0, 0, 1], remotePort: 6379)
            CaptureEvents.chunk(connection: 1, pid: 7, direction: direction, data: Array(text.utf8), length: length, timestamp: time,
                                tuple: tuple).withUnsafeBytes { tracker.handle($0, into: &exchanges) }
            for case .database(let exchange) in exchanges {
                spans.append(DatabaseSpans.span(exchange, resource: .empty, scope: InstrumentationScope(name: "test")) { $0 })
            }
        }
    }

    func testPipelineMultiExecSelectAndErrors() throws {
        let replay = Replay(queryText: .sanitized)
        replay.feed(.send, "*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n", time: 10)
        replay.feed(.receive, "+OK\r\n", time: 20)
        // A pipeline: SET, GET, a wrong-type command; the replies split across two reads.
        replay.feed(.send, "*3\r\n$3\r\nset\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$4\r\nLLEN\r\n$1\r\nk\r\n", time: 30)
        replay.feed(.receive, "+OK\r\n$5\r\nhel", time: 40)
        replay.feed(.receive, "lo\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", time: 50)
        replay.feed(.send, "*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n*1\r\n$4\r\nEXEC\r\n", time: 60)
        replay.feed(.receive, "+OK\r\n+QUEUED\r\n*1\r\n:1\r\n", time: 70)
        XCTAssertEqual(replay.spans.map(\.name), ["SELECT 127.0.0.1:6379", "SET 3", "GET 3", "LLEN 3", "MULTI 3", "INCR 3", "EXEC 3"])
        XCTAssertEqual(replay.spans[0].attributes[SemanticConventions.dbNamespace], nil, "unknown before SELECT")
        XCTAssertEqual(replay.spans[1].attributes[SemanticConventions.dbSystemName]?.stringValue, "redis")
        XCTAssertEqual(replay.spans[1].attributes[SemanticConventions.dbOperationName]?.stringValue, "SET")
        XCTAssertEqual(replay.spans[1].attributes[SemanticConventions.dbQueryText]?.stringValue, "SET ? ?")
        XCTAssertEqual(replay.spans[2].endTimeUnixNano, 50, "the bulk reply ended in the second read")
        XCTAssertEqual(replay.spans[3].status, .error(message: ""))
        XCTAssertEqual(replay.spans[3].attributes[SemanticConventions.dbResponseStatusCode]?.stringValue, "WRONGTYPE")
        XCTAssertEqual(replay.spans[3].attributes[SemanticConventions.errorType]?.stringValue, "WRONGTYPE")
        XCTAssertEqual(replay.spans[1].kind, .client)
        XCTAssertEqual(replay.spans[1].attributes[SemanticConventions.serverPort]?.intValue, 6379)
    }

    func testNestedRepliesSplitHeadersPushesAndTheDepthLimit() {
        let replay = Replay()
        // A RESP3 map holding an array, its header lines cut in the middle by the reads; a push before it.
        replay.feed(.send, "*2\r\n$7\r\nhgetall\r\n$1\r\nh\r\n", time: 10)
        replay.feed(.receive, ">2\r\n$10\r\ninvalidate\r\n_\r\n%2\r\n$1\r\na\r\n*", time: 20)
        replay.feed(.receive, "2\r\n:1\r\n:2\r", time: 30)
        replay.feed(.receive, "\n$1\r\nb\r\n_\r\n", time: 40)
        XCTAssertEqual(replay.spans.map(\.name), ["HGETALL 127.0.0.1:6379"])
        XCTAssertEqual(replay.spans.first?.endTimeUnixNano, 40, "the map ended in the third read; the push answered nothing")
        XCTAssertEqual(replay.tracer.statistics.unmatchedReplies.load(ordering: .relaxed), 0)
        // Sixteen nested arrays are followed; a seventeenth is garbage, counted, and no span.
        replay.feed(.send, "*1\r\n$4\r\nPING\r\n", time: 50)
        replay.feed(.receive, String(repeating: "*1\r\n", count: 16) + ":1\r\n", time: 60)
        XCTAssertEqual(replay.spans.count, 2)
        replay.feed(.send, "*1\r\n$4\r\nPING\r\n", time: 70)
        replay.feed(.receive, String(repeating: "*1\r\n", count: 17) + ":1\r\n", time: 80)
        XCTAssertEqual(replay.spans.count, 2)
        XCTAssertEqual(replay.tracer.statistics.malformed.load(ordering: .relaxed), 1)
        // After SUBSCRIBE, messages are not replies: no spans, the connection counted.
        replay.feed(.send, "*1\r\n$4\r\nPING\r\n", time: 90)
        replay.feed(.receive, "+PONG\r\n", time: 100)
        replay.feed(.send, "*2\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n", time: 110)
        replay.feed(.receive, "*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n", time: 120)
        XCTAssertEqual(replay.spans.map(\.name).last, "PING 127.0.0.1:6379")
        XCTAssertEqual(replay.spans.count, 3)
        XCTAssertEqual(replay.tracer.statistics.subscribedConnections.load(ordering: .relaxed), 1)
    }

    func testAbsurdLengthsAndGarbageAreCountedNeverSpans() {
        let replay = Replay()
        replay.feed(.send, "*2\r\n$3\r\nGET\r\n$4611686018427387904\r\nk\r\n", time: 10) // a bulk of 2^62 bytes
        replay.feed(.receive, "$-1\r\n", time: 20)
        XCTAssertTrue(replay.spans.isEmpty)
        XCTAssertEqual(replay.tracer.statistics.malformed.load(ordering: .relaxed), 1)
        // Parsing resumes at the next command that starts a write, once nothing waits.
        replay.feed(.send, "*1\r\n$4\r\nPING\r\n", time: 30)
        replay.feed(.receive, "+PONG\r\n", time: 40)
        XCTAssertEqual(replay.spans.map(\.name), ["PING 127.0.0.1:6379"])
        // A command cut by the capture whose header lines were not captured breaks the stream, counted.
        replay.feed(.send, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n", length: 5000, time: 50)
        replay.feed(.receive, "+OK\r\n", time: 60)
        XCTAssertEqual(replay.spans.count, 1)
        XCTAssertEqual(replay.tracer.statistics.malformed.load(ordering: .relaxed), 2)
    }

    func testRedisCliAgainstRedisServerGivesClientAndServerSpans() throws {
        try requireBPF()
        try requireExecutable("/usr/bin/redis-server", package: "redis-server")
        let directory = try temporaryDirectory(self)
        let port = unusedTCPPort()
        let server = try ChildProcess("/usr/bin/redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                                                 "--dir", directory.path])
        XCTAssertTrue(waitUntil(timeout: 10) { (try? TestSupport.run("/usr/bin/redis-cli", ["-p", String(port), "PING"]))?.contains("PONG") == true },
                      "redis-server answers")
        let commands = directory.appendingPathComponent("commands.txt")
        try "SET greeting hello\nGET greeting\nLPUSH greeting x\n".write(to: commands, atomically: true, encoding: .utf8)
        // Held until selected; redis-cli then reads its commands from the file.
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\" < \(commands.path)", "/usr/bin/redis-cli", "-p", String(port), "-n", "2"])
        let harness = try TracingHarness(pids: [server.pid, client.pid])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)
        let clientSpans = harness.waitForSpans(of: client.pid, kind: .client, count: 4)
        XCTAssertEqual(clientSpans.map(\.name), ["SELECT 127.0.0.1:\(port)", "SET 2", "GET 2", "LPUSH 2"])
        XCTAssertEqual(clientSpans.last?.attributes[SemanticConventions.dbResponseStatusCode]?.stringValue, "WRONGTYPE")
        XCTAssertEqual(clientSpans.last?.status, .error(message: ""))
        XCTAssertNil(clientSpans[1].attributes[SemanticConventions.dbQueryText], "no arguments unless configured")
        let serverSpans = harness.waitForSpans(of: server.pid, kind: .server, count: 4)
        XCTAssertEqual(serverSpans.compactMap { $0.attributes[SemanticConventions.dbOperationName]?.stringValue }, ["SELECT", "SET", "GET", "LPUSH"])
        XCTAssertEqual(serverSpans.first?.attributes[SemanticConventions.serverPort]?.intValue, Int64(port))
        XCTAssertEqual(harness.agent.unclaimedConnections(pid: client.pid), 0)
        // The same spans as RED metrics: db.client.operation.duration from the client spans only.
        let red = REDMetrics()
        red.consume(clientSpans + serverSpans)
        let points = red.snapshot().flatMap(\.metrics).filter { $0.name == "db.client.operation.duration" }.flatMap { metric -> [HistogramPoint] in
            if case .histogram(_, let points) = metric.points { return points }
            return []
        }
        XCTAssertEqual(points.map(\.count).reduce(0, +), 4, "one measurement per client span")
        let lpush = try XCTUnwrap(points.first { $0.attributes[SemanticConventions.dbOperationName] == "LPUSH" })
        XCTAssertEqual(lpush.attributes[SemanticConventions.dbResponseStatusCode], "WRONGTYPE")
        XCTAssertEqual(lpush.attributes[SemanticConventions.dbSystemName], "redis")
    }

    func testPythonRedisPipelineAndTransactionGiveOneSpanPerCommand() throws {
        try requireBPF()
        try requireExecutable("/usr/bin/redis-server", package: "redis-server")
        guard (try? TestSupport.run("/usr/bin/python3", ["-c", "import redis"])) != nil else {
            try prerequisiteMissing("python3-redis", "Python's redis module is missing (apt-get install python3-redis)")
        }
        let directory = try temporaryDirectory(self)
        let port = unusedTCPPort()
        let server = try ChildProcess("/usr/bin/redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                                                 "--dir", directory.path])
        XCTAssertTrue(waitUntil(timeout: 10) { (try? TestSupport.run("/usr/bin/redis-cli", ["-p", String(port), "PING"]))?.contains("PONG") == true })
        let script = directory.appendingPathComponent("client.py")
        try """
        import redis, sys
        r = redis.Redis(port=int(sys.argv[1]))
        p = r.pipeline(transaction=True)
        p.set("a", "1"); p.incr("a"); p.execute()
        p = r.pipeline(transaction=False)
        p.get("a"); p.get("missing"); p.execute()
        """.write(to: script, atomically: true, encoding: .utf8)
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", "/usr/bin/python3", script.path, String(port)])
        let harness = try TracingHarness(pids: [client.pid])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)
        let spans = harness.waitForSpans(of: client.pid, kind: .client, count: 6)
        XCTAssertEqual(spans.suffix(6).compactMap { $0.attributes[SemanticConventions.dbOperationName]?.stringValue },
                       ["MULTI", "SET", "INCRBY", "EXEC", "GET", "GET"]) // redis-py sends incr() as INCRBY
        XCTAssertTrue(spans.allSatisfy { $0.status == .unset && $0.attributes[SemanticConventions.dbSystemName]?.stringValue == "redis" })
        XCTAssertTrue(spans.allSatisfy { $0.attributes[SemanticConventions.serverPort]?.intValue == Int64(port) })
    }
}
