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
    public private(set) var count: Int

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

    @inline(__always) @usableFromInline mutating func reserve(_ extra: Int) {
        if count + extra > capacity { grow(count + extra) }
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

    @inline(__always) mutating func byte(_ b: UInt8) {
        reserve(1)
        base[count] = b
        count += 1
    }

    @inline(__always) mutating func varint(_ value: UInt64) {
        reserve(10)
        var v = value
        while v >= 0x80 {
            base[count] = UInt8(truncatingIfNeeded: v) | 0x80
            count += 1
            v >>= 7
        }
        base[count] = UInt8(truncatingIfNeeded: v)
        count += 1
    }

    /// A field key: `(field_number << 3) | wire_type`.
    @inline(__always) mutating func tag(_ field: UInt32, _ wireType: UInt32) {
        varint(UInt64(field << 3 | wireType))
    }

    /// Wire type 0 (`int32`, `int64`, `uint64`, `bool`, `enum`).
    @inline(__always) mutating func varintField(_ field: UInt32, _ value: UInt64) {
        tag(field, 0)
        varint(value)
    }

    /// Wire type 1 (`fixed64`, `sfixed64`, `double`), little-endian.
    @inline(__always) mutating func fixed64Field(_ field: UInt32, _ value: UInt64) {
        tag(field, 1)
        fixed64(value)
    }

    @inline(__always) mutating func fixed64(_ value: UInt64) {
        reserve(8)
        UnsafeMutableRawPointer(base + count).storeBytes(of: value.littleEndian, as: UInt64.self)
        count += 8
    }

    /// Wire type 5 (`fixed32`), little-endian.
    @inline(__always) mutating func fixed32Field(_ field: UInt32, _ value: UInt32) {
        tag(field, 5)
        reserve(4)
        UnsafeMutableRawPointer(base + count).storeBytes(of: value.littleEndian, as: UInt32.self)
        count += 4
    }

    /// Wire type 2 with UTF-8 string content.
    @inline(__always) mutating func stringField(_ field: UInt32, _ value: String) {
        tag(field, 2)
        let done: Void? = value.utf8.withContiguousStorageIfAvailable { utf8 in
            varint(UInt64(utf8.count))
            raw(UnsafeRawBufferPointer(utf8))
        }
        if done == nil {  // bridged or lazily-decoded strings
            let bytes = Array(value.utf8)
            varint(UInt64(bytes.count))
            bytes.withUnsafeBytes { raw($0) }
        }
    }

    @inline(__always) mutating func raw(_ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        reserve(n)
        if n > 0 { UnsafeMutableRawPointer(base + count).copyMemory(from: bytes.baseAddress!, byteCount: n) }
        count += n
    }

    /// Wire type 2 with 8 big-endian bytes (span ids).
    @inline(__always) mutating func id64Field(_ field: UInt32, _ value: UInt64) {
        tag(field, 2)
        byte(8)
        reserve(8)
        UnsafeMutableRawPointer(base + count).storeBytes(of: value.bigEndian, as: UInt64.self)
        count += 8
    }

    /// Wire type 2 with 16 big-endian bytes (trace ids).
    @inline(__always) mutating func id128Field(_ field: UInt32, _ high: UInt64, _ low: UInt64) {
        tag(field, 2)
        byte(16)
        reserve(16)
        UnsafeMutableRawPointer(base + count).storeBytes(of: high.bigEndian, as: UInt64.self)
        UnsafeMutableRawPointer(base + count + 8).storeBytes(of: low.bigEndian, as: UInt64.self)
        count += 16
    }

    /// Where a sub-message's body starts and how many length bytes were reserved in front of it.
    @usableFromInline struct MessageStart {
        @usableFromInline let body: Int
        @usableFromInline let reserved: Int
    }

    /// Starts a length-delimited sub-message; returns the token for `endMessage`. `lengthBytes` is the expected
    /// size of the length varint (1 below 128 bytes, 2 below 16 KiB, 3 below 2 MiB): a good guess saves a slide.
    @inline(__always) mutating func beginMessage(_ field: UInt32, lengthBytes: Int = 1) -> MessageStart {
        tag(field, 2)
        reserve(lengthBytes)
        count += lengthBytes
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

    /// Truncates to `length` bytes (drops a partly written tail).
    mutating func truncate(to length: Int) { count = min(count, length) }
}
