import Telemetry

/// Field numbers and enum values of opentelemetry-proto (`opentelemetry/proto/{common,resource,trace,metrics}/v1`,
/// `collector/*/v1`) used by the encoders.
enum OTLPField {
    // ExportTraceServiceRequest / ExportMetricsServiceRequest
    static let requestResourceSpans: UInt32 = 1
    // ResourceSpans / ResourceMetrics
    static let resource: UInt32 = 1
    static let scopeSpans: UInt32 = 2
    // ScopeSpans / ScopeMetrics
    static let scope: UInt32 = 1
    static let spans: UInt32 = 2
    // Resource / InstrumentationScope
    static let resourceAttributes: UInt32 = 1
    static let scopeName: UInt32 = 1
    static let scopeVersion: UInt32 = 2
    static let scopeAttributes: UInt32 = 3
    // Span
    static let traceID: UInt32 = 1
    static let spanID: UInt32 = 2
    static let traceState: UInt32 = 3
    static let parentSpanID: UInt32 = 4
    static let name: UInt32 = 5
    static let kind: UInt32 = 6
    static let startTime: UInt32 = 7
    static let endTime: UInt32 = 8
    static let attributes: UInt32 = 9
    static let status: UInt32 = 15
    static let flags: UInt32 = 16
    // Status
    static let statusMessage: UInt32 = 2
    static let statusCode: UInt32 = 3
    // KeyValue / AnyValue / ArrayValue
    static let key: UInt32 = 1
    static let value: UInt32 = 2
    static let stringValue: UInt32 = 1
    static let boolValue: UInt32 = 2
    static let intValue: UInt32 = 3
    static let doubleValue: UInt32 = 4
    static let arrayValue: UInt32 = 5
    static let arrayValues: UInt32 = 1
}

extension ProtobufWriter {
    /// OTLP `KeyValue` list (`repeated KeyValue attributes = field`).
    @inline(__always) mutating func attributes(_ field: UInt32, _ attributes: Attributes) {
        attributes.elements.withUnsafeBufferPointer { elements in
            for i in elements.indices {
                let done: Void? = elements[i].key.utf8.withContiguousStorageIfAvailable { key in
                    keyValue(field, key, elements[i].value)
                }
                if done == nil {
                    Array(elements[i].key.utf8).withUnsafeBufferPointer { keyValue(field, $0, elements[i].value) }
                }
            }
        }
    }

    /// One `KeyValue`. Scalar values (the common case) have their lengths computed up front and are written
    /// with one capacity check; arrays take the general nested path.
    @inline(__always) mutating func keyValue(_ field: UInt32, _ key: UnsafeBufferPointer<UInt8>, _ value: AttributeValue) {
        switch value {
        case .string(let s):
            let done: Void? = s.utf8.withContiguousStorageIfAvailable { v in
                let size = Self.varintSize(UInt64(v.count)) &+ v.count
                scalarKeyValue(field, key, valueTag: OTLPField.stringValue << 3 | 2, valueSize: size) { p in
                    let p = Self.put(UInt64(v.count), at: p)
                    if let source = v.baseAddress { Self.copy(source, to: p, count: v.count) }
                    return p + v.count
                }
            }
            if done == nil { generalKeyValue(field, key, value) }
        case .int(let n):
            let bits = UInt64(bitPattern: n)
            scalarKeyValue(field, key, valueTag: OTLPField.intValue << 3, valueSize: Self.varintSize(bits)) {
                Self.put(bits, at: $0)
            }
        case .bool(let b):
            scalarKeyValue(field, key, valueTag: OTLPField.boolValue << 3, valueSize: 1) { p in
                p.pointee = b ? 1 : 0
                return p + 1
            }
        case .double(let d):
            scalarKeyValue(field, key, valueTag: OTLPField.doubleValue << 3 | 1, valueSize: 8) { p in
                UnsafeMutableRawPointer(p).storeBytes(of: d.bitPattern.littleEndian, as: UInt64.self)
                return p + 8
            }
        default:
            generalKeyValue(field, key, value)
        }
    }

    /// Writes `KeyValue{key, AnyValue{<one field>}}`: the value field is its one-byte tag `valueTag` followed
    /// by `valueSize` bytes that `writeValue` writes (returning the position after them).
    @inline(__always) private mutating func scalarKeyValue(
        _ field: UInt32, _ key: UnsafeBufferPointer<UInt8>, valueTag: UInt32, valueSize: Int,
        _ writeValue: (UnsafeMutablePointer<UInt8>) -> UnsafeMutablePointer<UInt8>
    ) {
        let anyLength = 1 &+ valueSize
        let kvLength = 1 &+ Self.varintSize(UInt64(key.count)) &+ key.count &+ 1 &+ Self.varintSize(UInt64(anyLength)) &+ anyLength
        reserve(kvLength &+ 5)
        var p = Self.put(UInt64(field << 3 | 2), at: base + count)
        p = Self.put(UInt64(kvLength), at: p)
        p.pointee = UInt8(OTLPField.key << 3 | 2)
        p = Self.put(UInt64(key.count), at: p + 1)
        let keyCount = key.count
        if let source = key.baseAddress { Self.copy(source, to: p, count: keyCount) }
        p += keyCount
        p.pointee = UInt8(OTLPField.value << 3 | 2)
        p = Self.put(UInt64(anyLength), at: p + 1)
        p.pointee = UInt8(valueTag)
        p = writeValue(p + 1)
        count = p - base
    }

