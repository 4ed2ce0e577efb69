import Foundation
import Logging
import Telemetry

/// The OTLP/HTTP log record exporter: `OTLPBatchExporter` for `LogRecord`s, posting `ExportLogsServiceRequest`
/// to `logsURL` (`<endpoint>/v1/logs` or `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`) with the trace exporter's queue
/// limits, batching, retries and shutdown rules. Its `stats` count log records where they say spans.
public final class OTLPLogExporter: LogSink, @unchecked Sendable {
    private let core: OTLPBatchExporter<LogBatch>
    public var settings: ExportSettings { core.settings }
    public var stats: ExporterStats { core.stats }

    /// Starts the worker thread (transport from `makeTransport`, libcurl by default); call `shutdown` at the end.
    public init(
        settings: ExportSettings, logger: Logger = Logger(label: "tracer.otlp"),
        makeTransport: (@Sendable () -> HTTPTransport)? = nil
    ) {
        core = OTLPBatchExporter(settings: settings, logger: logger, threadName: "otlp-logs", makeTransport: makeTransport)
    }

    public func consume(_ records: [LogRecord]) { core.consume(records) }
    @discardableResult public func flush(timeout: Duration) -> Bool { core.flush(timeout: timeout) }
    public func shutdown(timeout: Duration) { core.shutdown(timeout: timeout) }
}

/// Log records for `OTLPBatchExporter`.
enum LogBatch: OTLPBatchKind {
    static var signal: OTLPSignal { .logs }
    static var noun: String { "log records" }
    static var singular: String { "log record" }
    static func url(_ settings: ExportSettings) -> String { settings.logsURL }
    static func resource(of record: LogRecord) -> Resource { record.resource }
    static func setResource(_ resource: Resource, of record: inout LogRecord) { record.resource = resource }
    static func encode(_ records: ArraySlice<LogRecord>, into writer: inout ProtobufWriter) {
        OTLPLogProtobufEncoder.encode(records, into: &writer)
    }
    static func encodeJSON(_ records: ArraySlice<LogRecord>, into json: inout [UInt8]) {
        OTLPLogJSONEncoder.encode(records, into: &json)
    }

    static func estimatedBytes(_ record: LogRecord) -> Int {
        var n = 64 + record.severityText.utf8.count + (record.body.map(size) ?? 0)
        for a in record.attributes.elements { n += 16 + a.key.utf8.count + a.value.description.utf8.count }
        return n
    }

    private static func size(_ value: LogValue) -> Int {
        switch value {
        case .string(let s): 4 + s.utf8.count
        case .bytes(let b): 4 + b.count
        case .int, .double, .bool: 11
        case .array(let items): 4 + items.reduce(0) { $0 + size($1) }
        case .map(let entries): 4 + entries.reduce(0) { $0 + 6 + $1.key.utf8.count + size($1.value) }
        }
    }
}

/// Field numbers of opentelemetry-proto `logs/v1` (`ResourceLogs`, `ScopeLogs`, `LogRecord`) and of the
/// `common/v1` `AnyValue` members the attribute encoder does not write (`kvlist_value`, `bytes_value`).
enum OTLPLogField {
    // ExportLogsServiceRequest
    static let resourceLogs: UInt32 = 1
    // ResourceLogs: resource = 1; ScopeLogs: scope = 1
    static let scopeLogs: UInt32 = 2
    static let logRecords: UInt32 = 2
    // LogRecord
    static let timeUnixNano: UInt32 = 1
    static let severityNumber: UInt32 = 2
    static let severityText: UInt32 = 3
    static let body: UInt32 = 5
    static let attributes: UInt32 = 6
    static let observedTimeUnixNano: UInt32 = 11
    // AnyValue (1–5 as in `OTLPField`); ArrayValue.values / KeyValueList.values = 1
    static let kvlistValue: UInt32 = 6
    static let bytesValue: UInt32 = 7
    static let values: UInt32 = 1
}

/// Log records of one batch nested as OTLP wants them: by resource, then scope, order of first appearance.
struct LogGroups {
    var resources: [(resource: Resource, scopes: [(scope: InstrumentationScope, records: [Int])])] = []

