import BPFRuntime
import Foundation
import Synchronization

/// One map sampled at an interval (`meta.bpf_skel.maps[].sample`): printed as a log2 or linear histogram
/// or a key/value table, and emptied afterwards when `clear_map` is set.
struct MapSampler {
    let map: BPFMap
    let info: BPFObjectFile.Map
    /// `log2_hist`, `linear_hist` or `default_kv`.
    let kind: String
    let unit: String?
    let clear: Bool
    let interval: Duration
    var next: ContinuousClock.Instant
    private var lastSampled: ContinuousClock.Instant?

    init(map: BPFMap, info: BPFObjectFile.Map, kind: String, unit: String?, clear: Bool, interval: Duration, next: ContinuousClock.Instant) {
        (self.map, self.info, self.kind, self.unit, self.clear, self.interval, self.next) = (map, info, kind, unit, clear, interval, next)
    }

    var name: String { info.name }

    /// Whether the map may hold values not printed yet (it was not sampled in the last 100 ms).
    func sampledSince(_ now: ContinuousClock.Instant) -> Bool {
        lastSampled.map { now - $0 > .milliseconds(100) } ?? true
    }

    mutating func sample(output: ObjectOutput, json: Bool) throws {
        lastSampled = .now
        let entries = try map.rawEntries()
        let keyType = info.keyType ?? .opaque(name: "key", size: info.keySize)
        let valueType = info.valueType ?? .opaque(name: "value", size: info.valueSize)
        let key: ([UInt8]) -> BTFValue = { bytes in bytes.withUnsafeBytes { BTFValue(keyType, in: $0) } }
        let time = ObjectPrinters.clockTime()
        var text = ""
        if kind == "default_kv" {
            let rows = entries.map { entry in
                (key(entry.key), Self.merge(entry.values.map { bytes in bytes.withUnsafeBytes { BTFValue(valueType, in: $0) } }))
            }
            if json {
                text = "{\"time\":\(jsonString(time)),\"map\":\(jsonString(name)),\"entries\":["
                    + rows.map { "{\"key\":\($0.0.json),\"value\":\($0.1.json)}" }.joined(separator: ",") + "]}\n"
            } else {
                text = "\(time) \(name): \(rows.count) entries\n" + rows.map { "  \($0.0.text) -> \($0.1.text)\n" }.joined()
            }
        } else {
            let groups = histograms(entries)
            if json {
                text = "{\"time\":\(jsonString(time)),\"map\":\(jsonString(name)),\"type\":\(jsonString(kind)),\"histograms\":["
                    + groups.map { "{\"key\":\($0.key?.json ?? "null"),\"slots\":[\($0.slots.map(String.init).joined(separator: ","))]}" }
                        .joined(separator: ",") + "]}\n"
            } else {
                text = "\(time) \(name):\n"
                for group in groups {
                    if let groupKey = group.key { text += "\(name) = \(groupKey.text)\n" }
                    text += kind == "linear_hist" ? ObjectPrinters.linearHistogram(group.slots, unit: unit ?? "value")
                        : ObjectPrinters.log2Histogram(group.slots, unit: unit ?? "value")
                }
                text += "\n"
            }
        }
        output.out(text)
        if clear { try map.clear() }
    }

    /// The histograms in a map: one per entry when the value is a struct with a `slots` array (libbpf-tools'
    /// `struct hist`), summed over CPUs; otherwise one histogram whose slot is the key and count the value.
    func histograms(_ entries: [(key: [UInt8], values: [[UInt8]])]) -> [(key: BTFValue?, slots: [UInt64])] {
        let keyType = info.keyType ?? .opaque(name: "key", size: info.keySize)
        let key: ([UInt8]) -> BTFValue = { bytes in bytes.withUnsafeBytes { BTFValue(keyType, in: $0) } }
        if let layout = info.histogramSlots {
            let keyed = entries.count > 1 || entries.contains { $0.key.contains { $0 != 0 } }
            return entries.map { entry in
                var slots = [UInt64](repeating: 0, count: layout.count)
                for value in entry.values {
                    value.withUnsafeBytes { raw in
                        for index in slots.indices {
                            slots[index] &+= BTFValue(.integer(name: "", size: layout.slotSize, signed: false, isChar: false, isBool: false),
                                                      in: raw, at: layout.offset + index * layout.slotSize).number
                        }
                    }
                }
                return (keyed ? key(entry.key) : nil, slots)
            }.filter { $0.slots.contains { $0 != 0 } || entries.count == 1 }
        }
        var slots: [UInt64] = []
        for entry in entries {
            let index = Int(clamping: key(entry.key).number)
            guard index < 4096 else { continue }
            if slots.count <= index { slots += [UInt64](repeating: 0, count: index + 1 - slots.count) }
            for value in entry.values {
                slots[index] &+= value.withUnsafeBytes { BTFValue(info.valueType ?? .opaque(name: "", size: 0), in: $0).number }
            }
        }
        return [(nil, slots)]
    }

    /// Per-CPU values summed when they are numbers, listed otherwise.
    private static func merge(_ values: [BTFValue]) -> BTFValue {
        guard values.count > 1 else { return values.first ?? .bytes([]) }
        if values.allSatisfy({ if case .unsigned = $0 { true } else { false } }) { return .unsigned(values.reduce(0) { $0 &+ $1.number }) }
        if values.allSatisfy({ if case .signed = $0 { true } else { false } }) {
            return .signed(values.reduce(Int64(0)) { $0 &+ Int64(bitPattern: $1.number) })
        }
        return .array(values)
    }
}

/// Copies `bpf_printk` output (`/sys/kernel/tracing/trace_pipe`) to stderr while the object runs.
final class KernelDebugReader: Sendable {
    private let running = Atomic<Bool>(true)
    private let finished = DispatchSemaphore(value: 0)

    init(output: ObjectOutput, path: String = "/sys/kernel/tracing/trace_pipe") {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            output.err("tracer object: cannot read bpf_printk output from \(path): \(String(cString: strerror(errno))) (mount tracefs there)\n")
            running.store(false, ordering: .relaxed)
            finished.signal()
            return
        }
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 16 << 10)
            var pending: [UInt8] = []
            while running.load(ordering: .acquiring) {
                var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&descriptor, 1, 100) > 0 else { continue }
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard count > 0 else { continue }
                pending += buffer.prefix(count)
                if let lastNewline = pending.lastIndex(of: UInt8(ascii: "\n")) {
                    output.err(String(decoding: pending[...lastNewline], as: UTF8.self))
                    pending.removeSubrange(...lastNewline)
                }
            }
            close(fd)
            finished.signal()
        }
        thread.name = "tracer.trace_pipe"
        thread.start()
    }

    func stop() {
        running.store(false, ordering: .releasing)
        finished.wait()
    }
}
