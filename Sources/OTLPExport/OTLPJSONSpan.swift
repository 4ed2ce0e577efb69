import Telemetry

/// The OTLP/JSON text of one `Span`, written through `ProtobufWriter.Cursor` (the writer doubles as a plain
/// byte buffer here): raw stores after one capacity check per field group instead of an `Array.append` per
/// token, and strings read in place as in the protobuf encoder. Same text rules as `OTLPTraceJSONEncoder`
/// (hex ids, lowerCamelCase, enums as integers, 64-bit integers as strings, `appendJSONString` escaping).
extension ProtobufWriter.Cursor {
    /// The bytes of a literal (room already checked).
    @inline(__always) mutating func literal(_ s: StaticString) {
        ProtobufWriter.copy(s.utf8Start, to: p, count: s.utf8CodeUnitCount)
        p += s.utf8CodeUnitCount
    }

    /// 16 lowercase hex digits, big-endian (room already checked).
    @inline(__always) mutating func hex64(_ value: UInt64) {
        var v = value
        var i = 15
        while i >= 0 {
            let nibble = UInt8(truncatingIfNeeded: v & 0xF)
            p[i] = nibble < 10 ? nibble &+ UInt8(ascii: "0") : nibble &+ (UInt8(ascii: "a") &- 10)
            v &>>= 4
            i &-= 1
        }
        p += 16
    }

    /// Decimal digits of `value`, at most 20 (room already checked).
    @inline(__always) mutating func decimal(_ value: UInt64) {
        var digits = 1
        var rest = value / 10
        while rest > 0 {
            digits &+= 1
            rest /= 10
        }
        var v = value
        var i = digits &- 1
        repeat {
            p[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: v % 10)
            v /= 10
            i &-= 1
        } while i >= 0
        p += digits
    }

    /// A JSON string literal of UTF-8 `bytes` (RFC 8259 escaping, as `appendJSONString`); checks its own room.
    @inline(__always) mutating func jsonString(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard room(bytes.count &* 6 &+ 2) else { return }
        byte(UInt8(ascii: "\""))
        var clean = true
        for c in bytes where c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") {
            clean = false
            break
        }
        if _fastPath(clean) {
            if let source = bytes.baseAddress { ProtobufWriter.copy(source, to: p, count: bytes.count) }
            p += bytes.count
        } else {
            escaped(bytes)
        }
        byte(UInt8(ascii: "\""))
    }

    /// The escaping path of `jsonString`.
    private mutating func escaped(_ bytes: UnsafeBufferPointer<UInt8>) {
        for c in bytes {
            switch c {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): byte(UInt8(ascii: "\\")); byte(c)
            case 0x0A: byte(UInt8(ascii: "\\")); byte(UInt8(ascii: "n"))
            case 0x0D: byte(UInt8(ascii: "\\")); byte(UInt8(ascii: "r"))
            case 0x09: byte(UInt8(ascii: "\\")); byte(UInt8(ascii: "t"))
            case 0..<0x20:
                literal("\\u00")
                byte(c >> 4 < 10 ? UInt8(ascii: "0") &+ (c >> 4) : UInt8(ascii: "a") &+ (c >> 4) &- 10)
                byte((c & 0xF) < 10 ? UInt8(ascii: "0") &+ (c & 0xF) : UInt8(ascii: "a") &+ (c & 0xF) &- 10)
            default: byte(c)
            }
        }
    }

    @inline(__always) mutating func jsonString(_ s: String) {
        let done: Void? = s.utf8.withContiguousStorageIfAvailable { jsonString($0) }
        if done == nil { contiguousJSONString(s) }
    }

    @inline(never) private mutating func contiguousJSONString(_ s: String) {
        var s = s
        s.withUTF8 { jsonString($0) }
    }

    /// One span object of `ScopeSpans.spans` in the OTLP/JSON mapping.
    mutating func jsonSpan(_ span: UnsafePointer<Span>) {
        guard room(320) else { return }  // everything up to the name: literals, ids, flags
        literal("{\"traceId\":\"")
        hex64(span.pointee.traceID.high)
        hex64(span.pointee.traceID.low)
        literal("\",\"spanId\":\"")
        hex64(span.pointee.spanID.value)
        byte(UInt8(ascii: "\""))
        if !span.pointee.traceState.isEmpty {
            literal(",\"traceState\":")
            jsonString(span.pointee.traceState)
            guard room(64) else { return }
        }
        if span.pointee.parentSpanID.isValid {
            literal(",\"parentSpanId\":\"")
            hex64(span.pointee.parentSpanID.value)
            byte(UInt8(ascii: "\""))
        }
        if span.pointee.flags != 0 {
            literal(",\"flags\":")
            decimal(UInt64(span.pointee.flags))
        }
        literal(",\"name\":")
        jsonString(span.pointee.name)
        guard room(128) else { return }
        literal(",\"kind\":")
        decimal(UInt64(span.pointee.kind.rawValue))
        literal(",\"startTimeUnixNano\":\"")
        decimal(span.pointee.startTimeUnixNano)
        literal("\",\"endTimeUnixNano\":\"")
        decimal(span.pointee.endTimeUnixNano)
        literal("\",\"attributes\":")
        jsonAttributes(span.pointee.attributes)
        guard room(32) else { return }
        switch span.pointee.status {
        case .unset: break
        case .ok: literal(",\"status\":{\"code\":1}")
        case .error(let message):
            literal(",\"status\":{\"code\":2")
            if !message.isEmpty {
                literal(",\"message\":")
                jsonString(message)
                guard room(2) else { return }
            }
            byte(UInt8(ascii: "}"))
        }
        byte(UInt8(ascii: "}"))
    }

    /// `[{"key":…,"value":{…}}, …]`; strings, integers and booleans inline, the rest out of line.
    mutating func jsonAttributes(_ attributes: Attributes) {
        guard room(2) else { return }
        byte(UInt8(ascii: "["))
        attributes.elements.withUnsafeBufferPointer { elements in
            for i in 0..<elements.count {
                let attribute = elements.baseAddress! + i
                guard room(40) else { return }
                if i > 0 { byte(UInt8(ascii: ",")) }
                literal("{\"key\":")
                jsonString(attribute.pointee.key)
                guard room(48) else { return }
                literal(",\"value\":")
                switch attribute.pointee.value {
                case .string(let s):
                    literal("{\"stringValue\":")
                    jsonString(s)
                    guard room(2) else { return }
                case .int(let n):
                    literal("{\"intValue\":\"")
                    if n < 0 { byte(UInt8(ascii: "-")) }
                    decimal(n.magnitude)
                    byte(UInt8(ascii: "\""))
                case .bool(let b):
                    if b { literal("{\"boolValue\":true") } else { literal("{\"boolValue\":false") }
                default:
                    otherJSONValue(attribute)
                    guard room(2) else { return }
                }
                byte(UInt8(ascii: "}"))
                byte(UInt8(ascii: "}"))
            }
        }
        guard room(1) else { return }
        byte(UInt8(ascii: "]"))
    }

    /// Doubles and arrays (rare): `OTLPTraceJSONEncoder.anyValue` into a temporary array, copied in, minus
    /// the closing brace that `jsonAttributes` writes.
    @inline(never) private mutating func otherJSONValue(_ attribute: UnsafePointer<Attribute>) {
        var text: [UInt8] = []
        OTLPTraceJSONEncoder.anyValue(attribute.pointee.value, into: &text)
        text.removeLast()
        guard room(text.count) else { return }
        text.withUnsafeBufferPointer { ProtobufWriter.copy($0.baseAddress!, to: p, count: $0.count) }
        p += text.count
    }
}
