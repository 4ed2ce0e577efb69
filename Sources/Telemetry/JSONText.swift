/// Appends `s` as a JSON string literal (RFC 8259 escaping: quote, backslash, control characters).
/// Runs without anything to escape are copied in one go.
@inlinable public func appendJSONString(_ s: String, to out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    let done: Void? = s.utf8.withContiguousStorageIfAvailable { appendJSONEscaped($0, to: &out) }
    if done == nil { Array(s.utf8).withUnsafeBufferPointer { appendJSONEscaped($0, to: &out) } }
    out.append(UInt8(ascii: "\""))
}

@usableFromInline func appendJSONEscaped(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
    var runStart = 0
    for i in 0..<bytes.count {
        let c = bytes[i]
        guard c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") else { continue }
        out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i]))
        runStart = i + 1
        switch c {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(c)
        case 0x0A: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
        case 0x0D: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
        case 0x09: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
        default:
            out.append(contentsOf: "\\u00".utf8)
            out.append(hexDigits[Int(c >> 4)])
            out.append(hexDigits[Int(c & 0xF)])
        }
    }
    out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<bytes.count]))
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

/// Appends a string literal's UTF-8 bytes in one copy.
@inlinable public func appendLiteral(_ s: StaticString, to out: inout [UInt8]) {
    out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
}

/// Appends the decimal digits of an integer without building a String.
@inlinable public func appendDecimal<T: BinaryInteger>(_ value: T, to out: inout [UInt8]) {
    if value < 0 { out.append(UInt8(ascii: "-")) }
    var magnitude = UInt64(truncatingIfNeeded: value.magnitude)
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
        var i = 20
        repeat {
            i -= 1
            digits[i] = UInt8(ascii: "0") + UInt8(magnitude % 10)
            magnitude /= 10
        } while magnitude > 0
        out.append(contentsOf: UnsafeBufferPointer(rebasing: digits[i..<20]))
    }
}
