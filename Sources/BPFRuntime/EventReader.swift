import Foundation
import Synchronization

/// A consumer of the events channel running on its own thread, handing events over in batches.
public protocol EventReader: AnyObject, Sendable {
    /// Counters since the reader started.
    var statistics: EventReaderStatistics { get }
    /// Drains what is pending, delivers it, and stops the thread. Safe to call more than once.
    func stop()
}

public struct EventReaderStatistics: Sendable, Equatable {
    public var events: UInt64 = 0
    public var bytes: UInt64 = 0
    public var batches: UInt64 = 0
    /// Samples the kernel reported lost (perf buffer only; the ring buffer's drops are counted in BPF,
    /// see `EventChannel.kernelDrops()`).
    public var lostSamples: UInt64 = 0
}

/// Events read in one drain, valid only during the handler call that receives it (its storage is reused).
/// Each element is one event's bytes; decode with `loadUnaligned(fromByteOffset:as:)` after checking the length is at
/// least the struct's size (perf-buffer samples carry up to 7 bytes of padding after the event).
public struct EventBatch: RandomAccessCollection {
    fileprivate let storage: BatchStorage

    public var startIndex: Int { 0 }
    public var endIndex: Int { storage.count }
    public subscript(position: Int) -> UnsafeRawBufferPointer {
        let start = position == 0 ? 0 : storage.ends[position - 1]
        return UnsafeRawBufferPointer(start: storage.bytes + start, count: storage.ends[position] - start)
    }
    /// Total bytes of the events in the batch.
    public var byteCount: Int { storage.used }
}

/// Reusable contiguous storage for one batch: events are copied in back to back, with their end offsets;
/// no allocation per event once it has grown to the working size. Touched only by its reader thread.
final class BatchStorage: @unchecked Sendable {
    private(set) var bytes: UnsafeMutableRawPointer
    private(set) var ends: UnsafeMutablePointer<Int>
    private var byteCapacity: Int
    private var eventCapacity: Int
    private(set) var used = 0
    private(set) var count = 0
    /// A batch is handed over once it holds this many bytes, even if more events are pending.
    let byteLimit: Int

    init(byteLimit: Int = 1 << 20) {
        self.byteLimit = byteLimit
        byteCapacity = 64 << 10
        eventCapacity = 1024
        bytes = .allocate(byteCount: byteCapacity, alignment: 16)
        ends = .allocate(capacity: eventCapacity)
    }

    deinit {
        bytes.deallocate()
        ends.deallocate()
    }

    var isFull: Bool { used >= byteLimit }

    @inline(__always)
    func append(_ data: UnsafeRawPointer, count size: Int) {
        if used + size > byteCapacity { growBytes(to: used + size) }
        if count == eventCapacity { growEvents() }
        (bytes + used).copyMemory(from: data, byteCount: size)
        used += size
        ends[count] = used
        count += 1
    }

    func reset() {
        used = 0
        count = 0
    }

    var batch: EventBatch { EventBatch(storage: self) }

    private func growBytes(to needed: Int) {
        var capacity = byteCapacity * 2
        while capacity < needed { capacity *= 2 }
        let grown = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        grown.copyMemory(from: bytes, byteCount: used)
        bytes.deallocate()
        bytes = grown
        byteCapacity = capacity
    }

    private func growEvents() {
        let grown = UnsafeMutablePointer<Int>.allocate(capacity: eventCapacity * 2)
        grown.update(from: ends, count: count)
        ends.deallocate()
        ends = grown
        eventCapacity *= 2
    }
}

/// Counters shared between a reader thread and whoever asks for them.
final class ReaderCounters: Sendable {
    let events = Atomic<UInt64>(0)
    let bytes = Atomic<UInt64>(0)
    let batches = Atomic<UInt64>(0)
    let lostSamples = Atomic<UInt64>(0)

    func record(_ batch: EventBatch) {
        events.add(UInt64(batch.count), ordering: .relaxed)
        bytes.add(UInt64(batch.byteCount), ordering: .relaxed)
        batches.add(1, ordering: .relaxed)
    }

    var snapshot: EventReaderStatistics {
        EventReaderStatistics(events: events.load(ordering: .relaxed), bytes: bytes.load(ordering: .relaxed),
                              batches: batches.load(ordering: .relaxed), lostSamples: lostSamples.load(ordering: .relaxed))
    }
}

/// The thread a reader drains on: runs `drainOnce` until stopped, then once more.
final class ReaderThread: Sendable {
    private let running = Atomic<Bool>(true)
    private let finished = DispatchSemaphore(value: 0)

    init(name: String, drainOnce: @escaping @Sendable () -> Void) {
        let thread = Thread { [self] in
            while running.load(ordering: .acquiring) { drainOnce() }
            drainOnce()
            finished.signal()
        }
        thread.name = name
        thread.start()
    }

    /// Stops the loop and waits for the final drain.
    func stop() {
        if running.exchange(false, ordering: .acquiringAndReleasing) { finished.wait() }
    }
}

extension Duration {
    /// Whole milliseconds, as poll timeouts and logs take them.
    public var wholeMilliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
