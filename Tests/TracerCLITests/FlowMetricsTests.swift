import Foundation
import OTLPExport
import TestSupport
@testable import TracerCLI
import Tracers
import XCTest

/// `--network-flows`: flow events summed into counters by series, the cardinality limit, and the agent's
/// `/metrics` showing the flow of the scrape's own connection.
final class FlowMetricsTests: XCTestCase {
    private func event(_ id: UInt64, _ kind: FlowEvent.Kind, to destination: String, port: UInt16, bytes: UInt64) -> FlowEvent {
        FlowEvent(kind: kind, flowID: id, start: 1, timestamp: 2, connmark: 0, family: 4, source: "10.0.0.1",
                  destination: destination, sourcePort: 40000, destinationPort: port, transport: 6, netns: 1,
                  packetsOriginal: bytes / 100, bytesOriginal: bytes, packetsReply: 1, bytesReply: 52, evicted: false)
    }

    private func value(_ metrics: [MetricData], _ name: String, _ match: [String: String]) -> Double? {
        guard case .counter(let points)? = metrics.first(where: { $0.name == name })?.points else { return nil }
        return points.first { point in match.allSatisfy { point.attributes[$0.key]?.description == $0.value } }?.value
    }

    func testCountersSumEachFlowOnceAndOverflowBeyondTheSeriesLimit() throws {
        try requireBPF()
        let flows = try FlowAccounting()
        defer { flows.stop() }
        let metrics = FlowMetrics(flows: flows, seriesLimit: 2)
        metrics.apply([
            event(1, .update, to: "10.0.0.2", port: 80, bytes: 100),
            event(1, .update, to: "10.0.0.2", port: 80, bytes: 250),
            event(2, .update, to: "10.0.0.2", port: 80, bytes: 50),
            event(1, .destroy, to: "10.0.0.2", port: 80, bytes: 300),
            event(3, .destroy, to: "10.0.0.3", port: 50000, bytes: 700),
            event(4, .update, to: "10.0.0.4", port: 443, bytes: 900), // third series: over the limit
            event(4, .destroy, to: "10.0.0.4", port: 443, bytes: 1000),
        ])
        let collected = metrics.collect()
        XCTAssertEqual(value(collected, "tracer.flow.bytes", ["destination.address": "10.0.0.2", "destination.port": "80", "flow.direction": "original"]), 350)
        XCTAssertEqual(value(collected, "tracer.flow.bytes", ["destination.address": "10.0.0.2", "flow.direction": "reply"]), 104)
        XCTAssertEqual(value(collected, "tracer.flow.packets", ["destination.address": "10.0.0.2", "flow.direction": "original"]), 3)
        XCTAssertEqual(value(collected, "tracer.flow.bytes", ["destination.port": "ephemeral", "network.transport": "tcp"]), 700)
        XCTAssertEqual(value(collected, "tracer.flow.bytes", ["otel.metric.overflow": "true", "flow.direction": "original"]), 1000)
        XCTAssertNil(value(collected, "tracer.flow.bytes", ["destination.address": "10.0.0.4"]))
        XCTAssertEqual(value(collected, "tracer.flows.series.overflow", [:]), 1)
    }

    func testAgentExportsTheFlowOfAScrapeOnItsPrometheusEndpoint() throws {
        try requireBPF()
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["60"]
        try sleeper.run()
        addTeardownBlock { sleeper.terminate(); sleeper.waitUntilExit() }
        let port = Int.random(in: 20000..<30000) // below the ephemeral range: the port is its own class
        let agent = Process()
        agent.executableURL = productsDirectory.appendingPathComponent("tracer")
        agent.arguments = ["--pid", "\(sleeper.processIdentifier)", "--network-flows", "--prometheus-port", "\(port)",
                           "--print", "none", "--log-level", "warning"]
        agent.standardOutput = FileHandle.nullDevice
        try agent.run()
        addTeardownBlock { if agent.isRunning { agent.terminate() }; agent.waitUntilExit() }
        // Each scrape is a TCP flow to the endpoint; once closed, its destroy brings its bytes into the counter.
        let series = "destination_address=\"127.0.0.1\",destination_port=\"\(port)\",network_transport=\"tcp\",flow_direction=\"original\""
        var page = ""
        let found = waitUntil(timeout: 30) {
            page = (try? TestSupport.run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/metrics"])) ?? ""
            return page.split(separator: "\n").contains { $0.hasPrefix("tracer_flow_bytes_total{") && $0.contains(series) }
        }
        XCTAssertTrue(found, "no flow series for the scrapes:\n\(page)")
        XCTAssertTrue(page.contains("tracer_flows_active"), page)
        XCTAssertTrue(page.split(separator: "\n").contains { $0.contains("process_executable_name=\"curl\"") && $0.contains(series) },
                      "the scrapes' sockets belong to curl:\n\(page)")
        agent.terminate()
        agent.waitUntilExit()
        XCTAssertEqual(agent.terminationStatus, 0)
    }
}
