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
    mutating func attributes(_ field: UInt32, _ attributes: Attributes) {
        withRoom { $0.attributes(UInt8(field << 3 | 2), attributes) }
    }

    /// OTLP `Resource` as field `field` of the enclosing message.
    mutating func resource(_ field: UInt32, _ resource: Resource) {
        let m = beginMessage(field, lengthBytes: 2)
        attributes(OTLPField.resourceAttributes, resource.attributes)
        endMessage(m)
    }

    /// OTLP `InstrumentationScope` as field `field` of the enclosing message.
    mutating func scope(_ field: UInt32, _ scope: InstrumentationScope) {
        let m = beginMessage(field, lengthBytes: 2)
        if !scope.name.isEmpty { stringField(OTLPField.scopeName, scope.name) }
        if !scope.version.isEmpty { stringField(OTLPField.scopeVersion, scope.version) }
        attributes(OTLPField.scopeAttributes, scope.attributes)
        endMessage(m)
    }
}

extension ProtobufWriter.Cursor {
    /// One-byte keys (`field << 3 | wire type`) of the fields written through the cursor.
    private enum Tag {
        static let traceID = UInt8(OTLPField.traceID << 3 | 2)
        static let spanID = UInt8(OTLPField.spanID << 3 | 2)
        static let traceState = UInt8(OTLPField.traceState << 3 | 2)
        static let parentSpanID = UInt8(OTLPField.parentSpanID << 3 | 2)
        static let name = UInt8(OTLPField.name << 3 | 2)
        static let kind = UInt8(OTLPField.kind << 3)
        static let startTime = UInt8(OTLPField.startTime << 3 | 1)
        static let endTime = UInt8(OTLPField.endTime << 3 | 1)
        static let attributes = UInt8(OTLPField.attributes << 3 | 2)
        static let status = UInt8(OTLPField.status << 3 | 2)
        static let statusMessage = UInt8(OTLPField.statusMessage << 3 | 2)
        static let statusCode = UInt8(OTLPField.statusCode << 3)
        // Span.flags is field 16: a two-byte key.
        static let flags: (UInt8, UInt8) = (UInt8(truncatingIfNeeded: OTLPField.flags << 3 | 5) | 0x80, UInt8(OTLPField.flags >> 4))
        static let key = UInt8(OTLPField.key << 3 | 2)
        static let value = UInt8(OTLPField.value << 3 | 2)
        static let stringValue = UInt8(OTLPField.stringValue << 3 | 2)
        static let boolValue = UInt8(OTLPField.boolValue << 3)
        static let intValue = UInt8(OTLPField.intValue << 3)
        static let doubleValue = UInt8(OTLPField.doubleValue << 3 | 1)
        static let arrayValue = UInt8(OTLPField.arrayValue << 3 | 2)
        static let arrayValues = UInt8(OTLPField.arrayValues << 3 | 2)
    }

    /// Bytes of a length-delimited field body of `n` bytes with a one-byte key.
    @inline(__always) private static func fieldSize(_ n: Int) -> Int { 1 &+ ProtobufWriter.varintSize(UInt64(n)) &+ n }

    /// One OTLP `Span` (`ScopeSpans.spans`, key byte `tag`). Default values are omitted, as proto3 does.
    /// The length goes into a 2-byte padded varint slot, back-patched; bodies of 16 KiB and more are slid.
    @inline(__always) mutating func span(_ tag: UInt8, _ span: UnsafePointer<Span>) {
        // key + slot, trace id, span id, parent id, kind, start, end, flags
        guard room(3 &+ 18 &+ 10 &+ 10 &+ 2 &+ 9 &+ 9 &+ 6) else { return }
        byte(tag)
        let slot = p
        p += 2
        byte(Tag.traceID)
        byte(16)
        bigEndian64(span.pointee.traceID.high)
        bigEndian64(span.pointee.traceID.low)
        byte(Tag.spanID)
        byte(8)
        bigEndian64(span.pointee.spanID.value)
        if span.pointee.parentSpanID.isValid {
            byte(Tag.parentSpanID)
            byte(8)
            bigEndian64(span.pointee.parentSpanID.value)
        }
        byte(Tag.kind)
        varint(UInt64(UInt32(bitPattern: span.pointee.kind.rawValue)))
        byte(Tag.startTime)
        fixed64(span.pointee.startTimeUnixNano)
        byte(Tag.endTime)
        fixed64(span.pointee.endTimeUnixNano)
        let flags = span.pointee.flags
        if flags != 0 {
            byte(Tag.flags.0)
            byte(Tag.flags.1)
            fixed32(flags)
        }
        if !span.pointee.traceState.isEmpty { stringField(Tag.traceState, span.pointee.traceState) }
        stringField(Tag.name, span.pointee.name)
        attributes(Tag.attributes, span.pointee.attributes)
        switch span.pointee.status {
        case .unset: break
        case .ok:
            guard room(4) else { return }
            byte(Tag.status)
            byte(2)
            byte(Tag.statusCode)
            byte(UInt8(SpanStatus.ok.code))
        case .error(let message): statusError(message)
        }
        let length = p - (slot + 2)
        if _fastPath(length < 1 << 14) {
            ProtobufWriter.putPadded(UInt64(length), at: slot, size: 2)
        } else {
            let shift = ProtobufWriter.varintSize(UInt64(length)) &- 2
            guard room(shift) else { return }
            (slot + 2 + shift).update(from: slot + 2, count: length)
            p = ProtobufWriter.put(UInt64(length), at: slot) + length
        }
    }

