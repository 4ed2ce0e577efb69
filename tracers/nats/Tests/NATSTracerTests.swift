import Foundation
import Glibc
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// Debian's nats-server started by the tests, with Python's nats-py publishers and subscribers traced end to end.
final class NATSTracerTests: XCTestCase {
    private func attribute(_ span: Span?, _ key: String) -> String? { span?.attributes[key]?.stringValue }

    /// nats-server on 127.0.0.1:`port` (a kernel-assigned port), logging into `directory`, with `configuration`.
    private func startNATSServer(in directory: URL, configuration: String? = nil) throws -> (ChildProcess, Int) {
        try requireBPF()
        try requireExecutable("/usr/sbin/nats-server", package: "nats-server")
        guard (try? TestSupport.run("/usr/bin/python3", ["-c", "import nats"])) != nil else {
            try prerequisiteMissing("nats-py", "Python's nats-py module is missing (pip install nats-py, or scripts/install-deps.sh)")
        }
        let port = unusedTCPPort()
        var arguments = ["-a", "127.0.0.1", "-p", String(port), "-l", directory.appendingPathComponent("nats.log").path]
        if let configuration {
            let file = directory.appendingPathComponent("nats.conf")
            try configuration.write(to: file, atomically: true, encoding: .utf8)
            arguments += ["-c", file.path]
        }
        let server = try ChildProcess("/usr/sbin/nats-server", arguments, directory: directory)
        let ready = waitUntil(timeout: 10) { acceptsTCPConnections(port: port) }
        guard ready else { try prerequisiteMissing("nats-server", "nats-server did not listen on 127.0.0.1:\(port) within 10 s") }
        return (server, port)
    }

    /// A Python script run as `sh -c 'read go; exec python3 script port directory'` (started, then released once traced).
    private func python(_ source: String, named name: String, in directory: URL, port: Int) throws -> ChildProcess {
        let script = directory.appendingPathComponent(name)
        try source.write(to: script, atomically: true, encoding: .utf8)
        return try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", "/usr/bin/python3", script.path, String(port), directory.path])
    }

