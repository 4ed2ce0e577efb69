import BPFRuntime
import Foundation
import OTLPExport
import Synchronization
import Telemetry

/// BPF objects run next to the agent (`tracer --object FILE`, config `objects:`): loaded and attached at
/// start with their meta's defaults, their records printed with the spans (`--print text|json`, labelled with
/// the object), their histogram and key/value maps published as metrics (OTLP and Prometheus) read at
/// each collection. Detached at stop.
/// Sendable: `runners` is fixed at init and only read (map reads are syscalls on fds); readers and printers
/// live under a mutex.
final class ObjectsBesideAgent: @unchecked Sendable {
    private let runners: [ObjectRunner]
    private let started = Mutex<(readers: [any EventReader], printers: [RecordPrinter])>(([], []))

    /// Loads and attaches every object; on any failure the ones already loaded are released.
    init(paths: [String]) throws(ObjectCommandError) {
        var runners: [ObjectRunner] = []
        for path in paths {
            let input = try ObjectInput(path: path)
            runners.append(try ObjectRunner(input: input, values: try input.settingValues([])))
        }
        self.runners = runners
    }

    /// One line per object (and per program that could not be attached), for the agent's log.
    var summary: [String] {
        runners.flatMap { runner in
            ["object \(runner.input.object.name) (\(runner.input.path)): \(runner.links.count) of \(runner.input.object.programs.count) programs attached"]
                + runner.notices.map { "object \(runner.input.object.name): \($0)" }
        }
    }

    /// Starts reading records; `format` is the agent's print format (`none` only counts them); with `logs`
    /// (OTLP export on), every record is also a log record of `resource`.
    func start(format: String, logs: (any LogSink)? = nil, resource: Resource = .empty) throws(ObjectCommandError) {
        let output = ObjectOutput()
        for runner in runners {
            let objectLogs = logs.map { ObjectLogs(sink: $0, resource: resource, objectName: runner.input.object.name) }
            let printer = RecordPrinter(types: runner.exportTypes, json: format == "json", header: false, output: output,
                                        objectName: runner.input.object.name, silent: format == "none", logs: objectLogs)
            let readers = try runner.startReaders(printer)
            started.withLock { $0.printers.append(printer); $0.readers += readers }
        }
    }

    func stop() {
        runners.forEach { $0.detach() }
        started.withLock { $0.readers }.forEach { $0.stop() }
    }

    /// The objects' sampled maps as metrics, read now: log2 and linear histograms as OTLP histograms (log2
    /// slot i is the bucket up to 2^(i+1)-1), numeric key/value tables as gauges, and each object's record count.
    func metrics() -> [MetricData] {
        var result: [MetricData] = []
        let printers = started.withLock { $0.printers }
        for (index, runner) in runners.enumerated() {
            let objectName = runner.input.object.name
            if index < printers.count {
                result.append(MetricData(name: "tracer.object.records", description: "Records read from the object's ring buffers and perf event arrays.",
                                         unit: "1", points: .counter([.init(attributes: ["bpf.object": .string(objectName)],
                                                                            value: Double(printers[index].events.load(ordering: .relaxed)))])))
            }
            for entry in runner.input.meta.bpfSkel.maps ?? [] {
                guard let sample = entry.sample, let info = runner.input.object.maps.first(where: { $0.name == entry.name }),
                      let map = try? runner.object.map(BPFMapName(entry.name)), let entries = try? map.rawEntries() else { continue }
                let name = "\(objectName).\(entry.name)"
                let description = "Map \(entry.name) of BPF object \(objectName) (\(sample.type ?? "default_kv"))"
                let unit = sample.unit ?? "1"
                if sample.type == "log2_hist" || sample.type == "linear_hist" {
                    let sampler = MapSampler(map: map, info: info, kind: sample.type!, unit: sample.unit, clear: false, interval: .seconds(1), next: .now)
                    let groups = sampler.histograms(entries)
                    guard let width = groups.map(\.slots.count).max(), width > 0 else { continue }
                    let log2 = sample.type == "log2_hist"
                    let bounds = (0..<(width - 1)).map { log2 ? Double((UInt64(1) << UInt64(min($0 + 1, 63))) - 1) : Double($0) }
                    let points = groups.map { group -> HistogramPoint in
                        let slots = group.slots + [UInt64](repeating: 0, count: width - group.slots.count)
                        // A linear slot's value is exact; a log2 slot's sum is estimated at the bucket's middle.
                        let sum = slots.enumerated().reduce(0.0) { total, slot in
                            let value = log2 ? (slot.offset == 0 ? 0.5 : Double(UInt64(3) << UInt64(min(slot.offset, 62))) / 2 - 0.5) : Double(slot.offset)
                            return total + value * Double(slot.element)
                        }
                        return HistogramPoint(attributes: Self.attributes(group.key), bucketCounts: slots, sum: sum,
                                              count: slots.reduce(0, &+), min: nil, max: nil)
                    }
                    result.append(MetricData(name: name, description: description + (log2 ? "; sum estimated from bucket middles" : ""),
                                             unit: unit, points: .histogram(bounds: bounds, points: points)))
                } else {
                    let valueType = info.valueType ?? .opaque(name: "", size: info.valueSize)
                    let keyType = info.keyType ?? .opaque(name: "", size: info.keySize)
                    let points = entries.compactMap { entry -> MetricData.NumberPoint? in
                        let values = entry.values.map { bytes in bytes.withUnsafeBytes { BTFValue(valueType, in: $0) } }
                        guard values.allSatisfy({ if case .unsigned = $0 { true } else if case .signed = $0 { true } else { false } }) else { return nil }
                        let key = entry.key.withUnsafeBytes { BTFValue(keyType, in: $0) }
                        return .init(attributes: Self.attributes(key), value: Double(values.reduce(UInt64(0)) { $0 &+ $1.number }))
                    }
                    if !points.isEmpty { result.append(MetricData(name: name, description: description, unit: unit, points: .gauge(points))) }
                }
            }
        }
        return result
    }

