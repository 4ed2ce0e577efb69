internal import CCurl
internal import CZlib
import Foundation

/// The outcome of one OTLP/HTTP request.
public enum HTTPOutcome: Sendable, Equatable {
    /// The server answered with `status`; `retryAfter` is the parsed `Retry-After` header, if any.
    case response(status: Int, body: [UInt8], retryAfter: Duration?)
    /// No HTTP response: connection refused, DNS, TLS, timeout… (`message` from libcurl).
    case transportFailure(message: String)
}

/// Sends one POST request. The exporter's retry logic sits above this, so a fake transport tests it.
public protocol HTTPTransport: AnyObject {
    func post(url: String, body: UnsafeRawBufferPointer, contentType: String, timeout: Duration) -> HTTPOutcome
}

/// libcurl easy-handle transport. One handle per exporter thread keeps the connection alive between batches.
/// Not thread-safe: each thread owns its transport.
public final class CurlTransport: HTTPTransport {
    private let handle: UnsafeMutableRawPointer
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private let settings: ExportSettings
    private let gzip: Bool
    private var compressed: [UInt8] = []
    private let sink: ResponseSink

    /// Collects at most `limit` response bytes and the `Retry-After` header.
    final class ResponseSink {
        var body: [UInt8] = []
        var limit: Int
        var retryAfter: String?
        init(limit: Int) { self.limit = limit }
    }

    nonisolated(unsafe) private static var globalInitDone = false
    private static let globalInitLock = NSLock()

    public init(settings: ExportSettings) {
        Self.globalInitLock.withLock {
            if !Self.globalInitDone {
                curl_global_init(Int(CURL_GLOBAL_ALL))
                Self.globalInitDone = true
            }
        }
        handle = curl_easy_init()
        self.settings = settings
        gzip = settings.compression == .gzip
        sink = ResponseSink(limit: settings.maxResponseBytes)
        var list: UnsafeMutablePointer<curl_slist>? = nil
        var headers = settings.headers.map { "\($0.0): \($0.1)" }
        if gzip { headers.append("Content-Encoding: gzip") }
        headers.append("Expect:")  // no 100-continue round trip
        headers.append("User-Agent: tracer-otlp-exporter/0.1")
        for h in headers { list = curl_slist_append(list, h) }
        headerList = list
    }

    deinit {
        curl_easy_cleanup(handle)
        curl_slist_free_all(headerList)
    }

    public func post(url: String, body: UnsafeRawBufferPointer, contentType: String, timeout: Duration) -> HTTPOutcome {
        guard gzip else { return perform(url: url, payload: body, contentType: contentType, timeout: timeout) }
        Self.gzipCompress(body, into: &compressed)
        return compressed.withUnsafeBytes { perform(url: url, payload: $0, contentType: contentType, timeout: timeout) }
    }

    private func perform(url: String, payload: UnsafeRawBufferPointer, contentType: String, timeout: Duration)
        -> HTTPOutcome
    {
        sink.body.removeAll(keepingCapacity: true)
        sink.retryAfter = nil
        var list = curl_slist_append(nil, "Content-Type: \(contentType)")
        var node = headerList
        while let n = node {
            list = curl_slist_append(list, n.pointee.data)
            node = n.pointee.next
        }
        defer { curl_slist_free_all(list) }
        let h = handle
        tracer_curl_setopt_ptr(h, CURLOPT_URL, url)
        tracer_curl_setopt_long(h, CURLOPT_POST, 1)
        tracer_curl_setopt_ptr(h, CURLOPT_POSTFIELDS, payload.baseAddress)
        tracer_curl_setopt_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(payload.count))
        tracer_curl_setopt_ptr(h, CURLOPT_HTTPHEADER, list)
        tracer_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, max(1, Int(timeout.seconds * 1000)))
        tracer_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, max(1, Int(timeout.seconds * 1000)))
        tracer_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        tracer_curl_setopt_long(h, CURLOPT_FOLLOWLOCATION, 0)
        if let ca = settings.certificatePath { tracer_curl_setopt_ptr(h, CURLOPT_CAINFO, ca) }
        if let cert = settings.clientCertificatePath { tracer_curl_setopt_ptr(h, CURLOPT_SSLCERT, cert) }
        if let key = settings.clientKeyPath { tracer_curl_setopt_ptr(h, CURLOPT_SSLKEY, key) }
        let context = Unmanaged.passUnretained(sink).toOpaque()
        tracer_curl_setopt_callback(h, CURLOPT_WRITEFUNCTION) { data, size, count, user in
            let sink = Unmanaged<CurlTransport.ResponseSink>.fromOpaque(user!).takeUnretainedValue()
            let n = size * count
            let room = max(0, sink.limit - sink.body.count)
            if let data, room > 0 {
                data.withMemoryRebound(to: UInt8.self, capacity: n) {
                    sink.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: min(n, room)))
                }
            }
            return n  // the rest is discarded, not buffered
        }
        tracer_curl_setopt_ptr(h, CURLOPT_WRITEDATA, context)
        tracer_curl_setopt_callback(h, CURLOPT_HEADERFUNCTION) { data, size, count, user in
            let sink = Unmanaged<CurlTransport.ResponseSink>.fromOpaque(user!).takeUnretainedValue()
            let n = size * count
            if let data {
                let line = data.withMemoryRebound(to: UInt8.self, capacity: n) {
                    String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self)
                }
                if line.lowercased().hasPrefix("retry-after:") {
                    sink.retryAfter = String(line.dropFirst("retry-after:".count)).trimmingWhitespace
                }
            }
            return n
        }
        tracer_curl_setopt_ptr(h, CURLOPT_HEADERDATA, context)
        let result = curl_easy_perform(h)
        var status = 0
        tracer_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)
        if result != CURLE_OK || status == 0 {
            return .transportFailure(message: String(cString: curl_easy_strerror(result)))
        }
        return .response(status: status, body: sink.body, retryAfter: sink.retryAfter.flatMap { parseRetryAfter($0) })
    }

    /// gzip (RFC 1952) with zlib's deflate at level 1 (`Z_BEST_SPEED`: OTLP batches are repetitive, so the
    /// fastest level already shrinks them several-fold), since libcurl only decompresses responses.
    static func gzipCompress(_ input: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        out.removeAll(keepingCapacity: true)
        var stream = z_stream()
        guard tracer_deflate_init_gzip(&stream, Z_BEST_SPEED) == Z_OK else { return }
        defer { deflateEnd(&stream) }
        let bound = Int(deflateBound(&stream, uLong(input.count)))
        out.append(contentsOf: repeatElement(0, count: bound))
        let written: Int = out.withUnsafeMutableBytes { outBuf in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(input.count)
            stream.next_out = outBuf.baseAddress!.assumingMemoryBound(to: Bytef.self)
            stream.avail_out = uInt(bound)
            let rc = deflate(&stream, Z_FINISH)
            return rc == Z_STREAM_END ? Int(stream.total_out) : -1
        }
        out.removeLast(out.count - max(written, 0))
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3). Past dates mean "now".
public func parseRetryAfter(_ value: String, now: Date = Date()) -> Duration? {
    let v = value.trimmingWhitespace
    if let seconds = Int(v), seconds >= 0 { return .seconds(seconds) }
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "GMT")
    for format in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEEE, dd-MMM-yy HH:mm:ss zzz", "EEE MMM d HH:mm:ss yyyy"] {
        formatter.dateFormat = format
        if let date = formatter.date(from: v) {
            return .milliseconds(Int64(max(0, date.timeIntervalSince(now)) * 1000))
        }
    }
    return nil
}
