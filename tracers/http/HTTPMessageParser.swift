import Telemetry
import TracerFramework

#if canImport(Glibc)
import Glibc
#endif

/// The request line and the headers of interest of a captured HTTP/1.x request prefix.
public struct HTTPRequestHead: Sendable, Equatable {
    /// The method token as sent (`GET`, `PATCH`, or an extension method).
    public var method: String
    /// The request-target as sent, with sensitive query values redacted.
    public var target: String
    /// The path part of the target (origin form), or the target itself for `*` and authority forms.
    public var path: String
    /// The query without `?`, sensitive values redacted; nil when the target has none.
    public var query: String?
    /// `1.0` or `1.1`; nil when the capture ended inside the request line.
    public var version: String?
    /// The `traceparent` header, when present and valid. Besides it only the framing headers are read
    /// (`Content-Length`, `Transfer-Encoding: chunked`); no other header value is kept.
    public var traceContext: W3CTraceContext?
    /// `Content-Length`, when present and numeric.
    public var contentLength: Int?
    /// Whether the body is chunked (its length is unknown from the head).
    public var isChunked = false
    /// Length of the request line and headers including the blank line, when the capture holds all of them.
    public var headLength: Int?
}

/// The status line and the framing of a captured HTTP/1.x response prefix.
public struct HTTPResponseHead: Sendable, Equatable {
    public var version: String
    public var statusCode: Int
    /// `Content-Length`, when present and numeric. No other header value is kept.
    public var contentLength: Int?
    /// Whether the body is chunked (`Transfer-Encoding: chunked`).
    public var isChunked = false
    /// Length of the status line and headers including the blank line, when the capture holds all of them.
    public var headLength: Int?
}


/// Parses the bounded prefixes the BPF side captures. Everything is bounds-checked and linear in the
/// input: garbage yields nil, never a crash or a loop (fuzzed by Fuzz/HTTPFuzz).
public enum HTTPMessageParser {
    /// Longest method token accepted (`PROPPATCH` and friends fit).
    static let maxMethodLength = 24

    /// Parses a request prefix: `METHOD SP target SP HTTP/x.y CRLF` then headers. A request line cut off
    /// by the capture keeps what was captured of the target (version nil).
    ///
    /// `index` > 0 picks a later request of a pipelined capture: the ones before it are skipped by their
    /// head length and `Content-Length` (nil when one is chunked, cut off, or unparsable).
    public static func parseRequest(_ bytes: UnsafeRawBufferPointer, index: Int = 0) -> HTTPRequestHead? {
        var offset = 0
        for _ in 0..<max(index, 0) {
            guard let head = parseRequest(UnsafeRawBufferPointer(rebasing: bytes[offset...])), let headLength = head.headLength,
                  !head.isChunked else { return nil }
            let (next, overflow) = (offset + headLength).addingReportingOverflow(head.contentLength ?? 0)
            guard !overflow, next < bytes.count else { return nil }
            offset = next
        }
        return parseRequest(first: UnsafeRawBufferPointer(rebasing: bytes[offset...]))
    }