    init(_ records: ArraySlice<LogRecord>) {
        for (offset, record) in records.enumerated() {
            var r = resources.firstIndex { $0.resource === record.resource } ?? resources.firstIndex { $0.resource == record.resource } ?? -1
            if r < 0 {
                resources.append((record.resource, []))
                r = resources.count - 1
            }
            if let s = resources[r].scopes.firstIndex(where: { $0.scope == record.scope }) {
                resources[r].scopes[s].records.append(offset)
            } else {
                resources[r].scopes.append((record.scope, [offset]))
            }
        }
    }
}

/// Encodes log records as an OTLP `ExportLogsServiceRequest` in protobuf wire format (`http/protobuf`).
/// Default values are left out, as proto3 does; `AnyValue` members are always written (they are a oneof).
public enum OTLPLogProtobufEncoder {
    public static func encode(_ records: ArraySlice<LogRecord>, into writer: inout ProtobufWriter) {
        let base = records.startIndex
        for group in LogGroups(records).resources {
            let rl = writer.beginMessage(OTLPLogField.resourceLogs, lengthBytes: 3)
            writer.resource(OTLPField.resource, group.resource)
            for scopeGroup in group.scopes {
                let sl = writer.beginMessage(OTLPLogField.scopeLogs, lengthBytes: 3)
                writer.scope(OTLPField.scope, scopeGroup.scope)
                for offset in scopeGroup.records { record(records[base + offset], into: &writer) }
                writer.endMessage(sl)
            }
            writer.endMessage(rl)
        }
    }

    public static func encode(_ records: [LogRecord], into writer: inout ProtobufWriter) { encode(records[...], into: &writer) }

    private static func record(_ record: LogRecord, into writer: inout ProtobufWriter) {
        let m = writer.beginMessage(OTLPLogField.logRecords, lengthBytes: 2)
        if record.timeUnixNano != 0 { writer.fixed64Field(OTLPLogField.timeUnixNano, record.timeUnixNano) }
        if record.severity != .unspecified {
            writer.varintField(OTLPLogField.severityNumber, UInt64(UInt32(bitPattern: record.severity.rawValue)))
        }
        if !record.severityText.isEmpty { writer.stringField(OTLPLogField.severityText, record.severityText) }
        if let body = record.body {
            let b = writer.beginMessage(OTLPLogField.body, lengthBytes: 2)
            anyValue(body, into: &writer)
            writer.endMessage(b)
        }
        writer.attributes(OTLPLogField.attributes, record.attributes)
        if record.observedTimeUnixNano != 0 {
            writer.fixed64Field(OTLPLogField.observedTimeUnixNano, record.observedTimeUnixNano)
        }
        writer.endMessage(m)
    }

    /// The fields of one `AnyValue` (the caller wrote its key and length).
    private static func anyValue(_ value: LogValue, into writer: inout ProtobufWriter) {
        switch value {
        case .string(let s): writer.stringField(OTLPField.stringValue, s)
        case .bool(let b): writer.varintField(OTLPField.boolValue, b ? 1 : 0)
        case .int(let n): writer.varintField(OTLPField.intValue, UInt64(bitPattern: n))
        case .double(let d): writer.fixed64Field(OTLPField.doubleValue, d.bitPattern)
        case .bytes(let b): b.withUnsafeBufferPointer { writer.bytesField(OTLPLogField.bytesValue, $0) }
        case .array(let items):
            let a = writer.beginMessage(OTLPField.arrayValue, lengthBytes: 2)
            for item in items {
                let v = writer.beginMessage(OTLPLogField.values)
                anyValue(item, into: &writer)
                writer.endMessage(v)
            }
            writer.endMessage(a)
        case .map(let entries):
            let list = writer.beginMessage(OTLPLogField.kvlistValue, lengthBytes: 2)
            for entry in entries {
                let kv = writer.beginMessage(OTLPLogField.values)
                writer.stringField(OTLPField.key, entry.key)
                let v = writer.beginMessage(OTLPField.value)
                anyValue(entry.value, into: &writer)
                writer.endMessage(v)
                writer.endMessage(kv)
            }
            writer.endMessage(list)
        }
    }
}

