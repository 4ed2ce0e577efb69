internal import CLibBPF
internal import CTracerABI
#if canImport(Glibc)
import Glibc
#endif

/// The maps every program shares (bpf/tracer_common.bpf.h): the events ring buffer (or its perf-buffer
/// fallback), the per-CPU drop counter and the PID filter. They are created once, independently of any
/// object, and every object that includes the common header reuses them (`use(in:)`), so one reader
/// serves all programs.
public final class EventChannel: Sendable {
    public enum Transport: Sendable, Equatable {
        /// `BPF_MAP_TYPE_RINGBUF` (Linux 5.8) of this many bytes (a power of two, multiple of the page size).
        case ringBuffer(bytes: UInt32)
        /// `BPF_MAP_TYPE_PERF_EVENT_ARRAY` with this many pages per CPU (a power of two).
        case perfBuffer(pagesPerCPU: Int)
    }

    public struct Settings: Sendable {
        public var transport: Transport
        /// Pending bytes at which a program wakes the reader (ring buffer only).
        public var wakeupBytes: UInt64
        /// Emit events only for processes allowed in the PID filter.
        public var filterPIDs: Bool

        public init(transport: Transport = .ringBuffer(bytes: 2 << 20), wakeupBytes: UInt64 = 256 << 10, filterPIDs: Bool = true) {
            self.transport = transport
            self.wakeupBytes = wakeupBytes
            self.filterPIDs = filterPIDs
        }
    }

    /// Names of the shared maps and settings in bpf/tracer_common.bpf.h.
    enum Shared {
        static let events = BPFMapName("tracer_events")
        static let drops = BPFMapName("tracer_drops")
        static let pids = BPFMapName("tracer_pids")
        static let scratch = BPFMapName("tracer_scratch")
        static let wakeupBytes = BPFGlobalName("tracer_wakeup_bytes")
        static let usePerfBuffer = BPFGlobalName("tracer_use_perf_buffer")
        static let filterPIDs = BPFGlobalName("tracer_filter_pids")
        static let pidMask = BPFGlobalName("tracer_pid_mask")
    }

    public let settings: Settings
    public let events: BPFMap
    public let drops: BPFMap
    /// Host TGID → mask of the tracers allowed for it (`TRACER_PID_BLOCKED`: none).
    public let pids: BPFMap

    /// `pidFilter`: another channel's PID filter to share (a channel of its own for some objects' events,
    /// such as process events, with the one PID filter of the agent).
    public init(_ settings: Settings = Settings(), sharingPIDFilterOf other: EventChannel? = nil) throws {
        self.settings = settings
        switch settings.transport {
        case .ringBuffer(let bytes):
            events = try BPFMap(create: .ringBuffer, name: "tracer_events", keySize: 0, valueSize: 0, maxEntries: bytes)
        case .perfBuffer:
            events = try BPFMap(create: .perfEventArray, name: "tracer_events", keySize: 4, valueSize: 4,
                                maxEntries: UInt32(libbpf_num_possible_cpus()))
        }
        drops = try BPFMap(create: .percpuArray, name: "tracer_drops", keySize: 4, valueSize: 8, maxEntries: 1)
        pids = try other?.pids ?? BPFMap(create: .hash, name: "tracer_pids", keySize: 4, valueSize: 4, maxEntries: 16384)
    }

    /// Makes `spec` use this channel's maps and settings. `pidMask` is the object's bit in the PID filter's
    /// values (`allow(pid:tracers:)`); by default the object emits for every allowed process.
    public func use(in spec: inout BPFObjectSpec, pidMask: UInt32 = EventChannel.allTracers) {
        spec.set(Shared.pidMask, to: pidMask)
        spec.sharedMaps[Shared.events] = events
        spec.sharedMaps[Shared.drops] = drops
        spec.sharedMaps[Shared.pids] = pids
        spec.set(Shared.wakeupBytes, to: settings.wakeupBytes)
        spec.set(Shared.filterPIDs, to: UInt8(settings.filterPIDs ? 1 : 0))
        if case .perfBuffer = settings.transport {
            spec.set(Shared.usePerfBuffer, to: UInt8(1))
        } else {
            spec.skippedMaps.insert(Shared.scratch)
        }
    }

    /// Lets events of `pid` (a host TGID) through, from the objects whose `pidMask` intersects `tracers`.
    public func allow(pid: Int32, tracers: UInt32 = EventChannel.allTracers) throws { try pids.update(UInt32(pid), tracers) }

    /// A PID filter value letting every object emit (`TRACER_PID_ALL_TRACERS`).
    public static let allTracers = UInt32(TRACER_PID_ALL_TRACERS)
    /// Stops events of `pid` even if a program was told otherwise.
    public func block(pid: Int32) throws { try pids.update(UInt32(pid), TRACER_PID_BLOCKED) }
    /// Forgets `pid` (a process that exited).
    public func forget(pid: Int32) throws { try pids.delete(UInt32(pid)) }

    /// Events the kernel side could not hand over (ring full or perf output failed), over all CPUs.
    public func kernelDrops() throws -> UInt64 {
        (try drops.lookupPerCPU(UInt32(0), as: UInt64.self) ?? []).reduce(0, &+)
    }

    /// Starts the reader that fits the transport; `handler` receives batches on the reader's thread.
    public func startReader(drainInterval: Duration = .milliseconds(20), handler: @escaping @Sendable (EventBatch) -> Void) throws -> any EventReader {
        switch settings.transport {
        case .ringBuffer:
            return try RingBufferReader(map: events, drainInterval: drainInterval, handler: handler)
        case .perfBuffer(let pages):
            return try PerfBufferReader(map: events, pagesPerCPU: pages, drainInterval: drainInterval, handler: handler)
        }
    }
}
