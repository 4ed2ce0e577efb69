import BPFRuntime
import Foundation

/// Text forms of what `tracer object run` prints: histograms the way libbpf-tools draws them, key/value
/// tables, event records, and program statistics.
enum ObjectPrinters {
    /// A power-of-two histogram: slot i counts values in [2^i, 2^(i+1)) (slot 0 is 0 and 1), rows up to the
    /// last non-empty slot, bars of stars scaled to the largest count.
    static func log2Histogram(_ slots: [UInt64], unit: String) -> String {
        guard let last = slots.lastIndex(where: { $0 != 0 }) else { return "     (no values)\n" }
        let wide = last > 32
        let width = wide ? 20 : 10
        let barWidth = wide ? 20 : 40
        let maximum = slots.max() ?? 0
        var text = String(repeating: " ", count: wide ? 15 : 5) + pad(unit, wide ? 29 : 19, left: false) + " : count    distribution\n"
        for index in 0...last {
            let high: UInt64 = index >= 63 ? UInt64.max : (UInt64(1) << UInt64(index + 1)) - 1
            let low: UInt64 = index == 0 ? 0 : UInt64(1) << UInt64(index)
            let range = pad(String(low), width, left: true) + " -> " + pad(String(high), width, left: false)
            text += "\(range) : \(pad(String(slots[index]), 8, left: false)) |\(bar(slots[index], maximum, barWidth))|\n"
        }
        return text
    }

    /// A linear histogram: slot i counts the value i.
    static func linearHistogram(_ slots: [UInt64], unit: String) -> String {
        guard let first = slots.firstIndex(where: { $0 != 0 }), let last = slots.lastIndex(where: { $0 != 0 }) else {
            return "     (no values)\n"
        }
        let maximum = slots.max() ?? 0
        var text = pad(unit, 12, left: true) + " : count    distribution\n"
        for index in first...last {
            text += "\(pad(String(index), 12, left: true)) : \(pad(String(slots[index]), 8, left: false)) |\(bar(slots[index], maximum, 40))|\n"
        }
        return text
    }

    private static func bar(_ value: UInt64, _ maximum: UInt64, _ width: Int) -> String {
        let stars = maximum == 0 ? 0 : Int((Double(value) / Double(maximum) * Double(width)).rounded(.down))
        return String(repeating: "*", count: min(stars, width)) + String(repeating: " ", count: max(0, width - stars))
    }

    static func pad(_ text: String, _ width: Int, left: Bool) -> String {
        guard text.count < width else { return text }
        let spaces = String(repeating: " ", count: width - text.count)
        return left ? spaces + text : text + spaces
    }

    /// The header line of the text form.
    static func header(for type: BTFType) -> String {
        (["TIME    "] + columnLayout(of: type).map { pad($0.name.uppercased(), $0.width, left: false) }).joined(separator: " ")
    }

    /// One record in the text form: wall-clock time, then each member.
    static func textRecord(_ value: BTFValue, type: BTFType, time: String) -> String {
        guard case .object(let members) = value else { return "\(time) \(value.text)" }
        return ([time] + zip(columnLayout(of: type), members).map { pad($1.1.text, $0.width, left: false) }).joined(separator: " ")
    }

    /// Each column's name and width: the wider of the name and what the member's type usually prints.
    private static func columnLayout(of type: BTFType) -> [(name: String, width: Int)] {
        guard case .structure(_, _, _, let members) = type else { return [("value", 12)] }
        return members.enumerated().map { index, member in
            let name = member.name.isEmpty ? "_\(index)" : member.name
            let typical: Int
            switch member.type {
            case .integer(_, let size, _, _, _): typical = size <= 2 ? 5 : size == 4 ? 7 : 12
            case .enumeration(_, _, _, let cases): typical = cases.map(\.name.count).max() ?? 6
            case .array(_, let count) where member.type.isCharArray: typical = min(count - 1, 24)
            default: typical = 10
            }
            return (name, max(name.count, typical))
        }
    }

    static func clockTime(_ date: Date = Date()) -> String {
        var seconds = time_t(date.timeIntervalSince1970)
        var parts = tm()
        localtime_r(&seconds, &parts)
        return [parts.tm_hour, parts.tm_min, parts.tm_sec].map { pad(String($0), 2, left: true).replacingOccurrences(of: " ", with: "0") }.joined(separator: ":")
    }
}
