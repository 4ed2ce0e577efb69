/// Appends `s` as a JSON string literal (RFC 8259 escaping: quote, backslash, control characters).
@inlinable public func appendJSONString(_ s: String, to out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    for c in s.utf8 {
        switch c {
        case UInt8(ascii: "\""): out.append(UInt8(ascii: "\\")); out.append(c)
        case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(c)
        case 0x0A: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
        case 0x0D: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
        case 0x09: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
        case 0..<0x20:
            out.append(contentsOf: "\\u00".utf8)
            out.append(hexDigits[Int(c >> 4)])
            out.append(hexDigits[Int(c & 0xF)])
        default: out.append(c)
        }
    }
    out.append(UInt8(ascii: "\""))
}

/// Appends a double as a JSON number; JSON has no NaN or infinities, so those become the strings
/// `"NaN"`, `"Infinity"`, `"-Infinity"` (the proto3 JSON mapping's spelling).
@inlinable public func appendJSONDouble(_ d: Double, to out: inout [UInt8]) {
    if d.isNaN {
        out.append(contentsOf: "\"NaN\"".utf8)
    } else if d.isInfinite {
        out.append(contentsOf: (d < 0 ? "\"-Infinity\"" : "\"Infinity\"").utf8)
    } else {
        out.append(contentsOf: String(d).utf8)
    }
}
