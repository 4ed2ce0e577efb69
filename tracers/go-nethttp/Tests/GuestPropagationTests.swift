import Foundation
import TestSupport
import XCTest

/// Context propagation end to end, on a kernel that allows `bpf_probe_write_user`: Debian's 6.1 kernel
/// under qemu (scripts/guest/run-in-guest.sh; this machine's kernel is locked down). Two go1.19 services
/// built from the test server — a front one whose `/proxy` handler calls a back one with the Go client —
/// and the `tracer` binary with `--context-propagation --print json`. One request carrying a
/// `traceparent` must give one trace across both services: the back service's server span is the child of
/// the front service's client span, which it can only know from the header the tracer wrote.
final class GuestPropagationTests: XCTestCase {
    static let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
    static let callerSpanID = "00f067aa0ba902b7"

    func testTwoTracedGoServicesFormOneTrace() throws {
        try requireGuestKernel()
        let server = try GoServerBuild.binary(stripped: false)
        let tracer = productsDirectory.appendingPathComponent("tracer")
        // capstone (RET offsets) is loaded with dlopen, so ldd does not list it.
        let capstone = try sharedLibrary("libcapstone.so.4")
        let run = try runInGuest(files: [server, tracer, capstone], script: Self.script, arguments: [server.path, tracer.path], timeout: 400)
        XCTAssertEqual(run.status, 0, "guest script failed:\n\(run.output)\n\(run.log.suffix(3000))")
        print("guest run: \(run.timing)")
        let output = run.output
        XCTAssertTrue(output.contains("body: upstream 200"), "the request with the injected header was answered:\n\(output)")
        XCTAssertTrue(output.contains("context propagation on"), output)
        XCTAssertTrue(output.contains("agent exit: 0"), output)

        let spans = try Self.spans(in: output)
        XCTAssertEqual(spans.count, 3, "front server, its client call, back server:\n\(output)")
        let front = try XCTUnwrap(spans.first { $0.kind == "server" && $0.path == "/proxy" }, output)
        let client = try XCTUnwrap(spans.first { $0.kind == "client" }, output)
        let back = try XCTUnwrap(spans.first { $0.kind == "server" && $0.path == "/hello" }, output)

        XCTAssertEqual(front.traceID, Self.traceID, "the incoming traceparent is honoured")
        XCTAssertEqual(front.parentSpanID, Self.callerSpanID)
        XCTAssertEqual(client.traceID, Self.traceID)
        XCTAssertEqual(client.parentSpanID, front.spanID, "the client call is a child of the request it serves")
        XCTAssertEqual(back.traceID, Self.traceID, "the back service continues the trace from the injected traceparent")
        XCTAssertEqual(back.parentSpanID, client.spanID, "the injected traceparent names the client span")
        XCTAssertEqual(Set([front.spanID, client.spanID, back.spanID]).count, 3)
        XCTAssertEqual(back.statusCode, 200)
    }

    /// Starts the back and the front service, the agent selecting both by executable path, sends one
    /// request with a traceparent through the front service, stops the agent and prints its log and spans.
    static let script: String = """
        server=$1 tracer=$2
        $server > /tmp/back.port &
        $server > /tmp/front.port &
        for i in $(seq 1 100); do [ -s /tmp/back.port ] && [ -s /tmp/front.port ] && break; sleep 0.2; done
        back=$(head -n1 /tmp/back.port) front=$(head -n1 /tmp/front.port)
        $tracer --exe "$server" --context-propagation go --print json --log-level info > /tmp/spans.json 2> /tmp/tracer.log &
        agent=$!
        \(awaitAgent)
        wget -q -O /tmp/body --header "traceparent: 00-\(traceID)-\(callerSpanID)-01" \\
            "http://127.0.0.1:$front/proxy?to=http://127.0.0.1:$back/hello"
        echo "body: $(cat /tmp/body)"
        \(stopAgentAndPrint)
        """

    /// Script lines shared by the guest propagation tests: wait until the agent (`$agent`, logging to
    /// /tmp/tracer.log) traces; then stop it and print its log and spans between the markers ``spans(in:)`` reads.
    static let awaitAgent: String = """
        for i in $(seq 1 300); do grep -q "tracing:" /tmp/tracer.log && break; sleep 0.2; done
        """
    static let stopAgentAndPrint: String = """
        sleep 1
        kill -TERM $agent
        wait $agent
        echo "agent exit: $?"
        echo "--- log"
        cat /tmp/tracer.log
        echo "--- spans"
        cat /tmp/spans.json
        echo "--- end"
        """

    struct PrintedSpan {
        var kind: String
        var traceID: String
        var spanID: String
        var parentSpanID: String
        var path: String?
        var statusCode: Int?
    }

    /// The `--print json` lines between the script's markers.
    static func spans(in output: String) throws -> [PrintedSpan] {
        let lines = output.split(separator: "\n").drop { $0 != "--- spans" }.dropFirst().prefix { $0 != "--- end" }
        return try lines.map { line in
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], String(line))
            let attributes = object["attributes"] as? [String: Any] ?? [:]
            return PrintedSpan(
                kind: object["kind"] as? String ?? "", traceID: object["traceId"] as? String ?? "",
                spanID: object["spanId"] as? String ?? "", parentSpanID: object["parentSpanId"] as? String ?? "",
                path: attributes["url.path"] as? String, statusCode: attributes["http.response.status_code"] as? Int)
        }
    }
}
