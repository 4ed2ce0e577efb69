import CTracerABI
import Foundation
import Glibc
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// The NATS parser, byte by byte: capture events replayed through the connection tracker (no kernel).
final class NATSParserTests: XCTestCase {
    final class Replay {
        let tracker: ConnectionTracker
        let tracer = NATSTracer()
        var spans: [Span] = []

        init() {
            let parser = tracer.parser!
            tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: [parser]) }, countOnly: { _ in })
        }

        func feed(_ direction: CaptureChunk.Direction, _ text: String, length: Int? = nil, connection: UInt64 = 1, pid: UInt32 = 7,
                  tuple: capture_tuple = NATSParserTests.clientTuple, time: UInt64) {
            feed(direction, Array(text.utf8), length: length, connection: connection, pid: pid, tuple: tuple, time: time)
        }

        func feed(_ direction: CaptureChunk.Direction, _ bytes: [UInt8], length: Int? = nil, connection: UInt64 = 1, pid: UInt32 = 7,
                  tuple: capture_tuple = NATSParserTests.clientTuple, time: UInt64) {
            var exchanges: [Exchange] = []
            CaptureEvents.chunk(connection: connection, pid: pid, direction: direction, data: bytes, length: length, timestamp: time,
                                tuple: tuple).withUnsafeBytes { tracker.handle($0, into: &exchanges) }
            for case .messaging(let exchange) in exchanges {
                spans.append(MessagingSpans.span(exchange, resource: .empty, scope: InstrumentationScope(name: "test")) { $0 })
            }
        }

        var counters: NATSTracerCounters { tracer.statistics }
        var malformed: UInt64 { counters.malformed.load(ordering: .relaxed) }
    }

    static let clientTuple = CaptureEvents.tuple(local: [127, 0, 0, 1], localPort: 40_000, remote: [127, 0, 0, 1], remotePort: 4222)
    static let serverTuple = CaptureEvents.tuple(local: [127, 0, 0, 1], localPort: 4222, remote: [127, 0, 0, 1], remotePort: 40_000)
    static let info = "INFO {\"server_id\":\"N1\",\"version\":\"2.9.10\",\"headers\":true,\"max_payload\":1048576}\r\n"
    static let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    private func attribute(_ span: Span?, _ key: String) -> String? { span?.attributes[key]?.stringValue }

    func testPublishesAndDeliveriesSplitOverChunksAndPipelined() {
        let replay = Replay()
        replay.feed(.receive, Self.info, time: 1)
        replay.feed(.send, "CONNECT {\"verbose\": false, \"headers\": true}\r\nPING\r\n", time: 2)
        replay.feed(.receive, "PONG\r\n", time: 3)
        // Two publishes pipelined in one write, the second's payload split over two writes.
        replay.feed(.send, "SUB orders  1\r\nPUB orders  5\r\nhello\r\nPUB orders _INBOX.abc.def 11\r\nhel", time: 10)
        XCTAssertEqual(replay.spans.map(\.name), ["publish orders"])
        replay.feed(.send, "lo world\r\n", time: 11)
        // Deliveries: a MSG line split from its payload, then two pipelined in one read.
        replay.feed(.receive, "MSG orders 1 5\r\nhel", time: 20)
        replay.feed(.receive, "lo\r\nMSG orders 1 _INBOX.abc.def 2\r\nhi\r\nmsg _INBOX.abc.def 3 0\r\n\r\n", time: 21)
        XCTAssertEqual(replay.spans.map(\.name), ["publish orders", "publish orders", "process orders", "process orders", "process _INBOX.>"])
        XCTAssertEqual(replay.spans.map(\.kind), [.producer, .producer, .consumer, .consumer, .consumer])
        XCTAssertEqual(replay.spans.map(\.startTimeUnixNano), [10, 10, 20, 21, 21])
        XCTAssertEqual(replay.spans.map(\.endTimeUnixNano), [10, 11, 21, 21, 21])
        XCTAssertEqual(replay.spans.map { $0.attributes[SemanticConventions.messagingMessageBodySize]?.intValue }, [5, 11, 5, 2, 0])
        XCTAssertEqual(replay.spans.map { attribute($0, SemanticConventions.messagingOperationType) }, ["send", "send", "process", "process", "process"])
        XCTAssertEqual(replay.spans.map { attribute($0, SemanticConventions.messagingOperationName) }, ["publish", "publish", "process", "process", "process"])
        let inbox = replay.spans[4]
        XCTAssertEqual(attribute(inbox, SemanticConventions.messagingDestinationName), "_INBOX.abc.def")
        XCTAssertEqual(attribute(inbox, SemanticConventions.messagingDestinationTemplate), "_INBOX.>")
        XCTAssertEqual(inbox.attributes[SemanticConventions.messagingDestinationTemporary], true)
        XCTAssertNil(replay.spans[0].attributes[SemanticConventions.messagingDestinationTemporary])
        // A JetStream acknowledgement: its subject names stream, consumer and sequences.
        replay.feed(.send, "PUB $JS.ACK.orders.worker.1.7.7.1733500000000000000.0 0\r\n\r\n", time: 30)
        XCTAssertEqual(replay.spans.last?.name, "publish $JS.ACK.>")
        XCTAssertEqual(replay.spans.last?.attributes[SemanticConventions.messagingDestinationTemporary], true)
        XCTAssertTrue(replay.spans.allSatisfy {
            attribute($0, SemanticConventions.messagingSystem) == "nats" && $0.attributes[SemanticConventions.serverPort]?.intValue == 4222
                && attribute($0, SemanticConventions.serverAddress) == "127.0.0.1" && $0.status == .unset
        })
        XCTAssertEqual(replay.malformed, 0)
    }

    func testHeadersCarryTraceparentAndNoValueIsRecorded() throws {
        let replay = Replay()
        replay.feed(.receive, Self.info, time: 1)
        let headers = "NATS/1.0\r\nTraceparent: \(Self.traceparent)\r\nsecret: hunter2\r\n\r\n"
        let payload = headers + "opaque"
        replay.feed(.send, "HPUB orders \(headers.utf8.count) \(payload.utf8.count)\r\n\(payload)\r\n", time: 10)
        replay.feed(.receive, "HMSG orders 1 \(headers.utf8.count) \(payload.utf8.count)\r\n\(payload)\r\n", time: 20)
        XCTAssertEqual(replay.spans.map(\.name), ["publish orders", "process orders"])
        let parent = try XCTUnwrap(TraceID(hex: "0af7651916cd43dd8448eb211c80319c"))
        for span in replay.spans {
            XCTAssertEqual(span.traceID, parent)
            XCTAssertEqual(span.parentSpanID, SpanID(0xb7ad_6b71_6920_3331))
            XCTAssertEqual(attribute(span, "tracer.parent.source"), "traceparent")
            XCTAssertEqual(span.attributes[SemanticConventions.messagingMessageBodySize]?.intValue, 6, "the body without the headers")
            XCTAssertFalse(span.attributes.elements.map { "\($0.key)=\($0.value)" }.joined(separator: " ").contains("hunter2"))
            XCTAssertFalse(span.attributes.elements.map { "\($0.key)=\($0.value)" }.joined(separator: " ").contains("opaque"))
        }
        // A malformed traceparent parents nothing.
        let bad = "NATS/1.0\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01\r\n\r\n"
        replay.feed(.send, "HPUB orders \(bad.utf8.count) \(bad.utf8.count)\r\n\(bad)\r\n", time: 30)
        XCTAssertEqual(replay.spans.last?.parentSpanID, .invalid)
    }

    func testVerboseModeEndsPublishesAtTheirAnswersAndErrAsError() {
        let replay = Replay()
        replay.feed(.receive, Self.info, time: 1)
        replay.feed(.send, "CONNECT {\"verbose\":true,\"pedantic\":false}\r\n", time: 2)
        replay.feed(.receive, "+OK\r\n", time: 3)
        replay.feed(.send, "SUB orders 1\r\nPUB orders 2\r\nok\r\nPUB secret.plans 2\r\nno\r\n", time: 10)
        XCTAssertTrue(replay.spans.isEmpty, "a verbose publish ends at its answer")
        replay.feed(.receive, "+OK\r\n+OK\r\n", time: 20)
        replay.feed(.receive, "-ERR 'Permissions Violation for Publish to \"secret.plans\"'\r\n", time: 30)
        XCTAssertEqual(replay.spans.map(\.name), ["publish orders", "publish secret.plans"])
        XCTAssertEqual(replay.spans.map(\.endTimeUnixNano), [20, 30])
        XCTAssertEqual(replay.spans[0].status, .unset)
        XCTAssertEqual(replay.spans[1].status, .error(message: "Permissions Violation for Publish to \"secret.plans\""))
        XCTAssertEqual(attribute(replay.spans[1], SemanticConventions.errorType), "Permissions Violation")
        XCTAssertEqual(replay.counters.serverErrors.load(ordering: .relaxed), 1)
        // An answer with nothing waiting is counted; a publish unanswered at close is counted.
        replay.feed(.receive, "+OK\r\n", time: 40)
        XCTAssertEqual(replay.counters.unmatchedResponses.load(ordering: .relaxed), 1)
        replay.feed(.send, "PUB orders 0\r\n\r\n", time: 50)
        // A stale-connection notice answers nothing.
        replay.feed(.receive, "-ERR 'Stale Connection'\r\n", time: 55)
        XCTAssertEqual(replay.counters.serverErrors.load(ordering: .relaxed), 2)
        var exchanges: [Exchange] = []
        CaptureEvents.close(connection: 1, pid: 7, timestamp: 60).withUnsafeBytes { replay.tracker.handle($0, into: &exchanges) }
        XCTAssertEqual(replay.counters.withoutReply.load(ordering: .relaxed), 1)
        XCTAssertEqual(replay.spans.count, 2)
    }

    /// A responder's reply (a publish to the reply subject of a request delivered on the same connection) is the
    /// child of that request's process span; another publish is not.
    func testRepliesAreTheChildrenOfTheRequestsTheyAnswer() {
        let replay = Replay()
        replay.feed(.receive, Self.info, time: 1)
        replay.feed(.send, "SUB service  1\r\n", time: 2)
        replay.feed(.receive, "MSG service 1 _INBOX.req.1 4\r\nping\r\nMSG service 1 _INBOX.req.2 4\r\nping\r\n", time: 10)
        replay.feed(.send, "PUB _INBOX.req.2  4\r\npong\r\nPUB other 1\r\nx\r\nPUB _INBOX.req.1  4\r\npong\r\n", time: 20)
        XCTAssertEqual(replay.spans.map(\.name), ["process service", "process service", "publish _INBOX.>", "publish other", "publish _INBOX.>"])
        let (first, second) = (replay.spans[0], replay.spans[1])
        XCTAssertEqual(replay.spans[2].parentSpanID, second.spanID)
        XCTAssertEqual(replay.spans[2].traceID, second.traceID)
        XCTAssertEqual(replay.spans[4].parentSpanID, first.spanID)
        XCTAssertEqual(replay.spans[4].traceID, first.traceID)
        XCTAssertEqual(replay.spans[2].attributes["tracer.parent.source"]?.stringValue, "reply")
        XCTAssertEqual(replay.spans[3].parentSpanID, .invalid)
        // A second publish to the same subject is no reply any more.
        replay.feed(.send, "PUB _INBOX.req.1 0\r\n\r\n", time: 30)
        XCTAssertEqual(replay.spans.last?.parentSpanID, .invalid)
    }

    /// Without verbose, an -ERR answers nothing: counted, no span changes.
    func testErrWithoutVerboseIsCountedOnly() {
        let replay = Replay()
        replay.feed(.receive, Self.info, time: 1)
        replay.feed(.send, "PUB secret 1\r\nx\r\n", time: 10)
        replay.feed(.receive, "-ERR 'Permissions Violation for Publish to \"secret\"'\r\n", time: 11)
        XCTAssertEqual(replay.spans.map(\.status), [.unset])
        XCTAssertEqual(replay.counters.serverErrors.load(ordering: .relaxed), 1)
        XCTAssertEqual(replay.counters.unmatchedResponses.load(ordering: .relaxed), 0)
    }

    /// The server's side: a SERVER span per message it reads, none for deliveries it writes; same-host linking makes
    /// it the child of the publisher's span.
    func testServerSpansAreTheChildrenOfThePublishersSpans() {
        let replay = Replay()
        let me = UInt32(getpid())
        replay.feed(.send, Self.info, connection: 2, pid: me, tuple: Self.serverTuple, time: 1)
        replay.feed(.receive, Self.info, connection: 1, pid: me, time: 2)
        replay.feed(.send, "PUB orders 5\r\nhello\r\n", connection: 1, pid: me, time: 10)
        replay.feed(.receive, "PUB orders 5\r\nhello\r\n", connection: 2, pid: me, tuple: Self.serverTuple, time: 11)
        replay.feed(.send, "MSG orders 1 5\r\nhello\r\n", connection: 2, pid: me, tuple: Self.serverTuple, time: 12)
        let producers = replay.spans.filter { $0.kind == .producer }, servers = replay.spans.filter { $0.kind == .server }
        XCTAssertEqual(producers.map(\.name), ["publish orders"])
        XCTAssertEqual(servers.map(\.name), ["publish orders"])
        XCTAssertEqual(replay.spans.count, 2, "the delivery the server writes is the subscriber's span")
        XCTAssertEqual(servers.first?.parentSpanID, producers.first?.spanID)
        XCTAssertEqual(servers.first?.traceID, producers.first?.traceID)
        XCTAssertEqual(servers.first?.attributes[SemanticConventions.serverPort]?.intValue, 4222)
        XCTAssertEqual(servers.first?.attributes[SemanticConventions.clientPort]?.intValue, 40_000)
    }

    func testGarbageAbsurdSizesAndUncapturedLinesAreCountedThenParsingResumes() {
        let replay = Replay()
        // Not NATS: not claimed.
        replay.feed(.send, "GET / HTTP/1.1\r\n\r\n", connection: 1, time: 1)
        replay.feed(.send, "PUB orders\r\n", connection: 2, time: 1) // no size
        replay.feed(.receive, "INFO nope\r\n", connection: 3, time: 1)
        // A size of 2^62: the line is refused.
        replay.feed(.receive, Self.info, connection: 4, time: 2)
        replay.feed(.send, "PUB orders 4611686018427387904\r\nx\r\n", connection: 4, time: 3)
        XCTAssertEqual(replay.malformed, 1)
        // Resumes at a later write that starts with an operation.
        replay.feed(.send, "garbage", connection: 4, time: 4)
        replay.feed(.send, "PUB orders 1\r\nx\r\n", connection: 4, time: 5)
        XCTAssertEqual(replay.spans.map(\.name), ["publish orders"])
        // A payload not ended by CRLF; headers larger than the payload.
        replay.feed(.send, "PUB orders 1\r\nxyz\r\n", connection: 4, time: 6)
        XCTAssertEqual(replay.malformed, 2)
        replay.feed(.send, "HPUB orders 10 5\r\n", connection: 4, time: 7)
        XCTAssertEqual(replay.malformed, 3)
        // A server-only verb from the client; an unknown verb from the server.
        replay.feed(.send, "MSG orders 1 1\r\nx\r\n", connection: 4, time: 8)
        replay.feed(.receive, "BOGUS\r\n", connection: 4, time: 9)
        XCTAssertEqual(replay.malformed, 5)
        // Lines hidden in the uncaptured part of a write (a pipeline longer than the capture).
        replay.feed(.receive, Self.info, connection: 5, time: 10)
        let pipeline = String(repeating: "PUB a 1\r\nx\r\n", count: 200)
        replay.feed(.send, Array(pipeline.utf8.prefix(1024)), length: pipeline.utf8.count, connection: 5, time: 11)
        XCTAssertEqual(replay.malformed, 6)
        // A line without end beyond the bound.
        replay.feed(.receive, Self.info, connection: 6, time: 20)
        replay.feed(.send, "PUB " + String(repeating: "k", count: 1000), connection: 6, time: 21)
        for time in 22...100 { replay.feed(.send, String(repeating: "k", count: 1000), connection: 6, time: UInt64(time)) }
        XCTAssertEqual(replay.malformed, 7)
        XCTAssertEqual(replay.spans.count, 1 + 85, "the spans of the pipeline's captured publishes, no invented ones")
    }

    /// A payload beyond the capture is skipped by its length, its header block's first bytes still read.
    func testLargePayloadBeyondTheCapture() {
        let replay = Replay()
        replay.feed(.receive, Self.info, time: 1)
        let headers = "NATS/1.0\r\ntraceparent: \(Self.traceparent)\r\n\r\n"
        let body = String(repeating: "b", count: 5000)
        let message = "HPUB big \(headers.utf8.count) \(headers.utf8.count + 5000)\r\n\(headers)\(body)\r\n"
        replay.feed(.send, Array(message.utf8.prefix(1024)), length: message.utf8.count, time: 10)
        replay.feed(.send, "PUB small 0\r\n\r\n", time: 20)
        XCTAssertEqual(replay.spans.map(\.name), ["publish big", "publish small"])
        XCTAssertEqual(replay.spans.first?.attributes[SemanticConventions.messagingMessageBodySize]?.intValue, 5000)
        XCTAssertEqual(replay.spans.first?.parentSpanID, SpanID(0xb7ad_6b71_6920_3331))
        XCTAssertEqual(replay.malformed, 0)
    }

    /// Operations waiting for answers in verbose mode are bounded.
    func testUnansweredVerbosePublishesAreBounded() {
        let replay = Replay()
        replay.feed(.receive, Self.info, time: 1)
        replay.feed(.send, "CONNECT {\"verbose\":true}\r\n", time: 2)
        let pipeline = Array(String(repeating: "PUB a 0\r\n\r\n", count: 1100).utf8)
        for (index, start) in stride(from: 0, to: pipeline.count, by: 1001).enumerated() {
            replay.feed(.send, Array(pipeline[start..<min(start + 1001, pipeline.count)]), time: 10 + UInt64(index))
        }
        XCTAssertEqual(replay.counters.abandoned.load(ordering: .relaxed), 1101 - 1024 - 1, "CONNECT's answer went first")
        XCTAssertEqual(replay.malformed, 0)
        XCTAssertTrue(replay.spans.isEmpty)
    }
}
