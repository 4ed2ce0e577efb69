import CTracerABI
import Foundation
import Glibc
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// Same-host linking (`PeerLinks`) on replayed capture events of two real processes' ends: the client and
/// server events carry real PIDs, so each side's network namespace is the real one (`/proc/PID/ns/net`).
/// No privileges needed except for the other-namespace case (`unshare -n`).
final class SameHostLinkingReplayTests: XCTestCase {
    private final class Replay {
        let tracker: ConnectionTracker
        let traceContexts = TraceContexts()
        var spans: [Span] = []

        init(ownedElsewhere: Set<ExchangeKind> = []) {
            let parser = HTTPTracer().parser!
            tracker = ConnectionTracker(traceContexts: traceContexts, parsers: { _, _ in .init(parsers: [parser], ownedElsewhere: ownedElsewhere) },
                                        countOnly: { _ in })
        }

        func feed(_ event: [UInt8]) {
            var exchanges: [Exchange] = []
            event.withUnsafeBytes { tracker.handle($0, into: &exchanges) }
            for case .http(let exchange) in exchanges {
                spans.append(HTTPSpans.span(exchange, resource: .empty, scope: InstrumentationScope(name: "test")) { $0 })
            }
        }

        func span(_ kind: SpanKind, _ path: String) -> Span? {
            spans.first { $0.kind == kind && ($0.attributes[SemanticConventions.urlPath]?.stringValue == path
                || $0.attributes[SemanticConventions.urlFull]?.stringValue?.hasSuffix(path) == true) }
        }

        var counters: PeerLinks.Counters { tracker.peerLinks.counters }
    }

    private let me = UInt32(getpid())
    private let clientEnd: [UInt8] = [127, 0, 0, 1]
    private let serverEnd: [UInt8] = [127, 0, 0, 2]
    private var clientTuple: capture_tuple { CaptureEvents.tuple(local: clientEnd, localPort: 41_000, remote: serverEnd, remotePort: 8080) }
    private var serverTuple: capture_tuple { CaptureEvents.tuple(local: serverEnd, localPort: 8080, remote: clientEnd, remotePort: 41_000) }

    private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// Client request, server read, server response, client response: one exchange on each side.
    private func exchange(_ replay: Replay, path: String, clientPID: UInt32? = nil, clientConnection: UInt64 = 1, serverConnection: UInt64 = 2,
                          at time: UInt64, serverFirst: Bool = false, header: String = "") {
        let request = bytes("GET \(path) HTTP/1.1\r\nHost: b\r\n\(header)\r\n")
        let response = bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        let client = CaptureEvents.chunk(connection: clientConnection, pid: clientPID ?? me, direction: .send, data: request, timestamp: time + 10,
                                         tuple: clientTuple)
        let server = CaptureEvents.chunk(connection: serverConnection, pid: me, goid: 5, direction: .receive, data: request, timestamp: time + 20,
                                         tuple: serverTuple)
        if serverFirst { replay.feed(server); replay.feed(client) } else { replay.feed(client); replay.feed(server) }
        replay.feed(CaptureEvents.chunk(connection: serverConnection, pid: me, direction: .send, data: response, timestamp: time + 30, tuple: serverTuple))
        replay.feed(CaptureEvents.chunk(connection: clientConnection, pid: clientPID ?? me, direction: .receive, data: response, timestamp: time + 40,
                                        tuple: clientTuple))
    }

    func testServerSpanIsTheChildOfTheClientSpanAtTheOtherEnd() throws {
        let replay = Replay()
        exchange(replay, path: "/one", at: 1_000)
        let client = try XCTUnwrap(replay.span(.client, "/one"))
        let server = try XCTUnwrap(replay.span(.server, "/one"))
        XCTAssertEqual(server.traceID, client.traceID)
        XCTAssertEqual(server.parentSpanID, client.spanID)
        XCTAssertEqual(server.attributes[ParentSource.attribute]?.stringValue, "same-host-peer")
        XCTAssertNil(client.attributes[ParentSource.attribute], "a root client span names no parent source")
        // A second request on the same connection links too (its stream position follows the first's bytes).
        exchange(replay, path: "/two", at: 2_000)
        XCTAssertEqual(replay.span(.server, "/two")?.parentSpanID, replay.span(.client, "/two")?.spanID)
        XCTAssertNotEqual(replay.span(.server, "/two")?.parentSpanID, client.spanID)
        XCTAssertEqual(replay.counters.linked.load(ordering: .relaxed), 2)
    }

