import Foundation
import Telemetry
import TestSupport
import TracerFramework
import XCTest

/// Debian's Caddy as a reverse proxy in front of Debian's prometheus-node-exporter, both traced (two stripped
/// go1.19 programs): one trace from Caddy's server span through its client call to node-exporter's server span,
/// without writing into either process. A `traceparent` the caller sends parents Caddy's server span, and
/// node-exporter's span stays the child of Caddy's client span (same-host linking wins over the forwarded header,
/// which names the caller's span).
final class CaddyReverseProxyTests: XCTestCase {
    func testNodeExporterBehindCaddyIsTheChildOfCaddysClientCallWithAndWithoutATraceparent() throws {
        try requireBPF()
        try requireExecutable("/usr/bin/caddy", package: "caddy")
        try requireExecutable("/usr/bin/prometheus-node-exporter", package: "prometheus-node-exporter")
        let directory = try temporaryDirectory(self)
        let exporterPort = unusedTCPPort()
        let exporter = try ChildProcess("/usr/bin/prometheus-node-exporter", ["--web.listen-address=127.0.0.1:\(exporterPort)",
                                                                             "--collector.disable-defaults", "--collector.loadavg"])
        let proxyPort = unusedTCPPort()
        let caddyfile = directory.appendingPathComponent("Caddyfile")
        try """
        {
        \tadmin off
        \tauto_https off
        \tstorage file_system \(directory.path)/data
        }
        http://127.0.0.1:\(proxyPort) {
        \tbind 127.0.0.1
        \treverse_proxy 127.0.0.1:\(exporterPort)
        }
        """.write(to: caddyfile, atomically: true, encoding: .utf8)
        // env keeps the PID (it execs Caddy) and points Caddy's home at the test's directory.
        let caddy = try ChildProcess("/usr/bin/env", ["HOME=\(directory.path)", "XDG_DATA_HOME=\(directory.path)/data",
                                                      "XDG_CONFIG_HOME=\(directory.path)/config", "/usr/bin/caddy", "run",
                                                      "--config", caddyfile.path, "--adapter", "caddyfile"])
        let url = "http://127.0.0.1:\(proxyPort)/metrics"
        XCTAssertTrue(waitUntil(timeout: 20) { (try? curl([url]))?.contains("node_load1") == true }, "Caddy proxies node-exporter")

        let harness = try TracingHarness(pids: [caddy.pid, exporter.pid])
        let caller = (traceID: "0af7651916cd43dd8448eb211c80319c", spanID: "b7ad6b7169203331")
        try curl(["-o", "/dev/null", url])
        try curl(["-o", "/dev/null", "-H", "traceparent: 00-\(caller.traceID)-\(caller.spanID)-01", url])
        _ = harness.waitForSpans(of: exporter.pid, kind: .server, count: 2)
        _ = harness.waitForSpans(of: caddy.pid, count: 4)
        let caddyServers = harness.spans(of: caddy.pid, kind: .server)
        let caddyClients = harness.spans(of: caddy.pid, kind: .client)
        let exporterServers = harness.spans(of: exporter.pid, kind: .server)
        XCTAssertEqual(caddyServers.count, 2, "\(caddyServers.map(\.name))")
        XCTAssertEqual(caddyClients.count, 2, "\(caddyClients.map(\.name))")
        XCTAssertEqual(exporterServers.count, 2, "\(exporterServers.map(\.name))")
        guard caddyServers.count == 2, caddyClients.count == 2, exporterServers.count == 2 else { return }
        func source(_ span: Span) -> String? { span.string(ParentSource.attribute) }
        for index in 0..<2 {
            let (server, client, upstream) = (caddyServers[index], caddyClients[index], exporterServers[index])
            XCTAssertEqual(upstream.string(SemanticConventions.urlPath), "/metrics")
            XCTAssertEqual(upstream.int(SemanticConventions.httpResponseStatusCode), 200)
            // Caddy's client call is the child of the request it serves (the goroutine's), and node-exporter's
            // span the child of that call (the other end of its connection is Caddy's).
            XCTAssertEqual(client.parentSpanID, server.spanID)
            XCTAssertEqual(source(client), "goroutine")
            XCTAssertEqual(upstream.parentSpanID, client.spanID)
            XCTAssertEqual(source(upstream), "same-host-peer")
            XCTAssertEqual(Set([server.traceID, client.traceID, upstream.traceID]).count, 1, "one trace")
        }
        // The first request started the trace at Caddy; the second continues the caller's.
        XCTAssertEqual(caddyServers[0].parentSpanID, .invalid)
        XCTAssertEqual(caddyServers[1].traceID.hex, caller.traceID)
        XCTAssertEqual(caddyServers[1].parentSpanID.hex, caller.spanID)
        XCTAssertEqual(source(caddyServers[1]), "traceparent")
        XCTAssertNotEqual(exporterServers[1].parentSpanID.hex, caller.spanID, "not the caller's child: Caddy forwarded its traceparent")
    }
}