    /// A map key as attributes: struct members by name, anything else as `key`.
    private static func attributes(_ key: BTFValue?) -> Attributes {
        guard let key else { return Attributes() }
        if case .object(let members) = key {
            return Attributes(members.map { Attribute("key.\($0.0)", .string($0.1.text)) })
        }
        return ["key": .string(key.text)]
    }
}

/// An object's records as OTLP log records (`tracer --object` with OTLP export): the body is the record's
/// fields as a key/value list, the attributes name the object (`tracer.object.name`) and the record's type
/// (`tracer.object.record_type`), scope `tracer/object`. Nothing beyond what the object emitted is added; the
/// record has no wall-clock time of its own, so only the observed time (when it was read) is set.
struct ObjectLogs: Sendable {
    let sink: any LogSink
    let resource: Resource
    let objectName: String

    static let scope = InstrumentationScope(name: "tracer/object")

    func record(_ value: BTFValue, type: BTFType?, observed: Date) -> LogRecord {
        var attributes: Attributes = ["tracer.object.name": .string(objectName)]
        if let type {
            if case .structure(let name, _, _, _) = type, !name.isEmpty {
                attributes["tracer.object.record_type"] = .string(name)
            } else {
                attributes["tracer.object.record_type"] = .string(type.cName)
            }
        }
        return LogRecord(observedTimeUnixNano: UInt64(max(0, observed.timeIntervalSince1970 * 1e9)), severity: .info,
                         severityText: LogSeverity.info.text, body: Self.logValue(value), attributes: attributes,
                         resource: resource, scope: Self.scope)
    }

    /// A decoded BTF value as OTLP `AnyValue`: structs as key/value lists, arrays as arrays, `char[]` as strings,
    /// enums by name (their number when unnamed), integers as ints (an unsigned one past `Int64.max` as its
    /// decimal string, which an int cannot hold).
    static func logValue(_ value: BTFValue) -> LogValue {
        switch value {
        case .signed(let n): .int(n)
        case .unsigned(let n): n <= UInt64(Int64.max) ? .int(Int64(n)) : .string(String(n))
        case .bool(let b): .bool(b)
        case .float(let d): .double(d)
        case .text(let s): .string(s)
        case .enumCase(let name, let n): name.map { .string($0) } ?? .int(n)
        case .array(let items): .array(items.map(logValue))
        case .object(let members): .map(members.map { LogEntry($0.0, logValue($0.1)) })
        case .bytes(let bytes): .bytes(bytes)
        }
    }
}
