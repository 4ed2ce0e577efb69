internal import CLibBPF
#if canImport(Glibc)
import Glibc
#endif

/// Reads the events ring buffer (`ring_buffer__new`/`__poll`/`__consume`, Linux 5.8) on its own thread.
/// Programs submit with `BPF_RB_NO_WAKEUP` and wake the reader only past a byte threshold, so the reader
/// also drains on a timer: no event waits longer than `drainInterval`.
public final class RingBufferReader: EventReader, @unchecked Sendable {
    private let ring: OpaquePointer
    private let storage = BatchStorage()
    private let counters = ReaderCounters()
    private var thread: ReaderThread?

    public init(map: BPFMap, drainInterval: Duration = .milliseconds(20), handler: @escaping @Sendable (EventBatch) -> Void) throws {
        let context = Unmanaged.passUnretained(storage).toOpaque()
        guard let ring = ring_buffer__new(map.fd, { context, data, size in
            // The reader owns the storage while the ring exists: no reference counting per record.
            Unmanaged<BatchStorage>.fromOpaque(context!)._withUnsafeGuaranteedRef { storage in
                storage.append(data!, count: size)
                // A negative return stops ring_buffer__consume after this (already consumed) record.
                return storage.isFull ? -E2BIG : 0
            }
        }, context, nil) else {
            throw BPFError("open ring buffer reader on map \(map.name)", errno: errno)
        }
        self.ring = ring
        let timeout = Int32(clamping: drainInterval.wholeMilliseconds)
        let (storage, counters) = (storage, counters)
        nonisolated(unsafe) let unsafeRing = ring
        thread = ReaderThread(name: "tracer.ringbuf") {
            _ = ring_buffer__poll(unsafeRing, timeout)
            while true {
                if storage.count > 0 {
                    let batch = storage.batch
                    handler(batch)
                    counters.record(batch)
                    storage.reset()
                }
                if ring_buffer__consume(unsafeRing) != -E2BIG && storage.count == 0 { return }
            }
        }
    }

    deinit {
        stop()
        ring_buffer__free(ring)
    }

    public var statistics: EventReaderStatistics { counters.snapshot }

    public func stop() { thread?.stop() }
}
