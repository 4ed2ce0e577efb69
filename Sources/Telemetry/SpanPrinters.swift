#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Writes whole lines to a file descriptor (standard output by default), retrying short writes and `EINTR`.
public struct LineOutput: Sendable {
    private let writeLine: @Sendable ([UInt8]) -> Void

    /// Lines go to `fd` with `write(2)`.
    public static func fileDescriptor(_ fd: Int32) -> LineOutput {
        LineOutput { bytes in
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                    if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { return }
                }
            }
        }
    }

    /// Standard output, which carries only spans (logs go to stderr).
    public static let standardOutput = fileDescriptor(1)

    /// Lines handed to a closure (tests, in-memory capture). Each call receives one line without its newline.
    public static func closure(_ body: @escaping @Sendable (String) -> Void) -> LineOutput {
        LineOutput { bytes in body(String(decoding: bytes.dropLast(), as: UTF8.self)) }
    }

    private init(_ writeLine: @escaping @Sendable ([UInt8]) -> Void) { self.writeLine = writeLine }

    /// `line` must end with a newline.
    func emit(_ line: [UInt8]) { writeLine(line) }
}

/// Prints one JSON object per span per line (`--print json`): keys `name`, `kind`, `traceId`, `spanId`,
/// `parentSpanId` (empty for roots), `startTimeUnixNano`, `endTimeUnixNano`, `status`
/// (`unset`/`ok`/`error`), `statusMessage` (errors only), `attributes` and `resource` (objects).
/// Ids use the OTLP JSON hex spelling; times are integer JSON numbers.
public final class JSONLinesSpanPrinter: SpanSink {
    private let output: LineOutput
    private let state = Mutex<(buffer: [UInt8], closed: Bool)>(([], false))

    public init(output: LineOutput = .standardOutput) { self.output = output }

    /// One span as a JSON object followed by a newline.
    public static func format(_ span: Span, into out: inout [UInt8]) {
        appendLiteral("{\"name\":", to: &out)
        appendJSONString(span.name, to: &out)
        appendLiteral(",\"kind\":\"", to: &out)
        out.append(contentsOf: span.kind.description.utf8)
        appendLiteral("\",\"traceId\":\"", to: &out)
        span.traceID.appendHex(to: &out)
        appendLiteral("\",\"spanId\":\"", to: &out)
        span.spanID.appendHex(to: &out)
        appendLiteral("\",\"parentSpanId\":\"", to: &out)
        if span.parentSpanID.isValid { span.parentSpanID.appendHex(to: &out) }
        appendLiteral("\",\"startTimeUnixNano\":", to: &out)
        appendDecimal(span.startTimeUnixNano, to: &out)
        appendLiteral(",\"endTimeUnixNano\":", to: &out)
        appendDecimal(span.endTimeUnixNano, to: &out)
        appendLiteral(",\"status\":\"", to: &out)
        out.append(contentsOf: span.status.description.utf8)
        out.append(UInt8(ascii: "\""))
        if case .error(let message) = span.status, !message.isEmpty {
            appendLiteral(",\"statusMessage\":", to: &out)
            appendJSONString(message, to: &out)
        }
        appendLiteral(",\"attributes\":", to: &out)
        appendObject(span.attributes, to: &out)
        appendLiteral(",\"resource\":", to: &out)
        appendObject(span.resource.attributes, to: &out)
        appendLiteral("}\n", to: &out)
    }

    static func appendObject(_ attributes: Attributes, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        for (i, a) in attributes.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            appendJSONString(a.key, to: &out)
            out.append(UInt8(ascii: ":"))
            appendValue(a.value, to: &out)
        }
        out.append(UInt8(ascii: "}"))
    }

    static func appendValue(_ value: AttributeValue, to out: inout [UInt8]) {
        func list<T>(_ items: [T], _ each: (T, inout [UInt8]) -> Void) {
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                each(item, &out)
            }
            out.append(UInt8(ascii: "]"))
        }
        switch value {
        case .string(let v): appendJSONString(v, to: &out)
        case .int(let v): appendDecimal(v, to: &out)
        case .double(let v): appendJSONDouble(v, to: &out)
        case .bool(let v): v ? appendLiteral("true", to: &out) : appendLiteral("false", to: &out)
        case .stringArray(let v): list(v) { appendJSONString($0, to: &$1) }
        case .intArray(let v): list(v) { appendDecimal($0, to: &$1) }
        case .doubleArray(let v): list(v) { appendJSONDouble($0, to: &$1) }
        case .boolArray(let v): list(v) { $0 ? appendLiteral("true", to: &$1) : appendLiteral("false", to: &$1) }
        }
    }

    public func consume(_ spans: [Span]) {
        state.withLock { state in
            guard !state.closed else { return }
            for span in spans {
                state.buffer.removeAll(keepingCapacity: true)
                Self.format(span, into: &state.buffer)
                output.emit(state.buffer)
            }
        }
    }

    /// Lines are written as spans arrive; nothing is buffered.
    public func flush(timeout: Duration) -> Bool { true }

    public func shutdown(timeout: Duration) { state.withLock { $0.closed = true } }
}

/// Prints one human-readable line per span (`--print text`), e.g.
/// `server GET /users/{id} 12.345ms ok trace=… span=… parent=- http.request.method=GET … [service.name=shop]`.
public final class TextSpanPrinter: SpanSink {
    private let output: LineOutput
    private let closed = Mutex(false)

    public init(output: LineOutput = .standardOutput) { self.output = output }

    /// One span as a text line (with trailing newline).
    public static func format(_ span: Span) -> String {
        let millis = span.durationSeconds * 1000
        let whole = Int(millis)
        let frac = Int((millis - Double(whole)) * 1000)
        let fracText = String(frac)
        var line = "\(span.kind) \(span.name) \(whole).\(String(repeating: "0", count: 3 - fracText.count))\(fracText)ms"
        line += " \(span.status)"
        if case .error(let message) = span.status, !message.isEmpty { line += "(\(message))" }
        line += " trace=\(span.traceID.hex) span=\(span.spanID.hex)"
        line += " parent=\(span.parentSpanID.isValid ? span.parentSpanID.hex : "-")"
        for a in span.attributes { line += " \(a.key)=\(a.value)" }
        let identity = [SemanticConventions.serviceName, SemanticConventions.processPID].compactMap { key in
            span.resource.attributes[key].map { "\(key)=\($0)" }
        }
        if !identity.isEmpty { line += " [" + identity.joined(separator: " ") + "]" }
        return line + "\n"
    }

    public func consume(_ spans: [Span]) {
        closed.withLock { closed in
            guard !closed else { return }
            for span in spans { output.emit(Array(Self.format(span).utf8)) }
        }
    }

    public func flush(timeout: Duration) -> Bool { true }

    public func shutdown(timeout: Duration) { closed.withLock { $0 = true } }
}
