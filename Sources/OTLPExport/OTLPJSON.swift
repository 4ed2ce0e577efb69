import Telemetry

/// Encodes spans as an OTLP `ExportTraceServiceRequest` in the OTLP/JSON mapping (`http/json`): proto3 JSON with
/// lowerCamelCase keys, trace and span ids as hex (not base64), enums as integers, 64-bit integers as strings.
public enum OTLPTraceJSONEncoder {
    /// Appends the request for `spans` to `out`.
    public static func encode(_ spans: ArraySlice<Span>, into out: inout [UInt8]) {
        let groups = SpanGroups(spans)
        out.append(contentsOf: "{\"resourceSpans\":[".utf8)
        for (r, group) in groups.resources.enumerated() {
            if r > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: "{\"resource\":".utf8)
            resource(group.resource, into: &out)
            out.append(contentsOf: ",\"scopeSpans\":[".utf8)
            for (s, scopeGroup) in group.scopes.enumerated() {
                if s > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: "{\"scope\":".utf8)
                scope(scopeGroup.scope, into: &out)
                out.append(contentsOf: ",\"spans\":[".utf8)
                for (n, i) in scopeGroup.indices.enumerated() {
                    if n > 0 { out.append(UInt8(ascii: ",")) }
                    span(spans[spans.startIndex + i], into: &out)
                }
                out.append(contentsOf: "]}".utf8)
            }
            out.append(contentsOf: "]}".utf8)
        }
        out.append(contentsOf: "]}".utf8)
    }

    public static func encode(_ spans: [Span], into out: inout [UInt8]) { encode(spans[...], into: &out) }

    /// Appends `,"name":`.
    static func key(_ name: String, _ out: inout [UInt8]) {
        out.append(UInt8(ascii: ","))
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: name.utf8)
        out.append(contentsOf: "\":".utf8)
    }

    static func span(_ span: Span, into out: inout [UInt8]) {
        out.append(contentsOf: "{\"traceId\":\"".utf8)
        span.traceID.appendHex(to: &out)
        out.append(contentsOf: "\",\"spanId\":\"".utf8)
        span.spanID.appendHex(to: &out)
        out.append(UInt8(ascii: "\""))
        if !span.traceState.isEmpty {
            key("traceState", &out)
            appendJSONString(span.traceState, to: &out)
        }
        if span.parentSpanID.isValid {
            out.append(contentsOf: ",\"parentSpanId\":\"".utf8)
            span.parentSpanID.appendHex(to: &out)
            out.append(UInt8(ascii: "\""))
        }
        if span.flags != 0 {
            out.append(contentsOf: ",\"flags\":".utf8)
            out.append(contentsOf: String(span.flags).utf8)
        }
        key("name", &out)
        appendJSONString(span.name, to: &out)
        out.append(contentsOf: ",\"kind\":".utf8)
        out.append(contentsOf: String(span.kind.rawValue).utf8)
        out.append(contentsOf: ",\"startTimeUnixNano\":\"".utf8)
        out.append(contentsOf: String(span.startTimeUnixNano).utf8)
        out.append(contentsOf: "\",\"endTimeUnixNano\":\"".utf8)
        out.append(contentsOf: String(span.endTimeUnixNano).utf8)
        out.append(UInt8(ascii: "\""))
        key("attributes", &out)
        attributes(span.attributes, into: &out)
        if span.status != .unset {
            out.append(contentsOf: ",\"status\":{\"code\":\(span.status.code)".utf8)
            if !span.status.message.isEmpty {
                key("message", &out)
                appendJSONString(span.status.message, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "}"))
    }

    static func resource(_ resource: Resource, into out: inout [UInt8]) {
        out.append(contentsOf: "{\"attributes\":".utf8)
        attributes(resource.attributes, into: &out)
        out.append(UInt8(ascii: "}"))
    }

    static func scope(_ scope: InstrumentationScope, into out: inout [UInt8]) {
        out.append(contentsOf: "{\"name\":".utf8)
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
            out.append(contentsOf: "{\"key\":".utf8)
            appendJSONString(a.key, to: &out)
            out.append(contentsOf: ",\"value\":".utf8)
            anyValue(a.value, into: &out)
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "]"))
    }

    /// An OTLP `AnyValue` object (`stringValue`, `intValue` as a string, `doubleValue`, `boolValue`,
    /// `arrayValue.values`).
    static func anyValue(_ value: AttributeValue, into out: inout [UInt8]) {
        func array<T>(_ items: [T], _ each: (T) -> AttributeValue) {
            out.append(contentsOf: "{\"arrayValue\":{\"values\":[".utf8)
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                anyValue(each(item), into: &out)
            }
            out.append(contentsOf: "]}}".utf8)
        }
        switch value {
        case .string(let v):
            out.append(contentsOf: "{\"stringValue\":".utf8)
            appendJSONString(v, to: &out)
            out.append(UInt8(ascii: "}"))
        case .int(let v): out.append(contentsOf: "{\"intValue\":\"\(v)\"}".utf8)
        case .double(let v):
            out.append(contentsOf: "{\"doubleValue\":".utf8)
            appendJSONDouble(v, to: &out)
            out.append(UInt8(ascii: "}"))
        case .bool(let v): out.append(contentsOf: "{\"boolValue\":\(v)}".utf8)
        case .stringArray(let v): array(v) { .string($0) }
        case .intArray(let v): array(v) { .int($0) }
        case .doubleArray(let v): array(v) { .double($0) }
        case .boolArray(let v): array(v) { .bool($0) }
        }
    }
}
