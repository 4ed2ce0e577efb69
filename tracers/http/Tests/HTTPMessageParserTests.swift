import BPFPrograms
import BPFRuntime
import Glibc
import TracerFramework
import CTracerABI
import Telemetry
import Tracers
import XCTest

/// The parser of captured bytes and the BTF layout of the event (no privileges needed).
final class HTTPMessageParserTests: XCTestCase {
    private func request(_ text: String) -> HTTPRequestHead? {
        Array(text.utf8).withUnsafeBytes { HTTPMessageParser.parseRequest($0) }
    }

    private func response(_ text: String) -> HTTPResponseHead? {
        Array(text.utf8).withUnsafeBytes { HTTPMessageParser.parseResponse($0) }
    }

    func testRequestLineHeadersAndTraceparent() throws {
        let text = "POST /api/v1/items?id=7&api_key=s3cr3t HTTP/1.1\r\nHost: x\r\nTraceParent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nContent-Length: 2\r\n\r\n"
        let head = try XCTUnwrap(request(text + "hi"))
        XCTAssertEqual(head.method, "POST")
        XCTAssertEqual(head.path, "/api/v1/items")
        XCTAssertEqual(head.query, "id=7&api_key=REDACTED")
        XCTAssertEqual(head.target, "/api/v1/items?id=7&api_key=REDACTED")
        XCTAssertEqual(head.version, "1.1")
        XCTAssertEqual(head.traceContext?.traceID.hex, "4bf92f3577b34da6a3ce929d0e0e4736")
        XCTAssertEqual(head.traceContext?.parentSpanID.hex, "00f067aa0ba902b7")
        XCTAssertEqual(head.traceContext?.flags, 1)
        XCTAssertEqual(head.headLength, text.utf8.count, "up to the blank line, without the body")
    }

    func testInvalidTraceparentsAreIgnored() {
        for value in ["00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
                      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero span id
                      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
                      "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // unknown version
                      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"] {
            let head = request("GET / HTTP/1.1\r\ntraceparent: \(value)\r\n\r\n")
            XCTAssertNotNil(head)
            XCTAssertNil(head?.traceContext, value)
        }
    }

    func testTruncatedCapturesKeepWhatTheyCan() {
        // The capture ended inside the target: method and the captured path survive, no version.
        let cut = request("GET /very/long/path/that/was/cut")
        XCTAssertEqual(cut?.path, "/very/long/path/that/was/cut")
        XCTAssertNil(cut?.version)
        // The capture ended inside the headers: no head length, the request line is fine.
        let headers = request("GET /a HTTP/1.0\r\nAccept: */*\r\nUser-Ag")
        XCTAssertEqual(headers?.version, "1.0")
        XCTAssertNil(headers?.headLength)
    }

    func testAbsoluteFormAndFragments() {
        XCTAssertEqual(request("GET http://example.com:8080/x/y?q=1 HTTP/1.1\r\n\r\n")?.path, "/x/y")
        XCTAssertEqual(request("OPTIONS * HTTP/1.1\r\n\r\n")?.path, "*")
    }

    func testGarbageIsRejected() {
        for text in ["", "GET", "GET  / HTTP/1.1\r\n", "\u{16}\u{03}\u{01}\u{02}\u{00}", "GET /\u{01} HTTP/1.1", "GET / HTTX/1.1\r\n\r\n",
                     "G\u{00}T / HTTP/1.1", "GET ? HTTP/1.1\r\n"] {
            XCTAssertNil(request(text), text.debugDescription)
        }
    }

    func testPipelinedRequestsAreFoundByIndex() {
        let text = "GET /one HTTP/1.1\r\n\r\nPOST /two HTTP/1.1\r\nContent-Length: 4\r\n\r\nbodyGET /three HTTP/1.1\r\n\r\n"
        let paths = (0..<4).map { index in Array(text.utf8).withUnsafeBytes { HTTPMessageParser.parseRequest($0, index: index)?.path } }
        XCTAssertEqual(paths, ["/one", "/two", "/three", nil])
        let chunked = "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\nGET /d HTTP/1.1\r\n\r\n"
        XCTAssertNil(Array(chunked.utf8).withUnsafeBytes { HTTPMessageParser.parseRequest($0, index: 1) }, "a chunked body hides where the next request starts")
        XCTAssertEqual(request("POST /c HTTP/1.1\r\ncontent-length:  12 \r\n\r\n")?.contentLength, 12)
    }

