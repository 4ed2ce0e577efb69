import BPFRuntime
import CTracerABI
import Foundation
import TestSupport
import Tracers
import XCTest

/// Flow accounting end to end: the cgroup_skb programs attached to the cgroup2 root, real transfers of
/// known sizes over loopback and between two network namespaces, events read from consumers.
///
/// Byte counts are IP lengths (as conntrack's): each packet the kernel handles (a GSO super-packet counts
/// as one) adds its headers — 52 bytes for IPv4 TCP with timestamps (20 IP + 20 TCP + 12 options; the SYN
/// 8 more), 28 for IPv4 UDP — so the tests compare `bytes − packets × header` with the payload sent.
final class FlowAccountingTests: XCTestCase {
    static let tcpHeader = 52
    static let udpHeader = 28

    private func engine(_ configure: (inout FlowAccounting.Settings) -> Void = { _ in }) throws -> FlowAccounting {
        try requireBPF()
        var settings = FlowAccounting.Settings()
        settings.readInterval = 0.05
        settings.closeGrace = 0.3
        settings.idleTimeout = 0.5
        configure(&settings)
        let flows = try FlowAccounting(settings: settings)
        addTeardownBlock { [weak flows] in flows?.stop() } // weak: XCTest keeps teardown blocks, and so the engine's fds, until the run ends
        return flows
    }

