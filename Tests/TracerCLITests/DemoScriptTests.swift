import Foundation
import TestSupport
import XCTest

/// `scripts/run-demo.sh` without arguments shows the main job: a Go frontend and a Python backend selected by
/// `--exe`, spans printed as requests arrive (a client call parented to its server request), and how to go on.
final class DemoScriptTests: XCTestCase {
    func testTheDemoPrintsSpansOfBothServicesWithAParentedClientCall() throws {
        try requireBPF()
        try requireExecutable("/usr/bin/go", package: "golang-go")
        try requireExecutable("/usr/bin/curl", package: "curl")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let output = try TestSupport.run(root.appendingPathComponent("scripts/run-demo.sh").path, [],
                             environment: ["TRACER_DEMO_BINARY": productsDirectory.appendingPathComponent("tracer").path])
        let lines = output.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines.contains { $0.hasPrefix("demo: attached ") && $0.contains("[service demo-backend; tracers: http2, http, redis, postgres, mysql, memcached, nats, capture;") }, output)
        XCTAssertTrue(lines.contains { $0.hasPrefix("demo: attached ") && $0.contains("[service demo-frontend; tracers: go-nethttp, http2, http, redis, postgres, mysql, memcached, nats, capture;") }, output)

        func field(_ name: String, _ line: String) -> String? {
            line.split(separator: " ").first { $0.hasPrefix("\(name)=") }.map { String($0.dropFirst(name.count + 1)) }
        }
        let checkouts = lines.filter { $0.hasPrefix("server GET ") && $0.contains("url.path=/checkout/") && $0.contains("service.name=demo-frontend") }
        let calls = lines.filter { $0.hasPrefix("client GET ") && $0.contains("url.full=http://127.0.0.1:") && $0.contains("service.name=demo-frontend") }
        let prices = lines.filter { $0.hasPrefix("server GET ") && $0.contains("url.path=/price/") && $0.contains("service.name=demo-backend") }
        XCTAssertEqual(checkouts.count, 3, output)
        XCTAssertEqual(calls.count, 3, output)
        XCTAssertEqual(prices.count, 3, output)
        XCTAssertTrue(lines.contains { $0.contains("url.path=/health") && $0.contains("http.response.status_code=404") }, output)
        // Each client call is the child of a /checkout server span, in its trace.
        var traceOfServerSpan: [String: String] = [:]
        for line in checkouts { if let span = field("span", line), let trace = field("trace", line) { traceOfServerSpan[span] = trace } }
        for call in calls {
            let parent = try XCTUnwrap(field("parent", call))
            XCTAssertEqual(traceOfServerSpan[parent], field("trace", call), "\(call)\n\(output)")
        }
        XCTAssertTrue(output.contains("demo: tracer stopped: 10 spans"), output)
        XCTAssertTrue(output.contains("Trace your own process:\n  tracer ps --exe"), output)
    }
}
