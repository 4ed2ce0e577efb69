import Foundation
import TestSupport
import XCTest

/// The conntrack path, on a kernel with kprobes: Debian's 6.1 kernel under qemu (scripts/guest/run-in-guest.sh)
/// with nf_conntrack and nf_tables loaded from its own modules (scripts/guest/fetch-netfilter-modules.sh)
/// and one nftables rule that makes conntrack track the namespace's traffic. `tracer flows` must choose the
/// kprobes by itself, count a TCP and a UDP transfer over loopback as conntrack accounts them (with the
/// connmark a rule sets), report
/// updates on the (compressed) curve and a destroy with the totals once conntrack drops the entries.
final class GuestConntrackFlowsTests: XCTestCase {
    static let script = """
        set -e
        modules=$1 tracer=$2 traffic=$3
        for module in $(cat $modules/load-order); do insmod $modules/$module.ko; done
        # conntrack hooks a namespace only once something there uses it: one nftables rule does.
        nft add table ip flows
        nft add chain ip flows out '{ type filter hook output priority 0; }'
        nft add rule ip flows out ct mark set 42
        nft add rule ip flows out ct state new,established accept
        # Short timeouts, so the entries expire soon after the transfers (conntrack's gc then deletes them).
        sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=1 net.netfilter.nf_conntrack_udp_timeout=1 >/dev/null
        ping -c 1 127.0.0.1 >/dev/null
        $tracer flows --json --interval 0.2 --idle-timeout 300 --curve 0:2,10:5,20:10 --duration 150 >/tmp/out 2>/tmp/err &
        tracer_pid=$!
        until grep -q "hooks:" /tmp/err; do kill -0 $tracer_pid; sleep 0.2; done
        $traffic tcp-serve 127.0.0.1 5000 >/tmp/tcp-server &
        sleep 0.5
        $traffic tcp-send 127.0.0.1 5000 1000000 >/tmp/tcp-client
        $traffic udp-serve 127.0.0.1 5001 100 >/tmp/udp-server &
        sleep 0.5
        $traffic udp-send 127.0.0.1 5001 1000 100 1 >/tmp/udp-client
        wait $!
        # conntrack's gc removes expired entries within a minute on 6.1; then both destroys are printed.
        waited=0
        while [ $(grep -c '"event":"destroy"' /tmp/out) -lt 2 ] && [ $waited -lt 120 ]; do sleep 1; waited=$((waited + 1)); done
        kill -INT $tracer_pid
        wait $tracer_pid
        echo "tcp-client $(head -n 1 /tmp/tcp-client)"
        echo "udp-client $(head -n 1 /tmp/udp-client)"
        sed 's/^/stderr /' /tmp/err
        cat /tmp/out
        """

