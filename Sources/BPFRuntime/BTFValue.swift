/// A value read from raw bytes through its `BTFType`: what a ring-buffer record, a map key or a map value
/// holds, ready to print as text or JSON.
public indirect enum BTFValue: Sendable, Equatable {
    case signed(Int64)
    case unsigned(UInt64)
    case bool(Bool)
    case float(Double)
    /// A `char[]` up to its first NUL (invalid UTF-8 replaced).
    case text(String)
    /// An enum value by its name, or its number when no case has it.
    case enumCase(String?, Int64)
    case array([BTFValue])
    case object([(String, BTFValue)])
    /// Bytes of a type that has no printable form (pointers print as addresses).
    case bytes([UInt8])

    public static func == (lhs: BTFValue, rhs: BTFValue) -> Bool { lhs.json == rhs.json }

    /// Reads a value of `type` at byte `offset` of `bytes`; bytes past the end read as zero, so a short
    /// record never traps. At most `limit` values are read (members may overlap): the rest are empty.
    public init(_ type: BTFType, in bytes: UnsafeRawBufferPointer, at offset: Int = 0, limit: Int = 1 << 14) {
        var budget = limit
        self.init(type, in: bytes, at: offset, budget: &budget)
    }

    private init(_ type: BTFType, in bytes: UnsafeRawBufferPointer, at offset: Int, budget: inout Int) {
        budget -= 1
        if budget < 0 {
            self = .bytes([])
            return
        }
        switch type {
        case .integer(_, let size, let signed, _, let isBool):
            let raw = Self.load(bytes, offset, size)
            if isBool { self = .bool(raw != 0) }
            else if signed { self = .signed(Self.signExtend(raw, size)) }
            else { self = .unsigned(raw) }
        case .float(_, let size):
            let raw = Self.load(bytes, offset, size)
            self = size == 4 ? .float(Double(Float(bitPattern: UInt32(truncatingIfNeeded: raw)))) : .float(Double(bitPattern: raw))
        case .enumeration(_, let size, let signed, let cases):
            let raw = Self.load(bytes, offset, size)
            let value = signed ? Self.signExtend(raw, size) : Int64(bitPattern: raw)
            self = .enumCase(cases.first { $0.value == value }?.name, value)
        case .array(let element, let count) where type.isCharArray:
            var text: [UInt8] = []
            for index in 0..<min(count, 1 << 16) {
                let byte = Self.load(bytes, offset + index, 1)
                if byte == 0 { break }
                text.append(UInt8(byte))
            }
            _ = element
            self = .text(String(decoding: text, as: UTF8.self))
        case .array(let element, let count):
            let stride = element.size
            let shown = stride == 0 ? 0 : min(count, max(0, (bytes.count - offset) / stride), 4096)
            var values: [BTFValue] = []
            for index in 0..<shown where budget > 0 { values.append(BTFValue(element, in: bytes, at: offset + index * stride, budget: &budget)) }
            self = .array(values)
        case .structure(_, _, _, let members):
            var fields: [(String, BTFValue)] = []
            for (index, member) in members.enumerated() where budget > 0 {
                let name = member.name.isEmpty ? "_\(index)" : member.name
                fields.append((name, member.bitSize > 0 ? Self.bitfield(member, in: bytes, at: offset)
                                                        : BTFValue(member.type, in: bytes, at: offset + member.bitOffset / 8, budget: &budget)))
            }
            self = .object(fields)
        case .pointer:
            self = .unsigned(Self.load(bytes, offset, 8))
        case .opaque(_, let size):
            let count = max(0, min(size, bytes.count - offset, 4096))
            self = .bytes(count == 0 ? [] : Array(bytes[(bytes.startIndex + offset)..<(bytes.startIndex + offset + count)]))
        }
    }

    private static func bitfield(_ member: BTFMember, in bytes: UnsafeRawBufferPointer, at offset: Int) -> BTFValue {
        let start = offset + member.bitOffset / 8
        let shift = member.bitOffset % 8
        let raw = load(bytes, start, 8) >> UInt64(shift)
        let width = min(member.bitSize, 64 - shift)
        let value = width >= 64 ? raw : raw & ((1 << UInt64(width)) - 1)
        if case .integer(_, _, true, _, _) = member.type, width > 0, width < 64, value & (1 << UInt64(width - 1)) != 0 {
            return .signed(Int64(bitPattern: value | ~((1 << UInt64(width)) - 1)))
        }
        return .unsigned(value)
    }

    /// Little-endian load of `size` (≤ 8) bytes; what lies outside `bytes` reads as zero.
    static func load(_ bytes: UnsafeRawBufferPointer, _ offset: Int, _ size: Int) -> UInt64 {
        var value: UInt64 = 0
        for index in 0..<min(max(size, 0), 8) where offset + index >= 0 && offset + index < bytes.count {
            value |= UInt64(bytes[offset + index]) << UInt64(index * 8)
        }
        return value
    }

    private static func signExtend(_ raw: UInt64, _ size: Int) -> Int64 {
        guard size > 0 && size < 8 else { return Int64(bitPattern: raw) }
        let bits = UInt64(size * 8)
        return Int64(bitPattern: raw << (64 - bits)) >> Int64(64 - bits)
    }

    /// The value as a number, for histogram slots and counters (0 when it is not one).
    public var number: UInt64 {
        switch self {
        case .signed(let value): UInt64(bitPattern: value)
        case .unsigned(let value): value
        case .bool(let value): value ? 1 : 0
        case .enumCase(_, let value): UInt64(bitPattern: value)
        case .float(let value): value.isFinite && value >= 0 && value < 1.8e19 ? UInt64(value) : 0
        default: 0
        }
    }

    /// A member of an object value.
    public subscript(member name: String) -> BTFValue? {
        if case .object(let members) = self { return members.first { $0.0 == name }?.1 }
        return nil
    }

    /// Text for a terminal: numbers, text as is, enums by name, `{a=1 b=x}` and `[1,2]` for nested values.
    public var text: String {
        switch self {
        case .signed(let value): String(value)
        case .unsigned(let value): String(value)
        case .bool(let value): value ? "true" : "false"
        case .float(let value): String(value)
        case .text(let value): value
        case .enumCase(let name, let value): name ?? String(value)
        case .array(let values): "[" + values.map(\.text).joined(separator: ",") + "]"
        case .object(let members): "{" + members.map { "\($0.0)=\($0.1.text)" }.joined(separator: " ") + "}"
        case .bytes(let bytes): bytes.isEmpty ? "-" : "0x" + bytes.map { String($0, radix: 16).leftPadded(to: 2, with: "0") }.joined()
        }
    }

    /// Compact JSON.
    public var json: String {
        switch self {
        case .signed, .unsigned, .bool: text
        case .float(let value): value.isFinite ? String(value) : "null"
        case .text(let value): jsonString(value)
        case .enumCase(let name, let value): name.map(jsonString) ?? String(value)
        case .array(let values): "[" + values.map(\.json).joined(separator: ",") + "]"
        case .object(let members): "{" + members.map { "\(jsonString($0.0)):\($0.1.json)" }.joined(separator: ",") + "}"
        case .bytes: jsonString(text)
        }
    }
}

/// A JSON string literal of `value` (RFC 8259 escaping).
public func jsonString(_ value: String) -> String {
    var result = "\""
    for scalar in value.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where scalar.value < 0x20: result += "\\u" + String(scalar.value, radix: 16).leftPadded(to: 4, with: "0")
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result + "\""
}

extension String {
    func leftPadded(to width: Int, with pad: Character) -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}
