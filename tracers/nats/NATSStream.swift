import TracerFramework

/// An incremental reader of one direction of a NATS connection (the NATS client protocol): control lines ended
/// by `\r\n` (a bare `\n` is accepted, as nats-server does), the message ones (`PUB`, `HPUB`, `MSG`, `HMSG`)
/// followed by a payload of the length their line gives and its own `\r\n`. Lines and payloads may be split over
/// reads, and a read may be only partly captured (its first bytes, its length): a payload is skipped by its
/// length, also where its bytes were not captured; a line is kept up to a bound; the first bytes of a payload's
/// header block are kept for `traceparent`.
struct NATSStream {
    /// Line bytes kept: nats-server's default `max_control_line` (4 KiB).
    static let keptCapacity = 4096
    /// Longest line accepted (an `INFO` of a large cluster lists many URLs).
    static let maxLineLength = 65536
    /// Header bytes kept of a message (its `traceparent` is searched there).
    static let keptHeaderCapacity = 1024

    /// One control line that went by.
    typealias Line = LineReader.Line

    /// What went by: a line, or the end of the payload the previous line announced (with the first bytes of its
    /// header block; `headersWhole`: all of them).
    enum Item {
        case line(Line)
        case payloadEnd(headers: UnsafeRawBufferPointer, headersWhole: Bool)
    }

    /// What follows a line: another line, a payload (`headers` bytes of header block within `total` bytes), or
    /// nothing more (the parser refuses the stream).
    enum Next: Equatable {
        case line
        case payload(headers: Int, total: Int)
        case refuse
    }

    /// The input stopped being this protocol, or its uncaptured part held more than a payload.
    private(set) var broken = false

    private var lines = LineReader(keptCapacity: Self.keptCapacity, maxLength: Self.maxLineLength)
    /// Bytes of a payload still to pass, its `\r\n` included; 0: none.
    private var payloadRemaining = 0
    /// Header bytes of the payload not yet passed.
    private var headersRemaining = 0
    private var headers: [UInt8] = []
    private var headersWhole = true

    mutating func reset() {
        self = NATSStream()
    }

    /// Reads one transfer: `data` its captured prefix, `length` its full size, `position` where it starts in the
    /// byte stream. `report` sees each line (and says what follows it) and each payload's end.
    mutating func feed(_ data: UnsafeRawBufferPointer, length: UInt64, position: UInt64, _ report: (Item) -> Next) {
        guard !broken else { return }
        var index = 0
        while index < data.count && !broken {
            if payloadRemaining > 0 {
                // The payload, skipped whole (its header block's first bytes kept), then its `\r\n`, checked.
                let body = min(max(payloadRemaining - 2, 0), data.count - index)
                if headersRemaining > 0 {
                    let header = min(headersRemaining, body)
                    keepHeaders(UnsafeRawBufferPointer(rebasing: data[index..<(index + header)]))
                    headersRemaining -= header
                }
                index += body
                payloadRemaining -= body
                while payloadRemaining > 0 && index < data.count {
                    guard data[index] == (payloadRemaining == 2 ? 0x0D : 0x0A) else { return broken = true }
                    index += 1
                    payloadRemaining -= 1
                }
                if payloadRemaining == 0 { endPayload(report) }
                continue
            }
            switch lines.read(data, at: &index, position: position, { report(.line($0)) }) {
            case .partial, .line(.line): continue
            case .line(.payload(let headerCount, let total)):
                guard headerCount >= 0, total >= headerCount, total <= NATSLine.maxPayload else { return broken = true }
                payloadRemaining = total + 2
                headersRemaining = headerCount
            case .tooLong, .line(.refuse): return broken = true
            }
        }
        // What was not captured: only the rest of a payload may hide there.
        let uncaptured = length > UInt64(data.count) ? length - UInt64(data.count) : 0
        guard uncaptured > 0, !broken else { return }
        guard UInt64(payloadRemaining) >= uncaptured else { return broken = true }
        if headersRemaining > 0 {
            headersWhole = false
            headersRemaining = max(0, headersRemaining - Int(uncaptured))
        }
        payloadRemaining -= Int(uncaptured)
        if payloadRemaining == 0 { endPayload(report) }
    }

    private mutating func endPayload(_ report: (Item) -> Next) {
        let whole = headersWhole && headersRemaining == 0
        _ = headers.withUnsafeBytes { report(.payloadEnd(headers: $0, headersWhole: whole)) }
        headers.removeAll(keepingCapacity: true)
        headersWhole = true
        headersRemaining = 0
    }

    private mutating func keepHeaders(_ piece: UnsafeRawBufferPointer) {
        let room = Self.keptHeaderCapacity - headers.count
        if room > 0 { headers.append(contentsOf: piece.prefix(room)) }
        if piece.count > room { headersWhole = false }
    }
}
