import CTracerABI
import Telemetry
import TracerFramework
@testable import Tracers
import XCTest

/// The HPACK decoder against RFC 7541 Appendix C, and the HTTP/2 parser through the connection tracker with
/// capture events built in user space (no privileges).
final class HTTP2ParserTests: XCTestCase {
    // MARK: HPACK (RFC 7541 Appendix C)

    private func bytes(_ hex: String) -> [UInt8] {
        let digits = Array(hex.filter { !$0.isWhitespace })
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
    }

    /// Decodes one block; nil names an unknown field.
    private func decode(_ decoder: inout HPACKDecoder, _ block: [UInt8]) throws -> [String?] {
        var scratch: [UInt8] = []
        var fields: [String?] = []
        try block.withUnsafeBytes { block in
            try decoder.decode(block, scratch: &scratch) { field in
                switch field {
                case .known(let name, let value):
                    fields.append(String(decoding: name, as: UTF8.self) + ": " + String(decoding: value, as: UTF8.self))
                case .unknown:
                    fields.append(nil)
                }
            }
        }
        return fields
    }

    func testStaticTableHas61Entries() {
        XCTAssertEqual(HPACKStaticTable.entries.count, 61)
        XCTAssertEqual(HPACKStaticTable.entries[60].name.description, "www-authenticate")
    }

    func testIntegerExamplesOfAppendixC1() throws {
        for (hex, prefix, value) in [("0a", 5, 10), ("1f9a0a", 5, 1337), ("2a", 8, 42)] {
            var offset = 0
            let decoded = try bytes(hex).withUnsafeBytes { try HPACKDecoder.integer($0, &offset, prefixBits: prefix) }
            XCTAssertEqual(decoded, value, hex)
        }
        var offset = 0
        XCTAssertThrowsError(try bytes("1fffffffffffff7f").withUnsafeBytes { try HPACKDecoder.integer($0, &offset, prefixBits: 5) },
                             "an integer past 2^28")
    }

    func testLiteralExamplesOfAppendixC2() throws {
        var decoder = HPACKDecoder()
        XCTAssertEqual(try decode(&decoder, bytes("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")), ["custom-key: custom-header"])
        XCTAssertEqual(decoder.tableSize, 55)
        XCTAssertEqual(try decode(&decoder, bytes("040c 2f73 616d 706c 652f 7061 7468")), [":path: /sample/path"])
        XCTAssertEqual(try decode(&decoder, bytes("1008 7061 7373 776f 7264 0673 6563 7265 74")), ["password: secret"])
        XCTAssertEqual(decoder.entryCount, 1, "without indexing and never indexed add nothing")
        XCTAssertEqual(try decode(&decoder, bytes("82")), [":method: GET"])
    }

    private let request1 = [":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com"]
    private let request2 = [":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com", "cache-control: no-cache"]
    private let request3 = [":method: GET", ":scheme: https", ":path: /index.html", ":authority: www.example.com", "custom-key: custom-value"]

    func testRequestExamplesOfAppendixC3WithoutHuffman() throws {
        var decoder = HPACKDecoder()
        XCTAssertEqual(try decode(&decoder, bytes("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d")), request1)
        XCTAssertEqual(decoder.tableSize, 57)
        XCTAssertEqual(try decode(&decoder, bytes("8286 84be 5808 6e6f 2d63 6163 6865")), request2)
        XCTAssertEqual(decoder.tableSize, 110)
        XCTAssertEqual(try decode(&decoder, bytes("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65")), request3)
        XCTAssertEqual(decoder.tableSize, 164)
        XCTAssertEqual(decoder.entryCount, 3)
    }

    func testRequestExamplesOfAppendixC4WithHuffman() throws {
        var decoder = HPACKDecoder()
        XCTAssertEqual(try decode(&decoder, bytes("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")), request1)
        XCTAssertEqual(decoder.tableSize, 57)
        XCTAssertEqual(try decode(&decoder, bytes("8286 84be 5886 a8eb 1064 9cbf")), request2)
        XCTAssertEqual(decoder.tableSize, 110)
        XCTAssertEqual(try decode(&decoder, bytes("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")), request3)
        XCTAssertEqual(decoder.tableSize, 164)
    }

