import Foundation
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// gRPC between Python `grpcio` programs (Debian's `python3-grpcio` 1.51: gRPC C-core, its own HTTP/2 and
/// HPACK, sendmsg with one iovec per header name and value), both traced: a server of `demo.Greeter` made
/// with generic handlers over raw bytes (no generated code) — unary `Hello` (NOT_FOUND for `missing`),
/// server-streaming `Count`, bidirectional `Chat` — and a client calling it on one channel.
final class GRPCioTests: XCTestCase {
    static let python = "/usr/bin/python3"

    static let server = #"""
        from concurrent import futures
        import grpc

        def hello(request, context):
            if request == b"missing":
                context.abort(grpc.StatusCode.NOT_FOUND, "no such greeting")
            return b"hello " + request

        def count(request, context):
            for i in range(int(request)):
                yield str(i).encode()

        def chat(requests, context):
            for message in requests:
                yield message.upper()

        handlers = grpc.method_handlers_generic_handler("demo.Greeter", {
            "Hello": grpc.unary_unary_rpc_method_handler(hello),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        })
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((handlers,))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(port, flush=True)
        server.wait_for_termination()
        """#

    /// `client.py PORT [READY]`: with a READY path, two calls on the channel, then that file is made and a line
    /// read from stdin before the rest (so the agent starts on a connection whose HPACK tables it never saw).
    static let client = #"""
        import sys
        import grpc

