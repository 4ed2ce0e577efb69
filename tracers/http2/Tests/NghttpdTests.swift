import Foundation
import Telemetry
import TestSupport
import TracerFramework
import XCTest

/// HTTP/2 between nghttp2's own programs (Debian's `nghttp2-server` and `nghttp2-client`), both traced:
/// `nghttpd` serving files in cleartext (h2c, prior knowledge) and over TLS (OpenSSL 3: the plaintext comes
/// from libssl's SSL_read/SSL_write), driven by `nghttp` (several concurrent streams on one connection) and by
/// `h2load`. Exact span counts on both sides, the HTTP attributes, and each server span the child of its client
/// span (same-host linking by stream id, method and path).
final class NghttpdTests: XCTestCase {
    static let nghttpd = "/usr/sbin/nghttpd", nghttp = "/usr/bin/nghttp", h2load = "/usr/bin/h2load"

    /// A directory of files to serve: `index.html` (6 bytes) and `big.txt` (4000 bytes: most of its
    /// DATA frame is past the capture's prefix).
    private func documentRoot() throws -> URL {
        let directory = try temporaryDirectory(self)
        let root = directory.appendingPathComponent("www")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try "hello\n".write(to: root.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
        try String(repeating: "0123456789", count: 400).write(to: root.appendingPathComponent("big.txt"), atomically: true, encoding: .utf8)
        return root
    }

    /// Starts `nghttpd` on an unused port (TLS with a certificate, else h2c) and waits until it answers.
    private func startServer(root: URL, tls: Bool) throws -> (ChildProcess, Int) {
        let port = unusedTCPPort()
        var arguments = ["-d", root.path, "\(port)"]
        if tls {
            let (cert, key) = try Programs.certificate(in: root.deletingLastPathComponent())
            arguments += [key, cert]
        } else {
            arguments.insert("--no-tls", at: 0)
        }
        let server = try ChildProcess(Self.nghttpd, arguments)
        let url = "\(tls ? "https" : "http")://127.0.0.1:\(port)/index.html"
        XCTAssertTrue(waitUntil(timeout: 10) { (try? TestSupport.run(Self.nghttp, ["-n", url])) != nil }, "nghttpd answers on \(port)")
        return (server, port)
    }

    private func requirePrograms() throws {
        try requireBPF()
        try requireExecutable(Self.nghttpd, package: "nghttp2-server")
        try requireExecutable(Self.nghttp, package: "nghttp2-client")
        try requireExecutable(Self.h2load, package: "nghttp2-client")
    }

    /// `nghttp -n -m 3` with three URIs: nine streams at once on one connection (and nghttp's PRIORITY frames
    /// for its idle dependency streams), 200, 200 and 404 three times each.
    private func checkNghttp(tls: Bool) throws {
        try requirePrograms()
        let root = try documentRoot()
        let (server, port) = try startServer(root: root, tls: tls)
        let scheme = tls ? "https" : "http"
        let base = "\(scheme)://127.0.0.1:\(port)"
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \(Self.nghttp) -n -m 3 \(base)/index.html \(base)/big.txt \(base)/missing"])
        let harness = try TracingHarness(pids: [server.pid, client.pid])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)

        let serverSpans = harness.waitForSpans(of: server.pid, kind: .server, count: 9)
        XCTAssertEqual(serverSpans.count, 9, "\(serverSpans)")
        var statusByPath: [String: [Int64]] = [:]
        for span in serverSpans {
            let path = span.attributes[SemanticConventions.urlPath]?.stringValue ?? "?"
            statusByPath[path, default: []].append(span.attributes[SemanticConventions.httpResponseStatusCode]?.intValue ?? 0)
            XCTAssertEqual(span.name, "GET")
            XCTAssertEqual(span.attributes[SemanticConventions.httpRequestMethod]?.stringValue, "GET", "\(span)")
            XCTAssertEqual(span.attributes[SemanticConventions.networkProtocolVersion]?.stringValue, "2", "\(span)")
            XCTAssertEqual(span.attributes[SemanticConventions.urlScheme]?.stringValue, scheme, "\(span)")
            XCTAssertEqual(span.attributes[SemanticConventions.serverPort]?.intValue, Int64(port), "\(span)")
            XCTAssertEqual(span.attributes[SemanticConventions.clientAddress]?.stringValue, "127.0.0.1", "\(span)")
            XCTAssertEqual(span.status, .unset, "a 404 is no server error: \(span)")
            XCTAssertEqual(span.resource.attributes[SemanticConventions.processExecutableName]?.stringValue, "nghttpd")
        }
        XCTAssertEqual(statusByPath, ["/index.html": [200, 200, 200], "/big.txt": [200, 200, 200], "/missing": [404, 404, 404]])
        // The body is counted from DATA frame headers, past the captured prefix; when nghttpd's one write of
        // several responses loses frame headers past the prefix, the size is unknown, never a wrong number.
        let bodySizes = Set(serverSpans.filter { $0.attributes[SemanticConventions.urlPath]?.stringValue != "/missing" }
                                       .map { $0.attributes[SemanticConventions.httpResponseBodySize]?.intValue })
        XCTAssertTrue(bodySizes.isSubset(of: [6, 4000, nil]), "\(bodySizes)")
        XCTAssertTrue(bodySizes.contains(6), "\(bodySizes)")

        let clientSpans = harness.waitForSpans(of: client.pid, kind: .client, count: 9)
        XCTAssertEqual(clientSpans.count, 9, "\(clientSpans)")
        var statusByURL: [String: [Int64]] = [:]
        for span in clientSpans {
            statusByURL[span.attributes[SemanticConventions.urlFull]?.stringValue ?? "?", default: []]
                .append(span.attributes[SemanticConventions.httpResponseStatusCode]?.intValue ?? 0)
            XCTAssertEqual(span.attributes[SemanticConventions.networkProtocolVersion]?.stringValue, "2", "\(span)")
            XCTAssertEqual(span.attributes[SemanticConventions.serverAddress]?.stringValue, "127.0.0.1", "\(span)")
            XCTAssertEqual(span.attributes[SemanticConventions.serverPort]?.intValue, Int64(port), "\(span)")
        }
        XCTAssertEqual(statusByURL, ["\(base)/index.html": [200, 200, 200], "\(base)/big.txt": [200, 200, 200],
                                     "\(base)/missing": [404, 404, 404]])
        XCTAssertEqual(clientSpans.filter { $0.status != .unset }.count, 3, "a 404 is a client error")
        // Each server span is the child of the client span of its stream. Over TLS only when the client's
        // SSL_write returned before nghttpd answered: libssl's plaintext is emitted at the uretprobe, and a
        // server span that ended before its client's request was seen stays unlinked (never wrongly linked).
        for span in serverSpans where !tls || span.parentSpanID != .invalid {
            let parent = clientSpans.first { $0.spanID == span.parentSpanID }
            XCTAssertNotNil(parent, "linked to its client stream: \(span)")
            XCTAssertEqual(parent?.traceID, span.traceID)
            XCTAssertEqual(parent?.attributes[SemanticConventions.urlFull]?.stringValue,
                           "\(base)\(span.attributes[SemanticConventions.urlPath]?.stringValue ?? "?")")
            XCTAssertEqual(span.attributes[ParentSource.attribute]?.stringValue, "same-host-peer")
        }
        XCTAssertEqual(harness.agent.unclaimedConnections(pid: client.pid), 0)
    }

