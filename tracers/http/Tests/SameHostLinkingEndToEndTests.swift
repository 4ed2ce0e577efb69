import Foundation
import Telemetry
import TestSupport
import TracerFramework
import XCTest

/// Same-host linking end to end (real BPF, real processes, one agent): a Python server calling a Go server and
/// a Go server calling a Python server give one trace across the two processes; a client killed mid-request,
/// a connection tuple reused fifty times, and equal ports in another network namespace never give a wrong parent.
/// (``SameHostLinkingReplayTests`` replays recorded events through the linking rules; these run the kernel.)
final class SameHostLinkingEndToEndTests: XCTestCase {
    /// A threading `http.server` on 127.0.0.1 (port `argv[1]`, 0: any; prints it; HTTPS with a certificate and
    /// key in `argv[2]`, `argv[3]`): `/call?to=URL` fetches URL with urllib from the handler's thread, `/slow`
    /// answers after 0.5 s, anything else answers `ok`. Connections reset by their client are not reported.
    static let pythonServer = #"""
    import http.server, socketserver, ssl, sys, time, urllib.parse, urllib.request

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *args):
            pass
        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            body = b"ok\n"
            if url.path == "/call":
                with urllib.request.urlopen(urllib.parse.parse_qs(url.query)["to"][0]) as response:
                    response.read()
                    body = b"upstream %d" % response.status
            elif url.path == "/slow":
                time.sleep(0.5)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        def handle_error(self, request, address):
            pass

    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    if len(sys.argv) == 4:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """#

    /// Raw-socket HTTP/1.1 clients: `argv[1]` the mode, `argv[2]` the server's port.
    /// `reuse PORT LOCAL COUNT`: COUNT sequential `GET /r/I`, each on a new connection bound to 127.0.0.1:LOCAL
    /// and closed with a reset (SO_LINGER 0: no TIME_WAIT, so the next connection takes the same tuple);
    /// prints each connection's local port. `killed PORT`: sends `GET /slow` and kills itself with SIGKILL
    /// before the answer. `hold PORT LOCAL`: `GET /same` from 127.0.0.1:LOCAL, prints `answered`, keeps
    /// the connection open until a line on stdin. `once PORT LOCAL`: the same request, then closes.
    static let rawClient = #"""
    import os, signal, socket, struct, sys, time

    def connect(port, local):
        for attempt in range(200):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            try:
                s.bind(("127.0.0.1", local))
                s.connect(("127.0.0.1", port))
                return s
            except OSError:
                s.close()
                time.sleep(0.01)
        raise SystemExit("no connection from port %d" % local)

    def request(s, path, port):
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (path, port)).encode())

    def answer(s):
        data = b""
        while not data.endswith(b"ok\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("connection closed before the answer")
            data += chunk

    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "reuse":
        local, count = int(sys.argv[3]), int(sys.argv[4])
        for i in range(count):
            s = connect(port, local)
            request(s, "/r/%d" % i, port)
            answer(s)
            print(s.getsockname()[1], flush=True)
            s.close()
    elif mode == "killed":
        s = socket.create_connection(("127.0.0.1", port))
        request(s, "/slow", port)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        s = connect(port, int(sys.argv[3]))
        request(s, "/same", port)
        answer(s)
        if mode == "hold":
            print("answered", flush=True)
            sys.stdin.readline()
        s.close()
    """#

    private static let python = "/usr/bin/python3"

    private func pythonServer(_ directory: URL, port: Int = 0, namespace: String? = nil) throws -> (server: ChildProcess, port: Int) {
        let script = try Programs.write(Self.pythonServer, named: "server.py", in: directory)
        let command = [Self.python, script, String(port)]
        // `ip netns exec` enters the namespace and execs the command: the PID stays.
        let server = try namespace.map { try ChildProcess("/usr/sbin/ip", ["netns", "exec", $0] + command) } ?? ChildProcess(command[0], Array(command.dropFirst()))
        return (server, try server.port())
    }

    /// A client held at `read` until released (`exec` keeps the PID), so it is selected before it sends.
    private func gatedClient(_ directory: URL, _ arguments: [String]) throws -> ChildProcess {
        let script = try Programs.write(Self.rawClient, named: "client.py", in: directory)
        return try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", Self.python, script] + arguments)
    }

    private func source(_ span: Span) -> String? { span.string(ParentSource.attribute) }

    private func spans(_ harness: TracingHarness, _ pid: Int32, _ kind: SpanKind, path: String) -> [Span] {
        harness.spans(of: pid, kind: kind).filter {
            $0.string(SemanticConventions.urlPath) == path || ($0.string(SemanticConventions.urlFull) ?? "").hasSuffix(path)
        }
    }

    private func counter(_ harness: TracingHarness, _ name: String) -> UInt64 {
        harness.agent.counters.first { $0.counter.name == name }?.counter.value() ?? 0
    }

    /// The Go fixture server and the Python server (on `port`), both traced.
    private func tracedGoAndPythonServers() throws -> (go: GoServerProcess, python: ChildProcess, port: Int, harness: TracingHarness) {
        try requireBPF()
        try requireExecutable(Self.python, package: "python3")
        let go = try GoServerProcess(binary: try GoServerBuild.binary(stripped: false))
        let (python, port) = try pythonServer(try temporaryDirectory(self))
        return (go, python, port, try TracingHarness(pids: [python.pid, go.pid]))
    }

    /// Python's urllib call from a request handler to a Go net/http server: the call is the child of the request
    /// its thread serves, and the Go server span the child of the call (the other end of its connection): one trace.
    func testGoServerIsTheChildOfAPythonUrllibCall() throws {
        let (go, python, port, harness) = try tracedGoAndPythonServers()
        let upstream = "\(go.base)/hello".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        XCTAssertEqual(try curl(["http://127.0.0.1:\(port)/call?to=\(upstream)"]), "upstream 200")

        let goServers = harness.waitForSpans(of: go.pid, kind: .server, count: 1)
        let pythonClients = harness.waitForSpans(of: python.pid, kind: .client, count: 1)
        let pythonServers = harness.waitForSpans(of: python.pid, kind: .server, count: 1)
        XCTAssertEqual(goServers.count, 1, "\(goServers.map(\.name))")
        XCTAssertEqual(pythonClients.count, 1, "\(pythonClients.map(\.name))")
        XCTAssertEqual(pythonServers.count, 1, "\(pythonServers.map(\.name))")
        let (goServer, client, server) = (try XCTUnwrap(goServers.first), try XCTUnwrap(pythonClients.first), try XCTUnwrap(pythonServers.first))
        XCTAssertEqual(server.string(SemanticConventions.urlPath), "/call")
        XCTAssertEqual(goServer.string(SemanticConventions.urlPath), "/hello")
        XCTAssertEqual(client.int(SemanticConventions.httpResponseStatusCode), 200)
        XCTAssertEqual(goServer.parentSpanID, client.spanID)
        XCTAssertEqual(goServer.traceID, client.traceID)
        XCTAssertEqual(source(goServer), "same-host-peer")
        // The urllib call is made on the thread that serves /call: the request that thread serves is its parent.
        XCTAssertEqual(client.parentSpanID, server.spanID)
        XCTAssertEqual(source(client), "goroutine")
        XCTAssertEqual(Set([server.traceID, client.traceID, goServer.traceID]).count, 1, "one trace")
    }

    /// The Go server's client call (from the handler's goroutine) to a Python server: the Python server span is
    /// the child of the Go client span, and all three spans are one trace.
    func testPythonServerIsTheChildOfAGoClientCall() throws {
        let (go, python, port, harness) = try tracedGoAndPythonServers()
        let upstream = "http://127.0.0.1:\(port)/hello".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        XCTAssertEqual(try curl(["\(go.base)/proxy?to=\(upstream)"]), "upstream 200")

        let pythonServers = harness.waitForSpans(of: python.pid, kind: .server, count: 1)
        let goSpans = harness.waitForSpans(of: go.pid, count: 2)
        XCTAssertEqual(pythonServers.count, 1, "\(pythonServers.map(\.name))")
        XCTAssertEqual(goSpans.count, 2, "\(goSpans.map(\.name))")
        let upstreamSpan = try XCTUnwrap(pythonServers.first)
        let goServer = try XCTUnwrap(goSpans.first { $0.kind == .server })
        let goClient = try XCTUnwrap(goSpans.first { $0.kind == .client })
        XCTAssertEqual(upstreamSpan.string(SemanticConventions.urlPath), "/hello")
        XCTAssertEqual(goClient.parentSpanID, goServer.spanID)
        XCTAssertEqual(upstreamSpan.parentSpanID, goClient.spanID)
        XCTAssertEqual(source(upstreamSpan), "same-host-peer")
        XCTAssertEqual(Set([goServer.traceID, goClient.traceID, upstreamSpan.traceID]).count, 1, "one trace")
    }

    /// A traced client killed (SIGKILL) after sending its request, before the answer: the server still makes its
    /// span, and the next client's request on the same server links to that client only.
    func testAClientKilledMidRequestLeavesNoWrongLink() throws {
        try requireBPF()
        try requireExecutable(Self.python, package: "python3")
        let directory = try temporaryDirectory(self)
        let (server, port) = try pythonServer(directory)
        let killed = try gatedClient(directory, ["killed", String(port)])
        let next = try gatedClient(directory, ["once", String(port), String(unusedTCPPort())])
        let harness = try TracingHarness(pids: [server.pid, killed.pid, next.pid])
        killed.release()
        XCTAssertNotNil(killed.waitForExit())
        XCTAssertEqual(killed.process.terminationReason, .uncaughtSignal)
        next.release()
        XCTAssertEqual(next.waitForExit(), 0)

        let servers = harness.waitForSpans(of: server.pid, kind: .server, count: 2)
        let victim = try XCTUnwrap(spans(harness, server.pid, .server, path: "/slow").first, "the interrupted request still gives a span: \(servers.map(\.name))")
        let answered = try XCTUnwrap(spans(harness, server.pid, .server, path: "/same").first)
        let nextClient = try XCTUnwrap(harness.waitForSpans(of: next.pid, kind: .client, count: 1).first)
        XCTAssertEqual(answered.parentSpanID, nextClient.spanID)
        XCTAssertEqual(source(answered), "same-host-peer")
        XCTAssertNotEqual(victim.parentSpanID, nextClient.spanID)
        XCTAssertNotEqual(victim.traceID, nextClient.traceID)
        // The interrupted request's server span is the child of the killed client's span, or starts a trace.
        let killedClients = harness.spans(of: killed.pid, kind: .client)
        XCTAssertTrue(victim.parentSpanID == .invalid || (source(victim) == "same-host-peer" && killedClients.map(\.spanID).contains(victim.parentSpanID)),
                      "\(victim.parentSpanID.hex) \(source(victim) ?? "-") killed client spans: \(killedClients.map(\.spanID.hex))")
    }

    /// Fifty sequential connections from the same local port to the same server (the same tuple each time, one
    /// after the other's reset): every server span is the child of its own client span, never another's.
    func testEveryConnectionOfAReusedTupleLinksToItsOwnClientSpan() throws {
        try requireBPF()
        try requireExecutable(Self.python, package: "python3")
        let directory = try temporaryDirectory(self)
        let (server, port) = try pythonServer(directory)
        let count = 50
        let client = try gatedClient(directory, ["reuse", String(port), String(unusedTCPPort()), String(count)])
        let harness = try TracingHarness(pids: [server.pid, client.pid])
        client.release()
        XCTAssertEqual(client.waitForExit(timeout: 30), 0)
        XCTAssertEqual(Set(client.output().split(separator: "\n")).count, 1, "every connection from the same local port")

        let servers = harness.waitForSpans(of: server.pid, kind: .server, count: count)
        let clients = harness.waitForSpans(of: client.pid, kind: .client, count: count)
        XCTAssertEqual(servers.count, count)
        XCTAssertEqual(clients.count, count)
        for index in 0..<count {
            let path = "/r/\(index)"
            guard let serverSpan = spans(harness, server.pid, .server, path: path).first,
                  let clientSpan = spans(harness, client.pid, .client, path: path).first else {
                XCTFail("no server or client span for \(path)")
                continue
            }
            XCTAssertEqual(serverSpan.parentSpanID, clientSpan.spanID, path)
            XCTAssertEqual(serverSpan.traceID, clientSpan.traceID, path)
            XCTAssertEqual(source(serverSpan), "same-host-peer", path)
        }
        XCTAssertEqual(Set(servers.map(\.parentSpanID)).count, count, "no client span is the parent of two server spans")
    }

    /// A traced client on the host holds a connection 127.0.0.1:L → 127.0.0.1:P open while, in another network
    /// namespace, an untraced client sends the same request over the same tuple to a traced server: that server
    /// span is not linked to the host client (counted in `same_host_other_namespace`).
    func testEqualTuplesInAnotherNetworkNamespaceNeverLink() throws {
        try requireBPF()
        try requireExecutable(Self.python, package: "python3")
        try requireExecutable("/usr/sbin/ip", package: "iproute2")
        let directory = try temporaryDirectory(self)
        let namespace = "tracer-link-\(getpid())"
        _ = try? TestSupport.run("/usr/sbin/ip", ["netns", "del", namespace])
        try TestSupport.run("/usr/sbin/ip", ["netns", "add", namespace])
        defer { _ = try? TestSupport.run("/usr/sbin/ip", ["netns", "del", namespace]) }
        try TestSupport.run("/usr/sbin/ip", ["netns", "exec", namespace, "/usr/sbin/ip", "link", "set", "lo", "up"])

        let (hostServer, port) = try pythonServer(directory)
        let (namespacedServer, namespacedPort) = try pythonServer(directory, port: port, namespace: namespace)
        XCTAssertEqual(namespacedPort, port)
        let local = unusedTCPPort()
        let hostClient = try gatedClient(directory, ["hold", String(port), String(local)])
        let harness = try TracingHarness(pids: [hostClient.pid, namespacedServer.pid])
        hostClient.release()
        XCTAssertEqual(try hostClient.readLine(), "answered")
        let script = directory.appendingPathComponent("client.py").path
        try TestSupport.run("/usr/sbin/ip", ["netns", "exec", namespace, Self.python, script, "once", String(port), String(local)])

        let namespacedSpans = harness.waitForSpans(of: namespacedServer.pid, kind: .server, count: 1)
        let hostClients = harness.waitForSpans(of: hostClient.pid, kind: .client, count: 1)
        hostClient.release()
        XCTAssertEqual(hostClient.waitForExit(), 0)
        XCTAssertEqual(namespacedSpans.count, 1)
        XCTAssertEqual(hostClients.count, 1)
        let namespaced = try XCTUnwrap(namespacedSpans.first)
        let hostCall = try XCTUnwrap(hostClients.first)
        XCTAssertEqual(namespaced.string(SemanticConventions.urlPath), "/same")
        XCTAssertEqual(namespaced.parentSpanID, .invalid, "not the host client's child")
        XCTAssertNotEqual(namespaced.traceID, hostCall.traceID)
        XCTAssertNotEqual(source(namespaced), "same-host-peer")
        XCTAssertGreaterThanOrEqual(counter(harness, "same_host_other_namespace"), 1)
        withExtendedLifetime(hostServer) {}
    }
}
