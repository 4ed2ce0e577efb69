import BPFRuntime
import CTracerABI
import Foundation
import Telemetry
import TestSupport
import Tracers
import XCTest

/// End-to-end: real servers and clients, the tracer's probes attached, spans decoded from the events.
final class HTTPTracerTests: XCTestCase {
    private func attribute(_ span: Span, _ key: String) -> AttributeValue? { span.attributes[key] }

    /// A client command held at `read` until its PID is allowed, then released (`exec` keeps the PID).
    @discardableResult
    private func gatedClient(_ harness: HTTPTracerHarness, allow: Bool = true, _ command: [String]) throws -> ChildProcess {
        let child = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\""] + command)
        if allow { try harness.allow(child.pid) }
        child.release()
        XCTAssertEqual(child.waitForExit(), 0, "\(command.joined(separator: " ")) failed")
        return child
    }

    private func pythonServer(_ directory: URL, tls: (cert: String, key: String)? = nil) throws -> (ChildProcess, Int) {
        let script = try Programs.write(Programs.pythonServer, named: "server.py", in: directory)
        let server = try ChildProcess(Programs.python, [script] + (tls.map { [$0.cert, $0.key] } ?? []))
        return (server, try server.port())
    }

    func testPythonServerGivesOneSpanPerRequestWithMethodPathStatusAndKind() throws {
        try checkPythonServer(hooks: .detect())
    }

    /// The hooks of kernels without the socket tracepoints (before Linux 6.4), on this kernel.
    func testPythonServerThroughSyscallTracepoints() throws {
        try checkPythonServer(hooks: .syscallTracepoints)
    }

    func testHTTPSThroughSyscallTracepoints() throws {
        try checkHTTPS(hooks: .syscallTracepoints)
    }

    private func checkPythonServer(hooks: HTTPTracer.Hooks) throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let harness = try HTTPTracerHarness(hooks: hooks)
        let (server, port) = try pythonServer(directory)
        try harness.allow(server.pid)
        let base = "http://127.0.0.1:\(port)"
        // One curl: five requests on one keep-alive connection.
        try gatedClient(harness, allow: false, [Programs.curl, "-s", "-o", "/dev/null",
                                                "\(base)/hello", "\(base)/missing", "\(base)/fail", "\(base)/hello?password=hunter2&x=1",
                                                "\(base)/hello"])
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
        let events = harness.rawEvents(of: server.pid)
        XCTAssertEqual(Set(events.map(\.role)), [UInt8(HTTP_ROLE_SERVER)])
        if hooks == .syscallTracepoints {
            XCTAssertTrue(events.allSatisfy { $0.flags & UInt8(HTTP_FLAG_ACCEPTED) != 0 }, "accept4 seen for the connection")
        }
    }

    func testSlowHandlerShowsInTheDurationAndPostBodyAndTraceparentAreHonoured() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let harness = try HTTPTracerHarness()
        let (server, port) = try pythonServer(directory)
        try harness.allow(server.pid)
        let base = "http://127.0.0.1:\(port)"
        try gatedClient(harness, allow: false, [Programs.curl, "-s", "-o", "/dev/null", "\(base)/slow"])
        try gatedClient(harness, allow: false, [Programs.curl, "-s", "-o", "/dev/null", "\(base)/hello"])
        let body = String(repeating: "b", count: 3000) // more than one read on the server side for large bodies
        try gatedClient(harness, allow: false, [Programs.curl, "-s", "-o", "/dev/null", "-X", "POST", "--data-binary", body,
                                                "-H", "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                                "\(base)/upload"])
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
        let harness = try HTTPTracerHarness()
        let (server, port) = try pythonServer(directory)
        try harness.allow(server.pid)
        let script = try Programs.write(Programs.pipeliningClient, named: "pipeline.py", in: directory)
        let client = try gatedClient(harness, allow: false, [Programs.python, script, String(port)])
        XCTAssertEqual(client.output().trimmingCharacters(in: .whitespacesAndNewlines), "3", "three responses")
        let spans = harness.waitForSpans(of: server.pid, kind: .server, count: 3)
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.urlPath)?.stringValue }, ["/first", "/second", "/fail"])
        XCTAssertEqual(spans.map(\.name), ["GET", "POST", "GET"])
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 201, 500])
        XCTAssertEqual(harness.rawEvents(of: server.pid).map(\.pipeline_index), [0, 1, 2])
    }

    func testClientSpansFromCurlAndPythonUrllib() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let harness = try HTTPTracerHarness()
        let (server, port) = try pythonServer(directory)
        let base = "http://127.0.0.1:\(port)"
        let curl = try gatedClient(harness, [Programs.curl, "-s", "-o", "/dev/null", "\(base)/hello?token=abc", "\(base)/missing"])
        let curlSpans = harness.waitForSpans(of: curl.pid, kind: .client, count: 2)
        XCTAssertEqual(curlSpans.count, 2)
        XCTAssertEqual(curlSpans.map { attribute($0, SemanticConventions.urlFull)?.stringValue },
                       ["\(base)/hello?token=REDACTED", "\(base)/missing"])
        XCTAssertEqual(curlSpans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 404])
        XCTAssertEqual(curlSpans.map(\.status), [.unset, .error(message: "")], "4xx is an error on a client")
        XCTAssertEqual(curlSpans.first.flatMap { attribute($0, SemanticConventions.serverPort)?.intValue }, Int64(port))
        XCTAssertTrue(harness.spans(of: server.pid).isEmpty, "the server was not selected")

        let script = try Programs.write(Programs.pythonClient, named: "client.py", in: directory)
        let python = try gatedClient(harness, [Programs.python, script, "\(base)/hello", "\(base)/fail", "\(base)/slow"])
        let pythonSpans = harness.waitForSpans(of: python.pid, kind: .client, count: 3)
        XCTAssertEqual(pythonSpans.count, 3)
        XCTAssertEqual(pythonSpans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 500, 200])
        XCTAssertEqual(Set(pythonSpans.map(\.name)), ["GET"])
        XCTAssertGreaterThanOrEqual(pythonSpans.last?.durationSeconds ?? 0, 0.050)
    }

    func testNodeFetchClientSpans() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let harness = try HTTPTracerHarness()
        let (server, port) = try pythonServer(directory)
        let base = "http://127.0.0.1:\(port)"
        let script = "(async () => { for (const p of ['/hello', '/missing', '/fail']) { const r = await fetch('\(base)' + p); await r.text(); console.log(r.status); } })()"
        let node = try gatedClient(harness, [Programs.node, "-e", script])
        let spans = harness.waitForSpans(of: node.pid, kind: .client, count: 3)
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.urlFull)?.stringValue }, ["\(base)/hello", "\(base)/missing", "\(base)/fail"])
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 404, 500])
        XCTAssertEqual(spans.map(\.status), [.unset, .error(message: ""), .error(message: "")])
        XCTAssertTrue(harness.spans(of: server.pid).isEmpty, "the server was not selected")
    }

    func testHTTPSServerAndClientThroughLibsslWithoutPlaintextDuplicates() throws {
        try checkHTTPS(hooks: .detect())
    }

    private func checkHTTPS(hooks: HTTPTracer.Hooks) throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let harness = try HTTPTracerHarness(hooks: hooks)
        let (server, port) = try pythonServer(directory, tls: try Programs.certificate(in: directory))
        try harness.allow(server.pid)
        let base = "https://127.0.0.1:\(port)"
        let curl = try gatedClient(harness, [Programs.curl, "-sk", "-o", "/dev/null", "\(base)/hello", "\(base)/fail", "\(base)/slow"])
        let spans = harness.waitForSpans(of: server.pid, kind: .server, count: 3)
        XCTAssertEqual(spans.count, 3, "exactly one span per request: \(spans.map { attribute($0, SemanticConventions.urlPath) ?? "" })")
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.urlPath)?.stringValue }, ["/hello", "/fail", "/slow"])
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 500, 200])
        XCTAssertEqual(Set(spans.compactMap { attribute($0, SemanticConventions.urlScheme)?.stringValue }), ["https"])
        XCTAssertEqual(Set(spans.compactMap { attribute($0, SemanticConventions.serverPort)?.intValue }), [Int64(port)])
        XCTAssertGreaterThanOrEqual(spans.last?.durationSeconds ?? 0, 0.050)
        XCTAssertTrue(harness.rawEvents(of: server.pid).allSatisfy { $0.flags & UInt8(HTTP_FLAG_TLS) != 0 })

        let clientSpans = harness.waitForSpans(of: curl.pid, kind: .client, count: 3)
        XCTAssertEqual(clientSpans.count, 3)
        XCTAssertEqual(clientSpans.map { attribute($0, SemanticConventions.urlFull)?.stringValue },
                       ["\(base)/hello", "\(base)/fail", "\(base)/slow"])
    }

    func testNodeServer() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let harness = try HTTPTracerHarness()
        let script = try Programs.write(Programs.nodeServer, named: "server.js", in: directory)
        let server = try ChildProcess(Programs.node, [script])
        let port = try server.port()
        try harness.allow(server.pid)
        let base = "http://127.0.0.1:\(port)"
        let urls = (0..<8).map { "\(base)/item/\($0)" } + ["\(base)/fail"]
        try gatedClient(harness, allow: false, [Programs.curl, "-s", "-o", "/dev/null"] + urls)
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
        let harness = try HTTPTracerHarness()
        let port = 20_000 + Int(getpid() % 20_000)
        let config = try Programs.nginxConfig(port: port, in: directory)
        let server = try ChildProcess(Programs.nginx, ["-c", config, "-p", directory.path])
        try harness.allow(server.pid)
        XCTAssertTrue(waitUntil { (try? TestSupport.run(Programs.curl, ["-sf", "-o", "/dev/null", "http://127.0.0.1:\(port)/index.html"])) != nil },
                      "nginx did not come up")
        let base = "http://127.0.0.1:\(port)"
        let before = harness.waitForSpans(of: server.pid, kind: .server, count: 1).count
        try gatedClient(harness, allow: false, [Programs.curl, "-s", "-o", "/dev/null", "\(base)/index.html", "\(base)/nothing", "\(base)/index.html?key=k"])
        let spans = Array(harness.waitForSpans(of: server.pid, kind: .server, count: before + 3).dropFirst(before))
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.urlPath)?.stringValue }, ["/index.html", "/nothing", "/index.html"])
        XCTAssertEqual(spans.map { attribute($0, SemanticConventions.httpResponseStatusCode)?.intValue }, [200, 404, 200])
        XCTAssertEqual(spans.last.flatMap { attribute($0, SemanticConventions.urlQuery)?.stringValue }, "key=REDACTED")
    }

    func testProcessesNotAllowedProduceNothing() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let harness = try HTTPTracerHarness()
        let (server, port) = try pythonServer(directory)
        let curl = try gatedClient(harness, allow: false, [Programs.curl, "-s", "-o", "/dev/null", "http://127.0.0.1:\(port)/hello"])
        // A selected process on the same machine proves the probes were live meanwhile.
        let (other, otherPort) = try pythonServer(directory)
        try harness.allow(other.pid)
        try gatedClient(harness, allow: false, [Programs.curl, "-s", "-o", "/dev/null", "http://127.0.0.1:\(otherPort)/hello"])
        XCTAssertEqual(harness.waitForSpans(of: other.pid, kind: .server, count: 1).count, 1)
        XCTAssertTrue(harness.rawEvents(of: server.pid).isEmpty)
        XCTAssertTrue(harness.rawEvents(of: curl.pid).isEmpty)
    }
}