    func testResponses() {
        XCTAssertEqual(response("HTTP/1.1 404 Not Found\r\n")?.statusCode, 404)
        XCTAssertEqual(response("HTTP/1.1 404 Not Found\r\n")?.version, "1.1")
        XCTAssertEqual(response("HTTP/1.0 200\r\n")?.statusCode, 200)
        XCTAssertEqual(response("HTTP/1.1 200")?.statusCode, 200)
        XCTAssertNil(response("HTTP/1.1 20"))
        XCTAssertNil(response("HTTP/1.1 099 x"))
        XCTAssertNil(response("HTTP/1.1 2000 x"))
        XCTAssertNil(response("HTTP/2 200 x"))
    }

    func testResponseFraming() throws {
        let plain = try XCTUnwrap(response("HTTP/1.1 404 Not Found\r\nX-Secret: s\r\ncontent-length:  19 \r\n\r\n404 page not found\n"))
        XCTAssertEqual(plain.statusCode, 404)
        XCTAssertEqual(plain.contentLength, 19)
        XCTAssertFalse(plain.isChunked)
        XCTAssertEqual(plain.headLength, 61, "up to the blank line, without the body")
        let chunked = try XCTUnwrap(response("HTTP/1.1 200 OK\nTransfer-Encoding: gzip, Chunked\n\n5\r\nhello"))
        XCTAssertTrue(chunked.isChunked)
        XCTAssertNil(chunked.contentLength)
        XCTAssertEqual(chunked.headLength, 50, "bare LF line ends")
        // A head cut by the capture: the framing read so far, no head length.
        let cut = try XCTUnwrap(response("HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-Long: aaaa"))
        XCTAssertEqual(cut.contentLength, 7)
        XCTAssertNil(cut.headLength)
        XCTAssertNil(response("HTTP/1.1 200 OK")?.headLength, "status line not ended")
        XCTAssertNil(response("HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n")?.contentLength, "not numeric")
        XCTAssertNil(response("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n")?.contentLength, "too large")
    }

    func testQueryRedaction() {
        XCTAssertEqual(HTTPSpans.redactQuery("a=1&Password=x&&flag&X-Amz-Signature=abc&sig="),
                       "a=1&Password=REDACTED&&flag&X-Amz-Signature=REDACTED&sig=REDACTED")
        XCTAssertEqual(HTTPSpans.redactQuery("page=2"), "page=2")
    }

    /// Capture events through the connection tracker and the HTTP/1 parser, without a kernel; spans as the
    /// agent builds them.
    private final class Replay {
        let tracker: ConnectionTracker
        var spans: [Span] = []

