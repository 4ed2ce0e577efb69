import BPFRuntime
import CTracerABI
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The kernel hooks that feed the flow table, chosen once at start.
public enum FlowHooks: Sendable, Equatable, CustomStringConvertible {
    /// Kprobes on conntrack's `__nf_ct_refresh_acct` (every accounted packet, Linux 4.10) and `nf_ct_delete`
    /// (an entry leaves the table): conntrack's own flows, forwarded traffic included. Needs CONFIG_KPROBES
    /// and nf_conntrack tracking traffic.
    case conntrackKprobes
    /// `cgroup_skb` ingress/egress programs on the cgroup v2 root at `path` (Linux 4.10; the netns needs
    /// `bpf_cast_to_kern_ctx`, Linux 6.2) and `sock:inet_sock_set_state` (Linux 4.16) for TCP closes:
    /// the packets of local sockets only.
    case cgroupSKB(path: String)

    /// What the machine offers, read from /proc and /sys (a parameter so tests can give other machines').
    public struct Machine: Sendable {
        /// /proc/self/mounts.
        public var mounts: String
        /// Whether the kernel has kprobes (`/sys/bus/event_source/devices/kprobe`, CONFIG_KPROBE_EVENTS).
        public var kprobes: Bool
        /// `net.netfilter.nf_conntrack_count`: nil when nf_conntrack is not loaded.
        public var conntrackCount: Int?

        public init(mounts: String, kprobes: Bool, conntrackCount: Int?) {
            self.mounts = mounts
            self.kprobes = kprobes
            self.conntrackCount = conntrackCount
        }

        public static func current() -> Machine {
            let count = (try? String(contentsOfFile: "/proc/sys/net/netfilter/nf_conntrack_count", encoding: .utf8))
                .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            return Machine(mounts: (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? "",
                           kprobes: FileManager.default.fileExists(atPath: "/sys/bus/event_source/devices/kprobe"),
                           conntrackCount: count)
        }
    }

    /// Conntrack's kprobes where the kernel has kprobes and nf_conntrack tracks this namespace's traffic,
    /// else cgroup_skb on the cgroup v2 hierarchy; with the reason, for the log. Throws the one-line reason
    /// when neither can work.
    public static func choose(_ machine: Machine = .current()) throws -> (hooks: FlowHooks, reason: String) {
        let conntrack: String
        switch (machine.kprobes, machine.conntrackCount) {
        case (true, let count?) where count > 0:
            return (.conntrackKprobes, "kprobes and nf_conntrack (\(count) entries) present")
        case (false, _): conntrack = "no kprobes in this kernel"
        case (true, nil): conntrack = "nf_conntrack is not loaded"
        case (true, _): conntrack = "nf_conntrack tracks nothing in this namespace (nf_conntrack_count 0)"
        }
        return (try cgroupSKB(mounts: machine.mounts), "\(conntrack): conntrack path unavailable")
    }

    /// cgroup_skb on the cgroup v2 hierarchy from `mounts`: `/sys/fs/cgroup` on a v2 system,
    /// `/sys/fs/cgroup/unified` on a hybrid one.
    public static func cgroupSKB(mounts: String) throws -> FlowHooks {
        var cgroup2: [String] = []
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count > 2 && fields[2] == "cgroup2" { cgroup2.append(String(fields[1])) }
        }
        guard let path = cgroup2.min(by: { $0.count < $1.count }) else {
            throw FlowAccountingError("flow accounting needs kprobes with nf_conntrack, or a cgroup v2 hierarchy for its cgroup_skb programs, "
                                      + "and this machine has neither: mount -t cgroup2 none /sys/fs/cgroup/unified")
        }
        return .cgroupSKB(path: path)
    }

    public var description: String {
        switch self {
        case .conntrackKprobes: "kprobes on __nf_ct_refresh_acct and nf_ct_delete (conntrack)"
        case .cgroupSKB(let path): "cgroup_skb ingress/egress on \(path) + tracepoint sock:inet_sock_set_state"
        }
    }
}