    func testNghttpAgainstNghttpdInCleartextGivesOneSpanPerStreamOnBothSides() throws {
        try checkNghttp(tls: false)
    }

    func testNghttpAgainstNghttpdOverTLSGivesOneSpanPerStreamOnBothSides() throws {
        try checkNghttp(tls: true)
    }

    /// `h2load -n 60 -c 2 -m 5`: two connections, five streams at once on each; as many spans as requests on
    /// each side, all linked.
    func testH2loadAgainstNghttpdGivesAsManySpansAsRequests() throws {
        try requirePrograms()
        let root = try documentRoot()
        let (server, port) = try startServer(root: root, tls: false)
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \(Self.h2load) -n 60 -c 2 -m 5 http://127.0.0.1:\(port)/index.html"])
        let harness = try TracingHarness(pids: [server.pid, client.pid])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)
        XCTAssertTrue(client.output().contains("60 succeeded"))

        let serverSpans = harness.waitForSpans(of: server.pid, kind: .server, count: 60)
        XCTAssertEqual(serverSpans.count, 60)
        XCTAssertTrue(serverSpans.allSatisfy {
            $0.attributes[SemanticConventions.urlPath]?.stringValue == "/index.html"
                && $0.attributes[SemanticConventions.httpResponseStatusCode]?.intValue == 200
                && $0.attributes[SemanticConventions.networkProtocolVersion]?.stringValue == "2"
        }, "\(serverSpans)")
        let clientSpans = harness.waitForSpans(of: client.pid, kind: .client, count: 60)
        XCTAssertEqual(clientSpans.count, 60)
        let clientIDs = Set(clientSpans.map(\.spanID))
        XCTAssertEqual(Set(serverSpans.map(\.parentSpanID)).subtracting(clientIDs), [], "every server span has its client span as parent")
        XCTAssertEqual(Set(serverSpans.map(\.parentSpanID)).count, 60)
    }
}
