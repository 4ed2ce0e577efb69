import Foundation
import OTLPExport
import Synchronization
import Telemetry
import Tracers

/// The agent's network flow metrics (`--network-flows`): bytes and packets of every flow, summed from the
/// flow events' totals, by owning process (where the socket's owner is known), source and destination
/// address, destination port class and transport; at most
/// `seriesLimit` attribute sets, flows beyond them counted in one overflow series
/// (`otel.metric.overflow=true`, as the OpenTelemetry SDKs' cardinality limit does). Reads its own
/// consumer of the flow engine on a thread of its own.
final class FlowMetrics: Sendable {
    struct Series: Hashable {
        /// The owner's process name, when the socket's owner is known (cgroup_skb path).
        let process: String?
        let source: String
        let destination: String
        let port: String
        let transport: String
    }

    struct Totals: Equatable {
        var bytesOriginal: UInt64 = 0
        var bytesReply: UInt64 = 0
        var packetsOriginal: UInt64 = 0
        var packetsReply: UInt64 = 0
    }

    private struct State {
        var series: [Series: Totals] = [:]
        var overflow = Totals()
        /// Flows counted in the overflow series.
        var overflowFlows = 0
        /// Each live flow's totals at its last event and the series it counts in (nil: overflow).
        var flows: [UInt64: (totals: Totals, series: Series?)] = [:]
    }

    let seriesLimit: Int
    private let state = Mutex(State())
    private let consumer: FlowConsumer
    private let flows: FlowAccounting
    private let running = Atomic<Bool>(true)
    private let finished = DispatchSemaphore(value: 0)

    init(flows: FlowAccounting, seriesLimit: Int = 2000) {
        self.flows = flows
        self.seriesLimit = seriesLimit
        consumer = flows.addConsumer(name: "metrics", mode: .both, capacity: 1 << 16)
    }

    func start() {
        Thread { [self] in
            while running.load(ordering: .relaxed) { apply(consumer.take(timeout: 0.5)) }
            apply(consumer.take())
            finished.signal()
        }.start()
    }

    /// Stops the flow engine (one last read, programs detached), then this reader after taking what is
    /// queued; call once, after `start()`.
    func stop() {
        flows.stop()
        running.store(false, ordering: .relaxed)
        finished.wait()
    }

    /// `destination.port` of a series: the port itself below Linux's ephemeral range (32768), else `ephemeral`.
    static func portClass(_ port: UInt16) -> String { port < 32768 ? String(port) : "ephemeral" }

    func apply(_ events: [FlowEvent]) {
        guard !events.isEmpty else { return }
        state.withLock { state in
            for event in events {
                let totals = Totals(bytesOriginal: event.bytesOriginal, bytesReply: event.bytesReply,
                                    packetsOriginal: event.packetsOriginal, packetsReply: event.packetsReply)
                let known = state.flows[event.flowID]
                let series: Series?
                if let known {
                    series = known.series
                } else {
                    let candidate = Series(process: event.process, source: event.source, destination: event.destination,
                                           port: Self.portClass(event.destinationPort), transport: event.transportName)
                    if state.series[candidate] != nil || state.series.count < seriesLimit {
                        series = candidate
                    } else {
                        series = nil
                        state.overflowFlows += 1
                    }
                }
                let previous = known?.totals ?? Totals()
                var sum = series.flatMap { state.series[$0] } ?? (series == nil ? state.overflow : Totals())
                sum.bytesOriginal &+= totals.bytesOriginal &- min(previous.bytesOriginal, totals.bytesOriginal)
                sum.bytesReply &+= totals.bytesReply &- min(previous.bytesReply, totals.bytesReply)
                sum.packetsOriginal &+= totals.packetsOriginal &- min(previous.packetsOriginal, totals.packetsOriginal)
                sum.packetsReply &+= totals.packetsReply &- min(previous.packetsReply, totals.packetsReply)
                if let series { state.series[series] = sum } else { state.overflow = sum }
                state.flows[event.flowID] = event.kind == .destroy ? nil : (totals, series)
            }
        }
    }

    /// The counters, the engine's probe statistics and the consumers' losses, as metrics.
    func collect() -> [MetricData] {
        let (series, overflow, overflowFlows) = state.withLock { ($0.series, $0.overflow, $0.overflowFlows) }
        var bytes: [MetricData.NumberPoint] = [], packets: [MetricData.NumberPoint] = []
        func add(_ attributes: Attributes, _ totals: Totals) {
            for (direction, byteCount, packetCount) in [("original", totals.bytesOriginal, totals.packetsOriginal),
                                                        ("reply", totals.bytesReply, totals.packetsReply)] {
                var labelled = attributes
                labelled["flow.direction"] = .string(direction)
                bytes.append(.init(attributes: labelled, value: Double(byteCount)))
                packets.append(.init(attributes: labelled, value: Double(packetCount)))
            }
        }
        for (key, totals) in series.sorted(by: { "\($0.key)" < "\($1.key)" }) {
            var attributes: Attributes = key.process.map { ["process.executable.name": .string($0)] } ?? Attributes()
            attributes["source.address"] = .string(key.source)
            attributes["destination.address"] = .string(key.destination)
            attributes["destination.port"] = .string(key.port)
            attributes["network.transport"] = .string(key.transport)
            add(attributes, totals)
        }
        if overflowFlows > 0 { add(["otel.metric.overflow": .bool(true)], overflow) }
        let probe = flows.statistics
        func counter(_ name: String, _ help: String, _ value: some BinaryInteger, _ attributes: Attributes = Attributes()) -> MetricData {
            MetricData(name: name, description: help, unit: "1", points: .counter([.init(attributes: attributes, value: Double(value))]))
        }
        return [
            MetricData(name: "tracer.flow.bytes", description: "IP bytes of network flows, by direction (original: the flow's first packet's).",
                       unit: "By", points: .counter(bytes)),
            MetricData(name: "tracer.flow.packets", description: "Packets of network flows, by direction.", unit: "1", points: .counter(packets)),
            MetricData(name: "tracer.flows.active", description: "Flows in the kernel flow table at the last read.", unit: "1",
                       points: .gauge([.init(value: Double(probe.activeFlows))])),
            counter("tracer.flows.series.overflow", "Flows counted in the overflow series (series limit \(seriesLimit) reached).", overflowFlows),
            counter("tracer.flows.entries.read", "Flow-table entries read from the kernel.", probe.eventsRead),
            counter("tracer.flows.updates.lost", "Flow updates the curve called for that a late read skipped.", probe.updatesLost),
            counter("tracer.flows.destroys.lost", "Flows evicted from the full flow table before they ended.", probe.destroysLost),
            MetricData(name: "tracer.flows.consumer.lost", description: "Flow events a consumer's full queue dropped.", unit: "1",
                       points: .counter(flows.consumers.map { .init(attributes: ["consumer": .string($0.name)], value: Double($0.lost)) })),
        ]
    }
}