        channel = grpc.insecure_channel("127.0.0.1:" + sys.argv[1])
        hello = channel.unary_unary("/demo.Greeter/Hello")
        count = channel.unary_stream("/demo.Greeter/Count")
        chat = channel.stream_stream("/demo.Greeter/Chat")
        if len(sys.argv) > 2:
            assert hello(b"warm") == b"hello warm"
            assert list(count(b"2")) == [b"0", b"1"]
            open(sys.argv[2], "w").close()
            sys.stdin.readline()
        assert hello(b"world") == b"hello world"
        try:
            hello(b"missing")
            sys.exit("missing was found")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
        assert list(count(b"3")) == [b"0", b"1", b"2"]
        assert list(chat(iter([b"a", b"b"]))) == [b"A", b"B"]
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert hello(b"traced", metadata=(("traceparent", traceparent),)) == b"hello traced"
        channel.close()
        """#

    private func startServer() throws -> (ChildProcess, Int, URL) {
        try requireBPF()
        try requireExecutable(Self.python, package: "python3")
        do {
            _ = try TestSupport.run(Self.python, ["-c", "import grpc"])
        } catch {
            try prerequisiteMissing("python3-grpcio", "Python's grpc module is not installed (apt-get install python3-grpcio)")
        }
        let directory = try temporaryDirectory(self)
        let serverScript = directory.appendingPathComponent("server.py")
        try Self.server.write(to: serverScript, atomically: true, encoding: .utf8)
        try Self.client.write(to: directory.appendingPathComponent("client.py"), atomically: true, encoding: .utf8)
        let server = try ChildProcess(Self.python, [serverScript.path])
        return (server, try server.port(), directory)
    }

    /// A span named right, or — when the headers that named it were not decoded — `grpc` and marked partial:
    /// never another call's name.
    private func assertNamed(_ span: Span, _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        if span.name == "grpc" {
            XCTAssertEqual(span.attributes[RPCSpans.partialHeadersAttribute], .bool(true), "\(span)", file: file, line: line)
            XCTAssertNil(span.attributes[SemanticConventions.rpcMethod], file: file, line: line)
        } else {
            XCTAssertEqual(span.name, expected, file: file, line: line)
            XCTAssertEqual(span.attributes[SemanticConventions.rpcService]?.stringValue, "demo.Greeter", file: file, line: line)
            XCTAssertEqual(span.attributes[SemanticConventions.rpcMethod]?.stringValue, String(expected.split(separator: "/").last!),
                           file: file, line: line)
        }
        XCTAssertEqual(span.attributes[SemanticConventions.rpcSystem]?.stringValue, "grpc", file: file, line: line)
        XCTAssertEqual(span.attributes[SemanticConventions.networkProtocolVersion]?.stringValue, "2", file: file, line: line)
    }

    /// Unary, NOT_FOUND, server-streaming, bidirectional and a call carrying a traceparent, on a channel
    /// opened while traced. The server reads each request whole; the client's first write (preface and the
    /// first request, 25 iovecs) is gathered only in part by the capture, so its first request is decoded
    /// from the captured start of its header block, and requests naming the `:path` entry it added are
    /// `grpc` (partial) on the client side.
    func testGRPCioServerAndClientUnaryAndStreamingCallsOnBothSides() throws {
        let (server, port, directory) = try startServer()
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \(Self.python) \(directory.path)/client.py \(port)"])
        let harness = try TracingHarness(pids: [server.pid, client.pid])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)

        let expected = ["demo.Greeter/Hello", "demo.Greeter/Hello", "demo.Greeter/Count", "demo.Greeter/Chat", "demo.Greeter/Hello"]
        let serverSpans = harness.waitForSpans(of: server.pid, kind: .server, count: 5)
        XCTAssertEqual(serverSpans.map(\.name), expected, "the server reads every request whole")
        for span in serverSpans {
            assertNamed(span, span.name)
            XCTAssertEqual(span.attributes[SemanticConventions.serverPort]?.intValue, Int64(port))
            XCTAssertEqual(span.status, .unset, "OK and NOT_FOUND are no server errors: \(span)")
        }
        let serverCodes = serverSpans.map { $0.attributes[SemanticConventions.rpcGRPCStatusCode]?.intValue }
        XCTAssertEqual(serverCodes[1], 5, "NOT_FOUND")
        for (index, code) in serverCodes.enumerated() where index != 1 {
            XCTAssertTrue(code == 0 || (code == nil && serverSpans[index].attributes[RPCSpans.partialHeadersAttribute] == .bool(true)),
                          "OK, or unknown with the partial marker, never another code: \(serverSpans[index])")
        }

        let clientSpans = harness.waitForSpans(of: client.pid, kind: .client, count: 5)
        XCTAssertEqual(clientSpans.count, 5, "\(clientSpans.map(\.name))")
        guard clientSpans.count == 5 else { return }
        for (span, name) in zip(clientSpans, expected) { assertNamed(span, name) }
        XCTAssertEqual(clientSpans[2].name, "demo.Greeter/Count", "a path the client sends for the first time is a literal")
        XCTAssertEqual(clientSpans[3].name, "demo.Greeter/Chat")
        XCTAssertEqual(clientSpans.map { $0.attributes[SemanticConventions.rpcGRPCStatusCode]?.intValue }, [0, 5, 0, 0, 0],
                       "the client reads the trailers whole")
        XCTAssertEqual(clientSpans.map { $0.status == .unset }, [true, false, true, true, true], "NOT_FOUND is a client error")
        XCTAssertEqual(clientSpans[1].attributes[SemanticConventions.errorType]?.stringValue, "5")

        // Each server span is the child of its client span (same-host linking by stream id; the traceparent
        // the last call carries names the same client span: its ids are the client span's).
        for (server, client) in zip(serverSpans, clientSpans) {
            XCTAssertEqual(server.parentSpanID, client.spanID, "\(server.name)")
            XCTAssertEqual(server.traceID, client.traceID)
            XCTAssertEqual(server.attributes[ParentSource.attribute]?.stringValue, "same-host-peer")
        }
        XCTAssertEqual(clientSpans[4].traceID.description, "0af7651916cd43dd8448eb211c80319c")
        XCTAssertEqual(clientSpans[4].spanID.description, "b7ad6b7169203331")
        XCTAssertEqual(harness.agent.unclaimedConnections(pid: client.pid), 0)
    }
    /// A channel opened before the agent: two calls made (their `:path`, `content-type` and `grpc-status`
    /// entered both HPACK dynamic tables), then the agent starts, then five more calls. Spans carry what is
    /// known and the partial marker where a field came from an entry the agent never saw — never a wrong name
    /// or code; `Chat`, whose path is sent for the first time, is named on both sides.
    func testAChannelOpenedBeforeTheAgentGivesWhatIsKnownAndNeverWrongNames() throws {
        let (server, port, directory) = try startServer()
        let ready = directory.appendingPathComponent("ready").path
        let client = try ChildProcess(Self.python, ["\(directory.path)/client.py", "\(port)", ready])
        XCTAssertTrue(waitUntil(timeout: 20) { FileManager.default.fileExists(atPath: ready) }, "the warm-up calls were made")
        let tracers = TracerRegistry.tracers(contextPropagation: false)
        let http2 = try XCTUnwrap(tracers.lazy.compactMap { $0 as? HTTP2Tracer }.first)
        let harness = try TracingHarness(pids: [server.pid, client.pid], tracers: tracers)
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)

        let expected = ["demo.Greeter/Hello", "demo.Greeter/Hello", "demo.Greeter/Count", "demo.Greeter/Chat", "demo.Greeter/Hello"]
        let serverSpans = harness.waitForSpans(of: server.pid, kind: .server, count: 5)
        let clientSpans = harness.waitForSpans(of: client.pid, kind: .client, count: 5)
        XCTAssertEqual(serverSpans.count, 5, "\(serverSpans.map(\.name))")
        XCTAssertEqual(clientSpans.count, 5, "\(clientSpans.map(\.name))")
        guard serverSpans.count == 5, clientSpans.count == 5 else { return }
        for spans in [serverSpans, clientSpans] {
            for (span, name) in zip(spans, expected) { assertNamed(span, name) }
            XCTAssertEqual(spans[3].name, "demo.Greeter/Chat", "a path sent for the first time is a literal")
            let codes = spans.map { $0.attributes[SemanticConventions.rpcGRPCStatusCode]?.intValue }
            XCTAssertEqual(codes[1], 5, "NOT_FOUND: a status not sent before is a literal")
            for (index, code) in codes.enumerated() where index != 1 {
                XCTAssertTrue(code == 0 || (code == nil && spans[index].attributes[RPCSpans.partialHeadersAttribute] == .bool(true)),
                              "OK, or unknown with the partial marker: \(spans[index])")
            }
        }
        XCTAssertEqual(serverSpans.map { $0.status == .unset }, [true, true, true, true, true], "no invented errors")
        XCTAssertEqual(clientSpans.map { $0.status == .unset }, [true, false, true, true, true], "NOT_FOUND is a client error")
        // The traceparent is a literal: both sides carry its trace.
        XCTAssertEqual(clientSpans[4].spanID.description, "b7ad6b7169203331")
        XCTAssertEqual(serverSpans[4].parentSpanID.description, "b7ad6b7169203331")
        XCTAssertEqual(serverSpans[4].traceID.description, "0af7651916cd43dd8448eb211c80319c")
        // Each server span is the child of its client call: both ends number the streams alike, and a side
        // whose path is unknown gives no fingerprint to disagree with.
        for (server, client) in zip(serverSpans, clientSpans) {
            XCTAssertEqual(server.parentSpanID, client.spanID, "\(server.name)")
            XCTAssertEqual(server.attributes[ParentSource.attribute]?.stringValue, "same-host-peer")
        }
        XCTAssertGreaterThan(http2.statistics.partialHeaders.load(ordering: .relaxed), 0)
        XCTAssertEqual(http2.statistics.joinedMidStream.load(ordering: .relaxed), 2, "the channel's connection, claimed mid-stream on both sides")
    }
}
