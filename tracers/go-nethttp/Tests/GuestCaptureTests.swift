import Foundation
import TestSupport
import XCTest

/// The capture layer's kernel-function variants end to end, on a kernel that has them: Debian's 6.1 kernel
/// under qemu (no socket tracepoints there; this machine's kernel has no kprobes and no fentry). The
/// `tracer` binary traces a go1.19 server with `--socket-hooks fexit`, then `kprobes`; busybox wget sends
/// requests; the printed spans must be the requests, and the log must name the hooks in use.
final class GuestCaptureTests: XCTestCase {
    func testFexitAndKprobeVariantsGiveTheSameSpans() throws {
        try requireGuestKernel()
        let server = try GoServerBuild.binary(stripped: false)
        let tracer = productsDirectory.appendingPathComponent("tracer")
        let capstone = try sharedLibrary("libcapstone.so.4")
        let run = try runInGuest(files: [server, tracer, capstone], script: Self.script, arguments: [server.path, tracer.path], timeout: 500)
        XCTAssertEqual(run.status, 0, "guest script failed:\n\(run.output)\n\(run.log.suffix(3000))")
        print("guest run: \(run.timing)")
        let output = run.output
        XCTAssertTrue(output.contains("socket hooks: fexit on tcp_sendmsg/tcp_recvmsg"), "auto picks fexit on 6.1:\n\(output)")
        for hooks in ["fexit", "kprobes"] {
            let section = output.components(separatedBy: "--- \(hooks)\n").dropFirst().first?.components(separatedBy: "--- end").first ?? ""
            XCTAssertTrue(section.contains("agent exit: 0"), section)
            XCTAssertTrue(section.contains(hooks == "fexit" ? "via fexit on tcp_sendmsg" : "via kprobes on tcp_sendmsg"), section)
            let spans = try GuestPropagationTests.spans(in: "--- spans\n" + (section.components(separatedBy: "--- spans\n").last ?? "") + "\n--- end")
            let server = spans.filter { $0.kind == "server" }
            XCTAssertEqual(server.compactMap(\.path).sorted(), ["/hello", "/hello", "/missing", "/proxy"], "\(hooks):\n\(section)")
            XCTAssertEqual(server.first { $0.path == "/missing" }?.statusCode, 404, hooks)
            XCTAssertEqual(server.first { $0.path == "/proxy" }?.statusCode, 200, hooks)
            let client = try XCTUnwrap(spans.first { $0.kind == "client" }, "\(hooks): the Go client call\n\(section)")
            let proxy = try XCTUnwrap(server.first { $0.path == "/proxy" })
            XCTAssertEqual(client.parentSpanID, proxy.spanID, "\(hooks): the client call is the /proxy request's child")
        }
    }

    static let script = """
        server=$1 tracer=$2
        $server > /tmp/port &
        for i in $(seq 1 100); do [ -s /tmp/port ] && break; sleep 0.2; done
        port=$(head -n1 /tmp/port)
        $tracer | grep "socket hooks"
        for hooks in fexit kprobes; do
            rm -f /tmp/tracer.log
            $tracer --pid $(pidof $(basename $server)) --socket-hooks $hooks --print json --log-level info > /tmp/spans.json 2> /tmp/tracer.log &
            agent=$!
            for i in $(seq 1 300); do grep -q "tracing:" /tmp/tracer.log && break; sleep 0.2; done
            wget -q -O /dev/null "http://127.0.0.1:$port/hello"
            wget -q -O /dev/null "http://127.0.0.1:$port/missing" || true
            wget -q -O /dev/null "http://127.0.0.1:$port/proxy?to=http://127.0.0.1:$port/hello"
            sleep 1
            kill -TERM $agent
            wait $agent
            status=$?
            echo "--- $hooks"
            echo "agent exit: $status"
            cat /tmp/tracer.log
            echo "--- spans"
            cat /tmp/spans.json
            echo "--- end"
        done
        """
}