    func testSameHostPeerWinsOverAForwardedTraceparentOfAProxy() throws {
        // The client connection's spans are another tracer's (Go's HTTP client from uprobes): the proxy
        // forwards its caller's traceparent unchanged, and the call that tracer announced is the parent.
        let replay = Replay(ownedElsewhere: [ExchangeKind(.http, .client)])
        let call = replay.traceContexts.newIdentity(parent: nil)
        replay.traceContexts.startCall(pid: me, identity: call, at: 500)
        exchange(replay, path: "/upstream", at: 1_000, header: "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n")
        XCTAssertNil(replay.span(.client, "/upstream"), "the other tracer makes that span")
        let server = try XCTUnwrap(replay.span(.server, "/upstream"))
        XCTAssertEqual(server.traceID, call.traceID)
        XCTAssertEqual(server.parentSpanID, call.spanID)
        XCTAssertEqual(server.attributes[ParentSource.attribute]?.stringValue, "same-host-peer")
        // Two calls in flight: the request could be either's, so no link (counted), the traceparent stays.
        replay.traceContexts.endCall(pid: me, spanID: call.spanID)
        replay.traceContexts.startCall(pid: me, identity: replay.traceContexts.newIdentity(parent: nil), at: 2_500)
        replay.traceContexts.startCall(pid: me, identity: replay.traceContexts.newIdentity(parent: nil), at: 2_600)
        exchange(replay, path: "/both", at: 3_000, header: "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n")
        let unlinked = try XCTUnwrap(replay.span(.server, "/both"))
        XCTAssertEqual(unlinked.traceID.hex, "0af7651916cd43dd8448eb211c80319c")
        XCTAssertEqual(unlinked.parentSpanID.hex, "b7ad6b7169203331")
        XCTAssertEqual(unlinked.attributes[ParentSource.attribute]?.stringValue, "traceparent")
        XCTAssertEqual(replay.counters.ambiguousCalls.load(ordering: .relaxed), 1)
    }

    func testAServerThatReadsBeforeTheClientWriteIsSeenLinksAtItsEnd() throws {
        let replay = Replay()
        exchange(replay, path: "/late", at: 1_000, serverFirst: true)
        let client = try XCTUnwrap(replay.span(.client, "/late"))
        let server = try XCTUnwrap(replay.span(.server, "/late"))
        XCTAssertEqual(server.traceID, client.traceID)
        XCTAssertEqual(server.parentSpanID, client.spanID)
        XCTAssertEqual(replay.counters.linkedLate.load(ordering: .relaxed), 1)
    }

    /// A server request that ended with no client seen marks its connection as one whose client is not traced
    /// (its later reads skip the lookup); a traced client's request with those ends, however late, undoes that.
    func testAConnectionWhoseFirstRequestFoundNoClientLinksOnceItsClientIsSeen() throws {
        let replay = Replay()
        let first = bytes("GET /first HTTP/1.1\r\n\r\n"), second = bytes("GET /second HTTP/1.1\r\n\r\n")
        let response = bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        replay.feed(CaptureEvents.chunk(connection: 2, pid: me, goid: 5, direction: .receive, data: first, timestamp: 20, tuple: serverTuple))
        replay.feed(CaptureEvents.chunk(connection: 2, pid: me, direction: .send, data: response, timestamp: 30, tuple: serverTuple))
        XCTAssertEqual(replay.span(.server, "/first")?.parentSpanID, .invalid, "no client request by the end of the span")
        // The client's write of /first is seen after all, then its /second, then the server reads /second.
        replay.feed(CaptureEvents.chunk(connection: 1, pid: me, direction: .send, data: first, timestamp: 35, tuple: clientTuple))
        replay.feed(CaptureEvents.chunk(connection: 1, pid: me, direction: .receive, data: response, timestamp: 40, tuple: clientTuple))
        replay.feed(CaptureEvents.chunk(connection: 1, pid: me, direction: .send, data: second, timestamp: 50, tuple: clientTuple))
        replay.feed(CaptureEvents.chunk(connection: 2, pid: me, goid: 5, direction: .receive, data: second, timestamp: 60, tuple: serverTuple))
        replay.feed(CaptureEvents.chunk(connection: 2, pid: me, direction: .send, data: response, timestamp: 70, tuple: serverTuple))
        replay.feed(CaptureEvents.chunk(connection: 1, pid: me, direction: .receive, data: response, timestamp: 80, tuple: clientTuple))
        let client = try XCTUnwrap(replay.span(.client, "/second")), server = try XCTUnwrap(replay.span(.server, "/second"))
        XCTAssertEqual(server.traceID, client.traceID)
        XCTAssertEqual(server.parentSpanID, client.spanID)
        XCTAssertEqual(replay.counters.linked.load(ordering: .relaxed), 1)
    }

