import Foundation
import TestSupport
import XCTest

/// `tracer flows` as a user runs it: the built binary, real traffic, its JSON lines and its errors.
final class FlowsCommandTests: XCTestCase {
    func testJSONLinesCarryTheFlowModel() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let tracer = Process()
        tracer.executableURL = productsDirectory.appendingPathComponent("tracer")
        tracer.arguments = ["flows", "--json", "--interval", "0.1", "--idle-timeout", "0.3", "--duration", "4"]
        let output = Pipe(), errors = Pipe()
        tracer.standardOutput = output
        tracer.standardError = errors
        try tracer.run()
        let log = errors.fileHandleForReading
        var started = ""
        while !started.contains("\n") {
            let data = log.readData(ofLength: 1)
            guard !data.isEmpty else { break }
            started += String(decoding: data, as: UTF8.self)
        }
        XCTAssertTrue(started.contains("hooks: cgroup_skb"), started)

        let server = try FlowTraffic(["udp-serve", "127.0.0.1", "0", "10"], in: directory)
        let serverPort = try server.number()
        let client = try FlowTraffic(["udp-send", "127.0.0.1", String(serverPort), "500", "10", "1"], in: directory)
        let clientPort = try client.number()
        let stdout = output.fileHandleForReading.readDataToEndOfFile()
        tracer.waitUntilExit()
        XCTAssertEqual(tracer.terminationStatus, 0)
        let events = String(decoding: stdout, as: UTF8.self).split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let destroy = try XCTUnwrap(events.first { $0["sport"] as? Int == clientPort && $0["event"] as? String == "destroy" },
                                    String(decoding: stdout, as: UTF8.self))
        for key in ["src", "dst", "sport", "dport", "proto", "netns", "bytes_orig", "bytes_ret", "packets_orig", "packets_ret", "start", "event", "pid", "comm"] {
            XCTAssertNotNil(destroy[key], "key \(key) in \(destroy)")
        }
        XCTAssertEqual(destroy["dport"] as? Int, serverPort)
        XCTAssertEqual(destroy["proto"] as? String, "udp")
        XCTAssertEqual(destroy["packets_orig"] as? Int, 10)
        XCTAssertEqual(destroy["bytes_orig"] as? Int, 10 * (500 + FlowAccountingTests.udpHeader))
        XCTAssertEqual(destroy["pid"] as? Int, Int(client.process.processIdentifier))
        XCTAssertEqual(destroy["comm"] as? String, "flow_traffic")
        let summary = String(decoding: log.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(summary.contains("flows created"), summary)
    }

    /// This kernel has no kprobes: asking for the conntrack path is a one-line reason and exit status 1.
    func testConntrackHooksWithoutKprobesFailInOneLine() throws {
        try requireBPF()
        guard !FileManager.default.fileExists(atPath: "/sys/bus/event_source/devices/kprobe") else {
            throw XCTSkip("this kernel has kprobes: the conntrack path may work here")
        }
        let result = try runProduct("tracer", ["flows", "--hooks", "conntrack", "--duration", "1"])
        XCTAssertEqual(result.status, 1)
        XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
        XCTAssertTrue(result.stderr.contains("kprobe"), result.stderr)
        XCTAssertEqual(result.stdout, "")
    }

    func testBadCurveIsAUsageError() throws {
        let result = try runProduct("tracer", ["flows", "--curve", "0:20,60:60"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("exactly three"), result.stderr)
    }
}
