/// An HTTP/2 frame header (RFC 9113 §4.1): 24-bit length, type, flags, 31-bit stream identifier.
struct HTTP2FrameHeader: Equatable {
    static let size = 9

    var length: Int
    var type: UInt8
    var flags: UInt8
    var streamID: UInt32

    /// RFC 9113 §6 frame types.
    enum FrameType {
        static let data: UInt8 = 0, headers: UInt8 = 1, priority: UInt8 = 2, rstStream: UInt8 = 3, settings: UInt8 = 4
        static let pushPromise: UInt8 = 5, ping: UInt8 = 6, goaway: UInt8 = 7, windowUpdate: UInt8 = 8, continuation: UInt8 = 9
    }

    /// Flags: END_STREAM (DATA, HEADERS), ACK (SETTINGS, PING), END_HEADERS, PADDED, PRIORITY.
    enum Flag {
        static let endStream: UInt8 = 0x1, ack: UInt8 = 0x1, endHeaders: UInt8 = 0x4, padded: UInt8 = 0x8, priority: UInt8 = 0x20
    }

    init(length: Int, type: UInt8, flags: UInt8, streamID: UInt32) {
        self.length = length
        self.type = type
        self.flags = flags
        self.streamID = streamID
    }

    /// The header in the first nine bytes of `bytes` (nil when fewer).
    init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Self.size else { return nil }
        length = Int(bytes[0]) << 16 | Int(bytes[1]) << 8 | Int(bytes[2])
        type = bytes[3]
        flags = bytes[4]
        streamID = (UInt32(bytes[5]) << 24 | UInt32(bytes[6]) << 16 | UInt32(bytes[7]) << 8 | UInt32(bytes[8])) & 0x7FFF_FFFF
    }

    /// Whether this could be a real frame of a known type: the stream rules and fixed lengths of RFC 9113 §6
    /// (used to find frames in bytes joined mid-stream, never to reject frames of a synchronized stream).
    var isPlausible: Bool {
        guard length <= HTTP2FrameReader.maxPlausibleLength else { return false }
        switch type {
        case FrameType.data, FrameType.headers, FrameType.continuation, FrameType.pushPromise: return streamID != 0
        case FrameType.priority: return streamID != 0 && length == 5
        case FrameType.rstStream: return streamID != 0 && length == 4
        case FrameType.settings: return streamID == 0 && length % 6 == 0 && (flags & Flag.ack == 0 || length == 0)
        case FrameType.ping: return streamID == 0 && length == 8
        case FrameType.goaway: return streamID == 0 && length >= 8
        case FrameType.windowUpdate: return length == 4
        default: return false
        }
    }

    /// Whether the frame carries a header block (HPACK state changes with it).
    var carriesHeaderBlock: Bool {
        type == FrameType.headers || type == FrameType.continuation || type == FrameType.pushPromise
    }
}

/// One direction of an HTTP/2 connection cut into frames, chunk by chunk. Frames whose contents matter
/// (header blocks, SETTINGS, RST_STREAM) are assembled across chunks up to `maxKeptPayload`; DATA and the
/// rest are skipped by their length, so bytes the capture did not keep (a chunk's bytes past its prefix)
/// cost nothing while they fall inside a skipped payload. When they do not, the reader has lost the frame
/// boundaries: it says so and looks for a plausible frame header at the start of a later chunk.
struct HTTP2FrameReader {
    /// The client connection preface (RFC 9113 §3.4).
    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    /// Largest payload assembled (the default SETTINGS_MAX_FRAME_SIZE is 16384; peers may raise it).
    static let maxKeptPayload = 65_536
    /// Largest frame believed when joining mid-stream (SETTINGS_MAX_FRAME_SIZE rarely exceeds 1 MiB).
    static let maxPlausibleLength = 1 << 20

    enum Event {
        /// A frame: with its payload for kept types, else nil (DATA: only its header, when it starts).
        case frame(HTTP2FrameHeader, payload: UnsafeRawBufferPointer?)
        /// The captured start of a header-carrying frame whose rest was not captured (`.lost` follows): the
        /// fields wholly inside it can still be decoded.
        case truncated(HTTP2FrameHeader, prefix: UnsafeRawBufferPointer)
        /// Frame boundaries were lost (bytes not captured, or a kept frame too long): header blocks in them
        /// were missed.
        case lost
    }

    private enum State {
        /// Expecting the client preface; `matched` bytes of it seen.
        case preface(matched: Int)
        /// Reading a frame header (its bytes so far in `headerBytes`).
        case header
        /// Assembling the payload of `current` in `payload`.
        case keptPayload
        /// Skipping `remaining` bytes of a payload.
        case skip(remaining: Int)
        /// Frame boundaries unknown until a chunk starts with a plausible frame.
        case lost
    }