    func testConntrackKprobesCountTransfersAndReportDestroys() throws {
        try requireGuestKernel()
        let modules = try netfilterModules()
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft") else {
            try skipOrFail(kind: "guest-kernel", reason: "/usr/sbin/nft is missing (apt-get install nftables)",
                           requiredBy: "TRACER_REQUIRE_GUEST", file: #filePath, line: #line)
        }
        let directory = try temporaryDirectory(self)
        let traffic = try FlowTraffic.binary(in: directory)
        let tracer = productsDirectory.appendingPathComponent("tracer")
        let run = try runInGuest(files: [modules, URL(fileURLWithPath: "/usr/sbin/nft"), traffic, tracer], script: Self.script,
                                 arguments: [modules.path, tracer.path, traffic.path], timeout: 500)
        print("guest run: \(run.timing)")
        XCTAssertEqual(run.status, 0, "guest script failed:\n\(run.output)\n\(run.log.suffix(3000))")
        let lines = run.output.split(separator: "\n").map(String.init)
        func value(_ prefix: String) -> Int? {
            lines.first { $0.hasPrefix(prefix + " ") }.flatMap { Int($0.dropFirst(prefix.count + 1)) }
        }
        let tcpPort = try XCTUnwrap(value("tcp-client"), run.output)
        let udpPort = try XCTUnwrap(value("udp-client"), run.output)
        XCTAssertTrue(lines.contains { $0.hasPrefix("stderr") && $0.contains("kprobes on __nf_ct_refresh_acct") },
                      "chose the conntrack kprobes by itself:\n\(run.output)")
        let all = lines.filter { $0.hasPrefix("{") }.compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        func events(port: Int, _ kind: String) -> [[String: Any]] {
            all.filter { $0["sport"] as? Int == port && $0["event"] as? String == kind }
        }

        let tcpDestroy = try XCTUnwrap(events(port: tcpPort, "destroy").first, "TCP destroy:\n\(run.output)")
        XCTAssertEqual(tcpDestroy["dport"] as? Int, 5000)
        XCTAssertEqual(tcpDestroy["src"] as? String, "127.0.0.1")
        XCTAssertEqual(tcpDestroy["proto"] as? String, "tcp")
        let tcpBytes = try XCTUnwrap(tcpDestroy["bytes_orig"] as? Int), tcpPackets = try XCTUnwrap(tcpDestroy["packets_orig"] as? Int)
        XCTAssertLessThanOrEqual(abs(tcpBytes - tcpPackets * FlowAccountingTests.tcpHeader - 1_000_000), 10_000,
                                 "bytes_orig \(tcpBytes) in \(tcpPackets) packets for 1 000 000 bytes sent")
        XCTAssertGreaterThan(tcpDestroy["packets_ret"] as? Int ?? 0, 0)
        XCTAssertNotEqual(tcpDestroy["netns"] as? Int, 0)
        XCTAssertEqual(tcpDestroy["connmark"] as? Int, 42, "the connmark the nftables rule set")

        let udpDestroy = try XCTUnwrap(events(port: udpPort, "destroy").first, "UDP destroy:\n\(run.output)")
        XCTAssertEqual(udpDestroy["dport"] as? Int, 5001)
        XCTAssertEqual(udpDestroy["packets_orig"] as? Int, 100)
        XCTAssertEqual(udpDestroy["bytes_orig"] as? Int, 100 * (1000 + FlowAccountingTests.udpHeader))
        XCTAssertEqual(udpDestroy["connmark"] as? Int, 42)

        // Curve 0 → 2 s, 10 s → 5 s, 20 s → 10 s: the interval before each update is the one of the age at the
        // previous update (the first: 2 s after the start); reads every 0.2 s in a slow emulated guest.
        let ages = events(port: tcpPort, "update").compactMap { event -> Double? in
            guard let start = event["start"] as? Int, let timestamp = event["timestamp"] as? Int else { return nil }
            return Double(timestamp - start) / 1e9
        }
        XCTAssertGreaterThanOrEqual(ages.count, 5, "updates before the destroy: \(ages)")
        var previous = 0.0
        for age in ages {
            let interval = previous < 10 ? 2.0 : (previous < 20 ? 5.0 : 10.0)
            XCTAssertGreaterThanOrEqual(age - previous, interval - 0.01, "ages \(ages)")
            XCTAssertLessThanOrEqual(age - previous, interval + 1.5, "ages \(ages)")
            previous = age
        }
    }

    /// The guest kernel's netfilter modules (scripts/guest/fetch-netfilter-modules.sh, run by install-deps.sh).
    private func netfilterModules() throws -> URL {
        let cache = ProcessInfo.processInfo.environment["TRACER_GUEST_CACHE"]
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/tracer-guest").path
        let kernels = (try? FileManager.default.contentsOfDirectory(atPath: cache))?.filter { $0.hasPrefix("linux-image-") }.sorted() ?? []
        for kernel in kernels.reversed() {
            let directory = URL(fileURLWithPath: cache).appendingPathComponent(kernel).appendingPathComponent("netfilter")
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent("load-order").path) { return directory }
        }
        try skipOrFail(kind: "guest-kernel", reason: "no netfilter modules for the guest kernel in \(cache) (scripts/guest/fetch-netfilter-modules.sh)",
                       requiredBy: "TRACER_REQUIRE_GUEST", file: #filePath, line: #line)
    }
}
