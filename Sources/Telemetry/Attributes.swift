/// An attribute value: OTLP `AnyValue` restricted to what the OpenTelemetry attribute spec allows
/// (primitives and homogeneous arrays of primitives).
public enum AttributeValue: Hashable, Sendable, CustomStringConvertible {
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case stringArray([String])
    case intArray([Int64])
    case doubleArray([Double])
    case boolArray([Bool])

    /// The value as a string for text output and metric labels (arrays as `[a,b]`).
    public var description: String {
        switch self {
        case .string(let v): return v
        case .int(let v): return String(v)
        case .double(let v): return String(v)
        case .bool(let v): return String(v)
        case .stringArray(let v): return "[" + v.joined(separator: ",") + "]"
        case .intArray(let v): return "[" + v.map(String.init).joined(separator: ",") + "]"
        case .doubleArray(let v): return "[" + v.map { String($0) }.joined(separator: ",") + "]"
        case .boolArray(let v): return "[" + v.map { String($0) }.joined(separator: ",") + "]"
        }
    }

    /// The string payload, or nil for other kinds.
    public var stringValue: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    /// The integer payload, or nil for other kinds.
    public var intValue: Int64? {
        if case .int(let v) = self { return v }
        return nil
    }
}

extension AttributeValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

/// One attribute: OTLP `KeyValue`.
public struct Attribute: Hashable, Sendable {
    public var key: String
    public var value: AttributeValue

    public init(_ key: String, _ value: AttributeValue) {
        self.key = key
        self.value = value
    }
}

/// An ordered list of attributes with unique keys (OTLP `repeated KeyValue`). A plain array underneath:
/// spans carry about ten attributes, where a linear scan beats hashing and keeps insertion order for output.
public struct Attributes: Hashable, Sendable, Sequence, ExpressibleByDictionaryLiteral {
    /// Inlinable appends (decoders build every span's attributes) need the storage visible to them.
    @usableFromInline var storage: [Attribute]

    public var elements: [Attribute] { storage }

    public init() { storage = [] }

    /// Reserves room so that building a span's attributes allocates once.
    public init(capacity: Int) {
        storage = []
        storage.reserveCapacity(capacity)
    }

    /// Later duplicates replace earlier ones, keeping the first position.
    public init(_ attributes: [Attribute]) {
        storage = []
        storage.reserveCapacity(attributes.count)
        for a in attributes { self[a.key] = a.value }
    }

    public init(dictionaryLiteral pairs: (String, AttributeValue)...) {
        self.init(pairs.map { Attribute($0.0, $0.1) })
    }

    public var count: Int { storage.count }
    public var isEmpty: Bool { storage.isEmpty }

    public func makeIterator() -> IndexingIterator<[Attribute]> { storage.makeIterator() }

    /// Gets a value; setting replaces in place or appends, setting nil removes. Keys of another length are
    /// passed over without comparing their bytes (most keys a lookup meets).
    public subscript(key: String) -> AttributeValue? {
        get {
            let length = key.utf8.count
            return storage.first { $0.key.utf8.count == length && $0.key == key }?.value
        }
        set {
            if let i = storage.firstIndex(where: { $0.key == key }) {
                if let newValue { storage[i].value = newValue } else { storage.remove(at: i) }
            } else if let newValue {
                storage.append(Attribute(key, newValue))
            }
        }
    }

    /// Appends without checking for an existing key: the fast path for decoders that set each key once.
    @inlinable
    public mutating func appendUnchecked(_ key: String, _ value: AttributeValue) {
        storage.append(Attribute(key, value))
    }

    /// Adds every attribute of `other`, replacing values of keys already present.
    public mutating func merge(_ other: Attributes) {
        for a in other.storage { self[a.key] = a.value }
    }
}