    /// `KeyValue` through nested messages (arrays, non-contiguous strings).
    private mutating func generalKeyValue(_ field: UInt32, _ key: UnsafeBufferPointer<UInt8>, _ value: AttributeValue) {
        let kv = beginMessage(field)
        bytesField(OTLPField.key, key)
        let any = beginMessage(OTLPField.value)
        anyValue(value)
        endMessage(any)
        endMessage(kv)
    }

    /// The body of an OTLP `AnyValue` (fields 1–5; arrays as `ArrayValue.values`).
    @inline(__always) mutating func anyValue(_ value: AttributeValue) {
        switch value {
        case .string(let v): stringField(OTLPField.stringValue, v)
        case .int(let v): varintField(OTLPField.intValue, UInt64(bitPattern: v))
        case .double(let v): fixed64Field(OTLPField.doubleValue, v.bitPattern)
        case .bool(let v): varintField(OTLPField.boolValue, v ? 1 : 0)
        case .stringArray(let v): array(v) { $0.stringField(OTLPField.stringValue, $1) }
        case .intArray(let v): array(v) { $0.varintField(OTLPField.intValue, UInt64(bitPattern: $1)) }
        case .doubleArray(let v): array(v) { $0.fixed64Field(OTLPField.doubleValue, $1.bitPattern) }
        case .boolArray(let v): array(v) { $0.varintField(OTLPField.boolValue, $1 ? 1 : 0) }
        }
    }

    private mutating func array<T>(_ items: [T], _ each: (inout ProtobufWriter, T) -> Void) {
        let array = beginMessage(OTLPField.arrayValue)
        for item in items {
            let any = beginMessage(OTLPField.arrayValues)
            each(&self, item)
            endMessage(any)
        }
        endMessage(array)
    }

    /// OTLP `Resource` as field `field` of the enclosing message.
    mutating func resource(_ field: UInt32, _ resource: Resource) {
        let m = beginMessage(field)
        attributes(OTLPField.resourceAttributes, resource.attributes)
        endMessage(m)
    }

    /// OTLP `InstrumentationScope` as field `field` of the enclosing message.
    mutating func scope(_ field: UInt32, _ scope: InstrumentationScope) {
        let m = beginMessage(field)
        if !scope.name.isEmpty { stringField(OTLPField.scopeName, scope.name) }
        if !scope.version.isEmpty { stringField(OTLPField.scopeVersion, scope.version) }
        attributes(OTLPField.scopeAttributes, scope.attributes)
        endMessage(m)
    }

    /// One OTLP `Span` as field `field` of `ScopeSpans`. Default values are omitted, as proto3 does.
    @inline(__always) mutating func span(_ field: UInt32, _ span: UnsafePointer<Span>) {
        let m = beginMessage(field, lengthBytes: 2)
        id128Field(OTLPField.traceID, span.pointee.traceID.high, span.pointee.traceID.low)
        id64Field(OTLPField.spanID, span.pointee.spanID.value)
        if !span.pointee.traceState.isEmpty { stringField(OTLPField.traceState, span.pointee.traceState) }
        if span.pointee.parentSpanID.isValid { id64Field(OTLPField.parentSpanID, span.pointee.parentSpanID.value) }
        stringField(OTLPField.name, span.pointee.name)
        varintField(OTLPField.kind, UInt64(span.pointee.kind.rawValue))
        fixed64Field(OTLPField.startTime, span.pointee.startTimeUnixNano)
        fixed64Field(OTLPField.endTime, span.pointee.endTimeUnixNano)
        attributes(OTLPField.attributes, span.pointee.attributes)
        if span.pointee.status.code != 0 {
            let s = beginMessage(OTLPField.status)
            let message = span.pointee.status.message
            if !message.isEmpty { stringField(OTLPField.statusMessage, message) }
            varintField(OTLPField.statusCode, UInt64(span.pointee.status.code))
            endMessage(s)
        }
        if span.pointee.flags != 0 { fixed32Field(OTLPField.flags, span.pointee.flags) }
        endMessage(m)
    }
}

/// Encodes spans as an OTLP `ExportTraceServiceRequest` in protobuf wire format (`http/protobuf`).
public enum OTLPTraceProtobufEncoder {
    /// Appends the request for `spans` to `writer`, grouped by resource and scope.
    public static func encode(_ spans: ArraySlice<Span>, into writer: inout ProtobufWriter) {
        let groups = SpanGroups(spans)
        for group in groups.resources {
            let rs = writer.beginMessage(OTLPField.requestResourceSpans, lengthBytes: 3)
            writer.resource(OTLPField.resource, group.resource)
            for scopeGroup in group.scopes {
                let ss = writer.beginMessage(OTLPField.scopeSpans, lengthBytes: 3)
                writer.scope(OTLPField.scope, scopeGroup.scope)
                spans.withUnsafeBufferPointer { spans in
                    for i in scopeGroup.indices { writer.span(OTLPField.spans, spans.baseAddress! + i) }
                }
                writer.endMessage(ss)
            }
            writer.endMessage(rs)
        }
    }

    public static func encode(_ spans: [Span], into writer: inout ProtobufWriter) {
        encode(spans[...], into: &writer)
    }
}
