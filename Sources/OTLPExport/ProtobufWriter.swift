import Telemetry

/// A growable byte buffer for protobuf wire-format encoding (protobuf "Encoding" guide: varints, fixed
/// 32/64-bit little-endian, length-delimited fields). One writer is reused across requests, so steady-state
/// encoding does not allocate.
///
/// Nested messages are written in one pass: `beginMessage` reserves a length slot of 1–3 bytes and `endMessage`
/// back-patches the length into it as a padded varint (protobuf "Encoding": a varint may carry redundant
/// `0x80` continuation bytes, up to 10 bytes in all). Only a body too long for its slot is slid right.
///
/// Spans and attribute lists go through `withRoom` and `Cursor`: they are written into the free space with
/// capacity checks only, and the buffer grows between attempts, never while a span's strings are being read
/// (a possible reallocation in the middle would make the compiler retain every string it reads).
public struct ProtobufWriter: ~Copyable {
    @usableFromInline var base: UnsafeMutablePointer<UInt8>
    @usableFromInline var capacity: Int
    /// Bytes written so far.
    public internal(set) var count: Int

    public init(capacity: Int = 64 * 1024) {
        self.capacity = max(capacity, 16)
        base = .allocate(capacity: self.capacity)
        count = 0
    }

    deinit { base.deallocate() }

    /// Forgets the content, keeping the storage.
    public mutating func reset() { count = 0 }

    /// Calls `body` with the encoded bytes.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }

    /// A copy of the encoded bytes.
    public var bytes: [UInt8] { withBytes { Array($0) } }

    /// Makes room for `extra` more bytes. Every field writer reserves its worst case once, then writes
    /// through a raw cursor without further checks.
    @inline(__always) @usableFromInline mutating func reserve(_ extra: Int) {
        if _slowPath(count &+ extra > capacity) { grow(count &+ extra) }
    }

    @usableFromInline mutating func grow(_ needed: Int) {
        var newCapacity = capacity * 2
        while newCapacity < needed { newCapacity *= 2 }
        let newBase = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        newBase.update(from: base, count: count)
        base.deallocate()
        base = newBase
        capacity = newCapacity
    }

    /// Writes a varint at `p` (room already reserved) and returns the next position.
    @inline(__always) static func put(_ value: UInt64, at p: UnsafeMutablePointer<UInt8>) -> UnsafeMutablePointer<UInt8> {
        var v = value
        var p = p
        while v >= 0x80 {
            p.pointee = UInt8(truncatingIfNeeded: v) | 0x80
            p += 1
            v &>>= 7
        }
        p.pointee = UInt8(truncatingIfNeeded: v)
        return p + 1
    }

    /// Wire type 0 (`int32`, `int64`, `uint64`, `bool`, `enum`).
    @inline(__always) mutating func varintField(_ field: UInt32, _ value: UInt64) {
        reserve(15)
        let p = Self.put(UInt64(field << 3), at: base + count)
        count = Self.put(value, at: p) - base
    }

    /// Wire type 1 (`fixed64`, `sfixed64`, `double`), little-endian.
    @inline(__always) mutating func fixed64Field(_ field: UInt32, _ value: UInt64) {
        reserve(13)
        let p = Self.put(UInt64(field << 3 | 1), at: base + count)
        UnsafeMutableRawPointer(p).storeBytes(of: value.littleEndian, as: UInt64.self)
        count = p + 8 - base
    }

    @inline(__always) mutating func fixed64(_ value: UInt64) {
        reserve(8)
        UnsafeMutableRawPointer(base + count).storeBytes(of: value.littleEndian, as: UInt64.self)
        count &+= 8
    }

    /// Wire type 2 with UTF-8 string content.
    @inline(__always) mutating func stringField(_ field: UInt32, _ value: String) {
        let done: Void? = value.utf8.withContiguousStorageIfAvailable { utf8 in bytesField(field, utf8) }
        if done == nil {  // bridged or lazily-decoded strings
            Array(value.utf8).withUnsafeBufferPointer { bytesField(field, $0) }
        }
    }

