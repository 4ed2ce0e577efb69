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
        XCTAssertEqual(HTTPMessageParser.redactQuery("a=1&Password=x&&flag&X-Amz-Signature=abc&sig="),
                       "a=1&Password=REDACTED&&flag&X-Amz-Signature=REDACTED&sig=REDACTED")
        XCTAssertEqual(HTTPMessageParser.redactQuery("page=2"), "page=2")
    }

    /// An event as the BPF side builds it, decoded without a kernel.
    private func decode(request: String, response: String, role: Int32, family: Int32, local: [UInt8], peer: [UInt8],
                        requestBytes: UInt64 = 0, flags: Int32 = 0) -> Span? {
        var event = http_event()
        event.header.type = UInt32(HTTP_EVENT_EXCHANGE)
        event.header.pid = 42
        event.start_ns = 1_000
        event.end_ns = 51_000
        event.request_bytes = requestBytes
        event.role = UInt8(role)
        event.flags = UInt8(flags)
        event.family = UInt8(family)
        event.local_port = 8443
        event.peer_port = 50_000
        withUnsafeMutableBytes(of: &event.local_addr) { $0.copyBytes(from: local) }
        withUnsafeMutableBytes(of: &event.peer_addr) { $0.copyBytes(from: peer) }
        let requestBytes = Array(request.utf8.prefix(Int(HTTP_REQUEST_CAPTURE)))
        let responseBytes = Array(response.utf8.prefix(Int(HTTP_RESPONSE_CAPTURE)))
        withUnsafeMutableBytes(of: &event.request) { $0.copyBytes(from: requestBytes) }
        withUnsafeMutableBytes(of: &event.response) { $0.copyBytes(from: responseBytes) }
        event.request_len = UInt16(requestBytes.count)
        event.response_len = UInt16(responseBytes.count)
        let context = DecodeContext(monotonicToUnixOffset: 1_700_000_000_000_000_000, scope: InstrumentationScope(name: "test")) { _ in
            Resource.empty
        }
        return withUnsafeBytes(of: &event) { HTTPTracer().decode($0, context: context) }
    }

    func testDecodingAClientExchangeOverIPv6WithTLS() throws {
        let loopback6: [UInt8] = Array(repeating: 0, count: 15) + [1]
        let span = try XCTUnwrap(decode(request: "DELETE /items/7?sig=abc HTTP/1.1\r\n\r\n", response: "HTTP/1.1 403 Forbidden\r\n",
                                        role: HTTP_ROLE_CLIENT, family: AF_INET6, local: loopback6, peer: loopback6, flags: HTTP_FLAG_TLS))
        XCTAssertEqual(span.kind, .client)
        XCTAssertEqual(span.name, "DELETE")
        XCTAssertEqual(span.attributes[SemanticConventions.urlFull]?.stringValue, "https://[::1]:50000/items/7?sig=REDACTED")
        XCTAssertEqual(span.attributes[SemanticConventions.serverAddress]?.stringValue, "::1")
        XCTAssertEqual(span.status, .error(message: ""), "4xx is an error for a client")
        XCTAssertEqual(span.attributes[SemanticConventions.errorType]?.stringValue, "403")
        XCTAssertEqual(span.endTimeUnixNano - span.startTimeUnixNano, 50_000)
    }

    func testDecodingOddEventsNeverTraps() throws {
        let mapped: [UInt8] = Array(repeating: 0, count: 10) + [0xFF, 0xFF, 10, 0, 0, 9]
        // Byte counts near 2^64 (found by the fuzzer), an unknown method, no response.
        let span = try XCTUnwrap(decode(request: "PURGE /x HTTP/1.1\r\n\r\n", response: "", role: HTTP_ROLE_SERVER, family: AF_INET6,
                                        local: mapped, peer: mapped, requestBytes: .max))
        XCTAssertEqual(span.name, "HTTP")
        XCTAssertEqual(span.attributes[SemanticConventions.httpRequestMethod]?.stringValue, "_OTHER")
        XCTAssertEqual(span.attributes[SemanticConventions.httpRequestMethodOriginal]?.stringValue, "PURGE")
        XCTAssertEqual(span.attributes[SemanticConventions.clientAddress]?.stringValue, "10.0.0.9", "IPv4-mapped shown as IPv4")
        XCTAssertEqual(span.attributes[SemanticConventions.httpRequestBodySize]?.intValue, .max)
        XCTAssertEqual(span.status, .error(message: "no HTTP response seen before the exchange ended"))
        XCTAssertNil(decode(request: "\u{16}\u{03}\u{01}", response: "", role: HTTP_ROLE_SERVER, family: 0, local: [], peer: []))
    }

    func testEventMatchesItsBTFLayout() throws {
        let layout = try Tracers.Http.object.structLayout(named: "http_event")
        XCTAssertEqual(layout.size, MemoryLayout<http_event>.size)
        XCTAssertEqual(layout.members.map(\.name), [
            "header", "start_ns", "end_ns", "request_bytes", "response_bytes", "fd", "local_port", "peer_port",
            "local_addr", "peer_addr", "family", "role", "flags", "pipeline_index", "request_len", "response_len", "request", "response",
        ])
        let offsets: [Int?] = [
            MemoryLayout<http_event>.offset(of: \.header), MemoryLayout<http_event>.offset(of: \.start_ns),
            MemoryLayout<http_event>.offset(of: \.end_ns), MemoryLayout<http_event>.offset(of: \.request_bytes),
            MemoryLayout<http_event>.offset(of: \.response_bytes), MemoryLayout<http_event>.offset(of: \.fd),
            MemoryLayout<http_event>.offset(of: \.local_port), MemoryLayout<http_event>.offset(of: \.peer_port),
            MemoryLayout<http_event>.offset(of: \.local_addr), MemoryLayout<http_event>.offset(of: \.peer_addr),
            MemoryLayout<http_event>.offset(of: \.family), MemoryLayout<http_event>.offset(of: \.role),
            MemoryLayout<http_event>.offset(of: \.flags), MemoryLayout<http_event>.offset(of: \.pipeline_index),
            MemoryLayout<http_event>.offset(of: \.request_len),
            MemoryLayout<http_event>.offset(of: \.response_len), MemoryLayout<http_event>.offset(of: \.request),
            MemoryLayout<http_event>.offset(of: \.response),
        ]
        XCTAssertEqual(layout.members.map(\.offset), offsets.map { $0! })
    }
}