    /// OTLP `Status{message, code: STATUS_CODE_ERROR}` (error spans: out of line).
    @inline(never) private mutating func statusError(_ message: String) {
        var message = message
        message.withUTF8 { statusError($0) }
    }

    private mutating func statusError(_ message: UnsafeBufferPointer<UInt8>) {
        let body = (message.isEmpty ? 0 : Self.fieldSize(message.count)) &+ 2
        guard room(Self.fieldSize(body)) else { return }
        byte(Tag.status)
        varint(UInt64(body))
        if !message.isEmpty {
            byte(Tag.statusMessage)
            lengthDelimited(message)
        }
        byte(Tag.statusCode)
        byte(UInt8(SpanStatus.error(message: "").code))
    }

    /// OTLP `repeated KeyValue` with key byte `tag`, one capacity check per attribute.
    /// Works on a local copy of the cursor, which the compiler keeps in registers (bytes stored through `p`
    /// could otherwise alias the cursor itself, forcing a reload after every store).
    mutating func attributes(_ tag: UInt8, _ attributes: Attributes) {
        var c = Self(p: p, end: end)
        attributes.elements.withUnsafeBufferPointer { elements in
            for i in 0..<elements.count {
                let attribute = elements.baseAddress! + i
                let written = attribute.pointee.key.utf8.withContiguousStorageIfAvailable { key in
                    c.scalarKeyValue(tag, key, attribute.pointee.value)
                }
                if written != true { c.otherKeyValue(tag, attribute) }
            }
        }
        p = c.p
        overflow = overflow || c.overflow
    }

    /// `KeyValue{key, value: AnyValue}` for the common values: contiguous strings, integers, booleans,
    /// doubles; false (nothing written) for the others. Lengths are computed before writing, so every length
    /// is a minimal varint and one capacity check covers the whole attribute. Strings are read in place: this
    /// path makes no call that could release them, which spares a retain/release pair per string.
    @inline(__always) private mutating func scalarKeyValue(_ tag: UInt8, _ key: UnsafeBufferPointer<UInt8>, _ value: AttributeValue) -> Bool {
        switch value {
        case .string(let s):
            let written: Void? = s.utf8.withContiguousStorageIfAvailable { v in
                if _fastPath(key.count &+ v.count < 122) {  // every length below 128: one byte each
                    let kvLength = key.count &+ v.count &+ 6
                    guard room(kvLength &+ 2) else { return }
                    keyHeader(tag, kvLength, key)
                    header(Tag.value, v.count &+ 2, Tag.stringValue, v.count)
                    if let source = v.baseAddress { ProtobufWriter.copy(source, to: p, count: v.count) }
                    p += v.count
                } else {
                    guard begin(tag, key, valueTag: Tag.stringValue, valueSize: ProtobufWriter.varintSize(UInt64(v.count)) &+ v.count) else { return }
                    lengthDelimited(v)
                }
            }
            return written != nil
        case .int(let n):
            let bits = UInt64(bitPattern: n)
            if _fastPath(key.count < 110) {  // KeyValue under 128 bytes: one-byte lengths
                let valueSize = ProtobufWriter.varintSize(bits)
                let kvLength = key.count &+ valueSize &+ 5
                guard room(kvLength &+ 2) else { return true }
                keyHeader(tag, kvLength, key)
                byte(Tag.value)
                byte(UInt8(truncatingIfNeeded: valueSize &+ 1))
                byte(Tag.intValue)
                varint(bits)
                return true
            }
            guard begin(tag, key, valueTag: Tag.intValue, valueSize: ProtobufWriter.varintSize(bits)) else { return true }
            varint(bits)
        case .bool(let b):
            guard begin(tag, key, valueTag: Tag.boolValue, valueSize: 1) else { return true }
            byte(b ? 1 : 0)
        case .double(let d):
            guard begin(tag, key, valueTag: Tag.doubleValue, valueSize: 8) else { return true }
            fixed64(d.bitPattern)
        case .stringArray, .intArray, .doubleArray, .boolArray:
            return false
        }
        return true
    }

