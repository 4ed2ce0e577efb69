import Foundation
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// End to end: real servers and clients traced by the agent (TracingHarness: the capture layer's hooks and
/// the HTTP/1 parser, attached as `tracer --pid` attaches them), spans checked.
final class HTTPTracerTests: XCTestCase {
    private func attribute(_ span: Span, _ key: String) -> AttributeValue? { span.attributes[key] }

    /// A client command held at `read` until released (`exec` keeps the PID), so it can be selected first.
    private func gate(_ command: [String]) throws -> ChildProcess {
        try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\""] + command)
    }

    /// Releases a gated client and waits for it to succeed.
    @discardableResult
    private func finish(_ child: ChildProcess, _ what: String = "client") -> ChildProcess {
        child.release()
        XCTAssertEqual(child.waitForExit(), 0, "\(what) failed")
        return child
    }

    private func pythonServer(_ directory: URL, tls: (cert: String, key: String)? = nil) throws -> (ChildProcess, Int) {
        let script = try Programs.write(Programs.pythonServer, named: "server.py", in: directory)
        let server = try ChildProcess(Programs.python, [script] + (tls.map { [$0.cert, $0.key] } ?? []))
        return (server, try server.port())
    }

    func testPythonServerGivesOneSpanPerRequestWithMethodPathStatusAndKind() throws {
        try checkPythonServer(hooks: nil)
    }

    /// The last-resort hooks of kernels without socket tracepoints, fexit or kprobes, on this kernel.
    func testPythonServerThroughSyscallTracepoints() throws {
        try checkPythonServer(hooks: .syscallTracepoints)
    }

    func testHTTPSThroughSyscallTracepoints() throws {
        try checkHTTPS(hooks: .syscallTracepoints)
    }

    private func checkPythonServer(hooks: CaptureHooks?) throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let (server, port) = try pythonServer(directory)
        let base = "http://127.0.0.1:\(port)"
        // One curl: five requests on one keep-alive connection.
        let client = try gate([Programs.curl, "-s", "-o", "/dev/null",
                               "\(base)/hello", "\(base)/missing", "\(base)/fail", "\(base)/hello?password=hunter2&x=1", "\(base)/hello"])
        let harness = try TracingHarness(pids: [server.pid], captureHooks: hooks)
        XCTAssertEqual(harness.agent.captureHooks, hooks ?? .socketTracepoints)
        finish(client)
        let spans = harness.waitForSpans(of: server.pid, kind: .server, count: 5)
        XCTAssertEqual(spans.count, 5, "\(spans.map(\.name))")
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.urlPath)?.stringValue }, ["/hello", "/missing", "/fail", "/hello", "/hello"])
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 404, 500, 200, 200])
        XCTAssertEqual(spans.map(\.status), [.unset, .unset, .error(message: ""), .unset, .unset], "5xx is an error on a server")
        XCTAssertEqual(Set(spans.map(\.name)), ["GET"])
        XCTAssertEqual(Set(spans.map(\.kind)), [.server])
        XCTAssertEqual(attribute(spans[3], SemanticConventions.urlQuery)?.stringValue, "password=REDACTED&x=1")
        for span in spans {
            XCTAssertEqual(attribute(span, SemanticConventions.httpRequestMethod)?.stringValue, "GET")
            XCTAssertEqual(attribute(span, SemanticConventions.serverPort)?.intValue, Int64(port))
            XCTAssertEqual(attribute(span, SemanticConventions.serverAddress)?.stringValue, "127.0.0.1")
            XCTAssertEqual(attribute(span, SemanticConventions.clientAddress)?.stringValue, "127.0.0.1")
            XCTAssertEqual(attribute(span, SemanticConventions.networkProtocolVersion)?.stringValue, "1.1")
            XCTAssertEqual(attribute(span, SemanticConventions.urlScheme)?.stringValue, "http")
            XCTAssertGreaterThan(span.endTimeUnixNano, span.startTimeUnixNano)
            XCTAssertEqual(span.parentSpanID, .invalid)
        }
        // Keep-alive: every request came over the same connection.
        XCTAssertEqual(Set(spans.compactMap { attribute($0, SemanticConventions.clientPort)?.intValue }).count, 1)
        XCTAssertEqual(Set(spans.compactMap { attribute($0, SemanticConventions.networkPeerPort)?.intValue }),
                       Set(spans.compactMap { attribute($0, SemanticConventions.clientPort)?.intValue }))
        XCTAssertEqual(harness.agent.unclaimedConnections(pid: server.pid), 0)
    }

    func testSlowHandlerShowsInTheDurationAndPostBodyAndTraceparentAreHonoured() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let (server, port) = try pythonServer(directory)
        let harness = try TracingHarness(pids: [server.pid])
        let base = "http://127.0.0.1:\(port)"
        finish(try gate([Programs.curl, "-s", "-o", "/dev/null", "\(base)/slow"]))
        finish(try gate([Programs.curl, "-s", "-o", "/dev/null", "\(base)/hello"]))
        let body = String(repeating: "b", count: 3000) // more than one read on the server side for large bodies
        finish(try gate([Programs.curl, "-s", "-o", "/dev/null", "-X", "POST", "--data-binary", body,
                         "-H", "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "\(base)/upload"]))
        let spans = harness.waitForSpans(of: server.pid, kind: .server, count: 3)
        XCTAssertEqual(spans.count, 3)
        guard spans.count == 3 else { return }
        XCTAssertGreaterThanOrEqual(spans[0].durationSeconds, 0.050, "the 50 ms handler")
        XCTAssertLessThan(spans[0].durationSeconds, 1)
        XCTAssertLessThan(spans[1].durationSeconds, 0.050, "a trivial handler")
        XCTAssertGreaterThan(spans[1].endTimeUnixNano, spans[1].startTimeUnixNano, "never 0")
        let post = spans[2]
        XCTAssertEqual(post.name, "POST")
        XCTAssertEqual(attribute(post, SemanticConventions.httpResponseStatusCode)?.intValue, 201)
        XCTAssertEqual(attribute(post, SemanticConventions.httpRequestBodySize)?.intValue, 3000)
        XCTAssertEqual(post.traceID.hex, "4bf92f3577b34da6a3ce929d0e0e4736")
        XCTAssertEqual(post.parentSpanID.hex, "00f067aa0ba902b7")
        XCTAssertNotEqual(post.spanID, post.parentSpanID)
    }

    func testPipelinedRequestsGiveOneSpanEach() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let (server, port) = try pythonServer(directory)
        let harness = try TracingHarness(pids: [server.pid])
        let script = try Programs.write(Programs.pipeliningClient, named: "pipeline.py", in: directory)
        let client = finish(try gate([Programs.python, script, String(port)]))
        XCTAssertEqual(client.output().trimmingCharacters(in: .whitespacesAndNewlines), "3", "three responses")
        let spans = harness.waitForSpans(of: server.pid, kind: .server, count: 3)
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.urlPath)?.stringValue }, ["/first", "/second", "/fail"])
        XCTAssertEqual(spans.map(\.name), ["GET", "POST", "GET"])
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 201, 500])
        XCTAssertEqual(spans[1].int(SemanticConventions.httpRequestBodySize), 5)
    }

    /// A fork-per-connection server: each request is read by a child forked for it, whose first bytes cross
    /// the socket before the agent can have selected the child (the kernel prepares children at fork).
    func testChildrenForkedPerConnectionGiveSpansFromTheirFirstBytes() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let script = try Programs.write(Programs.forkingServer, named: "forking.py", in: directory)
        let server = try ChildProcess(Programs.python, [script])
        let port = try server.port()
        let harness = try TracingHarness(pids: [server.pid])
        let base = "http://127.0.0.1:\(port)"
        finish(try gate([Programs.curl, "-s", "-o", "/dev/null", "\(base)/first", "\(base)/missing", "\(base)/fail", "\(base)/last"]))
        func childSpans() -> [Span] {
            harness.collector.spans.filter { $0.kind == .server && $0.resource.attributes[SemanticConventions.processPID]?.intValue != Int64(server.pid) }
                .sorted { $0.startTimeUnixNano < $1.startTimeUnixNano }
        }
        _ = waitUntil(timeout: 10) { childSpans().count >= 4 }
        usleep(200_000)
        let spans = childSpans()
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.urlPath)?.stringValue }, ["/first", "/missing", "/fail", "/last"])
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 404, 500, 200])
        XCTAssertEqual(Set(spans.compactMap { $0.resource.attributes[SemanticConventions.processPID]?.intValue }).count, 4,
                       "each request was served by a child of its own")
        XCTAssertEqual(harness.spans(of: server.pid).count, 0, "the parent only accepted")
    }

    /// Requests and responses that cross the socket as several iovec segments (sendmsg, recvmsg into two
    /// buffers) are captured as the bytes they are, not the first segment followed by whatever memory is next.
    func testMessagesSpreadOverIovecSegments() throws {
        try checkSegmentedMessages(hooks: nil)
    }

    func testMessagesSpreadOverIovecSegmentsThroughSyscallTracepoints() throws {
        try checkSegmentedMessages(hooks: .syscallTracepoints)
    }

    private func checkSegmentedMessages(hooks: CaptureHooks?) throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let script = try Programs.write(Programs.segmentedPeer, named: "segmented.py", in: directory)
        let server = try ChildProcess(Programs.python, [script, "server"])
        let port = try server.port()
        let client = try gate([Programs.python, script, "client", String(port), "/segmented/path"])
        let harness = try TracingHarness(pids: [server.pid, client.pid], captureHooks: hooks)
        finish(client)
        XCTAssertEqual(client.output().trimmingCharacters(in: .whitespacesAndNewlines), "HTTP/1.1 201 Created")
        let served = harness.waitForSpans(of: server.pid, kind: .server, count: 1)
        let called = harness.waitForSpans(of: client.pid, kind: .client, count: 1)
        for span in served + called {
            XCTAssertEqual(span.name, "GET")
            XCTAssertEqual(attribute(span, SemanticConventions.httpResponseStatusCode)?.intValue, 201)
        }
        XCTAssertEqual(served.map { attribute($0, SemanticConventions.urlPath)?.stringValue }, ["/segmented/path"])
        XCTAssertEqual(called.map { attribute($0, SemanticConventions.urlFull)?.stringValue }, ["http://127.0.0.1:\(port)/segmented/path"])
    }

    func testClientSpansFromCurlAndPythonUrllib() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let (server, port) = try pythonServer(directory)
        let base = "http://127.0.0.1:\(port)"
        let curl = try gate([Programs.curl, "-s", "-o", "/dev/null", "\(base)/hello?token=abc", "\(base)/missing"])
        let script = try Programs.write(Programs.pythonClient, named: "client.py", in: directory)
        let python = try gate([Programs.python, script, "\(base)/hello", "\(base)/fail", "\(base)/slow"])
        let harness = try TracingHarness(pids: [curl.pid, python.pid])
        finish(curl)
        let curlSpans = harness.waitForSpans(of: curl.pid, kind: .client, count: 2)
        XCTAssertEqual(curlSpans.count, 2)
        XCTAssertEqual(curlSpans.map { attribute($0, SemanticConventions.urlFull)?.stringValue },
                       ["\(base)/hello?token=REDACTED", "\(base)/missing"])
        XCTAssertEqual(curlSpans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 404])
        XCTAssertEqual(curlSpans.map(\.status), [.unset, .error(message: "")], "4xx is an error on a client")
        XCTAssertEqual(curlSpans.first.flatMap { attribute($0, SemanticConventions.serverPort)?.intValue }, Int64(port))
        XCTAssertTrue(harness.spans(of: server.pid).isEmpty, "the server was not selected")

        finish(python)
        let pythonSpans = harness.waitForSpans(of: python.pid, kind: .client, count: 3)
        XCTAssertEqual(pythonSpans.count, 3)
        XCTAssertEqual(pythonSpans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 500, 200])
        XCTAssertEqual(Set(pythonSpans.map(\.name)), ["GET"])
        XCTAssertGreaterThanOrEqual(pythonSpans.last?.durationSeconds ?? 0, 0.050)
    }

    func testNodeFetchClientSpans() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let (server, port) = try pythonServer(directory)
        let base = "http://127.0.0.1:\(port)"
        let script = "(async () => { for (const p of ['/hello', '/missing', '/fail']) { const r = await fetch('\(base)' + p); await r.text(); console.log(r.status); } })()"
        let node = try gate([Programs.node, "-e", script])
        let harness = try TracingHarness(pids: [node.pid])
        finish(node)
        let spans = harness.waitForSpans(of: node.pid, kind: .client, count: 3)
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.urlFull)?.stringValue }, ["\(base)/hello", "\(base)/missing", "\(base)/fail"])
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 404, 500])
        XCTAssertEqual(spans.map(\.status), [.unset, .error(message: ""), .error(message: "")])
        XCTAssertTrue(harness.spans(of: server.pid).isEmpty, "the server was not selected")
    }

    func testHTTPSServerAndClientThroughLibsslWithoutPlaintextDuplicates() throws {
        try checkHTTPS(hooks: nil)
    }

    private func checkHTTPS(hooks: CaptureHooks?) throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let (server, port) = try pythonServer(directory, tls: try Programs.certificate(in: directory))
        let base = "https://127.0.0.1:\(port)"
        let curl = try gate([Programs.curl, "-sk", "-o", "/dev/null", "\(base)/hello", "\(base)/fail", "\(base)/slow"])
        let harness = try TracingHarness(pids: [server.pid, curl.pid], captureHooks: hooks)
        finish(curl)
        let spans = harness.waitForSpans(of: server.pid, kind: .server, count: 3)
        XCTAssertEqual(spans.count, 3, "exactly one span per request: \(spans.map { attribute($0, SemanticConventions.urlPath) ?? "" })")
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.urlPath)?.stringValue }, ["/hello", "/fail", "/slow"])
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 500, 200])
        XCTAssertEqual(Set(spans.compactMap { attribute($0, SemanticConventions.urlScheme)?.stringValue }), ["https"])
        XCTAssertEqual(Set(spans.compactMap { attribute($0, SemanticConventions.serverPort)?.intValue }), [Int64(port)])
        XCTAssertGreaterThanOrEqual(spans.last?.durationSeconds ?? 0, 0.050)

        let clientSpans = harness.waitForSpans(of: curl.pid, kind: .client, count: 3)
        XCTAssertEqual(clientSpans.count, 3)
        XCTAssertEqual(clientSpans.map { attribute($0, SemanticConventions.urlFull)?.stringValue },
                       ["\(base)/hello", "\(base)/fail", "\(base)/slow"])
    }

    func testNodeServer() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let script = try Programs.write(Programs.nodeServer, named: "server.js", in: directory)
        let server = try ChildProcess(Programs.node, [script])
        let port = try server.port()
        let harness = try TracingHarness(pids: [server.pid])
        let base = "http://127.0.0.1:\(port)"
        let urls = (0..<8).map { "\(base)/item/\($0)" } + ["\(base)/fail"]
        finish(try gate([Programs.curl, "-s", "-o", "/dev/null"] + urls))
        let spans = harness.waitForSpans(of: server.pid, kind: .server, count: urls.count)
        XCTAssertEqual(spans.count, urls.count)
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.urlPath)?.stringValue }, (0..<8).map { "/item/\($0)" } + ["/fail"])
        XCTAssertEqual(spans.last?.status, .error(message: ""))
        XCTAssertEqual(spans.dropLast().compactMap { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, Array(repeating: 200, count: 8))
    }

    func testNginxServer() throws {
        try requireBPF()
        try requireExecutable(Programs.nginx, package: "nginx-light")
        let directory = try temporaryDirectory(self)
        let port = unusedTCPPort()
        let config = try Programs.nginxConfig(port: port, in: directory)
        let server = try ChildProcess(Programs.nginx, ["-c", config, "-p", directory.path])
        let harness = try TracingHarness(pids: [server.pid])
        XCTAssertTrue(waitUntil { (try? TestSupport.run(Programs.curl, ["-sf", "-o", "/dev/null", "http://127.0.0.1:\(port)/index.html"])) != nil },
                      "nginx did not come up")
        let base = "http://127.0.0.1:\(port)"
        let before = harness.waitForSpans(of: server.pid, kind: .server, count: 1).count
        finish(try gate([Programs.curl, "-s", "-o", "/dev/null", "\(base)/index.html", "\(base)/nothing", "\(base)/index.html?key=k"]))
        let spans = Array(harness.waitForSpans(of: server.pid, kind: .server, count: before + 3).dropFirst(before))
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.urlPath)?.stringValue }, ["/index.html", "/nothing", "/index.html"])
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 404, 200])
        XCTAssertEqual(spans.last.flatMap { attribute($0, SemanticConventions.urlQuery)?.stringValue }, "key=REDACTED")
    }

    /// nginx with `sendfile on` sends a file's bytes with sendfile(2), which names no user buffer: the
    /// capture counts them (sock:sock_send_length fires for it), so a rate-limited download's span ends when
    /// its last byte was sent, not when its head was written.
    func testASendfileDownloadEndsWhenItsBytesWereSent() throws {
        try requireBPF()
        guard FileManager.default.isExecutableFile(atPath: Programs.nginx) else {
            try skipOrFail(kind: "nginx", reason: "nginx is not installed (apt-get install nginx-light)", requiredBy: "TRACER_REQUIRE_BPF")
        }
        let directory = try temporaryDirectory(self)
        let size = 12_000_000
        try Data(repeating: 0x61, count: size).write(to: directory.appendingPathComponent("big.bin"))
        let port = unusedTCPPort()
        let server = try ChildProcess(Programs.nginx, ["-c", try Programs.nginxConfig(port: port, in: directory, sendfile: true), "-p", directory.path])
        XCTAssertTrue(waitUntil { (try? TestSupport.run(Programs.curl, ["-sf", "-o", "/dev/null", "http://127.0.0.1:\(port)/index.html"])) != nil },
                      "nginx did not come up")
        let harness = try TracingHarness(pids: [server.pid])
        let started = Date()
        // 12 MB read at 4 MB/s: about 3 s, of which the socket buffers (up to ~6 MB on loopback) hide the last.
        let reader = try Programs.write(Programs.slowDownload, named: "slow.py", in: directory)
        finish(try gate([Programs.python, reader, "http://127.0.0.1:\(port)/big.bin", "4000000"]))
        let elapsed = Date().timeIntervalSince(started)
        let span = try XCTUnwrap(harness.waitForSpans(of: server.pid, kind: .server, count: 1).last)
        XCTAssertEqual(attribute(span, SemanticConventions.urlPath)?.stringValue, "/big.bin")
        XCTAssertEqual(attribute(span, SemanticConventions.httpResponseStatusCode)?.intValue, 200)
        XCTAssertEqual(attribute(span, SemanticConventions.httpResponseBodySize)?.intValue, Int64(size))
        XCTAssertGreaterThan(span.durationSeconds, 1.2, "the span lasts until the last byte was sent (download \(elapsed) s), not the head's write")
        XCTAssertLessThanOrEqual(span.durationSeconds, elapsed + 0.5)
    }

    /// Bad input on real sockets: garbage, a 64 KiB request written at once, a request whose client vanishes
    /// before the response, and a connection opened before the agent started. Each is counted or traced
    /// correctly; nothing else gives a span.
    func testGarbageLargeWritesVanishedClientsAndOldConnections() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let (server, port) = try pythonServer(directory)
        let script = try Programs.write(Programs.badClients, named: "bad.py", in: directory)
        // A connection opened (and used once) before the agent: its next request is traced.
        let early = try ChildProcess(Programs.python, [script, String(port), "early"])
        XCTAssertEqual(try early.readLine(), "connected")
        let harness = try TracingHarness(pids: [server.pid])
        early.release()
        XCTAssertEqual(early.waitForExit(), 0)
        for mode in ["garbage", "large", "vanish"] {
            finish(try gate([Programs.python, script, String(port), mode]), mode)
        }
        let spans = harness.waitForSpans(of: server.pid, kind: .server, count: 3, timeout: 5)
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.urlPath)?.stringValue }, ["/after-start", "/large", "/slow"], "\(spans)")
        XCTAssertEqual(spans.first { attribute($0, SemanticConventions.urlPath)?.stringValue == "/large" }
            .flatMap { attribute($0, SemanticConventions.httpRequestBodySize)?.intValue }, 65_536)
        XCTAssertEqual(spans.prefix(2).map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 201])
        XCTAssertTrue(waitUntil(timeout: 5) { harness.agent.unclaimedConnections(pid: server.pid) == 1 },
                      "the garbage connection is counted: \(harness.agent.unclaimedConnections(pid: server.pid))")
        let unclaimed = harness.agent.counters.first { $0.tracer == "capture" && $0.counter.name == "unclaimed_connections" }
        XCTAssertEqual(unclaimed?.counter.value(), 1)
    }

    /// A flood overflows a 1 MiB events ring whose reader drains once a second: the kernel-side drops are
    /// counted, yet every exec of a selected binary meanwhile is seen (process events have their own
    /// channel), and spans resume once the load is gone.
    func testARingFloodDropsCountedEventsButNoExecAndSpansResume() throws {
        try requireBPF()
        try requireExecutable(Programs.nginx, package: "nginx-light")
        try requireExecutable("/usr/bin/wrk", package: "wrk")
        let directory = try temporaryDirectory(self)
        let port = 20_000 + Int((getpid() + 11) % 20_000)
        let server = try ChildProcess(Programs.nginx, ["-c", try Programs.nginxConfig(port: port, in: directory), "-p", directory.path])
        let base = "http://127.0.0.1:\(port)/index.html"
        XCTAssertTrue(waitUntil { (try? TestSupport.run(Programs.curl, ["-sf", "-o", "/dev/null", base])) != nil }, "nginx did not come up")
        let target = directory.appendingPathComponent("flood-target")
        try FileManager.default.copyItem(atPath: "/bin/sleep", toPath: target.path)
        let collector = SpanCollector()
        let agent = try Agent(.init(
            selection: Selection(rules: [SelectionRule(pids: [server.pid]), SelectionRule(exePath: "*/flood-target")]),
            tracers: TracerRegistry.all, sinks: [collector],
            channel: .init(transport: .ringBuffer(bytes: 1 << 20), wakeupBytes: 1 << 40), // no early wakeup
            rescanInterval: .seconds(600), drainInterval: .seconds(1)))
        try agent.start()
        defer { agent.stop(flushTimeout: .seconds(1)) }

        let wrk = Process()
        wrk.executableURL = URL(fileURLWithPath: "/usr/bin/wrk")
        wrk.arguments = ["-t1", "-c8", "-d4s", base]
        wrk.standardOutput = FileHandle.nullDevice
        try wrk.run()
        var sleepers: [Process] = []
        defer { sleepers.forEach { $0.terminate() } }
        for _ in 0..<20 {
            let sleeper = Process()
            sleeper.executableURL = target
            sleeper.arguments = ["60"]
            try sleeper.run()
            sleepers.append(sleeper)
            usleep(100_000)
        }
        wrk.waitUntilExit()
        let pids = Set(sleepers.map(\.processIdentifier))
        XCTAssertTrue(waitUntil(timeout: 5) { pids.isSubset(of: Set(agent.selectedProcesses.map(\.pid))) },
                      "every exec seen despite the flood: \(pids.subtracting(agent.selectedProcesses.map(\.pid)))")
        XCTAssertGreaterThan(agent.metricsSnapshot.eventsDroppedKernel, 0, "the flood overflowed the 1 MiB ring")
        usleep(1_500_000)
        let before = collector.spans.filter { $0.kind == .server }.count
        for _ in 0..<3 { _ = try? TestSupport.run(Programs.curl, ["-s", "-o", "/dev/null", base]) }
        XCTAssertTrue(waitUntil(timeout: 5) { collector.spans.filter { $0.kind == .server }.count >= before + 3 }, "spans resume")
    }

    func testProcessesNotSelectedProduceNothing() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let (server, port) = try pythonServer(directory)
        let (other, otherPort) = try pythonServer(directory)
        let harness = try TracingHarness(pids: [other.pid])
        let curl = finish(try gate([Programs.curl, "-s", "-o", "/dev/null", "http://127.0.0.1:\(port)/hello"]))
        // A selected process on the same machine proves the probes were live meanwhile.
        finish(try gate([Programs.curl, "-s", "-o", "/dev/null", "http://127.0.0.1:\(otherPort)/hello"]))
        XCTAssertEqual(harness.waitForSpans(of: other.pid, kind: .server, count: 1).count, 1)
        XCTAssertTrue(harness.spans(of: server.pid).isEmpty)
        XCTAssertTrue(harness.spans(of: curl.pid).isEmpty)
    }
}
