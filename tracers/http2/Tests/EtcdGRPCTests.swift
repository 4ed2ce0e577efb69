import Foundation
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// gRPC from real Go software: Debian's etcd (grpc-go, HTTP/2 over plain TCP) serving `etcdctl put/get`, both
/// traced: server spans from etcd, client spans from etcdctl, named `{service}/{method}` with the RPC attributes.
final class EtcdGRPCTests: XCTestCase {
    func testEtcdctlPutAndGetGiveRPCSpansOnBothSides() throws {
        try requireBPF()
        try requireExecutable("/usr/bin/etcd", package: "etcd-server")
        try requireExecutable("/usr/bin/etcdctl", package: "etcd-client")
        let directory = try temporaryDirectory(self)
        let (clientPort, peerPort) = (unusedTCPPort(), unusedTCPPort())
        let client = "http://127.0.0.1:\(clientPort)", peer = "http://127.0.0.1:\(peerPort)"
        let etcd = try ChildProcess("/usr/bin/etcd", [
            "--data-dir", directory.appendingPathComponent("data").path, "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default=\(peer)", "--log-level", "error",
        ])
        let etcdctl = ["/usr/bin/env", "ETCDCTL_API=3", "/usr/bin/etcdctl", "--endpoints", "127.0.0.1:\(clientPort)"]
        XCTAssertTrue(waitUntil(timeout: 20) { (try? TestSupport.run(etcdctl[0], Array(etcdctl.dropFirst()) + ["endpoint", "health"]))?.contains("is healthy") == true },
                      "etcd answers")
        // Held until selected; then one put and one get (a missing key too), each its own etcdctl process.
        let commands = "\(etcdctl.joined(separator: " ")) put greeting hello && \(etcdctl.joined(separator: " ")) get greeting"
            + " && \(etcdctl.joined(separator: " ")) get missing"
        let clients = try ChildProcess("/bin/sh", ["-c", "read go; \(commands)"])
        let harness = try TracingHarness(pids: [etcd.pid, clients.pid])
        clients.release()
        XCTAssertEqual(clients.waitForExit(), 0)

        let serverSpans = harness.waitForSpans(of: etcd.pid, kind: .server, count: 3).sorted { $0.startTimeUnixNano < $1.startTimeUnixNano }
        XCTAssertEqual(serverSpans.map(\.name), ["etcdserverpb.KV/Put", "etcdserverpb.KV/Range", "etcdserverpb.KV/Range"],
                       "\(harness.spans(of: etcd.pid).map(\.name))")
        for span in serverSpans {
            XCTAssertEqual(span.attributes[SemanticConventions.rpcSystem]?.stringValue, "grpc")
            XCTAssertEqual(span.attributes[SemanticConventions.rpcService]?.stringValue, "etcdserverpb.KV")
            XCTAssertEqual(span.attributes[SemanticConventions.rpcGRPCStatusCode]?.intValue, 0)
            XCTAssertEqual(span.attributes[SemanticConventions.serverPort]?.intValue, Int64(clientPort))
            XCTAssertEqual(span.status, .unset)
        }
        // etcdctl's children (followed from the selected shell) are the clients: one span per call, and each
        // server span is the child of the client span at the other end of its connection (the short-lived
        // client's network namespace comes with its chunks, so it links even after the client exited).
        let clientSpans = harness.collector.spans.filter { $0.kind == .client && $0.name.hasPrefix("etcdserverpb.KV/") }
        XCTAssertEqual(clientSpans.map(\.name).sorted(), ["etcdserverpb.KV/Put", "etcdserverpb.KV/Range", "etcdserverpb.KV/Range"])
        for span in serverSpans {
            let parent = clientSpans.first { $0.spanID == span.parentSpanID }
            XCTAssertEqual(parent?.name, span.name, "linked to its client call: \(span)")
            XCTAssertEqual(parent?.traceID, span.traceID)
            XCTAssertEqual(span.attributes[ParentSource.attribute]?.stringValue, "same-host-peer")
        }
    }
}