    func testPipelinedRequestsLinkEachToItsOwnClientSpan() throws {
        let replay = Replay()
        let first = bytes("GET /a HTTP/1.1\r\n\r\n"), second = bytes("GET /b HTTP/1.1\r\n\r\n")
        // The client writes both at once; the server reads them one by one.
        replay.feed(CaptureEvents.chunk(connection: 1, pid: me, direction: .send, data: first + second, timestamp: 10, tuple: clientTuple))
        replay.feed(CaptureEvents.chunk(connection: 2, pid: me, goid: 5, direction: .receive, data: first, timestamp: 20, tuple: serverTuple))
        replay.feed(CaptureEvents.chunk(connection: 2, pid: me, goid: 5, direction: .receive, data: second, timestamp: 21, tuple: serverTuple))
        let responses = bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        replay.feed(CaptureEvents.chunk(connection: 2, pid: me, direction: .send, data: responses, timestamp: 30, tuple: serverTuple))
        replay.feed(CaptureEvents.chunk(connection: 1, pid: me, direction: .receive, data: responses, timestamp: 40, tuple: clientTuple))
        XCTAssertEqual(replay.spans.count, 4)
        for path in ["/a", "/b"] {
            XCTAssertEqual(replay.span(.server, path)?.parentSpanID, replay.span(.client, path)?.spanID, path)
        }
    }

    func testNoLinkForAReusedTupleAConnectionSeenMidStreamOrAStaleRequest() throws {
        let replay = Replay()
        // The client's first connection ends; a new one with the same tuple is read before its write is seen.
        exchange(replay, path: "/old", at: 1_000)
        replay.feed(CaptureEvents.close(connection: 1, pid: me, timestamp: 1_100))
        replay.feed(CaptureEvents.close(connection: 2, pid: me, timestamp: 1_100))
        let request = bytes("GET /new HTTP/1.1\r\n\r\n")
        replay.feed(CaptureEvents.chunk(connection: 4, pid: me, goid: 6, direction: .receive, data: request, timestamp: 2_000, tuple: serverTuple))
        replay.feed(CaptureEvents.close(connection: 4, pid: me, timestamp: 2_100))
        let new = try XCTUnwrap(replay.span(.server, "/new"))
        XCTAssertNotEqual(new.traceID, replay.span(.client, "/old")?.traceID, "the closed connection's request is no parent")
        XCTAssertEqual(new.parentSpanID, .invalid)

        // The server saw the connection from its start, the client only from its second request: positions differ.
        let second = bytes("GET /mid HTTP/1.1\r\n\r\n")
        replay.feed(CaptureEvents.chunk(connection: 6, pid: me, goid: 5, direction: .receive, data: bytes("GET /x HTTP/1.1\r\n\r\n"), timestamp: 3_000,
                                        tuple: serverTuple))
        replay.feed(CaptureEvents.chunk(connection: 5, pid: me, direction: .send, data: second, timestamp: 3_010, tuple: clientTuple))
        replay.feed(CaptureEvents.chunk(connection: 6, pid: me, goid: 5, direction: .receive, data: second, timestamp: 3_020, tuple: serverTuple))
        replay.feed(CaptureEvents.close(connection: 6, pid: me, timestamp: 3_100))
        XCTAssertEqual(replay.span(.server, "/mid")?.parentSpanID, .invalid)
        XCTAssertEqual(replay.span(.server, "/x")?.parentSpanID, .invalid, "the client's first request seen is not the server's")
        XCTAssertEqual(replay.counters.mismatched.load(ordering: .relaxed), 1)

        // The same stream position, but the client's write ended 30 s before the read: a leftover, not a parent.
        let stale = bytes("GET /stale HTTP/1.1\r\n\r\n")
        replay.feed(CaptureEvents.chunk(connection: 7, pid: me, direction: .send, data: stale, timestamp: 10_000, tuple: clientTuple))
        replay.feed(CaptureEvents.chunk(connection: 8, pid: me, goid: 5, direction: .receive, data: stale, timestamp: 30_000_010_000, tuple: serverTuple))
        replay.feed(CaptureEvents.close(connection: 8, pid: me, timestamp: 30_000_020_000))
        XCTAssertEqual(replay.span(.server, "/stale")?.parentSpanID, .invalid)
        XCTAssertEqual(replay.counters.outOfWindow.load(ordering: .relaxed), 1)
        XCTAssertEqual(replay.counters.linked.load(ordering: .relaxed), 1, "only /old")
    }

