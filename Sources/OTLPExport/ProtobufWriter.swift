import Telemetry

/// A growable byte buffer for protobuf wire-format encoding (protobuf "Encoding" guide: varints, fixed
/// 32/64-bit little-endian, length-delimited fields). One writer is reused across requests, so steady-state
/// encoding does not allocate.
///
/// Nested messages are written in one pass: `beginMessage` reserves one length byte, `endMessage` writes the
/// real length and, when the message is 128 bytes or longer, slides the body right to make room for a longer
/// varint. Spans are a few hundred bytes, so the slide is one small `memmove`.
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

    /// Wire type 5 (`fixed32`), little-endian.
    @inline(__always) mutating func fixed32Field(_ field: UInt32, _ value: UInt32) {
        reserve(9)
        let p = Self.put(UInt64(field << 3 | 5), at: base + count)
        UnsafeMutableRawPointer(p).storeBytes(of: value.littleEndian, as: UInt32.self)
        count = p + 4 - base
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

    /// Copies `n` bytes. Attribute keys and values are mostly 8–16 bytes: two overlapping 8-byte moves beat a
    /// call to `memcpy` there; longer runs use `memcpy`.
    @inline(__always) static func copy(_ source: UnsafePointer<UInt8>, to destination: UnsafeMutablePointer<UInt8>, count n: Int) {
        if n >= 8 && n <= 16 {
            let head = UnsafeRawPointer(source).loadUnaligned(as: UInt64.self)
            let tail = UnsafeRawPointer(source + n - 8).loadUnaligned(as: UInt64.self)
            UnsafeMutableRawPointer(destination).storeBytes(of: head, as: UInt64.self)
            UnsafeMutableRawPointer(destination + n - 8).storeBytes(of: tail, as: UInt64.self)
        } else if n < 8 {
            var i = 0
            while i < n {
                destination[i] = source[i]
                i &+= 1
            }
        } else {
            UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: n)
        }
    }

    /// Bytes a varint takes.
    @inline(__always) static func varintSize(_ value: UInt64) -> Int {
        (((64 &- (value | 1).leadingZeroBitCount) &* 9) &+ 64) / 64
    }

    /// Wire type 2 with 8 big-endian bytes (span ids).
    @inline(__always) mutating func id64Field(_ field: UInt32, _ value: UInt64) {
        reserve(14)
        let p = Self.put(UInt64(field << 3 | 2), at: base + count)
        p.pointee = 8
        UnsafeMutableRawPointer(p + 1).storeBytes(of: value.bigEndian, as: UInt64.self)
        count = p + 9 - base
    }

    /// Wire type 2 with 16 big-endian bytes (trace ids).
    @inline(__always) mutating func id128Field(_ field: UInt32, _ high: UInt64, _ low: UInt64) {
        reserve(22)
        let p = Self.put(UInt64(field << 3 | 2), at: base + count)
        p.pointee = 16
        UnsafeMutableRawPointer(p + 1).storeBytes(of: high.bigEndian, as: UInt64.self)
        UnsafeMutableRawPointer(p + 9).storeBytes(of: low.bigEndian, as: UInt64.self)
        count = p + 17 - base
    }

    /// Where a sub-message's body starts and how many length bytes were reserved in front of it.
    @usableFromInline struct MessageStart {
        @usableFromInline let body: Int
        @usableFromInline let reserved: Int
    }

    /// Starts a length-delimited sub-message; returns the token for `endMessage`. `lengthBytes` is the expected
    /// size of the length varint (1 below 128 bytes, 2 below 16 KiB, 3 below 2 MiB): a good guess saves a slide.
    @inline(__always) mutating func beginMessage(_ field: UInt32, lengthBytes: Int = 1) -> MessageStart {
        reserve(5 &+ lengthBytes)
        count = Self.put(UInt64(field << 3 | 2), at: base + count) + lengthBytes - base
        return MessageStart(body: count, reserved: lengthBytes)
    }

    /// Finishes the sub-message begun at `start`, writing its length in front of it (and sliding the body
    /// when the length varint is not the reserved size).
    @inline(__always) mutating func endMessage(_ start: MessageStart) {
        let length = count - start.body
        if start.reserved == 1 && length < 0x80 {
            base[start.body - 1] = UInt8(length)
            return
        }
        var size = 1
        var v = length >> 7
        while v > 0 { size += 1; v >>= 7 }
        let shift = size - start.reserved
        if shift != 0 {
            reserve(max(shift, 0))
            (base + start.body + shift).update(from: base + start.body, count: length)
            count += shift
        }
        var at = start.body + shift - size
        var rest = UInt64(length)
        while rest >= 0x80 {
            base[at] = UInt8(truncatingIfNeeded: rest) | 0x80
            at += 1
            rest >>= 7
        }
        base[at] = UInt8(truncatingIfNeeded: rest)
    }
}