    private let date1 = "date: Mon, 21 Oct 2013 20:13:21 GMT"
    private let cookie = "set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"

    func testResponseExamplesOfAppendixC5WithEvictionWithoutHuffman() throws {
        var decoder = HPACKDecoder()
        // The table is limited to 256 octets: the encoder says so with a size update (first byte 0x3f e1 01).
        XCTAssertEqual(try decode(&decoder, bytes("3fe1 01") + bytes("""
            4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120
            474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d
            """)), [":status: 302", "cache-control: private", date1, "location: https://www.example.com"])
        XCTAssertEqual(decoder.tableSize, 222)
        XCTAssertEqual(try decode(&decoder, bytes("4803 3330 37c1 c0bf")),
                       [":status: 307", "cache-control: private", date1, "location: https://www.example.com"])
        XCTAssertEqual(decoder.tableSize, 222, ":status 302 evicted")
        let third = try decode(&decoder, bytes("""
            88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738
            666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33
            3630 303b 2076 6572 7369 6f6e 3d31
            """))
        XCTAssertEqual(third, [":status: 200", "cache-control: private", "date: Mon, 21 Oct 2013 20:13:22 GMT",
                               "location: https://www.example.com", "content-encoding: gzip", cookie])
        XCTAssertEqual(decoder.tableSize, 215)
    }

    func testResponseExamplesOfAppendixC6WithHuffman() throws {
        var decoder = HPACKDecoder()
        decoder.setSizeLimit(256)
        XCTAssertEqual(try decode(&decoder, bytes("3fe1 01 4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3")),
                       [":status: 302", "cache-control: private", date1, "location: https://www.example.com"])
        XCTAssertEqual(decoder.tableSize, 222)
        XCTAssertEqual(try decode(&decoder, bytes("4883 640e ffc1 c0bf")),
                       [":status: 307", "cache-control: private", date1, "location: https://www.example.com"])
        XCTAssertEqual(decoder.tableSize, 222)
        XCTAssertEqual(try decode(&decoder, bytes("""
            88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7
            b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07
            """)), [":status: 200", "cache-control: private", "date: Mon, 21 Oct 2013 20:13:22 GMT",
                    "location: https://www.example.com", "content-encoding: gzip", cookie])
        XCTAssertEqual(decoder.tableSize, 215)
    }

    func testBadBlocksAreErrorsAndLeaveTheTableUnsynchronized() throws {
        var decoder = HPACKDecoder()
        XCTAssertThrowsError(try decode(&decoder, bytes("be")), "dynamic index 62 of an empty table")
        XCTAssertFalse(decoder.isSynchronized)
        XCTAssertEqual(try decode(&decoder, bytes("be 82")), [nil, ":method: GET"], "unknown, not invented")
        // A table-size update to 0 empties the encoder's table too: synchronized again.
        XCTAssertEqual(try decode(&decoder, bytes("20 82")), [":method: GET"])
        XCTAssertTrue(decoder.isSynchronized)
        var fresh = HPACKDecoder()
        XCTAssertThrowsError(try decode(&fresh, bytes("80")), "index 0")
        fresh = HPACKDecoder()
        XCTAssertThrowsError(try decode(&fresh, bytes("3fe21f")), "a size update above SETTINGS_HEADER_TABLE_SIZE")
        fresh = HPACKDecoder()
        XCTAssertThrowsError(try decode(&fresh, bytes("0085 ffff ffff ff00")), "Huffman with EOS inside")
        fresh = HPACKDecoder()
        XCTAssertThrowsError(try decode(&fresh, bytes("0a7f ff")), "a string longer than its block")
        // A huge Huffman string ('0' is the 5-bit code 00000: 200 000 zero bytes are 320 000 symbols) is cut
        // when decoded, counts at its full size, and is too large for the table, which it empties.
        fresh = HPACKDecoder()
        XCTAssertEqual(try decode(&fresh, bytes("4001 6101 62")), ["a: b"])
        var block: [UInt8] = [0x40, 0x01, 0x61, 0xFF]
        var length = 200_000 - 127
        while length >= 128 { block.append(UInt8(length & 0x7F | 0x80)); length >>= 7 }
        block.append(UInt8(length))
        block += [UInt8](repeating: 0, count: 200_000)
        let decoded = try decode(&fresh, block)
        XCTAssertEqual(decoded.first??.utf8.count, 3 + HPACKDecoder.maxStringLength)
        XCTAssertEqual(fresh.entryCount, 0)
        XCTAssertEqual(fresh.tableSize, 0)
    }