    /// The attributes `scalarKeyValue` leaves: arrays, and strings without contiguous UTF-8 (copied first).
    @inline(never) private mutating func otherKeyValue(_ tag: UInt8, _ attribute: UnsafePointer<Attribute>) {
        var key = attribute.pointee.key
        var value = attribute.pointee.value
        if case .string(var s) = value {
            s.makeContiguousUTF8()
            value = .string(s)
        }
        key.withUTF8 { key in
            if scalarKeyValue(tag, key, value) { return }
            switch value {
            case .stringArray(let items):
                array(tag, key, items, size: { Self.fieldSize($0.utf8.count) }) { c, s in
                    var s = s
                    s.withUTF8 { c.byte(Tag.stringValue); c.lengthDelimited($0) }
                }
            case .intArray(let items):
                array(tag, key, items, size: { 1 &+ ProtobufWriter.varintSize(UInt64(bitPattern: $0)) }) { c, n in
                    c.byte(Tag.intValue)
                    c.varint(UInt64(bitPattern: n))
                }
            case .doubleArray(let items):
                array(tag, key, items, size: { _ in 9 }) { c, d in
                    c.byte(Tag.doubleValue)
                    c.fixed64(d.bitPattern)
                }
            case .boolArray(let items):
                array(tag, key, items, size: { _ in 2 }) { c, b in
                    c.byte(Tag.boolValue)
                    c.byte(b ? 1 : 0)
                }
            case .string, .int, .double, .bool:
                break  // written by `scalarKeyValue`
            }
        }
    }

    /// Four bytes `a b c d` in one store (keys and one-byte lengths).
    @inline(__always) private mutating func header(_ a: UInt8, _ b: Int, _ c: UInt8, _ d: Int) {
        let word = UInt32(a) | UInt32(truncatingIfNeeded: b) &<< 8 | UInt32(c) &<< 16 | UInt32(truncatingIfNeeded: d) &<< 24
        UnsafeMutableRawPointer(p).storeBytes(of: word.littleEndian, as: UInt32.self)
        p += 4
    }

    /// `tag`, the one-byte `KeyValue` length `kvLength`, then `KeyValue.key` (shorter than 128 bytes).
    @inline(__always) private mutating func keyHeader(_ tag: UInt8, _ kvLength: Int, _ key: UnsafeBufferPointer<UInt8>) {
        header(tag, kvLength, Tag.key, key.count)
        if let source = key.baseAddress { ProtobufWriter.copy(source, to: p, count: key.count) }
        p += key.count
    }

    /// Checks room for and writes `KeyValue` up to the `AnyValue` field key `valueTag`, for an `AnyValue`
    /// whose one field has `valueSize` bytes after its key; the caller writes those. False if it did not fit.
    @inline(__always) private mutating func begin(_ tag: UInt8, _ key: UnsafeBufferPointer<UInt8>, valueTag: UInt8, valueSize: Int) -> Bool {
        let anyLength = 1 &+ valueSize
        let kvLength = Self.fieldSize(key.count) &+ Self.fieldSize(anyLength)
        guard room(Self.fieldSize(kvLength)) else { return false }
        byte(tag)
        varint(UInt64(kvLength))
        byte(Tag.key)
        lengthDelimited(key)
        byte(Tag.value)
        varint(UInt64(anyLength))
        byte(valueTag)
        return true
    }

    /// `KeyValue` whose value is `AnyValue{array_value: ArrayValue{values: [AnyValue]}}`; `size` gives the
    /// encoded size of one element's `AnyValue` body, `write` writes it.
    private mutating func array<T>(
        _ tag: UInt8, _ key: UnsafeBufferPointer<UInt8>, _ items: [T], size: (T) -> Int, _ write: (inout Self, T) -> Void
    ) {
        var arrayLength = 0
        for item in items { arrayLength &+= Self.fieldSize(size(item)) }
        guard begin(tag, key, valueTag: Tag.arrayValue, valueSize: ProtobufWriter.varintSize(UInt64(arrayLength)) &+ arrayLength) else { return }
        varint(UInt64(arrayLength))
        for item in items {
            byte(Tag.arrayValues)
            varint(UInt64(size(item)))
            write(&self, item)
        }
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
                    for run in scopeGroup.runs {
                        for i in run { writer.withRoom { $0.span(UInt8(OTLPField.spans << 3 | 2), spans.baseAddress! + i) } }
                    }
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