    private static func parseRequest(first bytes: UnsafeRawBufferPointer) -> HTTPRequestHead? {
        let count = bytes.count
        var index = 0
        while index < count, index <= maxMethodLength, isTokenCharacter(bytes[index]) { index += 1 }
        guard index > 0, index <= maxMethodLength, index < count, bytes[index] == UInt8(ascii: " ") else { return nil }
        let method = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[0..<index]), as: UTF8.self)
        index += 1
        let targetStart = index
        while index < count, isTargetCharacter(bytes[index]) { index += 1 }
        guard index > targetStart else { return nil }
        let rawTarget = UnsafeRawBufferPointer(rebasing: bytes[targetStart..<index])
        guard let first = rawTarget.first, first == UInt8(ascii: "/") || first == UInt8(ascii: "*") || isAlphaNumeric(first)
        else { return nil }

        guard index < count else { return head(method, rawTarget, version: nil, headers: Headers()) }
        // The target ended before the capture did: a version and a line end must follow.
        guard bytes[index] == UInt8(ascii: " ") else { return nil }
        index += 1
        guard let version = parseVersion(bytes, at: index) else {
            return count - index < 8 ? head(method, rawTarget, version: nil, headers: Headers()) : nil
        }
        index += 8
        guard let afterLine = skipLineEnd(bytes, at: index) else { return head(method, rawTarget, version: version, headers: Headers()) }
        return head(method, rawTarget, version: version, headers: headers(bytes, from: afterLine))
    }

    /// The header fields read: the framing and `traceparent`; no other value is kept.
    private struct Headers {
        var contentLength: Int?
        var isChunked = false
        var traceContext: W3CTraceContext?
        /// Index after the blank line that ends the head; nil when the capture ended first.
        var headLength: Int?

        mutating func read(headerLine line: UnsafeRawBufferPointer) {
            if let context = traceparent(inHeaderLine: line) {
                traceContext = context
            } else if let value = HTTPMessageParser.value(ofHeader: "content-length", in: line) {
                var length = 0
                for c in value {
                    guard isDigit(c), length < 1 << 40 else { return }
                    length = length * 10 + Int(c - UInt8(ascii: "0"))
                }
                if !value.isEmpty { contentLength = length }
            } else if let value = HTTPMessageParser.value(ofHeader: "transfer-encoding", in: line) {
                isChunked = String(decoding: value, as: UTF8.self).lowercased().contains("chunked")
            }
        }
    }

    /// Reads `name ":" value` lines from `start` up to the blank line (CRLF or bare LF line ends); a line
    /// cut off by the capture is ignored.
    private static func headers(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Headers {
        var headers = Headers()
        var index = start
        while index < bytes.count {
            if let end = skipLineEnd(bytes, at: index) {
                headers.headLength = end
                break
            }
            guard let lineEnd = findLineEnd(bytes, from: index) else { break }
            headers.read(headerLine: UnsafeRawBufferPointer(rebasing: bytes[index..<lineEnd]))
            index = skipLineEnd(bytes, at: lineEnd) ?? bytes.count
        }
        return headers
    }

    /// The trimmed value of header line `line` when its name is `name` (lowercase; matched case-insensitively).
    private static func value(ofHeader name: StaticString, in line: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        let nameLength = name.utf8CodeUnitCount
        guard line.count > nameLength, line[nameLength] == UInt8(ascii: ":") else { return nil }
        let matches = name.withUTF8Buffer { expected in
            (0..<nameLength).allSatisfy { lowercased(line[$0]) == expected[$0] }
        }
        guard matches else { return nil }
        var start = nameLength + 1
        while start < line.count, line[start] == UInt8(ascii: " ") || line[start] == UInt8(ascii: "\t") { start += 1 }
        var end = line.count
        while end > start, line[end - 1] == UInt8(ascii: " ") || line[end - 1] == UInt8(ascii: "\t") { end -= 1 }
        return UnsafeRawBufferPointer(rebasing: line[start..<end])
    }

    /// Parses `HTTP/x.y SP 3DIGIT`, then the framing headers when the capture holds the whole status line.
    public static func parseResponse(_ bytes: UnsafeRawBufferPointer) -> HTTPResponseHead? {
        guard let version = parseVersion(bytes, at: 0), bytes.count >= 12, bytes[8] == UInt8(ascii: " ") else { return nil }
        var status = 0
        for offset in 9..<12 {
            let digit = bytes[offset]
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { return nil }
            status = status * 10 + Int(digit - UInt8(ascii: "0"))
        }
        guard status >= 100, bytes.count == 12 || bytes[12] == UInt8(ascii: " ") || bytes[12] == UInt8(ascii: "\r") else { return nil }
        var headers = Headers()
        if let lineEnd = findLineEnd(bytes, from: 12), let afterLine = skipLineEnd(bytes, at: lineEnd) {
            headers = self.headers(bytes, from: afterLine)
        }
        return HTTPResponseHead(version: version, statusCode: status, contentLength: headers.contentLength,
                                isChunked: headers.isChunked, headLength: headers.headLength)
    }

    private static func head(_ method: String, _ rawTarget: UnsafeRawBufferPointer, version: String?, headers: Headers) -> HTTPRequestHead {
        // Bytes, not Characters: the target is ASCII (isTargetCharacter), and this runs once per request.
        let question = rawTarget.firstIndex(of: UInt8(ascii: "?"))
        var query: String?
        if let question {
            let rest = UnsafeRawBufferPointer(rebasing: rawTarget[(question + 1)...])
            query = HTTPSpans.redactQuery(Substring(String(decoding: rest, as: UTF8.self)))
        }
        var pathEnd = question ?? rawTarget.count
        pathEnd = rawTarget[..<pathEnd].firstIndex(of: UInt8(ascii: "#")) ?? pathEnd
        var path = String(decoding: UnsafeRawBufferPointer(rebasing: rawTarget[..<pathEnd]), as: UTF8.self)
        // Absolute form (a proxy request): keep only the path.
        let scheme = startsWith(rawTarget, "http://") ? 7 : startsWith(rawTarget, "https://") ? 8 : 0
        if scheme > 0, scheme <= pathEnd {
            let slash = rawTarget[scheme..<pathEnd].firstIndex(of: UInt8(ascii: "/"))
            path = slash.map { String(decoding: UnsafeRawBufferPointer(rebasing: rawTarget[$0..<pathEnd]), as: UTF8.self) } ?? "/"
        }
        let redactedTarget = query.map { path + "?" + $0 } ?? path
        return HTTPRequestHead(method: method, target: redactedTarget, path: path, query: query,
                               version: version, traceContext: headers.traceContext, contentLength: headers.contentLength,
                               isChunked: headers.isChunked, headLength: headers.headLength)
    }

    /// Whether `bytes` begins with `prefix` (ASCII, compared exactly).
    private static func startsWith(_ bytes: UnsafeRawBufferPointer, _ prefix: StaticString) -> Bool {
        let length = prefix.utf8CodeUnitCount
        guard bytes.count >= length else { return false }
        return prefix.withUTF8Buffer { expected in (0..<length).allSatisfy { bytes[$0] == expected[$0] } }
    }

    /// `HTTP/d.d` at `offset` → `d.d`.
    private static func parseVersion(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> String? {
        guard offset >= 0, bytes.count - offset >= 8,
              startsWith(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + 5)]), "HTTP/") else { return nil }
        let major = bytes[offset + 5], dot = bytes[offset + 6], minor = bytes[offset + 7]
        guard isDigit(major), dot == UInt8(ascii: "."), isDigit(minor) else { return nil }
        switch (major, minor) {
        case (UInt8(ascii: "1"), UInt8(ascii: "1")): return "1.1"
        case (UInt8(ascii: "1"), UInt8(ascii: "0")): return "1.0"
        default: return String(UnicodeScalar(major)) + "." + String(UnicodeScalar(minor))
        }
    }

    /// The index after a CRLF or bare LF at `offset`, nil when none starts there.
    private static func skipLineEnd(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Int? {
        guard offset < bytes.count else { return nil }
        if bytes[offset] == UInt8(ascii: "\n") { return offset + 1 }
        if bytes[offset] == UInt8(ascii: "\r"), offset + 1 < bytes.count, bytes[offset + 1] == UInt8(ascii: "\n") { return offset + 2 }
        return nil
    }

    /// Index of the next CR or LF from `offset` (memchr: headers are scanned for every request and response).
    private static func findLineEnd(_ bytes: UnsafeRawBufferPointer, from offset: Int) -> Int? {
        guard let base = bytes.baseAddress, offset < bytes.count else { return nil }
        let start = base + offset
        let lineFeed = memchr(start, Int32(UInt8(ascii: "\n")), bytes.count - offset).map { UnsafeRawPointer($0) - base }
        let searched = (lineFeed ?? bytes.count) - offset
        let carriageReturn = memchr(start, Int32(UInt8(ascii: "\r")), searched).map { UnsafeRawPointer($0) - base }
        return carriageReturn ?? lineFeed
    }

    /// The trace context of a `traceparent: 00-<32 hex>-<16 hex>-<2 hex>` header line.
    private static func traceparent(inHeaderLine line: UnsafeRawBufferPointer) -> W3CTraceContext? {
        value(ofHeader: "traceparent", in: line).flatMap { W3CTraceContext(traceparent: $0) }
    }

    private static func lowercased(_ c: UInt8) -> UInt8 {
        c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") ? c | 0x20 : c
    }

    private static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }

    private static func isAlphaNumeric(_ c: UInt8) -> Bool {
        isDigit(c) || (c | 0x20 >= UInt8(ascii: "a") && c | 0x20 <= UInt8(ascii: "z"))
    }

    /// RFC 9110 `tchar`, restricted to what methods use in practice (letters, digits, `-`, `_`).
    private static func isTokenCharacter(_ c: UInt8) -> Bool {
        isAlphaNumeric(c) || c == UInt8(ascii: "-") || c == UInt8(ascii: "_")
    }

    /// Visible ASCII (a request-target has no spaces or controls).
    private static func isTargetCharacter(_ c: UInt8) -> Bool { c > 0x20 && c < 0x7F }
}