        init(tracer: HTTPTracer = HTTPTracer()) {
            let parser = tracer.parser!
            tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: [parser]) }, countOnly: { _ in })
        }

        func feed(_ event: [UInt8]) {
            var exchanges: [Exchange] = []
            event.withUnsafeBytes { tracker.handle($0, into: &exchanges) }
            for case .http(let exchange) in exchanges {
                spans.append(HTTPSpans.span(exchange, resource: .empty, scope: InstrumentationScope(name: "test")) { $0 + 1_700_000_000_000_000_000 })
            }
        }
    }

    func testAClientExchangeOverIPv6WithTLS() throws {
        let replay = Replay()
        let loopback6: [UInt8] = Array(repeating: 0, count: 15) + [1]
        let tuple = CaptureEvents.tuple(local: loopback6, localPort: 50_000, remote: loopback6, remotePort: 8443)
        replay.feed(CaptureEvents.chunk(connection: 1, pid: 42, direction: .send, data: Array("DELETE /items/7?sig=abc HTTP/1.1\r\n\r\n".utf8),
                                        timestamp: 1_000, tls: true, tuple: tuple))
        replay.feed(CaptureEvents.chunk(connection: 1, pid: 42, direction: .receive,
                                        data: Array("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".utf8), timestamp: 51_000, tls: true, tuple: tuple))
        let span = try XCTUnwrap(replay.spans.first)
        XCTAssertEqual(replay.spans.count, 1)
        XCTAssertEqual(span.kind, .client)
        XCTAssertEqual(span.name, "DELETE")
        XCTAssertEqual(span.attributes[SemanticConventions.urlFull]?.stringValue, "https://[::1]:8443/items/7?sig=REDACTED")
        XCTAssertEqual(span.attributes[SemanticConventions.serverAddress]?.stringValue, "::1")
        XCTAssertEqual(span.attributes[SemanticConventions.serverPort]?.intValue, 8443)
        XCTAssertEqual(span.attributes[SemanticConventions.networkPeerPort]?.intValue, 8443)
        XCTAssertEqual(span.status, .error(message: ""), "4xx is an error for a client")
        XCTAssertEqual(span.attributes[SemanticConventions.errorType]?.stringValue, "403")
        XCTAssertEqual(span.endTimeUnixNano - span.startTimeUnixNano, 50_000)
    }

    func testOddExchangesNeverTrap() throws {
        let replay = Replay()
        let mapped: [UInt8] = [10, 0, 0, 9]
        let tuple = CaptureEvents.tuple(local: mapped, localPort: 80, remote: mapped, remotePort: 40_000)
        // An unknown method, a request body counted near 2^32, no response before close.
        replay.feed(CaptureEvents.chunk(connection: 7, pid: 42, direction: .receive, data: Array("PURGE /x HTTP/1.1\r\n\r\n".utf8),
                                        length: Int(UInt32.max), timestamp: 10, tuple: tuple))
        replay.feed(CaptureEvents.close(connection: 7, pid: 42, timestamp: 20))
        let span = try XCTUnwrap(replay.spans.first)
        XCTAssertEqual(span.name, "HTTP")
        XCTAssertEqual(span.attributes[SemanticConventions.httpRequestMethod]?.stringValue, "_OTHER")
        XCTAssertEqual(span.attributes[SemanticConventions.httpRequestMethodOriginal]?.stringValue, "PURGE")
        XCTAssertEqual(span.attributes[SemanticConventions.clientAddress]?.stringValue, "10.0.0.9", "IPv4-mapped shown as IPv4")
        XCTAssertEqual(span.status, .error(message: "no HTTP response seen before the exchange ended"))
        // TLS records and garbage are never claimed; truncated events are counted, not read.
        replay.feed(CaptureEvents.chunk(connection: 8, pid: 42, direction: .receive, data: [0x16, 0x03, 0x01, 0, 5], timestamp: 30))
        replay.feed(Array(CaptureEvents.chunk(connection: 9, pid: 42, direction: .receive, data: Array("GET / HTTP/1.1\r\n\r\n".utf8),
                                              timestamp: 40).prefix(90)))
        XCTAssertEqual(replay.spans.count, 1)
        XCTAssertEqual(replay.tracker.counters.malformed.load(ordering: .relaxed), 1)
    }

    func testAConnectionNoParserClaimsIsCountedAndOnlyCounted() {
        var counted: [UInt64] = []
        let parser = HTTPTracer().parser!
        let tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: [parser]) }, countOnly: { counted.append($0) })
        var exchanges: [Exchange] = []
        for index in 0..<12 {
            CaptureEvents.chunk(connection: 5, pid: 9, direction: .receive, data: Array("\u{0}\u{1}garbage \(index)".utf8),
                                timestamp: UInt64(index)).withUnsafeBytes { tracker.handle($0, into: &exchanges) }
        }
        XCTAssertEqual(counted, [5], "the kernel is told once to stop copying its bytes")
        XCTAssertEqual(tracker.counters.unclaimed(pid: 9), 1)
        XCTAssertTrue(exchanges.isEmpty)
    }

    func testGoBackgroundReadPipeliningAndSendfileFraming() throws {
        let replay = Replay()
        var time: UInt64 = 100
        func next() -> UInt64 { time += 100; return time }
        // Request 1, its response in two writes: head, then a body sent without a buffer (sendfile).
        replay.feed(CaptureEvents.chunk(connection: 3, pid: 1, goid: 7, direction: .receive,
                                        data: Array("GET /file HTTP/1.1\r\nHost: x\r\n\r\n".utf8), timestamp: next()))
        replay.feed(CaptureEvents.chunk(connection: 3, pid: 1, direction: .send,
                                        data: Array("HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n".utf8), timestamp: next()))
        replay.feed(CaptureEvents.chunk(connection: 3, pid: 1, direction: .send, data: [], length: 1_000_000, timestamp: next()))
        XCTAssertTrue(replay.spans.isEmpty, "2 MB still to send")
        replay.feed(CaptureEvents.chunk(connection: 3, pid: 1, direction: .send, data: [], length: 2_000_000, timestamp: next()))
        XCTAssertEqual(replay.spans.count, 1)
        XCTAssertEqual(replay.spans.last?.endTimeUnixNano, time + 1_700_000_000_000_000_000, "ends with its last byte")
        // Request 2 read as one byte (net/http's background read), then the rest; response chunked.
        replay.feed(CaptureEvents.chunk(connection: 3, pid: 1, direction: .receive, data: Array("G".utf8), timestamp: next()))
        let start = time
        replay.feed(CaptureEvents.chunk(connection: 3, pid: 1, goid: 7, direction: .receive,
                                        data: Array("ET /two HTTP/1.1\r\n\r\n".utf8), timestamp: next()))
        replay.feed(CaptureEvents.chunk(connection: 3, pid: 1, direction: .send,
                                        data: Array("HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n".utf8), timestamp: next()))
        XCTAssertEqual(replay.spans.count, 1)
        replay.feed(CaptureEvents.chunk(connection: 3, pid: 1, direction: .send, data: Array("0\r\n\r\n".utf8), timestamp: next()))
        let two = try XCTUnwrap(replay.spans.last)
        XCTAssertEqual(replay.spans.count, 2)
        XCTAssertEqual(two.attributes[SemanticConventions.urlPath]?.stringValue, "/two")
        XCTAssertEqual(two.startTimeUnixNano, start + 1_700_000_000_000_000_000)
        XCTAssertEqual(two.status, .error(message: ""))
        // Three pipelined requests in one read, three responses in one write.
        replay.feed(CaptureEvents.chunk(connection: 3, pid: 1, direction: .receive,
                                        data: Array("GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiHEAD /c HTTP/1.1\r\n\r\n".utf8),
                                        timestamp: next()))
        replay.feed(CaptureEvents.chunk(connection: 3, pid: 1, direction: .send,
                                        data: Array("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n".utf8),
                                        timestamp: next()))
        XCTAssertEqual(replay.spans.dropFirst(2).map { $0.attributes[SemanticConventions.urlPath]?.stringValue }, ["/a", "/b", "/c"])
        XCTAssertEqual(replay.spans.dropFirst(2).map { $0.attributes[SemanticConventions.httpResponseStatusCode]?.intValue }, [204, 201, 200])
        XCTAssertEqual(replay.spans.dropFirst(3).first?.attributes[SemanticConventions.httpRequestBodySize]?.intValue, 2)
    }

    func testCaptureEventLayoutsMatchTheirBTF() throws {
        for (name, size) in [("capture_chunk_event", MemoryLayout<capture_chunk_event>.size), ("capture_close_event", MemoryLayout<capture_close_event>.size),
                             ("capture_process", MemoryLayout<capture_process>.size), ("capture_connection", MemoryLayout<capture_connection>.size),
                             ("capture_tuple", MemoryLayout<capture_tuple>.size)] {
            XCTAssertEqual(try BPFPrograms.Capture.object.structLayout(named: name).size, size, name)
        }
        let layout = try BPFPrograms.Capture.object.structLayout(named: "capture_chunk_event")
        XCTAssertEqual(layout.members.map(\.name), ["header", "connection", "goid", "length", "captured", "fd", "direction", "source",
                                                    "flags", "tail_captured", "tail", "follows", "netns", "tuple", "data"])
        let keyPaths: [PartialKeyPath<capture_chunk_event>] = [
            \.header, \.connection, \.goid, \.length, \.captured, \.fd, \.direction, \.source, \.flags, \.tail_captured, \.tail, \.follows,
            \.netns, \.tuple,
        ]
        let offsets: [Int] = keyPaths.map { MemoryLayout<capture_chunk_event>.offset(of: $0)! }
        XCTAssertEqual(Array(layout.members.map(\.offset).prefix(14)), offsets)
        XCTAssertEqual(layout.members.last?.offset, MemoryLayout<capture_chunk_event>.size, "data follows the fixed part")
    }
}
