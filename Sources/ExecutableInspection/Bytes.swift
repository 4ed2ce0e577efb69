#if canImport(Glibc)
import Glibc
#endif

/// The bytes of one file, `mmap(2)`ed `MAP_PRIVATE` (copy-on-write, so libelf may convert in place
/// without touching the file) or copied from memory for fuzzing. Only touched pages count in RSS.
final class FileBytes {
    let base: UnsafeMutableRawPointer?
    let count: Int
    private let isMapped: Bool

    /// Opens and maps `path`; a directory, an empty file or a missing path is an error naming `path`.
    init(path: String) throws(InspectionError) {
        let st = try statFile(path)
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw InspectionError(.notRegularFile, path, "not a regular file")
        }
        var fd: Int32
        repeat { fd = open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
        guard fd >= 0 else {
            let err = errno
            throw InspectionError(err == ENOENT ? .notFound : .io, path, "cannot open: \(String(cString: strerror(err)))")
        }
        defer { close(fd) }
        // Size from the opened descriptor: the path may have been replaced since `stat`.
        var fst = stat()
        guard fstat(fd, &fst) == 0 else {
            throw InspectionError(.io, path, "cannot fstat: \(String(cString: strerror(errno)))")
        }
        guard fst.st_size > 0 else { throw InspectionError(.notELF, path, "empty file") }
        let size = Int(fst.st_size)
        let map = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0)
        guard let map, map != MAP_FAILED else {
            throw InspectionError(.io, path, "cannot mmap \(size) bytes: \(String(cString: strerror(errno)))")
        }
        base = map
        count = size
        isMapped = true
    }

    /// A private copy of `bytes` (fuzzing, tests).
    convenience init(copying bytes: some Collection<UInt8>) {
        self.init(zeroed: bytes.count)
        if let base { UnsafeMutableRawBufferPointer(start: base, count: count).copyBytes(from: bytes) }
    }

    /// `count` zero bytes, to be filled by the caller (the DWARF type image).
    init(zeroed count: Int) {
        self.count = count
        if count == 0 {
            base = nil
        } else {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 16)
            buffer.initializeMemory(as: UInt8.self, repeating: 0, count: count)
            base = buffer
        }
        isMapped = false
    }

    deinit {
        guard let base else { return }
        if isMapped { munmap(base, count) } else { base.deallocate() }
    }

    /// The bytes `[offset, offset+length)` or nil when any part lies outside the file.
    func slice(offset: UInt64, length: UInt64) -> UnsafeRawBufferPointer? {
        guard let base, offset <= UInt64(count), length <= UInt64(count) - offset else { return nil }
        return UnsafeRawBufferPointer(start: base + Int(offset), count: Int(length))
    }
}

/// Bounds-checked little-endian reads from a byte range. Every read returns nil instead of
/// trapping, so malformed input can only produce an ``InspectionError``.
struct ByteView {
    let bytes: UnsafeRawBufferPointer

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var count: Int { bytes.count }

    func u8(_ offset: UInt64) -> UInt8? {
        guard offset < UInt64(bytes.count) else { return nil }
        return bytes[Int(offset)]
    }

    func u16(_ offset: UInt64) -> UInt16? { load(offset, as: UInt16.self).map(UInt16.init(littleEndian:)) }
    func u32(_ offset: UInt64) -> UInt32? { load(offset, as: UInt32.self).map(UInt32.init(littleEndian:)) }
    func u64(_ offset: UInt64) -> UInt64? { load(offset, as: UInt64.self).map(UInt64.init(littleEndian:)) }

    /// A pointer-sized unsigned value (`ptrSize` 4 or 8).
    func word(_ offset: UInt64, size: Int) -> UInt64? {
        size == 8 ? u64(offset) : size == 4 ? u32(offset).map(UInt64.init) : nil
    }

    private func load<T: FixedWidthInteger>(_ offset: UInt64, as: T.Type) -> T? {
        let size = UInt64(MemoryLayout<T>.size)
        guard offset <= UInt64(bytes.count), size <= UInt64(bytes.count) - offset else { return nil }
        return bytes.loadUnaligned(fromByteOffset: Int(offset), as: T.self)
    }

    /// `[offset, offset+length)` or nil when out of range.
    func sub(_ offset: UInt64, _ length: UInt64) -> ByteView? {
        guard offset <= UInt64(bytes.count), length <= UInt64(bytes.count) - offset else { return nil }
        return ByteView(UnsafeRawBufferPointer(rebasing: bytes[Int(offset)..<Int(offset + length)]))
    }

    /// The NUL-terminated string at `offset` (at most `limit` bytes), or nil when unterminated.
    func cString(_ offset: UInt64, limit: Int = 4096) -> String? {
        guard offset < UInt64(bytes.count) else { return nil }
        let start = Int(offset)
        let end = min(bytes.count, start + limit)
        guard let nul = bytes[start..<end].firstIndex(of: 0) else { return nil }
        return String(decoding: bytes[start..<nul], as: UTF8.self)
    }

    /// Unsigned LEB128 / Go `binary.Uvarint` at `offset`: (value, bytes consumed).
    func uvarint(_ offset: UInt64) -> (UInt64, UInt64)? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        var i: UInt64 = 0
        while shift < 64 {
            guard let byte = u8(offset + i) else { return nil }
            value |= UInt64(byte & 0x7f) << shift
            i += 1
            if byte & 0x80 == 0 { return (value, i) }
            shift += 7
        }
        return nil
    }

    /// Byte offset of the first occurrence of `needle`, if any.
    func firstIndex(of needle: [UInt8]) -> UInt64? {
        guard let first = needle.first, needle.count <= bytes.count else { return nil }
        var i = 0
        let last = bytes.count - needle.count
        while i <= last {
            guard let hit = bytes[i...last].firstIndex(of: first) else { return nil }
            if needle.indices.allSatisfy({ bytes[hit + $0] == needle[$0] }) { return UInt64(hit) }
            i = hit + 1
        }
        return nil
    }
}

/// Matches NUL-terminated names in a string table against a small set of wanted names without
/// allocating: `memchr` finds the length, candidates of that length are compared with `memcmp`.
/// Symbol tables of large Go binaries have tens of thousands of entries; this keeps a lookup pass
/// at a few milliseconds.
struct NameMatcher {
    private let candidatesByLength: [[(name: String, bytes: [UInt8])]]

    init(_ names: Set<String>) {
        let longest = names.map(\.utf8.count).max() ?? 0
        var table = [[(name: String, bytes: [UInt8])]](repeating: [], count: longest + 1)
        for name in names { table[name.utf8.count].append((name, Array(name.utf8))) }
        candidatesByLength = table
    }

    /// The wanted name stored at `offset` in `strings`, if the string there is one of them.
    func match(_ strings: ByteView, at offset: UInt64) -> String? {
        guard let base = strings.bytes.baseAddress, offset < UInt64(strings.count) else { return nil }
        let start = base + Int(offset)
        let limit = min(strings.count - Int(offset), candidatesByLength.count)
        guard let nul = memchr(start, 0, limit) else { return nil }
        let length = UnsafeRawPointer(nul) - start
        for candidate in candidatesByLength[length] where length == 0 || candidate.bytes.withUnsafeBytes({ memcmp(start, $0.baseAddress!, length) == 0 }) {
            return candidate.name
        }
        return nil
    }
}
