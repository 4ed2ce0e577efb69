import Synchronization

/// The agent's self-metrics: what it selected and attached, what it read and dropped, what it produced.
public final class AgentMetrics: Sendable {
    let processesSelected = Atomic<Int>(0)
    let processesInstrumented = Atomic<Int>(0)
    let attachErrors = Atomic<UInt64>(0)
    let events = Atomic<UInt64>(0)
    /// Events dropped in user space: from processes that are not (or no longer) selected, of unknown type,
    /// or that a tracer could not decode.
    let eventsDropped = Atomic<UInt64>(0)
    let spans = Atomic<UInt64>(0)

    public struct Snapshot: Sendable, Equatable {
        /// Processes currently selected / instrumented (at least one tracer applies).
        public var processesSelected: Int
        public var processesInstrumented: Int
        public var attachErrors: UInt64
        public var events: UInt64
        public var eventsDroppedUserspace: UInt64
        /// Events the BPF side could not hand over (ring buffer full).
        public var eventsDroppedKernel: UInt64
        public var spans: UInt64
    }

    func snapshot(kernelDrops: UInt64) -> Snapshot {
        Snapshot(processesSelected: processesSelected.load(ordering: .relaxed),
                 processesInstrumented: processesInstrumented.load(ordering: .relaxed),
                 attachErrors: attachErrors.load(ordering: .relaxed), events: events.load(ordering: .relaxed),
                 eventsDroppedUserspace: eventsDropped.load(ordering: .relaxed), eventsDroppedKernel: kernelDrops,
                 spans: spans.load(ordering: .relaxed))
    }
}