    /// Wire type 2 with raw content.
    @inline(__always) mutating func bytesField(_ field: UInt32, _ bytes: UnsafeBufferPointer<UInt8>) {
        let n = bytes.count
        reserve(n &+ 15)
        var p = Self.put(UInt64(field << 3 | 2), at: base + count)
        p = Self.put(UInt64(n), at: p)
        if let source = bytes.baseAddress { Self.copy(source, to: p, count: n) }
        count = p + n - base
    }

    /// Copies `n` bytes. Attribute keys and values are mostly 3–32 bytes: overlapping 4-, 8- or 16-byte moves
    /// beat a call to `memcpy` there; longer runs use `memcpy`.
    @inline(__always) static func copy(_ source: UnsafePointer<UInt8>, to destination: UnsafeMutablePointer<UInt8>, count n: Int) {
        let from = UnsafeRawPointer(source)
        let to = UnsafeMutableRawPointer(destination)
        if n >= 8 {
            if n <= 16 {
                let head = from.loadUnaligned(as: UInt64.self)
                let tail = from.loadUnaligned(fromByteOffset: n &- 8, as: UInt64.self)
                to.storeBytes(of: head, as: UInt64.self)
                to.storeBytes(of: tail, toByteOffset: n &- 8, as: UInt64.self)
            } else if n <= 32 {
                let a = from.loadUnaligned(as: UInt64.self)
                let b = from.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                let c = from.loadUnaligned(fromByteOffset: n &- 16, as: UInt64.self)
                let d = from.loadUnaligned(fromByteOffset: n &- 8, as: UInt64.self)
                to.storeBytes(of: a, as: UInt64.self)
                to.storeBytes(of: b, toByteOffset: 8, as: UInt64.self)
                to.storeBytes(of: c, toByteOffset: n &- 16, as: UInt64.self)
                to.storeBytes(of: d, toByteOffset: n &- 8, as: UInt64.self)
            } else {
                to.copyMemory(from: from, byteCount: n)
            }
        } else if n >= 4 {
            let head = from.loadUnaligned(as: UInt32.self)
            let tail = from.loadUnaligned(fromByteOffset: n &- 4, as: UInt32.self)
            to.storeBytes(of: head, as: UInt32.self)
            to.storeBytes(of: tail, toByteOffset: n &- 4, as: UInt32.self)
        } else if n > 0 {
            destination[0] = source[0]
            destination[n &>> 1] = source[n &>> 1]
            destination[n &- 1] = source[n &- 1]
        }
    }

    /// Bytes a varint takes.
    @inline(__always) static func varintSize(_ value: UInt64) -> Int {
        (((64 &- (value | 1).leadingZeroBitCount) &* 9) &+ 64) / 64
    }

    /// Where a sub-message's body starts and how many length bytes were reserved in front of it.
    @usableFromInline struct MessageStart {
        @usableFromInline let body: Int
        @usableFromInline let reserved: Int
    }

    /// Starts a length-delimited sub-message; returns the token for `endMessage`. `lengthBytes` is the size of
    /// the length slot: bodies below 128 bytes, 16 KiB, 2 MiB fit 1, 2, 3 bytes; longer ones cost a slide.
    @inline(__always) mutating func beginMessage(_ field: UInt32, lengthBytes: Int = 1) -> MessageStart {
        reserve(5 &+ lengthBytes)
        count = Self.put(UInt64(field << 3 | 2), at: base + count) + lengthBytes - base
        return MessageStart(body: count, reserved: lengthBytes)
    }

    /// Finishes the sub-message begun at `start`, back-patching its length into the reserved slot as a padded
    /// varint, or sliding the body right when the length needs more bytes than reserved.
    @inline(__always) mutating func endMessage(_ start: MessageStart) {
        let length = count &- start.body
        if _fastPath(length < 1 &<< (7 &* start.reserved)) {
            Self.putPadded(UInt64(length), at: base + start.body - start.reserved, size: start.reserved)
            return
        }
        let size = Self.varintSize(UInt64(length))
        let shift = size - start.reserved
        reserve(shift)
        (base + start.body + shift).update(from: base + start.body, count: length)
        count += shift
        _ = Self.put(UInt64(length), at: base + start.body + shift - size)
    }

