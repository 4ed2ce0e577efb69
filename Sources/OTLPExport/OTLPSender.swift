import Foundation
import Logging

/// What became of one request body after retries.
enum SendResult: Equatable {
    /// 2xx. `rejected` items come from the response's `partial_success` (not retried, as the spec says).
    case delivered(rejected: Int, message: String)
    /// 413 Payload Too Large: the caller may split the batch.
    case tooLarge
    /// A non-retryable status, or retries ran out of time: the items are lost.
    case failed(reason: String)
}

/// Which partial-success field counts rejected items: `rejected_spans` / `rejected_data_points` /
/// `rejected_log_records` (all field 1 of `Export*PartialSuccess`; JSON names differ).
enum OTLPSignal: String {
    case traces
    case metrics
    case logs

    var jsonRejectedKey: String {
        switch self {
        case .traces: "rejectedSpans"
        case .metrics: "rejectedDataPoints"
        case .logs: "rejectedLogRecords"
        }
    }
}

/// Posts OTLP request bodies and retries exactly as the OTLP/HTTP spec says: only 429, 502, 503, 504 and
/// connection failures are retried, after `Retry-After` when the server sent one, otherwise after exponential
/// backoff with jitter; never after `maxElapsed` or past the caller's deadline.
final class OTLPSender {
    let transport: HTTPTransport
    let settings: ExportSettings
    let url: String
    let signal: OTLPSignal
    let stats: ExporterStats
    let logger: Logger
    /// The shutdown deadline, once shutdown began: it bounds every wait and request.
    let deadline: () -> ContinuousClock.Instant?
    /// Waits until the instant or until woken (shutdown started); the caller re-checks.
    let sleep: (ContinuousClock.Instant) -> Void

    init(
        transport: HTTPTransport, settings: ExportSettings, url: String, signal: OTLPSignal, stats: ExporterStats,
        logger: Logger, deadline: @escaping () -> ContinuousClock.Instant?,
        sleep: @escaping (ContinuousClock.Instant) -> Void
    ) {
        self.deadline = deadline
        self.transport = transport
        self.settings = settings
        self.url = url
        self.signal = signal
        self.stats = stats
        self.logger = logger
        self.sleep = sleep
    }

    /// The outage in progress: when the first retryable failure of it happened, how many attempts failed since.
    /// Logged once when it starts and once when the collector answers again. Worker thread only.
    private var outage: (start: ContinuousClock.Instant, failures: Int)?

    /// Retryable per OTLP/HTTP "Retryable Response Codes".
    static func isRetryable(status: Int) -> Bool { [429, 502, 503, 504].contains(status) }

    /// Sends `body`, retrying within the policy and the shutdown deadline.
    func send(_ body: UnsafeRawBufferPointer) -> SendResult {
        let clock = ContinuousClock()
        let start = clock.now
        var attempt = 0
        var finalAttempt = false
        while true {
            attempt += 1
            var timeout = settings.timeout
            if let deadline = deadline() {
                let left = deadline - clock.now
                if left <= .zero { return .failed(reason: "shutdown deadline passed before attempt \(attempt)") }
                timeout = min(timeout, left)
            }
            let t0 = clock.now
            let outcome = transport.post(
                url: url, body: body, contentType: settings.protocol_.contentType, timeout: timeout)
            stats.recordRequest(seconds: (clock.now - t0).seconds)
            if case .response(let status, _, _) = outcome, !Self.isRetryable(status: status) { endOutage(clock: clock) }
            var retryAfter: Duration? = nil
            let reason: String
            switch outcome {
            case .response(let status, let responseBody, _) where (200..<300).contains(status):
                let (rejected, message) = Self.partialSuccess(responseBody, signal: signal, protocol_: settings.protocol_)
                return .delivered(rejected: rejected, message: message)
            case .response(413, _, _):
                return .tooLarge
            case .response(let status, let responseBody, let after) where Self.isRetryable(status: status):
                retryAfter = after
                reason = "HTTP \(status) \(Self.snippet(responseBody))"
            case .response(let status, let responseBody, _):
                return .failed(reason: "HTTP \(status) (not retryable) \(Self.snippet(responseBody))")
            case .transportFailure(let message):
                reason = message
            }
            let delay = retryAfter ?? settings.retry.backoff(attempt: attempt)
            let resumeAt = clock.now + delay
            if resumeAt - start > settings.retry.maxElapsed {
                return .failed(reason: "\(reason); giving up after \(attempt) attempts (max elapsed \(settings.retry.maxElapsed))")
            }
            stats.retries.add(1, ordering: .relaxed)
            if outage == nil {
                outage = (clock.now, 0)
                logger.warning("OTLP \(signal.rawValue) export to \(url) failing (\(reason)): retrying with backoff for up to \(settings.retry.maxElapsed) per batch; the recovery will be logged")
            }
            outage?.failures += 1
            logger.debug("OTLP \(signal.rawValue) export to \(url) failed (\(reason)); retry \(attempt) in \(delay)")
            while clock.now < resumeAt {
                if let deadline = deadline(), resumeAt >= deadline {
                    // Shutdown began during the backoff: one last attempt now (the collector may be back),
                    // rather than giving up on an old error.
                    if finalAttempt { return .failed(reason: "\(reason); retry in \(delay) would pass the shutdown deadline") }
                    finalAttempt = true
                    break
                }
                sleep(resumeAt)
            }
        }
    }