    func testEntriesAddedAfterTheTableWasLostDecodeAndOlderOnesStayUnknown() throws {
        var decoder = HPACKDecoder(synchronized: false)
        // Index 62 is an entry added before the agent: unknown. Then `a: b` is added (incremental indexing).
        XCTAssertEqual(try decode(&decoder, bytes("be 4001 6101 62")), [nil, "a: b"])
        // Now 62 is `a: b`, whatever the encoder's table held before; 63 is still an entry never seen.
        XCTAssertEqual(try decode(&decoder, bytes("be bf")), ["a: b", nil])
        // A literal whose name is entry 63 (unknown) is added with indexing: it takes index 62 as an unknown
        // entry, and `a: b` moves to 63.
        XCTAssertEqual(try decode(&decoder, bytes("7f00 0178")), [nil])
        XCTAssertEqual(try decode(&decoder, bytes("be bf c0")), [nil, "a: b", nil])
        XCTAssertFalse(decoder.isSynchronized)
        // An entry larger than the table empties it: what follows is unknown again, never a shifted entry.
        var block: [UInt8] = [0x40, 0x01, 0x63, 0x7F]
        var length = 5_000 - 127
        while length >= 128 { block.append(UInt8(length & 0x7F | 0x80)); length >>= 7 }
        block.append(UInt8(length))
        block += [UInt8](repeating: 0x61, count: 5_000)
        _ = try decode(&decoder, block)
        XCTAssertEqual(try decode(&decoder, bytes("be")), [nil])
    }

    // MARK: Connections

    private final class Replay {
        let tracker: ConnectionTracker
        let tracer = HTTP2Tracer()
        var exchanges: [Exchange] = []
        let tuple = CaptureEvents.tuple(local: [127, 0, 0, 1], localPort: 50051, remote: [127, 0, 0, 1], remotePort: 40_000)

