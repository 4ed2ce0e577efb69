import Telemetry
import TracerFramework

/// What the NATS parser reads beyond the control lines: a message's header block (`NATS/1.0\r\n` then
/// `Key: value\r\n` lines and an empty line, as HTTP/1 headers), `CONNECT`'s JSON options and `-ERR`'s text.
/// Only the `traceparent` header's value is read; other values are never looked at.
enum NATSHeaders {
    /// The W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, lowercase, ids not all zero) of a header block,
    /// its name matched case-insensitively; nil when it has none.
    static func traceparent(_ block: UnsafeRawBufferPointer) -> W3CTraceContext? {
        guard block.count > 8, block.starts(with: "NATS/".utf8) else { return nil }
        var index = (block.firstIndex(of: 0x0A) ?? block.count) + 1
        while index < block.count {
            let end = block[index...].firstIndex(of: 0x0A) ?? block.count
            var line = UnsafeRawBufferPointer(rebasing: block[index..<end])
            index = end + 1
            if line.last == 0x0D { line = UnsafeRawBufferPointer(rebasing: line.dropLast()) }
            guard !line.isEmpty else { return nil } // the end of the headers
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon == 11,
                  zip(line[0..<11], "traceparent".utf8).allSatisfy({ ($0 | 0x20) == $1 }) else { continue }
            let value = line[(colon + 1)...].drop { $0 == 0x20 || $0 == 0x09 }
            return W3CTraceContext(traceparent: UnsafeRawBufferPointer(rebasing: value))
        }
        return nil
    }


    /// Whether `CONNECT`'s options set `"verbose": true`.
    static func verbose(_ json: UnsafeRawBufferPointer) -> Bool {
        let key = Array("\"verbose\"".utf8)
        var index = 0
        while index + key.count <= json.count {
            if json[index..<(index + key.count)].elementsEqual(key) {
                let rest = json[(index + key.count)...].drop { $0 == 0x20 || $0 == 0x09 }
                guard rest.first == UInt8(ascii: ":") else { return false }
                return rest.dropFirst().drop { $0 == 0x20 || $0 == 0x09 }.starts(with: "true".utf8)
            }
            index += 1
        }
        return false
    }

    /// `-ERR`'s text without its quotes (`Permissions Violation for Publish to "secret"`), 256 bytes at most.
    static func errorText(_ argument: UnsafeRawBufferPointer) -> String {
        var text = argument.drop { $0 == 0x20 || $0 == 0x09 }
        if text.first == UInt8(ascii: "'") { text = text.dropFirst() }
        if text.last == UInt8(ascii: "'") { text = text.dropLast() }
        return String(decoding: text.prefix(256), as: UTF8.self)
    }

    /// `error.type` of an error text: its words before any subject or detail (` for `, `:`, a quote), so that it
    /// stays low-cardinality (`Permissions Violation`, `Maximum Payload Violation`, `Authorization Violation`).
    static func errorType(_ text: String) -> String {
        var type = Substring(text)
        for separator in [" for ", ":", "\"", " - "] {
            if let range = type.range(of: separator) { type = type[..<range.lowerBound] }
        }
        let trimmed = type.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed().prefix(64)
        return trimmed.isEmpty ? "_OTHER" : String(trimmed)
    }
}