    /// The collector answered (any status but a retryable one): log the end of an outage, once.
    private func endOutage(clock: ContinuousClock) {
        guard let ended = outage else { return }
        outage = nil
        let seconds = Int((clock.now - ended.start).seconds.rounded())
        logger.notice("OTLP \(signal.rawValue) export to \(url) recovered after \(ended.failures) failed attempt\(ended.failures == 1 ? "" : "s") over \(seconds) s")
    }

    static func snippet(_ body: [UInt8]) -> String {
        body.isEmpty ? "" : "'" + String(decoding: body.prefix(200), as: UTF8.self) + "'"
    }

    /// Reads `Export*ServiceResponse.partial_success` (field 1: `rejected_*` = 1, `error_message` = 2).
    static func partialSuccess(_ body: [UInt8], signal: OTLPSignal, protocol_: OTLPProtocol) -> (Int, String) {
        if body.isEmpty { return (0, "") }
        if protocol_ == .httpJSON {
            guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
                let partial = object["partialSuccess"] as? [String: Any]
            else { return (0, "") }
            let rejected: Int
            if let s = partial[signal.jsonRejectedKey] as? String { rejected = Int(s) ?? 0 }
            else { rejected = (partial[signal.jsonRejectedKey] as? NSNumber)?.intValue ?? 0 }
            return (rejected, partial["errorMessage"] as? String ?? "")
        }
        var reader = ProtobufReader(body[...])
        var rejected = 0
        var message = ""
        while let (field, wire) = reader.nextKey() {
            if field == 1, wire == 2, let inner = reader.lengthDelimited() {
                var r = ProtobufReader(inner)
                while let (f, w) = r.nextKey() {
                    if f == 1, w == 0, let v = r.varint() { rejected = Int(truncatingIfNeeded: v) }
                    else if f == 2, w == 2, let s = r.lengthDelimited() { message = String(decoding: s, as: UTF8.self) }
                    else if !r.skip(wire: w) { break }
                }
            } else if !reader.skip(wire: wire) {
                break
            }
        }
        return (rejected, message)
    }
}

/// A minimal protobuf reader for OTLP responses (which are tiny): keys, varints, length-delimited, skip.
struct ProtobufReader {
    var bytes: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }

    mutating func varint() -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while let b = bytes.popFirst() {
            value |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return value }
            shift += 7
            if shift > 63 { return nil }
        }
        return nil
    }

    mutating func nextKey() -> (UInt64, UInt64)? {
        guard !bytes.isEmpty, let key = varint() else { return nil }
        return (key >> 3, key & 7)
    }

    mutating func lengthDelimited() -> ArraySlice<UInt8>? {
        guard let n = varint(), n <= bytes.count else { return nil }
        let out = bytes.prefix(Int(n))
        bytes = bytes.dropFirst(Int(n))
        return out
    }

    mutating func skip(wire: UInt64) -> Bool {
        switch wire {
        case 0: return varint() != nil
        case 1: guard bytes.count >= 8 else { return false }; bytes = bytes.dropFirst(8); return true
        case 2: return lengthDelimited() != nil
        case 5: guard bytes.count >= 4 else { return false }; bytes = bytes.dropFirst(4); return true
        default: return false
        }
    }
}