        init() {
            let parser = tracer.parser!
            tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: [parser]) }, countOnly: { _ in })
        }

        func feed(_ direction: CaptureChunk.Direction, _ data: [UInt8], length: Int? = nil, at timestamp: UInt64, connection: UInt64 = 1) {
            let event = CaptureEvents.chunk(connection: connection, pid: 42, direction: direction, data: data, length: length,
                                            timestamp: timestamp, tuple: tuple)
            event.withUnsafeBytes { tracker.handle($0, into: &exchanges) }
        }

        func close(at timestamp: UInt64, connection: UInt64 = 1) {
            CaptureEvents.close(connection: connection, pid: 42, timestamp: timestamp).withUnsafeBytes { tracker.handle($0, into: &exchanges) }
        }

        var http: [HTTPExchange] { exchanges.compactMap { if case .http(let e) = $0 { e } else { nil } } }
        var rpc: [RPCExchange] { exchanges.compactMap { if case .rpc(let e) = $0 { e } else { nil } } }
    }

    private func frame(_ type: UInt8, flags: UInt8 = 0, stream: UInt32, _ payload: [UInt8]) -> [UInt8] {
        [UInt8(payload.count >> 16), UInt8(payload.count >> 8 & 0xFF), UInt8(payload.count & 0xFF), type, flags,
         UInt8(stream >> 24), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
    }

    /// A literal field without indexing, new name (RFC 7541 §6.2.2), raw strings.
    private func literal(_ name: String, _ value: String) -> [UInt8] {
        [0x00, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(value.utf8.count)] + Array(value.utf8)
    }

    /// A literal field with incremental indexing, new name (§6.2.1).
    private func indexedLiteral(_ name: String, _ value: String) -> [UInt8] {
        [0x40, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(value.utf8.count)] + Array(value.utf8)
    }

    private let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    private let settings: [UInt8] = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]
    private let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    func testServerStreamsInterleavedWithStatusBodyAndTraceparent() throws {
        let replay = Replay()
        replay.feed(.send, settings, at: 500)
        // GET /a?token=x (static :method GET, :scheme http, new :path literal), stream 1; POST /b on stream 3.
        let get = [0x82, 0x86] + literal(":path", "/a?token=x&n=1") + literal("traceparent", traceparent)
        let post = [0x83, 0x86] + indexedLiteral(":path", "/b")
        replay.feed(.receive, preface + settings + frame(1, flags: 0x5, stream: 1, get) + frame(1, flags: 0x4, stream: 3, post), at: 1_000)
        replay.feed(.receive, frame(0, flags: 0x1, stream: 3, Array(repeating: 7, count: 100)), at: 1_500)
        // Responses interleaved: stream 3 first (204), then stream 1 (200 + 5 body bytes), both ending streams.
        replay.feed(.send, frame(1, flags: 0x5, stream: 3, [0x89]) + frame(1, flags: 0x4, stream: 1, [0x88]), at: 2_000)
        replay.feed(.send, frame(0, flags: 0x1, stream: 1, Array("hello".utf8)), at: 3_000)
        XCTAssertEqual(replay.http.count, 2)
        let post3 = try XCTUnwrap(replay.http.first)
        XCTAssertEqual(post3.method, "POST")
        XCTAssertEqual(post3.path, "/b")
        XCTAssertEqual(post3.statusCode, 204)
        XCTAssertEqual(post3.requestBodySize, 100)
        XCTAssertEqual(post3.role, .server)
        XCTAssertEqual(post3.protocolVersion, "2")
        XCTAssertEqual(post3.start, 1_000)
        XCTAssertEqual(post3.end, 2_000)
        let get1 = try XCTUnwrap(replay.http.last)
        XCTAssertEqual(get1.path, "/a")
        XCTAssertEqual(get1.query, "token=REDACTED&n=1")
        XCTAssertEqual(get1.statusCode, 200)
        XCTAssertEqual(get1.responseBodySize, 5)
        XCTAssertEqual(get1.end, 3_000)
        XCTAssertEqual(get1.identity.traceID.hex, "4bf92f3577b34da6a3ce929d0e0e4736")
        XCTAssertEqual(get1.identity.parentSpanID.hex, "00f067aa0ba902b7")
        XCTAssertEqual(get1.local?.port, 50051)
        XCTAssertEqual(replay.tracer.statistics.partialHeaders.load(ordering: .relaxed), 0)
    }

    func testGRPCClientCallsWithTrailersAndAReset() throws {
        let replay = Replay()
        let request = [0x83, 0x86] + literal(":path", "/helloworld.Greeter/SayHello") + indexedLiteral("content-type", "application/grpc")
        replay.feed(.send, preface + settings + frame(1, flags: 0x4, stream: 1, request) + frame(0, flags: 0x1, stream: 1, [0, 0, 0, 0, 2, 10, 0]), at: 1_000)
        // Response headers then trailers with grpc-status 5 (NOT_FOUND).
        let responseHeaders = [0x88] + indexedLiteral("content-type", "application/grpc")
        replay.feed(.receive, settings + frame(1, flags: 0x4, stream: 1, responseHeaders) + frame(0, stream: 1, [0, 0, 0, 0, 0]), at: 2_000)
        replay.feed(.receive, frame(1, flags: 0x5, stream: 1, literal("grpc-status", "5")), at: 2_500)
        // Second call reuses the dynamic table (index 62 = content-type: application/grpc on the request side).
        replay.feed(.send, frame(1, flags: 0x4, stream: 3, [0x83, 0x86] + literal(":path", "/helloworld.Greeter/SayHello") + [0xBE]), at: 3_000)
        replay.feed(.receive, frame(3, stream: 3, [0, 0, 0, 8]), at: 4_000)
        XCTAssertEqual(replay.rpc.count, 2)
        let first = try XCTUnwrap(replay.rpc.first)
        XCTAssertEqual(first.role, .client)
        XCTAssertEqual(first.service, "helloworld.Greeter")
        XCTAssertEqual(first.method, "SayHello")
        XCTAssertEqual(first.grpcStatusCode, 5)
        XCTAssertEqual(first.start, 1_000)
        XCTAssertEqual(first.end, 2_500)
        let span = RPCSpans.span(first, resource: .empty, scope: InstrumentationScope(name: "test")) { $0 }
        XCTAssertEqual(span.name, "helloworld.Greeter/SayHello")
        XCTAssertEqual(span.kind, .client)
        XCTAssertEqual(span.status, .error(message: "NOT_FOUND"))
        XCTAssertEqual(span.attributes[SemanticConventions.rpcSystem]?.stringValue, "grpc")
        XCTAssertEqual(span.attributes[SemanticConventions.rpcGRPCStatusCode]?.intValue, 5)
        XCTAssertEqual(span.attributes[SemanticConventions.serverPort]?.intValue, 40_000, "a client's server is its peer")
        let reset = try XCTUnwrap(replay.rpc.last)
        XCTAssertNil(reset.grpcStatusCode)
        XCTAssertTrue(reset.failed)
        XCTAssertEqual(reset.service, "helloworld.Greeter", "the dynamic entry was followed")
        XCTAssertEqual(replay.tracer.statistics.resetStreams.load(ordering: .relaxed), 1)
    }

    func testAConnectionJoinedMidStreamGivesPartialSpansWithoutInventedNames() throws {
        let replay = Replay()
        // A request referring to dynamic entries the agent never saw (0xbe, 0xbf), :method POST known.
        replay.feed(.receive, frame(1, flags: 0x4, stream: 7, [0x83, 0xBE, 0xBF]) + frame(0, flags: 0x1, stream: 7, [0, 0, 0, 0, 0]), at: 1_000)
        replay.feed(.send, frame(1, flags: 0x4, stream: 7, [0x88, 0xBE]) + frame(0, stream: 7, [0, 0, 0, 0, 0]) +
                    frame(1, flags: 0x5, stream: 7, literal("grpc-status", "0")), at: 2_000)
        XCTAssertEqual(replay.exchanges.count, 1)
        let rpc = try XCTUnwrap(replay.rpc.first, "grpc-status makes it gRPC")
        XCTAssertEqual(rpc.role, .server)
        XCTAssertNil(rpc.service)
        XCTAssertNil(rpc.method)
        XCTAssertTrue(rpc.partialHeaders)
        XCTAssertEqual(rpc.grpcStatusCode, 0)
        XCTAssertEqual(RPCSpans.name(rpc), "grpc")
        XCTAssertEqual(replay.tracer.statistics.partialHeaders.load(ordering: .relaxed), 1)
        XCTAssertEqual(replay.tracer.statistics.joinedMidStream.load(ordering: .relaxed), 1)
    }

    func testGRPCJoinedMidStreamWithItsContentTypeAndStatusInUnknownEntriesIsAnRPCWithoutInventedError() throws {
        let replay = Replay()
        // gRPC C-core indexes `content-type: application/grpc` and `grpc-status: 0`: joined mid-stream, the
        // request, the response headers and the trailers refer to entries the agent never saw.
        replay.feed(.receive, frame(1, flags: 0x4, stream: 9, [0x83, 0x86, 0xBE, 0xBF, 0xC0]) + frame(0, flags: 0x1, stream: 9, [0, 0, 0, 0, 0]), at: 1_000)
        replay.feed(.send, frame(1, flags: 0x4, stream: 9, [0x88, 0xBE]) + frame(0, stream: 9, [0, 0, 0, 0, 0]) +
                    frame(1, flags: 0x5, stream: 9, [0xBF]), at: 2_000)
        let rpc = try XCTUnwrap(replay.rpc.first, "a response ended by trailers: gRPC")
        XCTAssertEqual(replay.exchanges.count, 1)
        XCTAssertNil(rpc.grpcStatusCode)
        XCTAssertFalse(rpc.failed, "its status is unknown, not an error")
        XCTAssertTrue(rpc.partialHeaders)
        XCTAssertEqual(RPCSpans.name(rpc), "grpc")
        // The same call reset before its trailers: an error.
        replay.feed(.receive, frame(1, flags: 0x4, stream: 11, [0x83, 0x86, 0xBE, 0xBF, 0xC0]), at: 3_000)
        replay.feed(.send, frame(1, flags: 0x4, stream: 11, [0x88, 0xBE]) + frame(3, stream: 11, [0, 0, 0, 8]), at: 4_000)
        XCTAssertEqual(replay.rpc.count, 2)
        XCTAssertEqual(replay.rpc.last?.failed, true)
    }

    func testBytesPastTheCapturedPrefixInsideDataAreSkippedAndLostHeadersResynchronize() throws {
        let replay = Replay()
        replay.feed(.receive, preface + frame(1, flags: 0x5, stream: 1, [0x82, 0x86, 0x84]), at: 1_000)
        // A 5000-byte response body in one write, of which 1024 bytes are captured; then an END_STREAM.
        let big = frame(1, flags: 0x4, stream: 1, [0x88]) + frame(0, stream: 1, Array(repeating: 1, count: 5_000))
        replay.feed(.send, big, length: big.count, at: 2_000)
        replay.feed(.send, frame(0, flags: 0x1, stream: 1, []), at: 2_100)
        XCTAssertEqual(replay.http.first?.responseBodySize, 5_000)
        XCTAssertEqual(replay.tracer.statistics.lostFrames.load(ordering: .relaxed), 0)
        // A write whose lost part holds frame headers: boundaries lost until a chunk starts with frames.
        replay.feed(.receive, frame(1, flags: 0x5, stream: 3, [0x82, 0x86, 0x84]), at: 3_000)
        let two = frame(0, stream: 3, Array(repeating: 1, count: 1_000)) + frame(0, stream: 3, Array(repeating: 1, count: 100))
        replay.feed(.send, frame(1, flags: 0x4, stream: 3, [0x88]) + two, length: 2_000, at: 3_100)
        XCTAssertEqual(replay.tracer.statistics.lostFrames.load(ordering: .relaxed), 1)
        replay.feed(.send, Array(repeating: 0xEE, count: 40), at: 3_200) // the rest of a frame: ignored
        replay.feed(.send, frame(0, flags: 0x1, stream: 3, []), at: 3_300)
        XCTAssertEqual(replay.http.count, 2)
        XCTAssertEqual(replay.http.last?.end, 3_300)
        XCTAssertEqual(replay.http.last?.statusCode, 200)
        XCTAssertNil(replay.http.last?.responseBodySize, "frames of its body were lost: its size is unknown")
        // A stream whose end was among lost frames: at close it ends when it was last known alive.
        replay.feed(.receive, frame(1, flags: 0x5, stream: 5, [0x82, 0x86, 0x84]), at: 4_000)
        replay.feed(.send, frame(1, flags: 0x4, stream: 5, [0x88]) + two, length: 2_000, at: 4_100)
        replay.close(at: 9_000)
        XCTAssertEqual(replay.http.count, 3)
        XCTAssertEqual(replay.http.last?.end, 4_100)
        XCTAssertEqual(replay.http.last?.statusCode, 200)
        XCTAssertNil(replay.http.last?.responseBodySize)
    }

    func testAHeaderBlockCutByTheCaptureDecodesTheFieldsWhollyInsideIt() throws {
        let replay = Replay()
        // A client's first write as gRPC C-core makes it: preface, SETTINGS, then a request whose header block
        // is 1000 bytes long, of which only the start was captured (the :path literal and :method POST).
        let start = indexedLiteral(":path", "/demo.Greeter/Hello") + [0x83] + indexedLiteral("content-type", "applica")
        let headers = [0, 0x03, 0xE8, 1, 0x4, 0, 0, 0, 1] + start
        let write = preface + settings + headers
        replay.feed(.send, write, length: write.count + 1000 - start.count, at: 1_000)
        XCTAssertEqual(replay.tracer.statistics.lostFrames.load(ordering: .relaxed), 1)
        // The response (read whole): headers with the gRPC content type, then trailers.
        replay.feed(.receive, settings + frame(1, flags: 0x4, stream: 1, [0x88] + indexedLiteral("content-type", "application/grpc")) +
                    frame(0, stream: 1, [0, 0, 0, 0, 1, 0x41]) + frame(1, flags: 0x5, stream: 1, literal("grpc-status", "0")), at: 2_000)
        let rpc = try XCTUnwrap(replay.rpc.first)
        XCTAssertEqual(replay.exchanges.count, 1)
        XCTAssertEqual(RPCSpans.name(rpc), "demo.Greeter/Hello")
        XCTAssertEqual(rpc.grpcStatusCode, 0)
        XCTAssertTrue(rpc.partialHeaders)
        XCTAssertEqual(replay.tracer.statistics.malformed.load(ordering: .relaxed), 0, "a cut block is partial, not malformed")
        // The next request refers to the :path entry, which the lost bytes may have moved: unknown.
        replay.feed(.send, frame(1, flags: 0x4, stream: 3, [0x83, 0xBF]) + frame(0, flags: 0x1, stream: 3, [0, 0, 0, 0, 0]), at: 3_000)
        replay.feed(.receive, frame(1, flags: 0x4, stream: 3, [0x88, 0xBE]) + frame(1, flags: 0x5, stream: 3, literal("grpc-status", "5")), at: 4_000)
        XCTAssertEqual(replay.rpc.count, 2)
        XCTAssertEqual(replay.rpc.last.map(RPCSpans.name), "grpc")
        XCTAssertEqual(replay.rpc.last?.grpcStatusCode, 5)
        XCTAssertEqual(replay.tracer.statistics.malformed.load(ordering: .relaxed), 0)
    }

    func testUpgradeFromHTTP1MakesTheRequestStreamOne() throws {
        let replay = Replay()
        let request = "GET /up?x=1 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        replay.feed(.send, Array(request.utf8), at: 1_000)
        replay.feed(.receive, Array("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".utf8) + settings, at: 2_000)
        replay.feed(.send, preface + settings, at: 2_100)
        replay.feed(.receive, frame(1, flags: 0x4, stream: 1, [0x8D]) + frame(0, flags: 0x1, stream: 1, Array("nope".utf8)), at: 3_000)
        let exchange = try XCTUnwrap(replay.http.first)
        XCTAssertEqual(replay.http.count, 1)
        XCTAssertEqual(exchange.method, "GET")
        XCTAssertEqual(exchange.path, "/up")
        XCTAssertEqual(exchange.statusCode, 404)
        XCTAssertEqual(exchange.role, .client)
        XCTAssertEqual(exchange.start, 1_000)
        XCTAssertEqual(exchange.end, 3_000)
    }

    func testStreamsPerConnectionAreBoundedAndCloseEndsTheRest() {
        let replay = Replay()
        replay.feed(.receive, preface, at: 1)
        for stream in stride(from: UInt32(1), through: 2 * 300 + 1, by: 2) {
            replay.feed(.receive, frame(1, flags: 0x5, stream: stream, [0x82, 0x86, 0x84]), at: UInt64(stream) + 10)
        }
        XCTAssertEqual(replay.tracer.statistics.abandonedStreams.load(ordering: .relaxed), 301 - 256)
        replay.close(at: 10_000)
        XCTAssertEqual(replay.http.count, 256)
        XCTAssertTrue(replay.http.allSatisfy { $0.statusCode == nil && $0.end == 10_000 })
    }
}
