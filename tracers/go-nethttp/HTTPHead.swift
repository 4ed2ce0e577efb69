import Telemetry

/// The request line and the headers this tracer uses, parsed from the bytes of an HTTP/1.x request head
/// as a read(2) returned them (RFC 9112 §3: `method SP request-target SP HTTP-version CRLF`, then fields).
struct HTTPRequestHead: Equatable {
    var method: String
    /// The request-target as sent (`/path?query`, or an absolute URI for proxies).
    var target: String
    /// `1.0` or `1.1`.
    var protocolVersion: String
    var host: String?
    var contentLength: Int64?
    var userAgent: String?
    var traceparent: String?
    var tracestate: String?

    /// Parses `bytes`; nil when they do not start with a request line. Headers cut off by the capture
    /// limit are simply absent.
    init?(_ bytes: UnsafeRawBufferPointer) {
        var lines = HTTPLines(bytes)
        guard let requestLine = lines.next() else { return nil }
        let parts = requestLine.split(separator: UInt8(ascii: " "), maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty, parts[2].starts(with: "HTTP/".utf8) else { return nil }
        method = String(decoding: parts[0], as: UTF8.self)
        target = String(decoding: parts[1], as: UTF8.self)
        protocolVersion = String(decoding: parts[2].dropFirst(5), as: UTF8.self)
        while let line = lines.next(), !line.isEmpty {
            guard let (name, value) = HTTPLines.field(line) else { continue }
            if HTTPLines.name(name, is: "host") {
                host = String(decoding: value, as: UTF8.self)
            } else if HTTPLines.name(name, is: "content-length") {
                contentLength = Int64(String(decoding: value, as: UTF8.self))
            } else if HTTPLines.name(name, is: "user-agent") {
                userAgent = String(decoding: value, as: UTF8.self)
            } else if HTTPLines.name(name, is: "traceparent") {
                traceparent = String(decoding: value, as: UTF8.self)
            } else if HTTPLines.name(name, is: "tracestate") {
                tracestate = String(decoding: value, as: UTF8.self)
            }
        }
    }
}

/// The status line and the framing headers of an HTTP/1.x response head, from the first bytes of the
/// write(2) that sent it.
struct HTTPResponseHead: Equatable {
    var statusCode: Int
    var contentLength: Int64?
    var chunked: Bool
    /// Bytes up to and including the blank line that ends the head; nil when the head is longer than
    /// what was captured.
    var headLength: Int?

    init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.starts(with: "HTTP/1.".utf8) else { return nil }
        var lines = HTTPLines(bytes)
        guard let statusLine = lines.next() else { return nil }
        let parts = statusLine.split(separator: UInt8(ascii: " "), maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, let code = Int(String(decoding: parts[1], as: UTF8.self)) else { return nil }
        statusCode = code
        chunked = false
        while let line = lines.next() {
            if line.isEmpty {
                headLength = lines.position
                break
            }
            guard let (name, value) = HTTPLines.field(line) else { continue }
            if HTTPLines.name(name, is: "content-length") {
                contentLength = Int64(String(decoding: value, as: UTF8.self))
            } else if HTTPLines.name(name, is: "transfer-encoding") {
                chunked = HTTPLines.name(value.suffix(7), is: "chunked")
            }
        }
    }
}

/// CRLF-terminated lines of a captured head; an unterminated last line (cut by the capture) is dropped.
struct HTTPLines: IteratorProtocol {
    let bytes: UnsafeRawBufferPointer
    /// Index after the last line returned.
    private(set) var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    mutating func next() -> Slice<UnsafeRawBufferPointer>? {
        var index = position
        while index + 1 < bytes.count {
            if bytes[index] == UInt8(ascii: "\r") && bytes[index + 1] == UInt8(ascii: "\n") {
                let line = bytes[position..<index]
                position = index + 2
                return line
            }
            index += 1
        }
        return nil
    }

    /// `name: value` with the value's surrounding whitespace trimmed.
    static func field(_ line: Slice<UnsafeRawBufferPointer>) -> (Slice<UnsafeRawBufferPointer>, Slice<UnsafeRawBufferPointer>)? {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        var value = line[(colon + 1)...]
        while let first = value.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { value = value.dropFirst() }
        while let last = value.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { value = value.dropLast() }
        return (line[..<colon], value)
    }

    /// Case-insensitive ASCII comparison with a lowercase `expected`.
    static func name(_ name: Slice<UnsafeRawBufferPointer>, is expected: StaticString) -> Bool {
        guard name.count == expected.utf8CodeUnitCount else { return false }
        let pointer = expected.utf8Start
        for (offset, byte) in name.enumerated() {
            let lower = byte >= 65 && byte <= 90 ? byte | 0x20 : byte
            if lower != pointer[offset] { return false }
        }
        return true
    }
}

/// W3C Trace Context `traceparent` (version 00): `00-{trace-id}-{parent-id}-{flags}`.
struct TraceParent: Equatable {
    var traceID: TraceID
    var parentSpanID: SpanID
    var flags: UInt8

    init?(_ header: String) {
        let parts = header.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[0].count == 2, parts[0] != "ff", UInt8(parts[0], radix: 16) != nil,
              let traceID = TraceID(hex: String(parts[1])), traceID.isValid,
              let spanID = SpanID(hex: String(parts[2])), spanID.isValid,
              parts[3].count == 2, let flags = UInt8(parts[3], radix: 16)
        else { return nil }
        if parts[0] == "00" && parts.count != 4 { return nil }
        self.traceID = traceID
        parentSpanID = spanID
        self.flags = flags
    }
}

/// Query handling shared by server and client spans.
enum URLQuery {
    /// Query keys whose values are replaced by `REDACTED` (OpenTelemetry HTTP semantic conventions'
    /// list, plus common credential names).
    static let sensitiveKeys: Set<String> = [
        "awsaccesskeyid", "signature", "sig", "x-goog-signature", "x-amz-signature", "x-amz-credential",
        "x-amz-security-token", "access_token", "refresh_token", "id_token", "token", "api_key", "apikey",
        "password", "passwd", "secret", "client_secret",
    ]

    /// `query` with the values of sensitive keys replaced by `REDACTED`.
    static func redacted(_ query: Substring) -> String {
        query.split(separator: "&", omittingEmptySubsequences: false).map { pair in
            guard let equals = pair.firstIndex(of: "="), sensitiveKeys.contains(pair[..<equals].lowercased()) else {
                return String(pair)
            }
            return pair[...equals] + "REDACTED"
        }.joined(separator: "&")
    }
}

/// `host[:port]` split, with IPv6 brackets removed (`[::1]:80` → `::1`, 80).
func splitHostPort(_ authority: Substring) -> (host: Substring, port: Int?) {
    if authority.first == "[", let close = authority.firstIndex(of: "]") {
        let host = authority[authority.index(after: authority.startIndex)..<close]
        let rest = authority[authority.index(after: close)...]
        return (host, rest.first == ":" ? Int(rest.dropFirst()) : nil)
    }
    if let colon = authority.lastIndex(of: ":"), authority.firstIndex(of: ":") == colon {
        return (authority[..<colon], Int(authority[authority.index(after: colon)...]))
    }
    return (authority, nil)
}