public struct FlowAccountingError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Network flow accounting (tracers/flows): per-flow packets and bytes in both directions, start time,
/// 5-tuple, network namespace and mark, reported as update events on an age curve and destroy events
/// with the totals, to named consumers. Owns its BPF object (flows_skb.bpf.c) and links; `stop()` or
/// deinit detaches everything.
///
/// The kernel side counts every packet into an LRU hash (`flows_table`); this side reads the whole table
/// every `readInterval` (`bpf_map_lookup_batch`, Linux 5.6), schedules updates, and ends flows: TCP flows
/// `closeGrace` after a socket of theirs reached TCP_CLOSE and their last packet, others after an idle
/// timeout. Ended flows are deleted from the table.
public final class FlowAccounting: @unchecked Sendable {
    public struct Settings: Sendable {
        public var curve: FlowUpdateCurve = .standard
        /// Seconds between reads of the kernel table.
        public var readInterval: Double = 1
        /// Flow-table entries; when full the least recently used flow is evicted (counted).
        public var tableSize: UInt32 = 65536
        /// Seconds after a closed TCP flow's last packet before its destroy.
        public var closeGrace: Double = 1
        /// Seconds without packets after which a UDP (or other non-TCP) flow ends.
        public var idleTimeout: Double = 30
        /// Seconds without packets after which a TCP flow whose close was not seen ends.
        public var tcpIdleTimeout: Double = 600
        /// Hooks; nil detects them.
        public var hooks: FlowHooks?

        public init() {}
    }

    public let settings: Settings
    public let hooks: FlowHooks
    /// Why these hooks: the detection's reason, or why the preferred ones failed.
    public let hookReason: String
    private let object: BPFObject
    private let table: BPFMap
    private let kernelStatistics: BPFMap
    private let links: Mutex<[BPFLink]>
    /// The reader's state; `poll` holds it for one whole read.
    private let state: Mutex<ReaderState>
    private let consumerList = Mutex<[FlowConsumer]>([])
    private let stopping = Mutex<Bool>(false)
    private let reader = Mutex<Thread?>(nil)
    private let readerDone = DispatchSemaphore(value: 0)
    /// CLOCK_REALTIME − CLOCK_MONOTONIC at start: turns kernel timestamps into wall-clock time, the same
    /// for every event (the clocks drift apart only by NTP slewing).
    private let wallOffset = wallClockNanoseconds() &- monotonicNanoseconds()

    /// Loads and attaches the programs of `settings.hooks`, or of the hooks `FlowHooks.choose()` picks (falling
    /// back from conntrack's kprobes to cgroup_skb when they cannot attach). Throws a one-line reason (what
    /// was attempted, where, what to do) and leaves nothing attached when no hooks work.
    public init(settings: Settings = Settings()) throws {
        self.settings = settings
        guard settings.tableSize > 0 else { throw FlowAccountingError("flow table size must be at least 1") }
        var (hooks, reason) = try settings.hooks.map { ($0, "chosen by the caller") } ?? FlowHooks.choose()
        var attached: (BPFObject, [BPFLink])
        do {
            attached = try Self.attach(hooks, tableSize: settings.tableSize)
        } catch let failure as FlowAccountingError where hooks == .conntrackKprobes && settings.hooks == nil {
            hooks = try FlowHooks.cgroupSKB(mounts: FlowHooks.Machine.current().mounts)
            reason = "\(failure.description): falling back"
            attached = try Self.attach(hooks, tableSize: settings.tableSize)
        }
        self.hooks = hooks
        hookReason = reason
        object = attached.0
        links = Mutex(attached.1)
        let maps: (table: BPFMapName, statistics: BPFMapName) = switch hooks {
        case .conntrackKprobes: (Tracers.FlowsConntrack.Map.flowsTable, Tracers.FlowsConntrack.Map.flowsStats)
        case .cgroupSKB: (Tracers.FlowsSkb.Map.flowsTable, Tracers.FlowsSkb.Map.flowsStats)
        }
        table = try object.map(maps.table)
        kernelStatistics = try object.map(maps.statistics)
        state = Mutex(ReaderState())
    }