    /// Writes `value` (below 2^(7 × size)) as a varint of exactly `size` bytes: all but the last carry the
    /// continuation bit, so short values get redundant `0x80` bytes, which protobuf parsers accept.
    @inline(__always) static func putPadded(_ value: UInt64, at p: UnsafeMutablePointer<UInt8>, size: Int) {
        var v = value
        for i in 0..<(size &- 1) {
            p[i] = UInt8(truncatingIfNeeded: v) | 0x80
            v &>>= 7
        }
        p[size &- 1] = UInt8(truncatingIfNeeded: v)
    }

    /// Runs `body` with a cursor over the free space; if it ran out of room, grows the buffer and runs it
    /// again from the same position. `body` must write the same bytes each time.
    @inline(__always) mutating func withRoom(_ body: (inout Cursor) -> Void) {
        while true {
            var cursor = Cursor(p: base + count, end: base + capacity)
            body(&cursor)
            if _fastPath(!cursor.overflow) {
                count = cursor.p - base
                return
            }
            grow(capacity &+ 1)
        }
    }

    /// A write position in the free space of a `ProtobufWriter` that never grows the buffer: each group of
    /// writes first asks `room(n)`; when that fails the cursor is marked `overflow` and the attempt is
    /// discarded by `withRoom`.
    struct Cursor {
        var p: UnsafeMutablePointer<UInt8>
        let end: UnsafeMutablePointer<UInt8>
        /// Some write did not fit: the bytes written are incomplete.
        var overflow = false

        /// Whether `n` more bytes fit; marks `overflow` if not.
        @inline(__always) mutating func room(_ n: Int) -> Bool {
            if _fastPath(end - p >= n) { return true }
            overflow = true
            return false
        }

        @inline(__always) mutating func byte(_ b: UInt8) {
            p.pointee = b
            p += 1
        }

        @inline(__always) mutating func varint(_ v: UInt64) { p = ProtobufWriter.put(v, at: p) }

        @inline(__always) mutating func fixed64(_ v: UInt64) {
            UnsafeMutableRawPointer(p).storeBytes(of: v.littleEndian, as: UInt64.self)
            p += 8
        }

        @inline(__always) mutating func fixed32(_ v: UInt32) {
            UnsafeMutableRawPointer(p).storeBytes(of: v.littleEndian, as: UInt32.self)
            p += 4
        }

        /// 8 bytes big-endian (span ids, halves of trace ids).
        @inline(__always) mutating func bigEndian64(_ v: UInt64) {
            UnsafeMutableRawPointer(p).storeBytes(of: v.bigEndian, as: UInt64.self)
            p += 8
        }

        /// A varint length then the bytes (the body of a wire type 2 field).
        @inline(__always) mutating func lengthDelimited(_ bytes: UnsafeBufferPointer<UInt8>) {
            let n = bytes.count
            p = ProtobufWriter.put(UInt64(n), at: p)
            if let source = bytes.baseAddress { ProtobufWriter.copy(source, to: p, count: n) }
            p += n
        }

        /// Wire type 2 with the UTF-8 of `value`; `tag` is the whole one-byte key (`field << 3 | 2`).
        /// Strings are read in place; one without contiguous UTF-8 storage is copied first, out of line, so
        /// that the fast path makes no call that could release it.
        @inline(__always) mutating func stringField(_ tag: UInt8, _ value: String) {
            let done: Void? = value.utf8.withContiguousStorageIfAvailable { bytesField(tag, $0) }
            if done == nil { contiguousStringField(tag, value) }
        }

        @inline(never) mutating func contiguousStringField(_ tag: UInt8, _ value: String) {
            var value = value
            value.withUTF8 { bytesField(tag, $0) }
        }

        /// Wire type 2 with raw content.
        @inline(__always) mutating func bytesField(_ tag: UInt8, _ bytes: UnsafeBufferPointer<UInt8>) {
            guard room(bytes.count &+ 11) else { return }
            byte(tag)
            lengthDelimited(bytes)
        }
    }
}