    func testEqualPortsInAnotherNetworkNamespaceNeverLink() throws {
        try requireExecutable("/usr/bin/unshare", package: "util-linux")
        // A real process in a network namespace of its own: its connection has the same tuple as the server's peer.
        let other = Process()
        other.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        other.arguments = ["-n", "sleep", "30"]
        try other.run()
        defer { other.terminate(); other.waitUntilExit() }
        let child = waitForChild(of: other.processIdentifier)
        guard let child, PeerLinks.networkNamespace(pid: child) != PeerLinks.networkNamespace(pid: me) else {
            try prerequisiteMissing("network namespaces", "unshare -n started no process in a new network namespace (needs root)")
        }
        let replay = Replay()
        exchange(replay, path: "/elsewhere", clientPID: child, at: 1_000)
        let server = try XCTUnwrap(replay.span(.server, "/elsewhere"))
        XCTAssertEqual(server.parentSpanID, .invalid)
        XCTAssertNotEqual(server.traceID, replay.span(.client, "/elsewhere")?.traceID)
        XCTAssertEqual(replay.counters.otherNamespace.load(ordering: .relaxed), 1)
        XCTAssertEqual(replay.counters.linked.load(ordering: .relaxed), 0)
    }

    /// `sleep`, once `unshare` has exec'd it (same PID) in its new namespace.
    private func waitForChild(of pid: Int32) -> UInt32? {
        var found: UInt32?
        _ = waitUntil(timeout: 5) {
            let comm = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? ""
            if comm.hasPrefix("sleep") { found = UInt32(pid) }
            return found != nil
        }
        return found
    }

    /// Network propagation: a server span whose ids the kernel decided (and may already have sent on in its own
    /// calls' traceparents) keeps them; a traced client on this host in another trace is not linked to it, one in
    /// the same trace (its traceparent is what the kernel read) is.
    func testKernelDecidedServerIdsStayInTheirTrace() throws {
        let replay = Replay()
        let decided = (trace: TraceID(high: 0x0123, low: 0x4567), span: SpanID(0x89ab))
        replay.feed(CaptureEvents.chunk(connection: 1, pid: me, direction: .send, data: bytes("GET /one HTTP/1.1\r\nHost: b\r\n\r\n"),
                                        timestamp: 1_010, tuple: clientTuple))
        replay.feed(CaptureEvents.context(connection: 2, pid: me, direction: .receive, traceID: decided.trace, spanID: decided.span, timestamp: 1_019))
        replay.feed(CaptureEvents.chunk(connection: 2, pid: me, goid: 5, direction: .receive, data: bytes("GET /one HTTP/1.1\r\nHost: b\r\n\r\n"),
                                        timestamp: 1_020, tuple: serverTuple))
        replay.feed(CaptureEvents.chunk(connection: 2, pid: me, direction: .send, data: bytes("HTTP/1.1 204 No Content\r\n\r\n"), timestamp: 1_030,
                                        tuple: serverTuple))
        let server = try XCTUnwrap(replay.span(.server, "/one"))
        XCTAssertEqual(server.traceID, decided.trace)
        XCTAssertEqual(server.spanID, decided.span)
        XCTAssertEqual(server.parentSpanID, .invalid)
        XCTAssertEqual(replay.counters.otherTrace.load(ordering: .relaxed), 1)
        XCTAssertEqual(replay.counters.linked.load(ordering: .relaxed), 0)

        // The next request carries a traceparent; the kernel read it, so the decided ids are in its trace: linked.
        let carried = "traceparent: 00-0000000000000000000000000000abcd-00000000000000ef-01\r\n"
        let request = bytes("GET /two HTTP/1.1\r\nHost: b\r\n\(carried)\r\n")
        replay.feed(CaptureEvents.chunk(connection: 1, pid: me, direction: .send, data: request, timestamp: 2_010, tuple: clientTuple))
        replay.feed(CaptureEvents.context(connection: 2, pid: me, direction: .receive, traceID: TraceID(high: 0, low: 0xabcd), spanID: SpanID(0x77),
                                          parentSpanID: SpanID(0xef), timestamp: 2_019))
        replay.feed(CaptureEvents.chunk(connection: 2, pid: me, goid: 5, direction: .receive, data: request, timestamp: 2_020, tuple: serverTuple))
        replay.feed(CaptureEvents.chunk(connection: 2, pid: me, direction: .send, data: bytes("HTTP/1.1 204 No Content\r\n\r\n"), timestamp: 2_030,
                                        tuple: serverTuple))
        let second = try XCTUnwrap(replay.span(.server, "/two"))
        XCTAssertEqual(second.traceID, TraceID(high: 0, low: 0xabcd))
        XCTAssertEqual(second.spanID, SpanID(0x77))
        XCTAssertEqual(second.parentSpanID, SpanID(0xef))
        XCTAssertEqual(second.attributes[ParentSource.attribute]?.stringValue, "same-host-peer")
        XCTAssertEqual(replay.counters.linked.load(ordering: .relaxed), 1)
    }

