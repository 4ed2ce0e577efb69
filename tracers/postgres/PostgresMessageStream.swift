import TracerFramework

/// An incremental reader of one direction of a PostgreSQL connection (frontend/backend protocol 3.0,
/// postgresql.org "Message Formats"): messages may be split over reads, and a read may be only partly
/// captured (its first bytes, its length). A message is a type byte and a big-endian Int32 length that counts
/// itself; the frontend's first messages (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) have no
/// type byte. Bodies the parser needs are kept up to a bound (in place when one read holds them whole);
/// others are skipped by length, also where their bytes were not captured.
struct PostgresMessageStream {
    /// Longest message accepted: the server's own limit (`PQ_LARGE_MESSAGE_LIMIT`, 1 GiB - 1).
    static let maxMessageLength = (1 << 30) - 1
    /// Longest untyped startup-phase message (the server's `MAX_STARTUP_PACKET_LENGTH`).
    static let maxStartupLength = 10_000
    /// Body bytes kept of a message split over reads.
    static let keptCapacity = DatabaseQueryText.limit + 512

    /// One message that went by.
    struct Message {
        /// The type byte (0 for an untyped startup-phase message; the byte itself for a one-byte answer).
        var type: UInt8
        /// The body (after the length), or as much of it as was kept.
        var body: UnsafeRawBufferPointer
        /// `body` is the whole body.
        var whole: Bool
        /// An untyped startup-phase message (its body starts with the request code).
        var untyped: Bool
        /// The server's one-byte answer to SSLRequest/GSSENCRequest (`S`, `N`, `G`).
        var encryptionAnswer: Bool
        /// Where the message starts in this direction's byte stream (``ParserContext/position`` counting).
        var start: UInt64
        /// The length field (0 for a one-byte answer).
        var length: UInt32
    }

    /// The next message has no type byte (frontend, before the StartupMessage).
    var untyped: Bool
    /// The next byte is the server's one-byte answer to an encryption request.
    var awaitingEncryptionAnswer = false
    /// The input is not this protocol (or a length is absurd); the stream knows nothing more.
    private(set) var broken = false
    /// Whether bodies of this type are wanted.
    private let wanted: (UInt8) -> Bool

    /// The header read so far (type byte, then length, big-endian).
    private var headerCount = 0
    private var headerType: UInt8 = 0
    private var headerLength: UInt32 = 0
    private var messageStart: UInt64 = 0
    private var messageLength: UInt32 = 0
    /// The message whose body is being passed.
    private var inBody = false
    private var type: UInt8 = 0
    private var bodyLength = 0
    private var remaining = 0
    private var keeping = false
    private var kept: [UInt8] = []
    private var keptWhole = true

    init(untyped: Bool, wanted: @escaping (UInt8) -> Bool) {
        self.untyped = untyped
        self.wanted = wanted
        kept.reserveCapacity(Self.keptCapacity)
    }

    /// Reads one transfer: `data` its captured prefix, `length` its full size, `position` where it starts in the
    /// byte stream. Marks the stream broken when the bytes are not messages, or when the uncaptured bytes held
    /// more than the body being passed.
    mutating func feed(_ data: UnsafeRawBufferPointer, length: UInt64, position: UInt64, _ report: (Message) -> Void) {
        guard !broken else { return }
        var index = 0
        while index < data.count && !broken {
            if inBody {
                let take = min(remaining, data.count - index)
                if keeping {
                    if kept.isEmpty && take == remaining && take == bodyLength {
                        // The whole body is in this read: reported in place.
                        index += take
                        remaining = 0
                        inBody = false
                        report(Message(type: type, body: UnsafeRawBufferPointer(rebasing: data[(index - take)..<index]), whole: true,
                                       untyped: untypedMessage, encryptionAnswer: false, start: messageStart, length: messageLength))
                        afterMessage(first: UnsafeRawBufferPointer(rebasing: data[(index - take)..<index]))
                        continue
                    }
                    let room = Self.keptCapacity - kept.count
                    if room > 0 { kept.append(contentsOf: UnsafeRawBufferPointer(rebasing: data[index..<(index + min(room, take))])) }
                    if take > room { keptWhole = false }
                }
                index += take
                remaining -= take
                if remaining == 0 { finishBody(report) }
                continue
            }
            if awaitingEncryptionAnswer && headerCount == 0 {
                awaitingEncryptionAnswer = false
                let answer = data[index]
                index += 1
                report(Message(type: answer, body: UnsafeRawBufferPointer(start: nil, count: 0), whole: true, untyped: false,
                               encryptionAnswer: true, start: position + UInt64(index - 1), length: 0))
                continue
            }
            // A header byte.
            let byte = data[index]
            if headerCount == 0 { messageStart = position + UInt64(index) }
            index += 1
            if !untyped && headerCount == 0 {
                // Message types are ASCII letters and digits.
                guard (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7A) || (byte >= 0x31 && byte <= 0x39) else { return broken = true }
                headerType = byte
            } else {
                headerLength = headerLength << 8 | UInt32(byte)
            }
            headerCount += 1
            if headerCount == (untyped ? 4 : 5) { startBody(report) }
        }
        // What was not captured: only the rest of a body may hide there.
        let uncaptured = length > UInt64(data.count) ? length - UInt64(data.count) : 0
        guard uncaptured > 0, !broken else { return }
        if inBody && UInt64(remaining) >= uncaptured {
            remaining -= Int(uncaptured)
            keptWhole = false
            if remaining == 0 { finishBody(report) }
        } else {
            broken = true
        }
    }

    private var untypedMessage: Bool { type == 0 }

    private mutating func startBody(_ report: (Message) -> Void) {
        let length = Int(headerLength)
        messageLength = headerLength
        let limit = untyped ? Self.maxStartupLength : Self.maxMessageLength
        headerCount = 0
        headerLength = 0
        guard length >= (untyped ? 8 : 4), length <= limit else { return broken = true }
        type = untyped ? 0 : headerType
        bodyLength = length - 4
        remaining = bodyLength
        keeping = untyped || wanted(type)
        kept.removeAll(keepingCapacity: true)
        keptWhole = true
        inBody = true
        if remaining == 0 { finishBody(report) }
    }

    private mutating func finishBody(_ report: (Message) -> Void) {
        inBody = false
        let kept = self.kept
        kept.withUnsafeBytes { body in
            report(Message(type: type, body: keeping ? body : UnsafeRawBufferPointer(start: nil, count: 0), whole: keeping && keptWhole,
                           untyped: untypedMessage, encryptionAnswer: false, start: messageStart, length: messageLength))
            afterMessage(first: body)
        }
    }

    /// After an untyped message: an encryption request is followed by another untyped message; anything else
    /// (StartupMessage, CancelRequest) by typed ones.
    private mutating func afterMessage(first body: UnsafeRawBufferPointer) {
        guard untyped && type == 0 else { return }
        let code = body.count >= 4 ? Self.int32(body, at: 0) : 0
        if code != PostgresProtocol.sslRequestCode && code != PostgresProtocol.gssEncryptionRequestCode { untyped = false }
    }

    /// The big-endian Int32 at `offset`.
    static func int32(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
    }
}

/// Request codes of the untyped startup-phase messages (postgresql.org "Message Formats").
enum PostgresProtocol {
    /// StartupMessage, protocol 3.0.
    static let protocolVersion3: UInt32 = 196_608
    static let sslRequestCode: UInt32 = 80_877_103
    static let gssEncryptionRequestCode: UInt32 = 80_877_104
    static let cancelRequestCode: UInt32 = 80_877_102
}
