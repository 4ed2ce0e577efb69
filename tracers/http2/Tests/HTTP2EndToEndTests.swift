import Foundation
import Telemetry
import TestSupport
import TracerFramework
import XCTest

/// HTTP/2 in cleartext (h2c, prior knowledge) between real programs, traced through the real framework:
/// Node's `http2` server and client, three streams one after another on one connection. (curl 7.88 with
/// `--http2-prior-knowledge` and several URLs fails on the second transfer of its reused connection, exit 16,
/// whoever serves it.)
final class HTTP2EndToEndTests: XCTestCase {
    static let server = """
        const http2 = require('http2');
        const server = http2.createServer();
        server.on('stream', (stream, headers) => {
          const path = headers[':path'];
          if (path.startsWith('/missing')) { stream.respond({ ':status': 404 }); stream.end('no'); return; }
          stream.respond({ ':status': 200, 'content-type': 'text/plain' });
          stream.end('hello ' + path);
        });
        server.listen(0, '127.0.0.1', () => console.log(server.address().port));
        """

    /// `node client.js PORT`: GET /a, /b?token=secret and /missing in turn on one session.
    static let client = """
        const http2 = require('http2');
        const session = http2.connect('http://127.0.0.1:' + process.argv[2]);
        const paths = ['/a', '/b?token=secret', '/missing'];
        function next(index) {
          if (index === paths.length) { session.close(); return; }
          const request = session.request({ ':path': paths[index] });
          request.on('response', () => {});
          request.resume();
          request.on('end', () => next(index + 1));
          request.end();
        }
        next(0);
        """

    func testNodeH2CServerAndClientGiveOneSpanPerStreamOnBothSides() throws {
        try requireBPF()
        try requireExecutable("/usr/bin/node", package: "nodejs")
        let directory = try temporaryDirectory(self)
        let script = directory.appendingPathComponent("h2c.js")
        try Self.server.write(to: script, atomically: true, encoding: .utf8)
        let server = try ChildProcess("/usr/bin/node", [script.path])
        let port = try server.port()
        let clientScript = directory.appendingPathComponent("client.js")
        try Self.client.write(to: clientScript, atomically: true, encoding: .utf8)
        // Held until selected: then one session, three streams.
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec /usr/bin/node \"$0\" \(port)", clientScript.path])
        let harness = try TracingHarness(pids: [server.pid, client.pid])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)

        let serverSpans = harness.waitForSpans(of: server.pid, kind: .server, count: 3).sorted { $0.startTimeUnixNano < $1.startTimeUnixNano }
        XCTAssertEqual(serverSpans.count, 3, "\(harness.spans(of: server.pid))")
        XCTAssertEqual(serverSpans.compactMap { $0.attributes[SemanticConventions.urlPath]?.stringValue }, ["/a", "/b", "/missing"])
        XCTAssertEqual(serverSpans.compactMap { $0.attributes[SemanticConventions.httpResponseStatusCode]?.intValue }, [200, 200, 404])
        for span in serverSpans {
            XCTAssertEqual(span.attributes[SemanticConventions.httpRequestMethod]?.stringValue, "GET", "\(span)")
            XCTAssertEqual(span.attributes[SemanticConventions.networkProtocolVersion]?.stringValue, "2", "\(span)")
            XCTAssertEqual(span.attributes[SemanticConventions.serverPort]?.intValue, Int64(port), "\(span)")
        }
        XCTAssertFalse("\(serverSpans[1])".contains("secret"), "query values are redacted: \(serverSpans[1])")

        let clientSpans = harness.waitForSpans(of: client.pid, kind: .client, count: 3).sorted { $0.startTimeUnixNano < $1.startTimeUnixNano }
        XCTAssertEqual(clientSpans.count, 3, "\(harness.spans(of: client.pid))")
        XCTAssertEqual(clientSpans.compactMap { $0.attributes[SemanticConventions.httpResponseStatusCode]?.intValue }, [200, 200, 404])
        XCTAssertEqual(clientSpans.compactMap { $0.attributes[SemanticConventions.networkProtocolVersion]?.stringValue }, ["2", "2", "2"])
        XCTAssertTrue(clientSpans.allSatisfy { $0.kind == .client && $0.endTimeUnixNano >= $0.startTimeUnixNano }, "\(clientSpans)")
        XCTAssertEqual(harness.agent.unclaimedConnections(pid: client.pid), 0)
    }
}