    /// The object of `hooks`, loaded, with its programs attached.
    private static func attach(_ hooks: FlowHooks, tableSize: UInt32) throws -> (BPFObject, [BPFLink]) {
        let embedded = switch hooks {
        case .conntrackKprobes: Tracers.FlowsConntrack.object
        case .cgroupSKB: Tracers.FlowsSkb.object
        }
        var spec = BPFObjectSpec(embedded)
        spec.mapMaxEntries[BPFMapName("flows_table")] = tableSize
        let object: BPFObject
        do {
            object = try spec.load()
        } catch let error as BPFError {
            throw FlowAccountingError("flow accounting (\(hooks)): \(error.description.split(separator: "\n").first ?? ""); "
                                      + "needs BTF (Linux 6.2+ for cgroup_skb, nf_conntrack's module BTF for conntrack) and root")
        }
        var links: [BPFLink] = []
        do {
            switch hooks {
            case .conntrackKprobes:
                typealias Program = Tracers.FlowsConntrack.Program
                links.append(try object.program(Program.flowsCtRefresh).attachKprobe(function: "__nf_ct_refresh_acct"))
                links.append(try object.program(Program.flowsCtDelete).attachKprobe(function: "nf_ct_delete"))
            case .cgroupSKB(let path):
                typealias Program = Tracers.FlowsSkb.Program
                links.append(try object.program(Program.flowsSockCreate).attachCgroup(path: path))
                links.append(try object.program(Program.flowsEgress).attachCgroup(path: path))
                links.append(try object.program(Program.flowsIngress).attachCgroup(path: path))
                links.append(try object.program(Program.flowsTcpState).attachTracepoint(category: "sock", event: "inet_sock_set_state"))
            }
        } catch let error as BPFError {
            links.forEach { $0.close() }
            let fix = switch hooks {
            case .conntrackKprobes: "the kernel needs kprobes and nf_conntrack loaded"
            case .cgroupSKB(let path): "\(path) must be a cgroup v2 mount (mount -t cgroup2 none \(path)) and tracefs mounted"
            }
            throw FlowAccountingError("flow accounting: \(error.description.split(separator: "\n").first ?? ""); \(fix)")
        }
        return (object, links)
    }

    deinit { stop() }

    /// A consumer of `mode` events with a queue of `capacity` events.
    public func addConsumer(name: String, mode: FlowConsumer.Mode, capacity: Int = 4096) -> FlowConsumer {
        let consumer = FlowConsumer(name: name, mode: mode, capacity: capacity)
        consumerList.withLock { $0.append(consumer) }
        return consumer
    }

    public var consumers: [FlowConsumerStatistics] { consumerList.withLock { $0 }.map(\.statistics) }

    public var statistics: FlowProbeStatistics { state.withLock { $0.statistics } }

    /// Run count and time of each attached program (counted while `BPFStatistics.enable()` holds).
    public func programStatistics() throws -> [ProgramStatistics] {
        try object.loadedPrograms.map { try $0.runtimeStatistics() }
    }

    /// Inserts an entry into the kernel table as a packet would (for benchmarks of the reader).
    public func insertForTesting(_ key: flow_key, _ counters: flow_counters) throws {
        try table.update(key, counters)
    }

    /// Reads the table every `readInterval` on a thread of its own until `stop()`.
    public func start() {
        reader.withLock { thread in
            guard thread == nil else { return }
            let interval = settings.readInterval
            let started = Thread { [self] in
                while !stopping.withLock({ $0 }) {
                    poll()
                    // Sleep in steps of at most 50 ms so that stop() returns promptly.
                    let deadline = monotonicNanoseconds() &+ seconds(interval)
                    while !stopping.withLock({ $0 }), case let now = monotonicNanoseconds(), now < deadline {
                        usleep(UInt32(min(deadline - now, 50_000_000) / 1000))
                    }
                }
                readerDone.signal()
            }
            started.name = "tracer-flows"
            started.start()
            thread = started
        }
    }

    /// Stops the reader thread (after one last read) and detaches the programs. Safe to call more than once.
    public func stop() {
        let wasRunning = reader.withLock { $0 != nil }
        let alreadyStopping = stopping.withLock { value -> Bool in defer { value = true }; return value }
        if wasRunning && !alreadyStopping {
            readerDone.wait()
            poll()
        }
        links.withLock { links in
            links.forEach { $0.close() }
            links.removeAll()
        }
    }

