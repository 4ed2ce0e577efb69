import Foundation
import Synchronization
import Telemetry

/// One report about a flow: an update while it lives (on the age curve's schedule) or its destroy with the
/// totals. "Original" is the direction of the flow's first packet (conntrack's `IP_CT_DIR_ORIGINAL`),
/// "reply" the other one.
public struct FlowEvent: Sendable, Equatable {
    public enum Kind: String, Sendable { case update, destroy }

    public var kind: Kind
    /// Assigned by user space when the flow is first read; unique for the engine's lifetime.
    public var flowID: UInt64
    /// Wall-clock time of the flow's first packet and of this report, nanoseconds since the Unix epoch.
    public var start: UInt64
    public var timestamp: UInt64
    /// Conntrack path: the connmark (latest); cgroup_skb path: the skb mark of the flow's first packet (SO_MARK or a netfilter mark).
    public var connmark: UInt32
    /// 4 or 6.
    public var family: UInt8
    /// Source and destination of the original direction.
    public var source: String
    public var destination: String
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    /// IP protocol number (6 TCP, 17 UDP, ...).
    public var transport: UInt8
    /// Inode number of the network namespace, as `/proc/PID/ns/net` shows it (0: unknown).
    public var netns: UInt32
    public var packetsOriginal: UInt64
    public var bytesOriginal: UInt64
    public var packetsReply: UInt64
    public var bytesReply: UInt64
    /// A destroy of a flow the kernel table evicted before it ended: the totals are those last read.
    public var evicted: Bool
    /// cgroup_skb path: host PID of the process that created the local socket of the flow's first packet
    /// (0: unknown — a socket created before the start, or the conntrack path), and its `comm` then.
    public var pid: UInt32
    public var process: String?

    public init(kind: Kind, flowID: UInt64, start: UInt64, timestamp: UInt64, connmark: UInt32, family: UInt8,
                source: String, destination: String, sourcePort: UInt16, destinationPort: UInt16, transport: UInt8,
                netns: UInt32, packetsOriginal: UInt64, bytesOriginal: UInt64, packetsReply: UInt64, bytesReply: UInt64,
                evicted: Bool, pid: UInt32 = 0, process: String? = nil) {
        self.kind = kind
        self.flowID = flowID
        self.start = start
        self.timestamp = timestamp
        self.connmark = connmark
        self.family = family
        self.source = source
        self.destination = destination
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.transport = transport
        self.netns = netns
        self.packetsOriginal = packetsOriginal
        self.bytesOriginal = bytesOriginal
        self.packetsReply = packetsReply
        self.bytesReply = bytesReply
        self.evicted = evicted
        self.pid = pid
        self.process = process
    }

    /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number.
    public var transportName: String {
        switch transport {
        case 6: "tcp"
        case 17: "udp"
        case 1: "icmp"
        case 58: "icmpv6"
        default: String(transport)
        }
    }

    /// One JSON object per event (the keys of `tracer flows --json`).
    public var json: String {
        func quoted(_ text: String) -> String { "\"\(text)\"" }
        let fields: [(String, String)] = [
            ("event", quoted(kind.rawValue)), ("flow_id", String(flowID)), ("start", String(start)),
            ("timestamp", String(timestamp)), ("src", quoted(source)), ("dst", quoted(destination)),
            ("sport", String(sourcePort)), ("dport", String(destinationPort)), ("proto", quoted(transportName)),
            ("netns", String(netns)), ("connmark", String(connmark)),
            ("packets_orig", String(packetsOriginal)), ("bytes_orig", String(bytesOriginal)),
            ("packets_ret", String(packetsReply)), ("bytes_ret", String(bytesReply)), ("evicted", String(evicted)),
            ("pid", String(pid)), ("comm", process.map(jsonString) ?? "null"),
        ]
        return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }

    /// One line of text: `update tcp 127.0.0.1:5000 -> 127.0.0.1:80 netns 4026531833 orig 3 pkts 180 B reply ...`.
    public var text: String {
        func endpoint(_ address: String, _ port: UInt16) -> String { family == 6 ? "[\(address)]:\(port)" : "\(address):\(port)" }
        return "\(kind.rawValue)\(evicted ? " (evicted)" : "") \(transportName) \(endpoint(source, sourcePort)) -> "
            + "\(endpoint(destination, destinationPort)) netns \(netns) mark \(connmark) flow \(flowID) "
            + "orig \(packetsOriginal) pkts \(bytesOriginal) B, reply \(packetsReply) pkts \(bytesReply) B"
            + (pid == 0 ? "" : " pid \(pid)\(process.map { " (\($0))" } ?? "")")
    }
}

/// `text` as a JSON string literal (a process name is whatever the process chose).
private func jsonString(_ text: String) -> String {
    var bytes: [UInt8] = []
    appendJSONString(text, to: &bytes)
    return String(decoding: bytes, as: UTF8.self)
}

/// How often a live flow is reported, by age: three (age, interval) points; a flow of age `a` is reported
/// every `interval` of the last point whose age is at most `a` (e.g. 0 → 20 s, 1 min → 60 s, 5 min → 5 min).
public struct FlowUpdateCurve: Sendable, Equatable, CustomStringConvertible {
    public struct Point: Sendable, Equatable {
        /// Seconds since the flow's first packet.
        public let age: Double
        /// Seconds between updates from that age on.
        public let interval: Double
    }

    public let points: [Point]

    /// The usual curve: every 20 s for the first minute, then every minute, every 5 minutes after 5 minutes.
    public static let standard = try! FlowUpdateCurve([(0, 20), (60, 60), (300, 300)])

