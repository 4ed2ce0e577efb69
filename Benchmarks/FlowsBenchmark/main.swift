import BPFRuntime
import CTracerABI
import Foundation
import Synchronization
import Tracers

#if canImport(Glibc)
import Glibc
#endif

/// Cost of flow accounting (issue 18), side by side with its baseline in one run. Run as root:
///   swift run -c release FlowsBenchmark [--rounds N] [--mib N] [--flows N] [--rates R,R,...] [--parts 1,2,3]
/// 1. A loopback bulk TCP transfer (one sender and one receiver thread, 128 KiB writes): rounds without
///    and with flow accounting attached alternate; the median throughput of each and their ratio, and the
///    BPF run time per packet (BPF_ENABLE_STATS) over the accounted rounds.
/// 2. The reader: a kernel table of N flows (inserted from user space) read, scheduled and reported to one
///    consumer; the time of one read gives the flows per second one core of the reader sustains.
/// 3. Sustained new flows: UDP flows (one datagram each, to 127.0.0.1 ports 10000-19999) created at a fixed
///    rate for some seconds with the engine as the agent runs it (reads every 1 s, 65 536 entries, idle
///    timeout 1 s); per rate, the destroys delivered against the flows created, and updates/destroys lost.

var rounds = 7
var mebibytes = 2048
var flowCount = 65536
var rates = [5_000, 20_000, 40_000]
var parts: Set<Int> = [1, 2, 3]
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--rounds": rounds = Int(arguments.popFirst() ?? "") ?? rounds
    case "--mib": mebibytes = Int(arguments.popFirst() ?? "") ?? mebibytes
    case "--flows": flowCount = Int(arguments.popFirst() ?? "") ?? flowCount
    case "--rates": rates = (arguments.popFirst() ?? "").split(separator: ",").compactMap { Int($0) }
    case "--parts": parts = Set((arguments.popFirst() ?? "").split(separator: ",").compactMap { Int($0) })
    default: print("unknown argument \(argument)"); exit(2)
    }
}

struct Failure: Error, CustomStringConvertible {
    let description: String
}

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
func format(_ value: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", value) }

func loopbackAddress(port: UInt16) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    return address
}

/// Sends `bytes` over a fresh loopback TCP connection; returns the seconds until the receiver read them all.
func transfer(bytes: Int) throws -> Double {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(listener) }
    var address = loopbackAddress(port: 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(listener, pointer, length) == 0 && listen(listener, 1) == 0 && getsockname(listener, pointer, &length) == 0
        }
    }
    guard bound else { throw Failure(description: "listen on 127.0.0.1: errno \(errno)") }
    let done = DispatchSemaphore(value: 0)
    let received = Mutex(0)
    Thread {
        let connection = accept(listener, nil, nil)
        var buffer = [UInt8](repeating: 0, count: 256 << 10)
        var total = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            total += count
        }
        close(connection)
        received.withLock { $0 = total }
        done.signal()
    }.start()
    let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(client) }
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) == 0 }
    }
    guard connected else { throw Failure(description: "connect to 127.0.0.1: errno \(errno)") }
    let chunk = [UInt8](repeating: 0x78, count: 128 << 10)
    let start = DispatchTime.now().uptimeNanoseconds
    var left = bytes
    while left > 0 {
        let count = chunk.withUnsafeBytes { send(client, $0.baseAddress, min(left, $0.count), 0) }
        guard count > 0 else { throw Failure(description: "send: errno \(errno)") }
        left -= count
    }
    shutdown(client, Int32(SHUT_WR))
    done.wait()
    let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    guard received.withLock({ $0 }) == bytes else { throw Failure(description: "receiver got \(received.withLock { $0 }) of \(bytes) bytes") }
    return elapsed
}

func throughputComparison(rounds: Int, mebibytes: Int) throws {
    let bytes = mebibytes << 20
    print("1. loopback TCP bulk transfer, \(mebibytes) MiB per round, \(rounds) rounds each, alternating")
    _ = try transfer(bytes: 64 << 20) // warm-up
    var without: [Double] = [], with: [Double] = []
    var runs: UInt64 = 0, runTime: UInt64 = 0
    let statistics = try BPFStatistics.enable()
    for _ in 0..<rounds {
        without.append(Double(bytes) / 1e9 * 8 / (try transfer(bytes: bytes)))
        let flows = try FlowAccounting()
        flows.start()
        let before = try flows.programStatistics()
        with.append(Double(bytes) / 1e9 * 8 / (try transfer(bytes: bytes)))
        let after = try flows.programStatistics()
        for (first, second) in zip(before, after) where first.program.rawValue != "flows_tcp_state" {
            runs += second.runCount - first.runCount
            runTime += second.runTimeNanoseconds - first.runTimeNanoseconds
        }
        flows.stop()
    }
    _ = statistics
    let baseline = median(without), accounted = median(with)
    print("   without flow accounting: median \(format(baseline)) Gbit/s (rounds: \(without.map { format($0) }.joined(separator: " ")))")
    print("   with flow accounting:    median \(format(accounted)) Gbit/s (rounds: \(with.map { format($0) }.joined(separator: " ")))")
    print("   ratio: \(format(accounted / baseline, 3))")
    print("   BPF time per packet (cgroup_skb runs during the accounted rounds): \(runs) runs, \(format(Double(runTime) / Double(max(runs, 1)), 0)) ns per run")
}

