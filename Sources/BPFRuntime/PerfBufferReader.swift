internal import CLibBPF
#if canImport(Glibc)
import Glibc
#endif

/// Reads a `BPF_MAP_TYPE_PERF_EVENT_ARRAY` (`perf_buffer__new`/`__poll`/`__consume`): the fallback for
/// kernels without ring buffers (before 5.8). Lost samples reported by the kernel are counted.
public final class PerfBufferReader: EventReader, @unchecked Sendable {
    private let buffer: OpaquePointer
    private let context: PerfContext
    private var thread: ReaderThread?

    /// What the C callbacks reach through their context pointer.
    private final class PerfContext {
        let storage = BatchStorage()
        let counters = ReaderCounters()
    }

    public init(map: BPFMap, pagesPerCPU: Int = 64, drainInterval: Duration = .milliseconds(20), handler: @escaping @Sendable (EventBatch) -> Void) throws {
        let context = PerfContext()
        self.context = context
        let opaque = Unmanaged.passUnretained(context).toOpaque()
        guard let buffer = perf_buffer__new(map.fd, pagesPerCPU, { context, _, data, size in
            Unmanaged<PerfContext>.fromOpaque(context!)._withUnsafeGuaranteedRef { $0.storage.append(data!, count: Int(size)) }
        }, { context, _, lost in
            Unmanaged<PerfContext>.fromOpaque(context!).takeUnretainedValue().counters.lostSamples.add(lost, ordering: .relaxed)
        }, opaque, nil) else {
            throw BPFError("open perf buffer reader on map \(map.name)", errno: errno)
        }
        self.buffer = buffer
        let timeout = Int32(clamping: drainInterval.wholeMilliseconds)
        let (storage, counters) = (context.storage, context.counters)
        nonisolated(unsafe) let unsafeBuffer = buffer
        thread = ReaderThread(name: "tracer.perfbuf") {
            _ = perf_buffer__poll(unsafeBuffer, timeout)
            _ = perf_buffer__consume(unsafeBuffer)
            guard storage.count > 0 else { return }
            let batch = storage.batch
            handler(batch)
            counters.record(batch)
            storage.reset()
        }
    }

    deinit {
        stop()
        perf_buffer__free(buffer)
    }

    public var statistics: EventReaderStatistics { context.counters.snapshot }

    public func stop() { thread?.stop() }
}