    /// One read of the kernel table at `now` (CLOCK_MONOTONIC nanoseconds, the clock of `bpf_ktime_get_ns`):
    /// emits the updates that are due and the destroys of ended and evicted flows to the consumers.
    /// The reader thread calls it; tests call it with chosen times.
    public func poll(now: UInt64? = nil) {
        let now = now ?? monotonicNanoseconds()
        let events = state.withLock { state in read(&state, now: now, wallOffset: wallOffset) }
        guard !events.isEmpty else { return }
        let consumers = consumerList.withLock { $0 }
        for event in events {
            for consumer in consumers { consumer.offer(event) }
        }
    }

    private struct ReaderState {
        var flows: [FlowIdentity: TrackedFlow] = [:]
        var nextFlowID: UInt64 = 1
        /// Flows first read (a flow recreated after its entry was deleted counts again).
        var flowsSeen: UInt64 = 0
        /// Flows read once and then gone from the table without being ended here (evicted).
        var vanished: UInt64 = 0
        var statistics = FlowProbeStatistics()
    }

    private struct TrackedFlow {
        let id: UInt64
        var key: flow_key
        var counters: flow_counters
        /// When the next update is due (monotonic ns).
        var nextUpdate: UInt64
    }

    private func read(_ state: inout ReaderState, now: UInt64, wallOffset: UInt64) -> [FlowEvent] {
        let kernel = readKernelStatistics()
        let entries: [(flow_key, flow_counters)]
        do {
            entries = try table.entries()
        } catch {
            return []
        }
        state.statistics.eventsRead += UInt64(entries.count)
        state.statistics.bytesRead += UInt64(entries.count * (MemoryLayout<flow_key>.size + MemoryLayout<flow_counters>.size))
        var events: [FlowEvent] = []
        var present = Set<FlowIdentity>(minimumCapacity: entries.count)
        let firstInterval = seconds(settings.curve.interval(atAge: 0))
        for (key, counters) in entries {
            let identity = FlowIdentity(key)
            present.insert(identity)
            var flow: TrackedFlow
            if let known = state.flows[identity], known.counters.start_ns == counters.start_ns {
                flow = known
            } else {
                if let replaced = state.flows[identity] {
                    // Evicted and recreated between two reads: the old flow ended unseen.
                    events.append(event(.destroy, replaced, now: now, wallOffset: wallOffset, evicted: true))
                    state.vanished += 1
                    state.statistics.destroysLost += 1
                }
                flow = TrackedFlow(id: state.nextFlowID, key: key, counters: counters, nextUpdate: counters.start_ns &+ firstInterval)
                state.nextFlowID += 1
                state.flowsSeen += 1
            }
            flow.counters = counters
            let idle = now > counters.last_ns ? now - counters.last_ns : 0
            let timeout = counters.closed != 0 ? settings.closeGrace
                : (key.protocol == 6 ? settings.tcpIdleTimeout : settings.idleTimeout)
            if idle >= seconds(timeout) {
                _ = try? table.delete(key)
                events.append(event(.destroy, flow, now: now, wallOffset: wallOffset, evicted: false))
                state.flows[identity] = nil
                continue
            }
            if now >= flow.nextUpdate {
                let age = Double(now &- counters.start_ns) / 1e9
                let interval = seconds(settings.curve.interval(atAge: age))
                state.statistics.updatesLost += (now - flow.nextUpdate) / max(interval, 1)
                events.append(event(.update, flow, now: now, wallOffset: wallOffset, evicted: false))
                flow.nextUpdate = now &+ interval
            }
            state.flows[identity] = flow
        }
        for (identity, flow) in state.flows where !present.contains(identity) {
            events.append(event(.destroy, flow, now: now, wallOffset: wallOffset, evicted: true))
            state.flows[identity] = nil
            state.vanished += 1
            state.statistics.destroysLost += 1
        }
        // Flows the kernel created that were never read were evicted before the first read.
        let unseen = kernel.created > state.flowsSeen ? kernel.created - state.flowsSeen : 0
        state.statistics.destroysLost = state.vanished + unseen
        state.statistics.flowsCreated = kernel.created
        state.statistics.insertsFailed = kernel.insertFailed
        state.statistics.packets = kernel.packets
        state.statistics.unparsedPackets = kernel.unparsed
        state.statistics.closes = kernel.closes
        state.statistics.activeFlows = state.flows.count
        return events
    }

