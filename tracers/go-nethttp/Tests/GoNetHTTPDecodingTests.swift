import BPFRuntime
import CTracerABI
import Telemetry
import TracerFramework
@testable import Tracers
import XCTest

/// Decoding without a kernel: completion rules, client host and port, C layouts, and the event sequence of
/// one exchange fed by hand (the HTTP heads are parsed by tracers/http's HTTPMessageParser, tested there).
final class GoNetHTTPDecodingTests: XCTestCase {
    func testUnreadableSocketGivesNoAddresses() {
        let peer = GoNetHTTPExchanges.Peer(go_nethttp_addresses())
        XCTAssertNil(peer.server)
        XCTAssertNil(peer.client)
    }

    func testClientHostPort() {
        XCTAssertTrue(splitHostPort("example.com:8080") == ("example.com", 8080))
        XCTAssertTrue(splitHostPort("[::1]:9000") == ("::1", 9000))
        XCTAssertTrue(splitHostPort("example.com") == ("example.com", nil))
        XCTAssertTrue(splitHostPort("::1") == ("::1", nil))
    }

    /// Feeds request, write and close events of one keep-alive connection by hand.
    func testExchangeCompletesOnFramingOrClose() throws {
        let exchanges = GoNetHTTPExchanges()
        let context = DecodeContext(monotonicToUnixOffset: 1_000, scope: InstrumentationScope(name: "t")) { _ in .empty }
        XCTAssertNil(feed(exchanges, request: "GET /a?token=t HTTP/1.1\r\nHost: h:81\r\nUser-Agent: u\r\n\r\n", at: 100, context: context))
        // The head and 3 of 5 body bytes, then the last 2: complete on the second write.
        XCTAssertNil(feed(exchanges, write: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", at: 150, context: context))
        let first = try XCTUnwrap(feed(exchanges, write: "lo", at: 180, context: context))
        XCTAssertEqual(first.startTimeUnixNano, 1_100)
        XCTAssertEqual(first.endTimeUnixNano, 1_180)
        // Addresses come from the socket, not from the Host header; no header value but the framing is kept.
        XCTAssertEqual(first.string(SemanticConventions.serverAddress), "127.0.0.1")
        XCTAssertEqual(first.int(SemanticConventions.serverPort), 8081)
        XCTAssertEqual(first.string(SemanticConventions.clientAddress), "::1")
        XCTAssertEqual(first.int(SemanticConventions.clientPort), 40000)
        XCTAssertEqual(first.string(SemanticConventions.urlPath), "/a")
        XCTAssertEqual(first.string(SemanticConventions.urlQuery), "token=REDACTED")
        XCTAssertNil(first.string(SemanticConventions.userAgentOriginal))
        XCTAssertEqual(first.int(SemanticConventions.httpResponseBodySize), 5)

        // Chunked: complete at the last chunk.
        XCTAssertNil(feed(exchanges, request: "GET /b HTTP/1.1\r\n\r\n", at: 200, context: context))
        XCTAssertNil(feed(exchanges, write: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", at: 210, context: context))
        let chunked = try XCTUnwrap(feed(exchanges, write: "0\r\n\r\n", at: 220, context: context))
        XCTAssertEqual(chunked.endTimeUnixNano, 1_220)

        // No framing (HTTP/1.0 style): complete at close, ending at the last write.
        XCTAssertNil(feed(exchanges, request: "GET /c HTTP/1.0\r\n\r\n", at: 300, context: context))
        XCTAssertNil(feed(exchanges, write: "HTTP/1.0 503 Service Unavailable\r\n\r\ndown", at: 310, context: context))
        let closed = try XCTUnwrap(feed(exchanges, closeAt: 400, context: context))
        XCTAssertEqual(closed.endTimeUnixNano, 1_310)
        XCTAssertEqual(closed.status, .error(message: "HTTP 503"))
        XCTAssertEqual(closed.string(SemanticConventions.networkProtocolVersion), "1.0")
        XCTAssertNil(feed(exchanges, write: "late", at: 410, context: context), "nothing is pending after close")

        // A request whose first byte a background read took.
        XCTAssertNil(feed(exchanges, request: "ELETE /d HTTP/1.1\r\n\r\n", prefix: UInt8(ascii: "D"), at: 500, context: context))
        let deleted = try XCTUnwrap(feed(exchanges, write: "HTTP/1.1 204 No Content\r\n\r\n", at: 510, context: context))
        XCTAssertEqual(deleted.name, "DELETE")
        XCTAssertEqual(exchanges.counters.malformed, 0)
    }

    func testEventLayoutsMatchTheirBTF() throws {
        let object = Tracers.GoNethttp.object
        /// `flexible`: the trailing flexible array member Swift does not import; it starts at the struct's size.
        func check<T>(_ name: String, _: T.Type, _ members: [(String, PartialKeyPath<T>)], flexible: String? = nil) throws {
            let layout = try object.structLayout(named: name)
            XCTAssertEqual(layout.size, MemoryLayout<T>.size, name)
            XCTAssertEqual(layout.members.map(\.name), members.map(\.0) + (flexible.map { [$0] } ?? []), name)
            XCTAssertEqual(layout.members.map(\.offset),
                           members.map { MemoryLayout<T>.offset(of: $0.1)! } + (flexible == nil ? [] : [MemoryLayout<T>.size]), name)
        }
        try check("go_nethttp_request_event", go_nethttp_request_event.self, [
            ("header", \.header), ("goid", \.goid), ("fd", \.fd), ("length", \.length), ("captured", \.captured),
            ("prefix", \.prefix), ("reserved", \.reserved), ("addresses", \.addresses), ("context", \.context),
        ], flexible: "data")
        try check("go_nethttp_span_context", go_nethttp_span_context.self, [
            ("trace_id_high", \.trace_id_high), ("trace_id_low", \.trace_id_low), ("span_id", \.span_id),
            ("parent_span_id", \.parent_span_id), ("flags", \.flags), ("valid", \.valid), ("reserved", \.reserved),
        ])
        try check("go_nethttp_addresses", go_nethttp_addresses.self, [
            ("local_address", \.local_address), ("remote_address", \.remote_address), ("local_port", \.local_port),
            ("remote_port", \.remote_port), ("reserved", \.reserved),
        ])
        try check("go_nethttp_write_event", go_nethttp_write_event.self, [
            ("header", \.header), ("fd", \.fd), ("length", \.length), ("captured", \.captured),
            ("tail_captured", \.tail_captured), ("tail", \.tail),
        ], flexible: "data")
        try check("go_nethttp_close_event", go_nethttp_close_event.self, [("header", \.header), ("fd", \.fd), ("reserved", \.reserved)])
        try check("go_nethttp_client_start_event", go_nethttp_client_start_event.self, [
            ("header", \.header), ("goid", \.goid), ("parent_goid", \.parent_goid), ("method_length", \.method_length), ("scheme_length", \.scheme_length),
            ("host_length", \.host_length), ("path_length", \.path_length), ("query_length", \.query_length),
            ("query_truncated", \.query_truncated), ("path_truncated", \.path_truncated), ("reserved", \.reserved),
            ("context", \.context), ("method", \.method), ("scheme", \.scheme), ("host", \.host), ("path", \.path), ("query", \.query),
        ])
        try check("go_nethttp_client_end_event", go_nethttp_client_end_event.self, [
            ("header", \.header), ("goid", \.goid), ("status_code", \.status_code), ("failed", \.failed), ("reserved", \.reserved),
        ])
        try check("go_nethttp_offsets", go_nethttp_offsets.self, [
            ("g_tls_offset", \.g_tls_offset), ("g_goid", \.g_goid), ("g_parent_goid", \.g_parent_goid),
            ("request_method", \.request_method),
            ("request_url", \.request_url), ("url_scheme", \.url_scheme), ("url_host", \.url_host), ("url_path", \.url_path),
            ("url_raw_query", \.url_raw_query), ("response_status_code", \.response_status_code),
            ("request_header", \.request_header), ("transfer_writer_header", \.transfer_writer_header),
            ("bufio_writer_buf", \.bufio_writer_buf), ("bufio_writer_n", \.bufio_writer_n), ("propagate", \.propagate),
        ])
    }

    // MARK: Hand-made events

    private func feed(_ exchanges: GoNetHTTPExchanges, request text: String, prefix: UInt8 = 0, at time: UInt64, context: DecodeContext) -> Span? {
        var event = go_nethttp_request_event()
        event.header = header(GO_NETHTTP_EVENT_REQUEST, at: time)
        event.goid = 7
        event.fd = 3
        let bytes = Array(text.utf8)
        event.length = UInt32(bytes.count)
        event.captured = UInt32(bytes.count)
        event.prefix = prefix
        // Local 127.0.0.1:8081 (IPv4-mapped), remote [::1]:40000.
        withUnsafeMutableBytes(of: &event.addresses.local_address) { $0.copyBytes(from: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]) }
        withUnsafeMutableBytes(of: &event.addresses.remote_address) { $0[15] = 1 }
        event.addresses.local_port = 8081
        event.addresses.remote_port = 40000
        return record(event, data: bytes) { exchanges.decode($0, context: context) }
    }

    private func feed(_ exchanges: GoNetHTTPExchanges, write text: String, at time: UInt64, context: DecodeContext) -> Span? {
        var event = go_nethttp_write_event()
        event.header = header(GO_NETHTTP_EVENT_WRITE, at: time)
        event.fd = 3
        let bytes = Array(text.utf8)
        event.length = UInt32(bytes.count)
        event.captured = UInt32(min(bytes.count, Int(GO_NETHTTP_RESPONSE_CAPTURE)))
        let tail = bytes.suffix(Int(GO_NETHTTP_TAIL_CAPTURE))
        event.tail_captured = UInt32(tail.count)
        withUnsafeMutableBytes(of: &event.tail) { $0.copyBytes(from: tail) }
        return record(event, data: Array(bytes.prefix(Int(event.captured)))) { exchanges.decode($0, context: context) }
    }

    /// The fixed part followed by the captured bytes, as the BPF program reserves it.
    private func record<T>(_ fixed: T, data: [UInt8], _ body: (UnsafeRawBufferPointer) -> Span?) -> Span? {
        var copy = fixed
        let bytes = withUnsafeBytes(of: &copy) { Array($0) } + data
        return bytes.withUnsafeBytes(body)
    }

    private func feed(_ exchanges: GoNetHTTPExchanges, closeAt time: UInt64, context: DecodeContext) -> Span? {
        var event = go_nethttp_close_event()
        event.header = header(GO_NETHTTP_EVENT_CLOSE, at: time)
        event.fd = 3
        return withUnsafeBytes(of: &event) { exchanges.decode($0, context: context) }
    }

    private func header(_ type: Int32, at time: UInt64) -> tracer_event_header {
        tracer_event_header(type: UInt32(type), pid: 42, tid: 42, reserved: 0, timestamp_ns: time)
    }
}
