import TracerFramework

/// An incremental reader of one direction of a MySQL/MariaDB connection (the client/server protocol's packets,
/// dev.mysql.com "MySQL Packets", mariadb.com "0 - Packet"): a 3-byte little-endian payload length, a
/// sequence number, the payload. A payload of 0xFFFFFF bytes continues in the next packet. Packets may be
/// split over reads, and a read may be only partly captured (its first bytes, its length): payloads the parser
/// needs are kept up to a bound (in place when one read holds them whole), the rest is skipped by length.
struct MySQLPacketStream {
    /// The largest payload of one packet; a packet this long is continued by the next one.
    static let maxPacketPayload = 0xFF_FFFF
    /// Payload bytes kept of a packet split over reads (a query's text is kept up to the query-text limit).
    static let keptCapacity = DatabaseQueryText.limit + 512

    /// One packet that went by.
    struct Packet {
        var sequence: UInt8
        /// The payload, or as much of it as was kept or captured.
        var payload: UnsafeRawBufferPointer
        /// `payload` is the whole payload.
        var whole: Bool
        /// The payload's full length.
        var length: Int
        /// This packet continues the payload of the one before (which was 0xFFFFFF bytes long).
        var continuation: Bool
        /// Where the packet starts in this direction's byte stream (``ParserContext/position`` counting).
        var start: UInt64
    }

    /// A packet's header: what the parser checks before its payload comes.
    struct Header {
        var sequence: UInt8
        var length: Int
        /// The packet continues the payload of the one before.
        var continuation: Bool
    }

    /// The uncaptured bytes of a read held more than the rest of the packet being passed (a packet header
    /// went by unseen): the stream knows no more boundaries until ``reset()``.
    private(set) var lost = false
    /// The parser refused a header: nothing more is read.
    private(set) var refused = false

    private var header: (count: Int, length: Int, sequence: UInt8) = (0, 0, 0)
    private var packetStart: UInt64 = 0
    private var inPayload = false
    private var sequence: UInt8 = 0
    private var payloadLength = 0
    private var remaining = 0
    private var continuing = false
    private var nextContinues = false
    private var kept: [UInt8] = []
    private var keptWhole = true

    init() {
        kept.reserveCapacity(256)
    }

    /// Forgets everything: the next byte starts a packet.
    mutating func reset() {
        self = MySQLPacketStream()
    }

    /// Reads one transfer: `data` its captured prefix, `length` its full size, `position` where it starts in the
    /// byte stream. `accept` sees each header as soon as it is read (false: the stream is refused). Marks the
    /// stream lost when the uncaptured bytes held more than the payload being passed.
    mutating func feed(_ data: UnsafeRawBufferPointer, length: UInt64, position: UInt64, accept: (Header) -> Bool,
                       _ report: (Packet) -> Void) {
        guard !lost, !refused else { return }
        var index = 0
        while index < data.count && !refused {
            if inPayload {
                let take = min(remaining, data.count - index)
                if kept.isEmpty && take == remaining && take == payloadLength {
                    // The whole payload is in this read: reported in place.
                    index += take
                    remaining = 0
                    inPayload = false
                    report(packet(UnsafeRawBufferPointer(rebasing: data[(index - take)..<index]), whole: true))
                    continue
                }
                let room = Self.keptCapacity - kept.count
                if room > 0 { kept.append(contentsOf: UnsafeRawBufferPointer(rebasing: data[index..<(index + min(room, take))])) }
                if take > room { keptWhole = false }
                index += take
                remaining -= take
                if remaining == 0 { finishPayload(report) }
                continue
            }
            let byte = data[index]
            if header.count == 0 { packetStart = position + UInt64(index) }
            index += 1
            if header.count < 3 {
                header.length |= Int(byte) << (8 * header.count)
            } else {
                header.sequence = byte
            }
            header.count += 1
            if header.count == 4 { startPayload(accept, report) }
        }
        // What was not captured: only the rest of a payload may hide there.
        let uncaptured = length > UInt64(data.count) ? length - UInt64(data.count) : 0
        guard uncaptured > 0, !refused else { return }
        if inPayload && UInt64(remaining) >= uncaptured {
            remaining -= Int(uncaptured)
            keptWhole = false
            if remaining == 0 { finishPayload(report) }
        } else {
            lost = true
        }
    }

    private mutating func startPayload(_ accept: (Header) -> Bool, _ report: (Packet) -> Void) {
        payloadLength = header.length
        sequence = header.sequence
        header = (0, 0, 0)
        guard accept(Header(sequence: sequence, length: payloadLength, continuation: nextContinues)) else { return refused = true }
        continuing = nextContinues
        nextContinues = payloadLength == Self.maxPacketPayload
        remaining = payloadLength
        kept.removeAll(keepingCapacity: true)
        keptWhole = true
        inPayload = true
        if remaining == 0 { finishPayload(report) }
    }

    private mutating func finishPayload(_ report: (Packet) -> Void) {
        inPayload = false
        let kept = self.kept
        kept.withUnsafeBytes { payload in report(packet(payload, whole: keptWhole)) }
    }

    private func packet(_ payload: UnsafeRawBufferPointer, whole: Bool) -> Packet {
        Packet(sequence: sequence, payload: payload, whole: whole, length: payloadLength, continuation: continuing, start: packetStart)
    }
}

/// Fields of MySQL payloads (dev.mysql.com "Basic Data Types"), read without trapping on short input.
struct MySQLPayloadReader {
    let bytes: UnsafeRawBufferPointer
    var index = 0

    init(_ bytes: UnsafeRawBufferPointer, at index: Int = 0) {
        self.bytes = bytes
        self.index = index
    }

    var remaining: Int { max(bytes.count - index, 0) }

    /// A little-endian fixed-length integer of `width` bytes (at most 8).
    mutating func integer(_ width: Int) -> UInt64? {
        guard remaining >= width else { return nil }
        var value: UInt64 = 0
        for offset in 0..<width { value |= UInt64(bytes[index + offset]) << (8 * offset) }
        index += width
        return value
    }

    /// A length-encoded integer (`0xFC` 2 bytes, `0xFD` 3, `0xFE` 8 follow; `0xFB` and `0xFF` are none).
    mutating func lengthEncoded() -> UInt64? {
        guard let first = integer(1) else { return nil }
        switch first {
        case 0..<0xFB: return first
        case 0xFC: return integer(2)
        case 0xFD: return integer(3)
        case 0xFE: return integer(8)
        default: return nil
        }
    }

    /// A NUL-terminated string (nil when unterminated).
    mutating func nullTerminated() -> UnsafeRawBufferPointer? {
        guard remaining > 0 else { return nil }
        let rest = UnsafeRawBufferPointer(rebasing: bytes[index...])
        guard let end = rest.firstIndex(of: 0) else { return nil }
        index += end + 1
        return UnsafeRawBufferPointer(rebasing: rest[..<end])
    }

    mutating func skip(_ count: Int) -> Bool {
        guard count >= 0, remaining >= count else { return false }
        index += count
        return true
    }

    /// The rest of the payload.
    mutating func rest() -> UnsafeRawBufferPointer {
        defer { index = bytes.count }
        return index < bytes.count ? UnsafeRawBufferPointer(rebasing: bytes[index...]) : UnsafeRawBufferPointer(start: nil, count: 0)
    }
}
