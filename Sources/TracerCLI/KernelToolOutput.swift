import Foundation
import Telemetry
import TracerFramework

/// The printed forms of kernel tracers' histograms and events (`tracer tool`, and the agent's stdout with
/// `--kernel-tracers`): text as libbpf-tools print it, or one JSON object per line.
enum KernelToolOutput {
    /// `{"tool","name","unit","labels","buckets":[{"le","count"}],"count","sum"}` (+ `"overflow":true` for
    /// the overflow histogram). Buckets run from slot 0 to the last non-empty one; `le` is inclusive.
    static func json(_ histogram: KernelHistogram) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        appendLiteral("{\"tool\":", to: &out)
        appendJSONString(histogram.tracer, to: &out)
        appendLiteral(",\"name\":", to: &out)
        appendJSONString(histogram.map.metric, to: &out)
        appendLiteral(",\"unit\":", to: &out)
        appendJSONString(histogram.map.unit, to: &out)
        appendLiteral(",\"labels\":", to: &out)
        append(histogram.labels, to: &out)
        appendLiteral(",\"buckets\":[", to: &out)
        let last = histogram.slots.lastIndex { $0 != 0 } ?? -1
        if last >= 0 {
            for index in 0...last {
                if index > 0 { appendLiteral(",", to: &out) }
                appendLiteral("{\"le\":", to: &out)
                appendDecimal(KernelHistogram.upperBound(ofSlot: index), to: &out)
                appendLiteral(",\"count\":", to: &out)
                appendDecimal(histogram.slots[index], to: &out)
                appendLiteral("}", to: &out)
            }
        }
        appendLiteral("],\"count\":", to: &out)
        appendDecimal(histogram.count, to: &out)
        appendLiteral(",\"sum\":", to: &out)
        appendDecimal(histogram.sum, to: &out)
        if histogram.isOverflow { appendLiteral(",\"overflow\":true", to: &out) }
        appendLiteral("}", to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// `{"tool","time","event","pid","comm",...fields}`; `time` is RFC 3339 UTC with microseconds.
    static func json(_ event: KernelEvent) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        appendLiteral("{\"tool\":", to: &out)
        appendJSONString(event.tracer, to: &out)
        appendLiteral(",\"time\":", to: &out)
        appendJSONString(timestamp(event.timeUnixNano), to: &out)
        appendLiteral(",\"event\":", to: &out)
        appendJSONString(event.name, to: &out)
        appendLiteral(",\"pid\":", to: &out)
        appendDecimal(event.pid, to: &out)
        appendLiteral(",\"comm\":", to: &out)
        appendJSONString(event.comm, to: &out)
        for field in event.fields {
            appendLiteral(",", to: &out)
            appendJSONString(field.key, to: &out)
            appendLiteral(":", to: &out)
            append(field.value, to: &out)
        }
        appendLiteral("}", to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// libbpf-tools' layout: a `pid = P COMM` line per process histogram, then the log2 table.
    static func text(_ histogram: KernelHistogram) -> String {
        var heading = ""
        if histogram.isOverflow {
            heading = "\n(keys past the cardinality limit)\n"
        } else if !histogram.labels.isEmpty {
            let pid = histogram.labels.first { $0.key == "process.pid" }?.value.text
            let name = histogram.labels.first { $0.key == "process.executable.name" }?.value.text
            let others = histogram.labels.filter { $0.key != "process.pid" && $0.key != "process.executable.name" }
                .map { " \($0.key) = \($0.value.text)" }.joined()
            heading = pid.map { "\npid = \($0) \(name ?? "")\(others)\n" }
                ?? "\n" + histogram.labels.map { "\($0.key) = \($0.value.text)" }.joined(separator: " ") + "\n"
        }
        return heading + ObjectPrinters.log2Histogram(histogram.slots, unit: histogram.map.unitWord)
    }

    /// `HH:MM:SS event pid=P comm=C key=value ...`.
    static func text(_ event: KernelEvent) -> String {
        var line = "\(clock(event.timeUnixNano)) \(event.name) pid=\(event.pid) comm=\(event.comm)"
        for field in event.fields { line += " \(field.key)=\(field.value.text)" }
        return line
    }

    private static func append(_ labels: [KernelLabel], to out: inout [UInt8]) {
        appendLiteral("{", to: &out)
        for (index, label) in labels.enumerated() {
            if index > 0 { appendLiteral(",", to: &out) }
            appendJSONString(label.key, to: &out)
            appendLiteral(":", to: &out)
            append(label.value, to: &out)
        }
        appendLiteral("}", to: &out)
    }

    private static func append(_ value: KernelValue, to out: inout [UInt8]) {
        switch value {
        case .int(let number): appendDecimal(number, to: &out)
        case .string(let text): appendJSONString(text, to: &out)
        case .bool(let flag): appendLiteral(flag ? "true" : "false", to: &out)
        }
    }

    static func timestamp(_ unixNano: UInt64) -> String {
        let seconds = time_t(unixNano / 1_000_000_000)
        var parts = tm()
        var copy = seconds
        gmtime_r(&copy, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(unixNano % 1_000_000_000 / 1000))
    }

    private static func clock(_ unixNano: UInt64) -> String {
        var copy = time_t(unixNano / 1_000_000_000)
        var parts = tm()
        localtime_r(&copy, &parts)
        return String(format: "%02d:%02d:%02d", Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }
}