    private func event(_ kind: FlowEvent.Kind, _ flow: TrackedFlow, now: UInt64, wallOffset: UInt64, evicted: Bool) -> FlowEvent {
        let key = flow.key, counters = flow.counters
        let original = Int(counters.original & 1), reply = 1 - original
        let low = address(key.addr_low, family: key.family), high = address(key.addr_high, family: key.family)
        // Original direction from the low endpoint: source is the low one.
        let fromLow = original == Int(FLOWS_LOW_TO_HIGH)
        let packets = [counters.packets.0, counters.packets.1], bytes = [counters.bytes.0, counters.bytes.1]
        return FlowEvent(
            kind: kind, flowID: flow.id, start: counters.start_ns &+ wallOffset, timestamp: now &+ wallOffset,
            connmark: counters.mark, family: key.family,
            source: fromLow ? low : high, destination: fromLow ? high : low,
            sourcePort: fromLow ? key.port_low : key.port_high, destinationPort: fromLow ? key.port_high : key.port_low,
            transport: key.protocol, netns: key.netns,
            packetsOriginal: packets[original], bytesOriginal: bytes[original],
            packetsReply: packets[reply], bytesReply: bytes[reply], evicted: evicted,
            pid: counters.owner_pid, process: counters.owner_pid == 0 ? nil : processName(counters.owner_comm))
    }

    private struct KernelCounters {
        var created: UInt64 = 0, insertFailed: UInt64 = 0, packets: UInt64 = 0, unparsed: UInt64 = 0, closes: UInt64 = 0
    }

    private func readKernelStatistics() -> KernelCounters {
        func total(_ index: Int32) -> UInt64 {
            ((try? kernelStatistics.lookupPerCPU(UInt32(index), as: UInt64.self)) ?? nil)?.reduce(0, &+) ?? 0
        }
        return KernelCounters(created: total(FLOWS_STAT_CREATED), insertFailed: total(FLOWS_STAT_INSERT_FAILED),
                              packets: total(FLOWS_STAT_PACKETS), unparsed: total(FLOWS_STAT_UNPARSED), closes: total(FLOWS_STAT_CLOSES))
    }
}

/// A `comm` field (up to 16 bytes, NUL-terminated unless full) as text.
func processName(_ comm: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) -> String {
    withUnsafeBytes(of: comm) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

/// A flow key's 48 bytes as a dictionary key.
struct FlowIdentity: Hashable {
    let words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

    init(_ key: flow_key) {
        words = withUnsafeBytes(of: key) { raw in
            (raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
             raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self),
             raw.loadUnaligned(fromByteOffset: 32, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 40, as: UInt64.self))
        }
    }

    static func == (a: FlowIdentity, b: FlowIdentity) -> Bool {
        a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2
            && a.words.3 == b.words.3 && a.words.4 == b.words.4 && a.words.5 == b.words.5
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(words.0); hasher.combine(words.1); hasher.combine(words.2)
        hasher.combine(words.3); hasher.combine(words.4); hasher.combine(words.5)
    }
}

/// Text form of a 16-byte address field (`inet_ntop`); IPv4 in its first 4 bytes.
func address(_ bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8),
             family: UInt8) -> String {
    var raw = bytes
    var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
    let ok = withUnsafeBytes(of: &raw) { pointer in
        inet_ntop(family == FLOWS_FAMILY_IPV6 ? AF_INET6 : AF_INET, pointer.baseAddress, &text, socklen_t(text.count)) != nil
    }
    return ok ? String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
}

func seconds(_ value: Double) -> UInt64 { UInt64(max(0, value) * 1e9) }

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`.
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

func wallClockNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