    /// Exactly three points, ages ascending from 0, intervals positive.
    public init(_ points: [(age: Double, interval: Double)]) throws {
        guard points.count == 3 else { throw FlowCurveError("an update curve has exactly three age:interval points, got \(points.count)") }
        guard points[0].age == 0 else { throw FlowCurveError("the update curve's first point must be at age 0, not \(points[0].age)") }
        for index in 1..<3 where points[index].age <= points[index - 1].age {
            throw FlowCurveError("the update curve's ages must increase: \(points[index - 1].age) then \(points[index].age)")
        }
        for point in points where !(point.interval > 0) || !point.interval.isFinite {
            throw FlowCurveError("update curve interval \(point.interval) at age \(point.age) is not a positive number of seconds")
        }
        self.points = points.map { Point(age: $0.age, interval: $0.interval) }
    }

    /// Parses `AGE:INTERVAL,AGE:INTERVAL,AGE:INTERVAL` in seconds, e.g. `0:20,60:60,300:300`.
    public init(parsing text: String) throws {
        let pairs = try text.split(separator: ",").map { pair -> (age: Double, interval: Double) in
            let parts = pair.split(separator: ":")
            guard parts.count == 2, let age = Double(parts[0]), let interval = Double(parts[1]) else {
                throw FlowCurveError("update curve point '\(pair)' is not AGE:INTERVAL in seconds (e.g. 0:20,60:60,300:300)")
            }
            return (age, interval)
        }
        try self.init(pairs)
    }

    /// Seconds between updates for a flow of `age` seconds.
    public func interval(atAge age: Double) -> Double {
        points.last { $0.age <= age }?.interval ?? points[0].interval
    }

    public var description: String {
        points.map { "\(Self.format($0.age)):\(Self.format($0.interval))" }.joined(separator: ",")
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}

public struct FlowCurveError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// A named subscriber to flow events with a bounded queue: when the queue is full new events are counted
/// as lost and dropped, so a consumer that reads slowly (or never) costs only itself events, and the
/// engine never waits for it.
public final class FlowConsumer: @unchecked Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        case updates, destroys, both

        func wants(_ kind: FlowEvent.Kind) -> Bool {
            switch self {
            case .both: true
            case .updates: kind == .update
            case .destroys: kind == .destroy
            }
        }
    }

    public let name: String
    public let mode: Mode
    public let capacity: Int
    /// Guards `queue`, `head`, `received`, `lost`; waiters sleep on it.
    private let condition = NSCondition()
    private var queue: [FlowEvent] = []
    private var head = 0
    private var received: UInt64 = 0
    private var lost: UInt64 = 0

    init(name: String, mode: Mode, capacity: Int) {
        self.name = name
        self.mode = mode
        self.capacity = max(1, capacity)
    }

    /// Queues the event unless the queue is full (then it is counted lost). Never blocks.
    func offer(_ event: FlowEvent) {
        guard mode.wants(event.kind) else { return }
        condition.lock()
        if queue.count - head >= capacity {
            lost += 1
        } else {
            queue.append(event)
            received += 1
            condition.signal()
        }
        condition.unlock()
    }

    /// Up to `maximum` queued events, oldest first; waits up to `timeout` seconds for the first one.
    public func take(maximum: Int = .max, timeout: Double = 0) -> [FlowEvent] {
        condition.lock()
        defer { condition.unlock() }
        if queue.count == head && timeout > 0 {
            let deadline = Date(timeIntervalSinceNow: timeout)
            while queue.count == head && condition.wait(until: deadline) {}
        }
        let end = min(queue.count, head + max(0, maximum))
        let taken = Array(queue[head..<end])
        head = end
        if head == queue.count {
            queue.removeAll(keepingCapacity: true)
            head = 0
        }
        return taken
    }

    public var statistics: FlowConsumerStatistics {
        condition.lock()
        defer { condition.unlock() }
        return FlowConsumerStatistics(name: name, mode: mode, received: received, lost: lost, queueLength: queue.count - head)
    }
}

public struct FlowConsumerStatistics: Sendable, Equatable {
    public let name: String
    public let mode: FlowConsumer.Mode
    /// Events queued for the consumer.
    public let received: UInt64
    /// Events dropped because its queue was full.
    public let lost: UInt64
    /// Events queued and not yet taken.
    public let queueLength: Int
}

/// What the probe read from the kernel and what it could not report.
public struct FlowProbeStatistics: Sendable, Equatable {
    /// Flow-table entries read, and their bytes (key + counters).
    public var eventsRead: UInt64 = 0
    public var bytesRead: UInt64 = 0
    /// Updates the curve called for that were not emitted because reading fell behind by a whole interval.
    public var updatesLost: UInt64 = 0
    /// Flows whose destroy could not carry complete totals: evicted from the full table (those read before
    /// get a destroy marked `evicted` with the last totals read; those never read are only counted).
    public var destroysLost: UInt64 = 0
    /// Kernel side: flows inserted, inserts that failed, packets accounted, packets with unreadable headers, ends seen.
    public var flowsCreated: UInt64 = 0
    public var insertsFailed: UInt64 = 0
    public var packets: UInt64 = 0
    public var unparsedPackets: UInt64 = 0
    /// Flows the kernel saw end (a TCP socket reached TCP_CLOSE, or conntrack deleted the entry).
    public var closes: UInt64 = 0
    /// Flows in the table at the last read.
    public var activeFlows: Int = 0
}