    static let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    /// A subscriber (orders, and a responder on `service`) and a publisher (PUB, HPUB with traceparent and a private
    /// header, a request), in two processes, with nats-server: PRODUCER and CONSUMER spans on each client, SERVER spans
    /// in nats-server.
    func testPythonPublisherSubscriberAndServer() throws {
        let directory = try temporaryDirectory(self)
        let (server, port) = try startNATSServer(in: directory)
        let subscriber = try python("""
        import asyncio, os, sys
        import nats
        async def main():
            nc = await nats.connect(f"nats://127.0.0.1:{sys.argv[1]}")
            received = []
            done = asyncio.Event()
            async def orders(msg):
                received.append(msg.subject)
                if len(received) == 3: done.set()
            async def service(msg):
                await msg.respond(b"pong")
                received.append(msg.subject)
                if len(received) == 3: done.set()
            await nc.subscribe("orders", cb=orders)
            await nc.subscribe("service", cb=service)
            await nc.flush()
            open(os.path.join(sys.argv[2], "subscribed"), "w").close()
            await asyncio.wait_for(done.wait(), 10)
            await asyncio.sleep(0.5)
            await nc.close()
        asyncio.run(main())
        """, named: "subscriber.py", in: directory, port: port)
        let publisher = try python("""
        import asyncio, os, sys, time
        import nats
        async def main():
            while not os.path.exists(os.path.join(sys.argv[2], "subscribed")):
                await asyncio.sleep(0.05)
            nc = await nats.connect(f"nats://127.0.0.1:{sys.argv[1]}")
            await nc.publish("orders", b"plain-payload")
            await nc.flush()
            await nc.publish("orders", b"headed-payload", headers={"traceparent": "\(Self.traceparent)", "secret": "hunter2"})
            await nc.flush()
            reply = await nc.request("service", b"ping", timeout=5)
            assert reply.data == b"pong"
            await nc.close()
        asyncio.run(main())
        """, named: "publisher.py", in: directory, port: port)
        let harness = try TracingHarness(pids: [server.pid, subscriber.pid, publisher.pid], tracers: [NATSTracer()])
        subscriber.release()
        publisher.release()
        XCTAssertEqual(publisher.waitForExit(), 0)
        XCTAssertEqual(subscriber.waitForExit(), 0)

        let published = harness.waitForSpans(of: publisher.pid, kind: .producer, count: 3)
        XCTAssertEqual(published.map(\.name), ["publish orders", "publish orders", "publish service"])
        XCTAssertEqual(published.map { $0.attributes[SemanticConventions.messagingMessageBodySize]?.intValue }, [13, 14, 4])
        let replies = harness.waitForSpans(of: publisher.pid, kind: .consumer, count: 1)
        XCTAssertEqual(replies.map(\.name), ["process _INBOX.>"])
        XCTAssertEqual(replies.first?.attributes[SemanticConventions.messagingDestinationTemporary], true)
        XCTAssertTrue(attribute(replies.first, SemanticConventions.messagingDestinationName)?.hasPrefix("_INBOX.") == true)

        let processed = harness.waitForSpans(of: subscriber.pid, kind: .consumer, count: 3)
        XCTAssertEqual(processed.map(\.name), ["process orders", "process orders", "process service"])
        XCTAssertEqual(processed.map { $0.attributes[SemanticConventions.messagingMessageBodySize]?.intValue }, [13, 14, 4])
        let answered = harness.waitForSpans(of: subscriber.pid, kind: .producer, count: 1)
        XCTAssertEqual(answered.map(\.name), ["publish _INBOX.>"])
        // The responder's reply is the child of the request it processed.
        XCTAssertEqual(answered.first?.parentSpanID, processed[2].spanID)
        XCTAssertEqual(answered.first?.traceID, processed[2].traceID)

        // The traceparent of the HPUB parents the publish and the delivery.
        let traceID = try XCTUnwrap(TraceID(hex: "0af7651916cd43dd8448eb211c80319c"))
        for span in [published[1], processed[1]] {
            XCTAssertEqual(span.traceID, traceID)
            XCTAssertEqual(span.parentSpanID, SpanID(0xb7ad_6b71_6920_3331))
        }
        let clients = published + replies + processed + answered
        XCTAssertTrue(clients.allSatisfy {
            attribute($0, SemanticConventions.messagingSystem) == "nats" && $0.attributes[SemanticConventions.serverPort]?.intValue == Int64(port)
                && $0.status == .unset
        })
        XCTAssertEqual(published.map { attribute($0, SemanticConventions.messagingOperationType) }, ["send", "send", "send"])
        XCTAssertEqual(processed.map { attribute($0, SemanticConventions.messagingOperationType) }, ["process", "process", "process"])

        // nats-server: one SERVER span per message it read; the deliveries it wrote are the subscribers'.
        let serverSpans = harness.waitForSpans(of: server.pid, kind: .server, count: 4)
        XCTAssertEqual(serverSpans.map(\.name).sorted(), ["publish _INBOX.>", "publish orders", "publish orders", "publish service"])
        XCTAssertEqual(harness.spans(of: server.pid).count, 4)
        // Same-host linking: a linked server span is the child of the client's publish.
        let producers = published + answered
        for span in serverSpans where attribute(span, "tracer.parent.source") == "same-host-peer" {
            XCTAssertEqual(producers.first { $0.spanID == span.parentSpanID }?.name, span.name)
        }
        // No payload or header value anywhere.
        for span in harness.collector.spans {
            let text = span.attributes.elements.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            XCTAssertFalse(text.contains("payload") || text.contains("hunter2") || text.contains("pong"), "\(span.name): \(text)")
        }
    }