    /// Network propagation: a client span takes the ids of the traceparent the kernel inserted into its request,
    /// and the inserted bytes count in the stream, so the server's read of the next request still links.
    func testAnInjectedClientSpanTakesTheInsertedIdsAndItsBytesCount() throws {
        let replay = Replay()
        let injected = (trace: TraceID(high: 0xaa, low: 0xbb), span: SpanID(0xcc), parent: SpanID(0xdd))
        let line = "traceparent: 00-\(injected.trace)-\(injected.span)-01\r\n"
        XCTAssertEqual(line.utf8.count, Int(CAPTURE_TRACEPARENT_LINE))
        let response = bytes("HTTP/1.1 204 No Content\r\n\r\n")
        replay.feed(CaptureEvents.context(connection: 1, pid: me, direction: .send, traceID: injected.trace, spanID: injected.span,
                                          parentSpanID: injected.parent, injected: UInt32(CAPTURE_TRACEPARENT_LINE), timestamp: 1_009))
        replay.feed(CaptureEvents.chunk(connection: 1, pid: me, direction: .send, data: bytes("GET /one HTTP/1.1\r\nHost: b\r\n\r\n"),
                                        timestamp: 1_010, tuple: clientTuple))
        // What the server reads: the request with the inserted line.
        replay.feed(CaptureEvents.chunk(connection: 2, pid: me, goid: 5, direction: .receive,
                                        data: bytes("GET /one HTTP/1.1\r\n\(line)Host: b\r\n\r\n"), timestamp: 1_020, tuple: serverTuple))
        replay.feed(CaptureEvents.chunk(connection: 2, pid: me, direction: .send, data: response, timestamp: 1_030, tuple: serverTuple))
        replay.feed(CaptureEvents.chunk(connection: 1, pid: me, direction: .receive, data: response, timestamp: 1_040, tuple: clientTuple))
        let client = try XCTUnwrap(replay.span(.client, "/one"))
        XCTAssertEqual(client.traceID, injected.trace)
        XCTAssertEqual(client.spanID, injected.span)
        XCTAssertEqual(client.parentSpanID, injected.parent)
        XCTAssertEqual(client.attributes[ParentSource.attribute]?.stringValue, "injected")
        let server = try XCTUnwrap(replay.span(.server, "/one"))
        XCTAssertEqual(server.traceID, injected.trace)
        XCTAssertEqual(server.parentSpanID, injected.span)
        // The second request starts 70 bytes further on the server's side than the client wrote: still linked.
        exchange(replay, path: "/two", at: 2_000)
        XCTAssertEqual(replay.span(.server, "/two")?.parentSpanID, replay.span(.client, "/two")?.spanID)
        XCTAssertEqual(replay.counters.linked.load(ordering: .relaxed), 2)
    }
}