/// Encodes log records as an OTLP `ExportLogsServiceRequest` in the OTLP/JSON mapping (`http/json`):
/// lowerCamelCase keys, enums as integers, 64-bit integers as strings, bytes as base64.
public enum OTLPLogJSONEncoder {
    public static func encode(_ records: ArraySlice<LogRecord>, into out: inout [UInt8]) {
        let base = records.startIndex
        appendLiteral("{\"resourceLogs\":[", to: &out)
        for (r, group) in LogGroups(records).resources.enumerated() {
            if r > 0 { out.append(UInt8(ascii: ",")) }
            appendLiteral("{\"resource\":", to: &out)
            OTLPTraceJSONEncoder.resource(group.resource, into: &out)
            appendLiteral(",\"scopeLogs\":[", to: &out)
            for (s, scopeGroup) in group.scopes.enumerated() {
                if s > 0 { out.append(UInt8(ascii: ",")) }
                appendLiteral("{\"scope\":", to: &out)
                OTLPTraceJSONEncoder.scope(scopeGroup.scope, into: &out)
                appendLiteral(",\"logRecords\":[", to: &out)
                for (i, offset) in scopeGroup.records.enumerated() {
                    if i > 0 { out.append(UInt8(ascii: ",")) }
                    record(records[base + offset], into: &out)
                }
                appendLiteral("]}", to: &out)
            }
            appendLiteral("]}", to: &out)
        }
        appendLiteral("]}", to: &out)
    }

    public static func encode(_ records: [LogRecord], into out: inout [UInt8]) { encode(records[...], into: &out) }

    private static func record(_ record: LogRecord, into out: inout [UInt8]) {
        appendLiteral("{\"timeUnixNano\":\"", to: &out)
        appendDecimal(record.timeUnixNano, to: &out)
        appendLiteral("\",\"observedTimeUnixNano\":\"", to: &out)
        appendDecimal(record.observedTimeUnixNano, to: &out)
        appendLiteral("\",\"severityNumber\":", to: &out)
        appendDecimal(record.severity.rawValue, to: &out)
        if !record.severityText.isEmpty {
            OTLPTraceJSONEncoder.key("severityText", &out)
            appendJSONString(record.severityText, to: &out)
        }
        if let body = record.body {
            OTLPTraceJSONEncoder.key("body", &out)
            anyValue(body, into: &out)
        }
        OTLPTraceJSONEncoder.key("attributes", &out)
        OTLPTraceJSONEncoder.attributes(record.attributes, into: &out)
        out.append(UInt8(ascii: "}"))
    }

    private static func anyValue(_ value: LogValue, into out: inout [UInt8]) {
        switch value {
        case .string(let s): OTLPTraceJSONEncoder.anyValue(.string(s), into: &out)
        case .int(let n): OTLPTraceJSONEncoder.anyValue(.int(n), into: &out)
        case .double(let d): OTLPTraceJSONEncoder.anyValue(.double(d), into: &out)
        case .bool(let b): OTLPTraceJSONEncoder.anyValue(.bool(b), into: &out)
        case .bytes(let b):
            appendLiteral("{\"bytesValue\":\"", to: &out)
            out.append(contentsOf: Data(b).base64EncodedString().utf8)
            appendLiteral("\"}", to: &out)
        case .array(let items):
            appendLiteral("{\"arrayValue\":{\"values\":[", to: &out)
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                anyValue(item, into: &out)
            }
            appendLiteral("]}}", to: &out)
        case .map(let entries):
            appendLiteral("{\"kvlistValue\":{\"values\":[", to: &out)
            for (i, entry) in entries.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                appendLiteral("{\"key\":", to: &out)
                appendJSONString(entry.key, to: &out)
                appendLiteral(",\"value\":", to: &out)
                anyValue(entry.value, into: &out)
                out.append(UInt8(ascii: "}"))
            }
            appendLiteral("]}}", to: &out)
        }
    }
}