func readerCost(flowCount: Int) throws {
    print("2. reader: a table of \(flowCount) flows, read and reported to one consumer")
    var settings = FlowAccounting.Settings()
    settings.tableSize = UInt32(flowCount + 1024)
    settings.idleTimeout = 3600
    settings.curve = try FlowUpdateCurve([(0, 0.01), (60, 60), (300, 300)]) // every flow is due at every read (10 ms apart)
    let flows = try FlowAccounting(settings: settings)
    let consumer = flows.addConsumer(name: "bench", mode: .both, capacity: flowCount * 4)
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    let start = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    for index in 0..<flowCount {
        var key = flow_key()
        key.family = UInt8(FLOWS_FAMILY_IPV4)
        key.protocol = 17
        key.addr_low.0 = 10; key.addr_low.2 = UInt8((index >> 8) & 0xff); key.addr_low.3 = UInt8(index & 0xff)
        key.addr_high.0 = 10; key.addr_high.1 = 1
        key.port_low = UInt16(1024 + index % 60000)
        key.port_high = 53
        var counters = flow_counters()
        counters.start_ns = start
        counters.last_ns = start
        counters.packets = (1, 1)
        counters.bytes = (100, 100)
        try flows.insertForTesting(key, counters)
    }
    var times: [Double] = []
    for round in 1...5 {
        let begin = DispatchTime.now().uptimeNanoseconds
        flows.poll(now: start + UInt64(round) * 10_000_000)
        times.append(Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9)
        _ = consumer.take()
    }
    let statistics = flows.statistics
    let perRead = median(times)
    print("   one read: median \(format(perRead * 1000, 1)) ms for \(statistics.activeFlows) flows, each reported: "
          + "\(format(Double(statistics.activeFlows) / perRead / 1e6, 2)) M flow updates per second of one core; "
          + "updates lost \(statistics.updatesLost), destroys lost \(statistics.destroysLost)")
    flows.stop()
}

/// Sends one datagram from a fresh socket per flow, `rate` flows per second for `seconds`; returns the flows sent.
func sendFlows(rate: Int, seconds: Int) -> Int {
    let total = rate * seconds
    let start = DispatchTime.now().uptimeNanoseconds
    var payload: UInt8 = 0x79
    for index in 0..<total {
        // Pace in 10 ms steps.
        let due = start + UInt64(index) * 1_000_000_000 / UInt64(rate)
        while DispatchTime.now().uptimeNanoseconds < due { usleep(1000) }
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var address = loopbackAddress(port: UInt16(10000 + index % 10000))
        withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                _ = sendto(fd, &payload, 1, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        close(fd)
    }
    return total
}

func sustainedFlows(rates: [Int], seconds: Int) throws {
    print("3. sustained new flows, \(seconds) s per rate, reads every 1 s, table 65 536, idle timeout 1 s")
    for rate in rates {
        var settings = FlowAccounting.Settings()
        settings.idleTimeout = 1
        let flows = try FlowAccounting(settings: settings)
        let consumer = flows.addConsumer(name: "bench", mode: .destroys, capacity: 1 << 20)
        flows.start()
        let begin = DispatchTime.now().uptimeNanoseconds
        let sent = sendFlows(rate: rate, seconds: seconds)
        let achieved = Double(sent) / (Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9)
        usleep(3_000_000)
        flows.stop()
        let destroys = consumer.take().filter { $0.transport == 17 && $0.destinationPort >= 10000 && $0.destinationPort < 20000 }
        let statistics = flows.statistics
        print("   \(rate)/s (achieved \(format(achieved, 0))/s): \(sent) flows sent, \(destroys.count) destroys delivered "
              + "(\(destroys.filter(\.evicted).count) evicted), kernel created \(statistics.flowsCreated), "
              + "updates lost \(statistics.updatesLost), destroys lost \(statistics.destroysLost)")
    }
}

do {
    if parts.contains(1) { try throughputComparison(rounds: rounds, mebibytes: mebibytes) }
    if parts.contains(2) { try readerCost(flowCount: flowCount) }
    if parts.contains(3) { try sustainedFlows(rates: rates, seconds: 5) }
} catch {
    print("FlowsBenchmark: \(error)")
    exit(1)
}
