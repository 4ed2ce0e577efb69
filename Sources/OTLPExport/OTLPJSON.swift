import Telemetry

/// Encodes spans as an OTLP `ExportTraceServiceRequest` in the OTLP/JSON mapping (`http/json`): proto3 JSON with
/// lowerCamelCase keys, trace and span ids as hex (not base64), enums as integers, 64-bit integers as strings.
public enum OTLPTraceJSONEncoder {
    /// Appends the request for `spans` to `out`.
    public static func encode(_ spans: ArraySlice<Span>, into out: inout [UInt8]) {
        let groups = SpanGroups(spans)
        var scratch = ProtobufWriter(capacity: 4096)  // one span's text at a time
        appendLiteral("{\"resourceSpans\":[", to: &out)
        for (r, group) in groups.resources.enumerated() {
            if r > 0 { out.append(UInt8(ascii: ",")) }
            appendLiteral("{\"resource\":", to: &out)
            resource(group.resource, into: &out)
            appendLiteral(",\"scopeSpans\":[", to: &out)
            for (s, scopeGroup) in group.scopes.enumerated() {
                if s > 0 { out.append(UInt8(ascii: ",")) }
                appendLiteral("{\"scope\":", to: &out)
                scope(scopeGroup.scope, into: &out)
                appendLiteral(",\"spans\":[", to: &out)
                var first = true
                spans.withUnsafeBufferPointer { spans in
                    for i in scopeGroup.runs.joined() {
                        if !first { out.append(UInt8(ascii: ",")) }
                        first = false
                        scratch.reset()
                        scratch.withRoom { $0.jsonSpan(spans.baseAddress! + i) }
                        scratch.withBytes { out.append(contentsOf: $0) }
                    }
                }
                appendLiteral("]}", to: &out)
            }
            appendLiteral("]}", to: &out)
        }
        appendLiteral("]}", to: &out)
    }

    public static func encode(_ spans: [Span], into out: inout [UInt8]) { encode(spans[...], into: &out) }

    /// Appends `,"name":`.
    static func key(_ name: StaticString, _ out: inout [UInt8]) {
        out.append(UInt8(ascii: ","))
        out.append(UInt8(ascii: "\""))
        appendLiteral(name, to: &out)
        appendLiteral("\":", to: &out)
    }

    static func resource(_ resource: Resource, into out: inout [UInt8]) {
        appendLiteral("{\"attributes\":", to: &out)
        attributes(resource.attributes, into: &out)
        out.append(UInt8(ascii: "}"))
    }

    static func scope(_ scope: InstrumentationScope, into out: inout [UInt8]) {
        appendLiteral("{\"name\":", to: &out)
        appendJSONString(scope.name, to: &out)
        if !scope.version.isEmpty {
            key("version", &out)
            appendJSONString(scope.version, to: &out)
        }
        if !scope.attributes.isEmpty {
            key("attributes", &out)
            attributes(scope.attributes, into: &out)
        }
        out.append(UInt8(ascii: "}"))
    }

    /// `[{"key":…,"value":{…}}, …]` — OTLP `repeated KeyValue`.
    static func attributes(_ attributes: Attributes, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "["))
        for (i, a) in attributes.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            appendLiteral("{\"key\":", to: &out)
            appendJSONString(a.key, to: &out)
            appendLiteral(",\"value\":", to: &out)
            anyValue(a.value, into: &out)
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "]"))
    }

    /// An OTLP `AnyValue` object (`stringValue`, `intValue` as a string, `doubleValue`, `boolValue`,
    /// `arrayValue.values`).
    static func anyValue(_ value: AttributeValue, into out: inout [UInt8]) {
        func array<T>(_ items: [T], _ each: (T) -> AttributeValue) {
            appendLiteral("{\"arrayValue\":{\"values\":[", to: &out)
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                anyValue(each(item), into: &out)
            }
            appendLiteral("]}}", to: &out)
        }
        switch value {
        case .string(let v):
            appendLiteral("{\"stringValue\":", to: &out)
            appendJSONString(v, to: &out)
            out.append(UInt8(ascii: "}"))
        case .int(let v):
            appendLiteral("{\"intValue\":\"", to: &out)
            appendDecimal(v, to: &out)
            appendLiteral("\"}", to: &out)
        case .double(let v):
            appendLiteral("{\"doubleValue\":", to: &out)
            appendJSONDouble(v, to: &out)
            out.append(UInt8(ascii: "}"))
        case .bool(let v): v ? appendLiteral("{\"boolValue\":true}", to: &out) : appendLiteral("{\"boolValue\":false}", to: &out)
        case .stringArray(let v): array(v) { .string($0) }
        case .intArray(let v): array(v) { .int($0) }
        case .doubleArray(let v): array(v) { .double($0) }
        case .boolArray(let v): array(v) { .bool($0) }
        }
    }
}
