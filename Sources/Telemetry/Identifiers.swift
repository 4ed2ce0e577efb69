/// Hex digits used by every id formatter.
@usableFromInline let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

@inlinable func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c &- UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c &- UInt8(ascii: "a") &+ 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c &- UInt8(ascii: "A") &+ 10
    default: return nil
    }
}

/// Appends the 16 lowercase hex digits of `value` (big-endian) to `out`.
@inlinable func appendHex64(_ value: UInt64, to out: inout [UInt8]) {
    var shift = 60
    while shift >= 0 {
        out.append(hexDigits[Int((value >> UInt64(shift)) & 0xF)])
        shift -= 4
    }
}

/// Parses exactly 16 hex digits.
@inlinable func parseHex64(_ digits: Substring.UTF8View) -> UInt64? {
    guard digits.count == 16 else { return nil }
    var value: UInt64 = 0
    for c in digits {
        guard let v = hexValue(c) else { return nil }
        value = value << 4 | UInt64(v)
    }
    return value
}

/// A 16-byte trace id (OTLP `Span.trace_id`, W3C trace-context `trace-id`), stored as two big-endian halves.
/// All zeroes is invalid.
public struct TraceID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Bytes 0–7, big-endian.
    public var high: UInt64
    /// Bytes 8–15, big-endian.
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The invalid all-zero id.
    public static let invalid = TraceID(high: 0, low: 0)

    /// A random, valid id.
    public static func random() -> TraceID {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> TraceID {
        while true {
            let id = TraceID(high: generator.next(), low: generator.next())
            if id.isValid { return id }
        }
    }

    /// Parses 32 hex digits (either case); nil for any other input.
    public init?(hex: String) {
        let utf8 = Substring(hex).utf8
        guard utf8.count == 32,
            let high = parseHex64(utf8.prefix(16)), let low = parseHex64(utf8.suffix(16))
        else { return nil }
        self.init(high: high, low: low)
    }

    /// Builds an id from exactly 16 bytes (wire order).
    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        guard bytes.count == 16 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (i, b) in bytes.enumerated() {
            if i < 8 { high = high << 8 | UInt64(b) } else { low = low << 8 | UInt64(b) }
        }
        self.init(high: high, low: low)
    }

    /// Not all zeroes (W3C trace-context: an all-zero trace-id is invalid).
    public var isValid: Bool { high != 0 || low != 0 }

    /// The 16 bytes in wire order.
    public var bytes: [UInt8] {
        (0..<16).map { i in UInt8(truncatingIfNeeded: (i < 8 ? high : low) >> UInt64(56 - 8 * (i % 8))) }
    }

    /// 32 lowercase hex digits, as in the OTLP JSON mapping and W3C `traceparent`.
    public var hex: String {
        var out: [UInt8] = []
        out.reserveCapacity(32)
        appendHex64(high, to: &out)
        appendHex64(low, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the 32 hex digits to a byte buffer (JSON encoders; no intermediate String).
    public func appendHex(to out: inout [UInt8]) {
        appendHex64(high, to: &out)
        appendHex64(low, to: &out)
    }

    public var description: String { hex }

    public static func < (a: TraceID, b: TraceID) -> Bool { (a.high, a.low) < (b.high, b.low) }
}

/// An 8-byte span id (OTLP `Span.span_id`, W3C `parent-id`), stored big-endian. Zero is invalid / "no parent".
public struct SpanID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var value: UInt64

    public init(_ value: UInt64) { self.value = value }

    /// The invalid all-zero id; as a parent it means "root span".
    public static let invalid = SpanID(0)

    public static func random() -> SpanID {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> SpanID {
        while true {
            let id = SpanID(generator.next())
            if id.isValid { return id }
        }
    }

    /// Parses 16 hex digits (either case); nil for any other input.
    public init?(hex: String) {
        guard let value = parseHex64(Substring(hex).utf8) else { return nil }
        self.init(value)
    }

    /// Builds an id from exactly 8 bytes (wire order).
    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        guard bytes.count == 8 else { return nil }
        self.init(bytes.reduce(0) { $0 << 8 | UInt64($1) })
    }

    public var isValid: Bool { value != 0 }

    /// The 8 bytes in wire order.
    public var bytes: [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> UInt64(56 - 8 * $0)) } }

    /// 16 lowercase hex digits.
    public var hex: String {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        appendHex64(value, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the 16 hex digits to a byte buffer.
    public func appendHex(to out: inout [UInt8]) { appendHex64(value, to: &out) }

    public var description: String { hex }

    public static func < (a: SpanID, b: SpanID) -> Bool { a.value < b.value }
}