    private var state: State
    private var headerBytes: [UInt8] = []
    private var current = HTTP2FrameHeader(length: 0, type: 0, flags: 0, streamID: 0)
    private var payload: [UInt8] = []

    /// A placeholder holding no buffers (while the real reader is out feeding).
    static let idle = HTTP2FrameReader(expectingPreface: false)

    init(expectingPreface: Bool, synchronized: Bool = true) {
        state = expectingPreface ? .preface(matched: 0) : synchronized ? .header : .lost
    }

    /// Bytes held between chunks (for the memory bound).
    var bufferedBytes: Int { headerBytes.capacity + payload.capacity }

    /// Whether the reader is waiting for the connection preface.
    var expectsPreface: Bool {
        if case .preface = state { return true }
        return false
    }

    /// Whether `data` starts with a run of plausible frames (the first one's header complete).
    static func startsWithFrames(_ data: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while data.count - offset >= HTTP2FrameHeader.size {
            guard let header = HTTP2FrameHeader(UnsafeRawBufferPointer(rebasing: data[offset...])), header.isPlausible else { return false }
            offset += HTTP2FrameHeader.size + header.length
        }
        return offset > 0
    }

    /// Feeds one chunk: `data` is its captured prefix, `length` its full size; calls `event` per frame.
    mutating func feed(_ data: UnsafeRawBufferPointer, length: Int, event: (Event) -> Void) {
        if case .lost = state {
            guard Self.startsWithFrames(data) else { return }
            state = .header
        }
        var offset = 0
        while offset < data.count {
            switch state {
            case .preface(let matched):
                let take = min(Self.preface.count - matched, data.count - offset)
                for i in 0..<take where data[offset + i] != Self.preface[matched + i] {
                    state = .lost
                    event(.lost)
                    return
                }
                offset += take
                state = matched + take == Self.preface.count ? .header : .preface(matched: matched + take)
            case .header:
                let take = min(HTTP2FrameHeader.size - headerBytes.count, data.count - offset)
                headerBytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: data[offset..<(offset + take)]))
                offset += take
                guard headerBytes.count == HTTP2FrameHeader.size else { continue }
                current = headerBytes.withUnsafeBytes { HTTP2FrameHeader($0)! }
                headerBytes.removeAll(keepingCapacity: true)
                start(event: event)
            case .keptPayload:
                let take = min(current.length - payload.count, data.count - offset)
                payload.append(contentsOf: UnsafeRawBufferPointer(rebasing: data[offset..<(offset + take)]))
                offset += take
                if payload.count == current.length {
                    payload.withUnsafeBytes { event(.frame(current, payload: $0)) }
                    payload.removeAll(keepingCapacity: payload.capacity <= 16_384)
                    state = .header
                }
            case .skip(let remaining):
                let take = min(remaining, data.count - offset)
                offset += take
                state = take == remaining ? .header : .skip(remaining: remaining - take)
            case .lost:
                return
            }
        }
        // Bytes the capture did not keep: harmless inside a skipped payload, else the boundaries are lost.
        var missing = length - data.count
        guard missing > 0 else { return }
        if case .skip(let remaining) = state {
            let take = min(remaining, missing)
            missing -= take
            state = take == remaining ? .header : .skip(remaining: remaining - take)
        }
        if missing > 0 {
            if case .keptPayload = state, current.carriesHeaderBlock, !payload.isEmpty {
                payload.withUnsafeBytes { event(.truncated(current, prefix: $0)) }
            }
            headerBytes.removeAll(keepingCapacity: true)
            payload.removeAll(keepingCapacity: false)
            state = .lost
            event(.lost)
        }
    }

    /// A frame header was read: decides whether its payload is kept or skipped.
    private mutating func start(event: (Event) -> Void) {
        let kept: Bool
        switch current.type {
        case HTTP2FrameHeader.FrameType.headers, HTTP2FrameHeader.FrameType.continuation, HTTP2FrameHeader.FrameType.pushPromise,
             HTTP2FrameHeader.FrameType.settings, HTTP2FrameHeader.FrameType.rstStream:
            kept = true
        default:
            kept = false
        }
        if kept && current.length > Self.maxKeptPayload {
            // Too long to assemble: skipped, and its header block (if any) is missed.
            if current.carriesHeaderBlock { event(.lost) }
            state = .skip(remaining: current.length)
            return
        }
        if !kept { event(.frame(current, payload: nil)) }
        if current.length == 0 {
            if kept { event(.frame(current, payload: UnsafeRawBufferPointer(start: nil, count: 0))) }
            state = .header
        } else {
            state = kept ? .keptPayload : .skip(remaining: current.length)
        }
    }
}