    /// Waits for the first event of `kind` for which `matches` holds.
    private func awaitEvent(_ consumer: FlowConsumer, _ kind: FlowEvent.Kind, timeout: TimeInterval = 15,
                            _ matches: (FlowEvent) -> Bool) -> FlowEvent? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let found = consumer.take(timeout: 0.2).first(where: { $0.kind == kind && matches($0) }) { return found }
        }
        return nil
    }

    /// The inode of this process's network namespace (`stat` follows the /proc/self/ns/net link).
    private func currentNetns() throws -> UInt32 {
        var status = stat()
        guard stat("/proc/self/ns/net", &status) == 0 else { throw FlowTrafficError(description: "stat /proc/self/ns/net: errno \(errno)") }
        return UInt32(status.st_ino)
    }

    /// `retransmitted`: the payload bytes the sender's TCP sent again (`tcpi_bytes_retrans`); a side that saw
    /// them counts them too, a side behind the drop does not.
    private func assertTCP(_ event: FlowEvent, payload: Int, retransmitted: Int, file: StaticString = #filePath, line: UInt = #line) {
        let overhead = Int(event.packetsOriginal) * Self.tcpHeader
        let difference = Int(event.bytesOriginal) - overhead - payload
        let message = "bytes_orig \(event.bytesOriginal) in \(event.packetsOriginal) packets for \(payload) bytes sent, \(retransmitted) retransmitted"
        XCTAssertGreaterThanOrEqual(difference, -payload / 100, message, file: file, line: line)
        XCTAssertLessThanOrEqual(difference, retransmitted + payload / 100, message, file: file, line: line)
        XCTAssertGreaterThan(event.packetsReply, 0, "the receiver's ACKs", file: file, line: line)
        XCTAssertLessThan(event.bytesReply, UInt64(payload / 100), "the reply direction carries ACKs only", file: file, line: line)
        XCTAssertLessThanOrEqual(event.start, event.timestamp, file: file, line: line)
        XCTAssertFalse(event.evicted, file: file, line: line)
    }

    func testLoopbackTCPTransferEndsWithADestroyCarryingTheTotals() throws {
        let flows = try engine { $0.curve = try! FlowUpdateCurve([(0, 3600), (7200, 3600), (14400, 3600)]) }
        let consumer = flows.addConsumer(name: "test", mode: .both)
        flows.start()
        let directory = try temporaryDirectory(self)
        let payload = 3_000_000
        let server = try FlowTraffic(["tcp-serve", "127.0.0.1", "0"], in: directory)
        let serverPort = try server.number()
        let client = try FlowTraffic(["tcp-send", "127.0.0.1", String(serverPort), String(payload)], in: directory)
        let clientPort = try client.number()
        XCTAssertEqual(try server.number(), payload)
        XCTAssertEqual(try client.number(), payload)
        let retransmitted = try client.number()

        let destroy = try XCTUnwrap(awaitEvent(consumer, .destroy) { $0.sourcePort == clientPort && $0.destinationPort == serverPort },
                                    "a destroy for 127.0.0.1:\(clientPort) -> :\(serverPort)")
        XCTAssertEqual(destroy.source, "127.0.0.1")
        XCTAssertEqual(destroy.destination, "127.0.0.1")
        XCTAssertEqual(destroy.transportName, "tcp")
        XCTAssertEqual(destroy.netns, try currentNetns())
        assertTCP(destroy, payload: payload, retransmitted: retransmitted)
        XCTAssertEqual(destroy.pid, UInt32(client.process.processIdentifier), "the owner of the socket that sent the SYN")
        XCTAssertEqual(destroy.process, "flow_traffic")
        XCTAssertFalse(consumer.take().contains { $0.sourcePort == clientPort && $0.kind == .update },
                       "no update before the curve's first hour")
        XCTAssertGreaterThanOrEqual(flows.statistics.closes, 1, "the close seen by sock:inet_sock_set_state")
    }

    func testLoopbackUDPDatagramsAreCountedExactlyAndEndAfterTheIdleTimeout() throws {
        let flows = try engine()
        let consumer = flows.addConsumer(name: "test", mode: .destroys)
        flows.start()
        let directory = try temporaryDirectory(self)
        let server = try FlowTraffic(["udp-serve", "127.0.0.1", "0", "200"], in: directory)
        let serverPort = try server.number()
        let client = try FlowTraffic(["udp-send", "127.0.0.1", String(serverPort), "1000", "200", "1"], in: directory)
        let clientPort = try client.number()

        let destroy = try XCTUnwrap(awaitEvent(consumer, .destroy) { $0.sourcePort == clientPort && $0.destinationPort == serverPort })
        XCTAssertEqual(destroy.transportName, "udp")
        XCTAssertEqual(destroy.packetsOriginal, 200)
        XCTAssertEqual(destroy.bytesOriginal, UInt64(200 * (1000 + Self.udpHeader)))
        XCTAssertEqual(destroy.packetsReply, 0)
        XCTAssertEqual(destroy.netns, try currentNetns())
    }

    /// IPv6 (40-byte header, 48 with UDP's) through the same programs.
    func testLoopbackIPv6UDPIsCountedExactly() throws {
        let flows = try engine()
        let consumer = flows.addConsumer(name: "test", mode: .destroys)
        flows.start()
        let directory = try temporaryDirectory(self)
        let server = try FlowTraffic(["udp-serve", "::1", "0", "50"], in: directory)
        let serverPort = try server.number()
        let client = try FlowTraffic(["udp-send", "::1", String(serverPort), "700", "50", "1"], in: directory)
        let clientPort = try client.number()

        let destroy = try XCTUnwrap(awaitEvent(consumer, .destroy) { $0.sourcePort == clientPort && $0.destinationPort == serverPort })
        XCTAssertEqual(destroy.family, 6)
        XCTAssertEqual(destroy.source, "::1")
        XCTAssertEqual(destroy.destination, "::1")
        XCTAssertEqual(destroy.packetsOriginal, 50)
        XCTAssertEqual(destroy.bytesOriginal, UInt64(50 * (700 + 48)))
        XCTAssertTrue(destroy.text.contains("[::1]:\(clientPort) -> [::1]:\(serverPort)"), destroy.text)
    }

    /// Between two namespaces each side's flow is its own (as conntrack's are per namespace): the client's in
    /// `a` (egress data, ingress ACKs) and the server's in `b` (ingress data, egress ACKs), both oriented
    /// client → server.
    func testVethBetweenNamespacesCountsTCPAndUDPOnBothSides() throws {
        let flows = try engine()
        guard FileManager.default.isExecutableFile(atPath: FlowTraffic.ip) else {
            try skipOrFail(kind: "network-namespace", reason: "\(FlowTraffic.ip) is missing (apt-get install iproute2)",
                           requiredBy: "TRACER_REQUIRE_BPF", file: #filePath, line: #line)
        }
        let pair = try VethPair(self)
        let (netnsA, netnsB) = (try VethPair.inode(of: pair.a), try VethPair.inode(of: pair.b))
        XCTAssertNotEqual(netnsA, netnsB)
        let consumer = flows.addConsumer(name: "test", mode: .destroys)
        flows.start()
        let directory = try temporaryDirectory(self)

        let payload = 2_000_000
        let tcpServer = try FlowTraffic(["tcp-serve", VethPair.addressB, "0"], netns: pair.b, in: directory)
        let tcpPort = try tcpServer.number()
        let tcpClient = try FlowTraffic(["tcp-send", VethPair.addressB, String(tcpPort), String(payload)], netns: pair.a, in: directory)
        let tcpClientPort = try tcpClient.number()
        XCTAssertEqual(try tcpServer.number(), payload)
        XCTAssertEqual(try tcpClient.number(), payload)
        let retransmitted = try tcpClient.number()

        let udpServer = try FlowTraffic(["udp-serve", VethPair.addressB, "0", "100"], netns: pair.b, in: directory)
        let udpPort = try udpServer.number()
        let udpClient = try FlowTraffic(["udp-send", VethPair.addressB, String(udpPort), "1200", "100", "1"], netns: pair.a, in: directory)
        let udpClientPort = try udpClient.number()
        XCTAssertEqual(try udpServer.number(), 120_000)

        var destroys: [FlowEvent] = []
        let complete = waitUntil(timeout: 15) {
            destroys += consumer.take(timeout: 0.2)
            return Set(destroys.filter { [tcpClientPort, udpClientPort].contains(Int($0.sourcePort)) }
                .map { "\($0.netns)/\($0.transport)" }).count == 4
        }
        XCTAssertTrue(complete, "destroys of the TCP and UDP flows in both namespaces; got \(destroys.map(\.text))")
        for netns in [netnsA, netnsB] {
            let tcp = try XCTUnwrap(destroys.first { $0.netns == netns && $0.transport == 6 && $0.sourcePort == tcpClientPort })
            // The local socket of each side's first packet: the client's in a, the listener's (server's) in b.
            let owner = netns == netnsA ? tcpClient : tcpServer
            XCTAssertEqual(tcp.pid, UInt32(owner.process.processIdentifier), "owner in namespace \(netns)")
            XCTAssertEqual(tcp.source, VethPair.addressA)
            XCTAssertEqual(tcp.destination, VethPair.addressB)
            XCTAssertEqual(Int(tcp.destinationPort), tcpPort)
            assertTCP(tcp, payload: payload, retransmitted: retransmitted)
            let udp = try XCTUnwrap(destroys.first { $0.netns == netns && $0.transport == 17 && $0.sourcePort == udpClientPort })
            XCTAssertEqual(Int(udp.destinationPort), udpPort)
            XCTAssertEqual(udp.packetsOriginal, 100)
            XCTAssertEqual(udp.bytesOriginal, UInt64(100 * (1200 + Self.udpHeader)))
        }
    }

    /// The reads are driven with chosen times (the kernel's clock plus simulated age), so the schedule is
    /// exact: curve 0 → 1 s, 3 s → 2 s, 6 s → 4 s gives updates at ages 1, 2, 3, 5, 7, 11 s.
    func testUpdatesFollowACompressedCurve() throws {
        let flows = try engine {
            $0.curve = try! FlowUpdateCurve([(0, 1), (3, 2), (6, 4)])
            $0.idleTimeout = 3600
        }
        let consumer = flows.addConsumer(name: "test", mode: .updates)
        let directory = try temporaryDirectory(self)
        let client = try FlowTraffic(["udp-send", "127.0.0.1", "9", "100", "1", "1"], in: directory)
        let clientPort = try client.number()
        let begin = monotonicNow()
        var ages: [Double] = []
        for step in 0...1200 {
            flows.poll(now: begin + UInt64(step) * 10_000_000)
            ages += consumer.take().filter { $0.sourcePort == clientPort && $0.destinationPort == 9 }
                .map { Double($0.timestamp - $0.start) / 1e9 }
        }
        XCTAssertEqual(ages.count, 6, "ages \(ages)")
        for (age, expected) in zip(ages, [1.0, 2, 3, 5, 7, 11]) {
            XCTAssertEqual(age, expected, accuracy: 0.03, "ages \(ages)")
        }
    }

    func testSlowConsumerLosesCountedEventsWithoutHoldingUpTheOthers() throws {
        let flows = try engine { $0.idleTimeout = 1 }
        let stuck = flows.addConsumer(name: "never-reads", mode: .both, capacity: 4)
        let reader = flows.addConsumer(name: "reader", mode: .both, capacity: 10_000)
        let destroysOnly = flows.addConsumer(name: "destroys", mode: .destroys, capacity: 10_000)
        let directory = try temporaryDirectory(self)
        let client = try FlowTraffic(["udp-send", "127.0.0.1", "9", "100", "1", "50"], in: directory)
        _ = try client.number()
        XCTAssertEqual(try client.number(), 5000)
        let sourcePorts = try client.number() // two sockets may have had the same port, and so one flow
        let begin = monotonicNow()
        flows.poll(now: begin + 30_000_000_000) // every flow idle: one destroy each
        let read = reader.take()
        let destroys = destroysOnly.take()
        XCTAssertEqual(destroys.filter { $0.destinationPort == 9 && $0.transport == 17 }.count, sourcePorts)
        XCTAssertTrue(destroys.allSatisfy { $0.kind == .destroy })
        let statistics = Dictionary(uniqueKeysWithValues: flows.consumers.map { ($0.name, $0) })
        XCTAssertEqual(statistics["never-reads"]?.received, 4)
        XCTAssertEqual(statistics["never-reads"]?.queueLength, 4)
        XCTAssertEqual(statistics["never-reads"]?.lost, UInt64(read.count - 4), "every event beyond its queue is counted lost")
        XCTAssertEqual(statistics["reader"]?.lost, 0)
        XCTAssertEqual(statistics["reader"]?.received, UInt64(read.count))
        XCTAssertEqual(statistics["reader"]?.queueLength, 0)
        XCTAssertEqual(stuck.take().count, 4, "the oldest four were kept")
    }

    func testFullTableEvictsAndCountsTheLostFlows() throws {
        let flows = try engine { $0.tableSize = 8 }
        let consumer = flows.addConsumer(name: "test", mode: .both, capacity: 10_000)
        let directory = try temporaryDirectory(self)
        flows.poll()
        let client = try FlowTraffic(["udp-send", "127.0.0.1", "9", "10", "1", "100"], in: directory)
        _ = try client.number()
        XCTAssertEqual(try client.number(), 1000)
        flows.poll()
        let statistics = flows.statistics
        XCTAssertGreaterThanOrEqual(statistics.flowsCreated, 100)
        XCTAssertLessThanOrEqual(statistics.activeFlows, 8)
        XCTAssertGreaterThanOrEqual(statistics.destroysLost, 100 - 8, "flows evicted before their destroy")
        XCTAssertEqual(statistics.insertsFailed, 0, "LRU: inserts evict instead of failing")
        _ = consumer.take()
    }

    func testNoCgroup2IsAOneLineReasonAndNothingStaysAttached() throws {
        let hybrid = "cgroup /sys/fs/cgroup/memory cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
        let noCgroup2 = "proc /proc proc rw 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw 0 0\n"
        XCTAssertThrowsError(try FlowHooks.choose(.init(mounts: noCgroup2, kprobes: false, conntrackCount: 12))) { error in
            let text = String(describing: error)
            XCTAssertFalse(text.contains("\n"), text)
            XCTAssertTrue(text.contains("mount -t cgroup2"), text)
        }
        XCTAssertEqual(try FlowHooks.choose(.init(mounts: hybrid, kprobes: false, conntrackCount: 12)).hooks,
                       .cgroupSKB(path: "/sys/fs/cgroup/unified"))
        XCTAssertEqual(try FlowHooks.choose(.init(mounts: hybrid, kprobes: true, conntrackCount: nil)).hooks,
                       .cgroupSKB(path: "/sys/fs/cgroup/unified"), "no nf_conntrack")
        XCTAssertEqual(try FlowHooks.choose(.init(mounts: hybrid, kprobes: true, conntrackCount: 0)).hooks,
                       .cgroupSKB(path: "/sys/fs/cgroup/unified"), "conntrack tracks nothing")
        XCTAssertEqual(try FlowHooks.choose(.init(mounts: noCgroup2, kprobes: true, conntrackCount: 3)).hooks, .conntrackKprobes)

        try requireBPF()
        let directory = try temporaryDirectory(self)
        var settings = FlowAccounting.Settings()
        settings.hooks = .cgroupSKB(path: directory.path)
        XCTAssertThrowsError(try FlowAccounting(settings: settings)) { error in
            let text = String(describing: error)
            XCTAssertFalse(text.contains("\n"), text)
            XCTAssertTrue(text.contains(directory.path), text)
        }
        let attached = try TestSupport.run("/usr/sbin/bpftool", ["cgroup", "show", "/sys/fs/cgroup/unified"])
        XCTAssertFalse(attached.contains("flows_"), "nothing left attached: \(attached)")
    }

    func testCurveParsingAndValidation() throws {
        let curve = try FlowUpdateCurve(parsing: "0:20,60:60,300:300")
        XCTAssertEqual(curve, .standard)
        XCTAssertEqual(curve.interval(atAge: 0), 20)
        XCTAssertEqual(curve.interval(atAge: 59.9), 20)
        XCTAssertEqual(curve.interval(atAge: 60), 60)
        XCTAssertEqual(curve.interval(atAge: 4000), 300)
        XCTAssertEqual(curve.description, "0:20,60:60,300:300")
        for bad in ["0:20,60:60", "5:20,60:60,300:300", "0:20,60:60,30:300", "0:20,60:0,300:300", "0:x,1:1,2:2", ""] {
            XCTAssertThrowsError(try FlowUpdateCurve(parsing: bad), bad)
        }
    }

    func testSharedStructsMatchTheirBTFLayout() throws {
        let owner = try Tracers.FlowsSkb.object.structLayout(named: "flow_owner")
        XCTAssertEqual(owner.size, MemoryLayout<flow_owner>.size)
        XCTAssertEqual(owner.members.map(\.name), ["pid", "comm", "padding"])
        XCTAssertEqual(owner.members.map(\.offset), [
            MemoryLayout<flow_owner>.offset(of: \.pid), MemoryLayout<flow_owner>.offset(of: \.comm), MemoryLayout<flow_owner>.offset(of: \.padding),
        ].map { $0! })
        let key = try Tracers.FlowsSkb.object.structLayout(named: "flow_key")
        XCTAssertEqual(key.size, MemoryLayout<flow_key>.size)
        XCTAssertEqual(key.members.map(\.name), ["addr_low", "addr_high", "port_low", "port_high", "netns", "protocol", "family", "padding"])
        XCTAssertEqual(key.members.map(\.offset), [
            MemoryLayout<flow_key>.offset(of: \.addr_low), MemoryLayout<flow_key>.offset(of: \.addr_high),
            MemoryLayout<flow_key>.offset(of: \.port_low), MemoryLayout<flow_key>.offset(of: \.port_high),
            MemoryLayout<flow_key>.offset(of: \.netns), MemoryLayout<flow_key>.offset(of: \.protocol),
            MemoryLayout<flow_key>.offset(of: \.family), MemoryLayout<flow_key>.offset(of: \.padding),
        ].map { $0! })
        let counters = try Tracers.FlowsSkb.object.structLayout(named: "flow_counters")
        XCTAssertEqual(counters.size, MemoryLayout<flow_counters>.size)
        XCTAssertEqual(counters.members.map(\.name), ["start_ns", "last_ns", "packets", "bytes", "mark", "original", "closed", "padding",
                                                      "owner_pid", "owner_comm", "padding2"])
        XCTAssertEqual(counters.members.map(\.offset), [
            MemoryLayout<flow_counters>.offset(of: \.start_ns), MemoryLayout<flow_counters>.offset(of: \.last_ns),
            MemoryLayout<flow_counters>.offset(of: \.packets), MemoryLayout<flow_counters>.offset(of: \.bytes),
            MemoryLayout<flow_counters>.offset(of: \.mark), MemoryLayout<flow_counters>.offset(of: \.original),
            MemoryLayout<flow_counters>.offset(of: \.closed), MemoryLayout<flow_counters>.offset(of: \.padding),
            MemoryLayout<flow_counters>.offset(of: \.owner_pid), MemoryLayout<flow_counters>.offset(of: \.owner_comm),
            MemoryLayout<flow_counters>.offset(of: \.padding2),
        ].map { $0! })
    }

    private func monotonicNow() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}
