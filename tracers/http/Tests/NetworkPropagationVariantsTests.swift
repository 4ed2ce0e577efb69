import Foundation
import Telemetry
import TestSupport
import TracerFramework
import XCTest

/// `--context-propagation network` in the other places its ids are decided: the syscall-tracepoint hooks
/// (the last resort, on kernels without socket tracepoints) and a TLS server whose plaintext libssl reads.
/// A traced Python server (``SameHostLinkingEndToEndTests/pythonServer``, `/call?to=URL`) calls an untraced
/// downstream that prints the traceparent it got: the line names the traced client span, which is the child of
/// the server span that made the call.
final class NetworkPropagationVariantsTests: XCTestCase {
    /// Prints its port, then for each request the value of its traceparent header ("none" without one).
    static let recorder = #"""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass
        def do_GET(self):
            print(self.headers.get_all("traceparent") or "none", flush=True)
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """#

    private func checkChain(hooks: CaptureHooks?, tls: Bool) throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let recorder = try ChildProcess(Programs.python, [try Programs.write(Self.recorder, named: "recorder.py", in: directory)])
        let downstream = try recorder.port()
        let certificate = tls ? try Programs.certificate(in: directory) : nil
        let caller = try ChildProcess(Programs.python, [try Programs.write(SameHostLinkingEndToEndTests.pythonServer, named: "caller.py", in: directory), "0"]
                                      + (certificate.map { [$0.cert, $0.key] } ?? []))
        let port = try caller.port()
        let harness = try TracingHarness(pids: [caller.pid], captureHooks: hooks, contextPropagation: .network)
        XCTAssertTrue(harness.agent.networkPropagation.isOn)

        let callee = "http://127.0.0.1:\(downstream)/down".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        let answer = try TestSupport.run("/usr/bin/curl", ["-sk", "\(tls ? "https" : "http")://127.0.0.1:\(port)/call?to=\(callee)"])
        XCTAssertEqual(answer, "upstream 200")
        let received = try recorder.readLine()
        let servers = harness.waitForSpans(of: caller.pid, kind: .server, count: 1)
        let clients = harness.waitForSpans(of: caller.pid, kind: .client, count: 1)
        XCTAssertEqual(servers.count, 1)
        XCTAssertEqual(clients.count, 1)
        let server = try XCTUnwrap(servers.first), client = try XCTUnwrap(clients.first)
        XCTAssertEqual(received, "['00-\(client.traceID)-\(client.spanID)-01']", "exactly one traceparent, naming the client span")
        XCTAssertEqual(client.traceID, server.traceID)
        XCTAssertEqual(client.parentSpanID, server.spanID)
        XCTAssertEqual(client.attributes[ParentSource.attribute]?.stringValue, "injected")
        XCTAssertEqual(client.attributes["url.full"]?.stringValue, "http://127.0.0.1:\(downstream)/down")
    }

    func testTheSyscallTracepointHooksDecideAndInsertToo() throws {
        try checkChain(hooks: .syscallTracepoints, tls: false)
    }

    func testCallsOfATLSServerAreChildrenOfItsRequestRead() throws {
        try checkChain(hooks: nil, tls: true)
    }
}