    /// Verbose mode (every operation answered +OK or -ERR) against a server that denies publishing to `secret.>`:
    /// the publish spans end at their answers, the denied one is an error on the client and in the server.
    func testVerbosePublishesAndPermissionsViolation() throws {
        let directory = try temporaryDirectory(self)
        let (server, port) = try startNATSServer(in: directory, configuration: """
        authorization {
          users = [ { user: app, password: s3cret, permissions: { publish: { deny: ["secret.>"] } } } ]
        }
        """)
        let client = try python("""
        import asyncio, sys
        import nats
        async def main():
            errors = []
            async def on_error(e): errors.append(e)
            nc = await nats.connect(f"nats://app:s3cret@127.0.0.1:{sys.argv[1]}", verbose=True, error_cb=on_error)
            await nc.publish("orders", b"ok")
            await nc.flush()
            await nc.publish("secret.plans", b"no")
            await nc.flush()
            for _ in range(100):
                if errors: break
                await asyncio.sleep(0.05)
            assert len(errors) == 1, errors
            await nc.close()
        asyncio.run(main())
        """, named: "verbose.py", in: directory, port: port)
        let harness = try TracingHarness(pids: [server.pid, client.pid], tracers: [NATSTracer()])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)
        for (pid, kind) in [(client.pid, SpanKind.producer), (server.pid, .server)] {
            let spans = harness.waitForSpans(of: pid, kind: kind, count: 2)
            XCTAssertEqual(spans.map(\.name), ["publish orders", "publish secret.plans"])
            XCTAssertEqual(spans.first?.status, .unset)
            XCTAssertEqual(spans.last?.status, .error(message: "Permissions Violation for Publish to \"secret.plans\""))
            XCTAssertEqual(attribute(spans.last, SemanticConventions.errorType), "Permissions Violation")
            XCTAssertTrue(spans.allSatisfy { $0.endTimeUnixNano >= $0.startTimeUnixNano })
        }
    }

    /// A Go program with nats.go (Debian's golang-github-nats-io-go-nats-dev, GOPATH mode): it subscribes to
    /// `orders.>`, publishes a message with a `traceparent` header (HPUB) and one without (PUB), and reads both back.
    private static let goClient = """
    package main

    import (
    \t"os"
    \t"time"

    \t"github.com/nats-io/nats.go"
    )

    func main() {
    \tnc, err := nats.Connect(os.Args[1])
    \tif err != nil {
    \t\tpanic(err)
    \t}
    \tdefer nc.Close()
    \tsub, err := nc.SubscribeSync("orders.>")
    \tif err != nil {
    \t\tpanic(err)
    \t}
    \tmessage := nats.NewMsg("orders.new")
    \tmessage.Data = []byte("payload")
    \tmessage.Header.Set("traceparent", "\(NATSTracerTests.traceparent)")
    \tif err := nc.PublishMsg(message); err != nil {
    \t\tpanic(err)
    \t}
    \tif err := nc.Publish("orders.old", []byte("payload")); err != nil {
    \t\tpanic(err)
    \t}
    \tfor i := 0; i < 2; i++ {
    \t\tif _, err := sub.NextMsg(5 * time.Second); err != nil {
    \t\t\tpanic(err)
    \t\t}
    \t}
    }
    """

    func testGoClientPublishesAndReceivesItsOwnMessages() throws {
        if !FileManager.default.fileExists(atPath: "/usr/share/gocode/src/github.com/nats-io/nats.go/nats.go") {
            try prerequisiteMissing("golang-github-nats-io-go-nats-dev",
                                    "nats.go is not in /usr/share/gocode (apt-get install golang-github-nats-io-go-nats-dev)")
        }
        let directory = try temporaryDirectory(self)
        let (server, port) = try startNATSServer(in: directory)
        let binary = try GoServerBuild.binary(stripped: false, program: ("nats-client", Self.goClient), gopath: "/usr/share/gocode")
        let client = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", binary.path, "nats://127.0.0.1:\(port)"])
        let harness = try TracingHarness(pids: [server.pid, client.pid], tracers: [NATSTracer()])
        client.release()
        XCTAssertEqual(client.waitForExit(), 0)
        let published = harness.waitForSpans(of: client.pid, kind: .producer, count: 2)
        let processed = harness.waitForSpans(of: client.pid, kind: .consumer, count: 2)
        XCTAssertEqual(published.map(\.name), ["publish orders.new", "publish orders.old"])
        XCTAssertEqual(processed.map(\.name), ["process orders.new", "process orders.old"])
        let traceID = try XCTUnwrap(TraceID(hex: "0af7651916cd43dd8448eb211c80319c"))
        for span in [published[0], processed[0]] {
            XCTAssertEqual(span.traceID, traceID)
            XCTAssertEqual(span.parentSpanID, SpanID(0xb7ad_6b71_6920_3331))
        }
        XCTAssertTrue((published + processed).allSatisfy {
            $0.attributes[SemanticConventions.messagingMessageBodySize]?.intValue == 7 && $0.status == .unset
                && $0.attributes[SemanticConventions.serverPort]?.intValue == Int64(port)
        })
        XCTAssertEqual(harness.waitForSpans(of: server.pid, kind: .server, count: 2).map(\.name), ["publish orders.new", "publish orders.old"])
    }
}
