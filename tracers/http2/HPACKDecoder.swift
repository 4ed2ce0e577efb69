/// One direction's HPACK decoder (RFC 7541): the static table, the dynamic table this direction's encoder
/// built, integer and string decoding (Huffman included). Memory is bounded: the dynamic table holds at most
/// `sizeLimit` octets as RFC 7541 §4.1 counts them (what the peer's SETTINGS_HEADER_TABLE_SIZE allows, never
/// more than `hardSizeLimit`), and decoded strings are cut at `maxStringLength`.
struct HPACKDecoder {
    /// What a header block decoded to, field by field: the callback's view.
    enum Field {
        /// A field whose name and value are known.
        case known(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)
        /// A field taken from a dynamic-table entry the agent never saw (the connection predates it).
        case unknown
    }

    enum DecodingError: Error {
        case truncated, integerOverflow, invalidIndex, invalidHuffman, tableSizeAboveLimit
    }

    /// Largest dynamic table kept, whatever SETTINGS say (the default is 4096).
    static let hardSizeLimit = 65_536
    /// Longest name or value decoded; longer strings count at their full size but are cut.
    static let maxStringLength = 65_536

    private struct Entry {
        /// Nil for an entry whose name came from an entry the agent never saw: it holds its place (indices
        /// count from the newest entry, RFC 7541 §2.3.3) but decodes as unknown.
        var name: [UInt8]?
        var value: [UInt8]
        /// RFC 7541 §4.1: name + value + 32 octets (the value and 32 for an entry of unknown name).
        var size: Int
    }

    /// Entries newest first (index 62 is `entries[0]`). While the table is not synchronized these are the
    /// entries added since it was lost: an index names the same entry in the encoder's table whatever came
    /// before (§2.3.3), so they decode; older indices are unknown.
    private var entries: [Entry] = []
    private var size = 0
    /// The table's maximum size, as the last table-size update set it (4096 until one does).
    private(set) var maxSize = 4096
    /// The ceiling an update may set (SETTINGS_HEADER_TABLE_SIZE of the decoding side, capped).
    private(set) var sizeLimit = 4096
    /// Whether `entries` is the encoder's whole table. When not (the connection predates the agent, or
    /// header bytes were lost), references past the entries added since decode as `.unknown` until a
    /// table-size update to 0 empties the table.
    private(set) var isSynchronized: Bool

    init(synchronized: Bool = true) {
        isSynchronized = synchronized
    }

    /// Octets of the dynamic table as the encoder counts them (for the memory bound).
    var tableSize: Int { size }
    var entryCount: Int { entries.count }

    /// The decoding side announced SETTINGS_HEADER_TABLE_SIZE = `value`.
    mutating func setSizeLimit(_ value: UInt32) {
        sizeLimit = min(Int(value), Self.hardSizeLimit)
    }

    /// Header bytes were lost: later references into the dynamic table cannot be trusted.
    mutating func desynchronize() {
        isSynchronized = false
        entries.removeAll()
        size = 0
    }

    /// Decodes one header block (HEADERS or PUSH_PROMISE with its CONTINUATIONs), calling `field` for each
    /// field in order. A decoding error leaves the table unsynchronized.
    mutating func decode(_ block: UnsafeRawBufferPointer, scratch: inout [UInt8], field: (Field) -> Void) throws(DecodingError) {
        do {
            try decodeFields(block, scratch: &scratch, field: field)
        } catch {
            desynchronize()
            throw error
        }
    }

    private mutating func decodeFields(_ block: UnsafeRawBufferPointer, scratch: inout [UInt8], field: (Field) -> Void) throws(DecodingError) {
        var offset = 0
        while offset < block.count {
            let first = block[offset]
            if first & 0x80 != 0 {
                // §6.1 Indexed Header Field.
                let index = try Self.integer(block, &offset, prefixBits: 7)
                try withEntry(index) { name, value in field(.known(name: name, value: value)) } unknown: { field(.unknown) }
            } else if first & 0xC0 == 0x40 {
                // §6.2.1 Literal with incremental indexing.
                try literal(block, &offset, prefixBits: 6, scratch: &scratch, indexed: true, field: field)
            } else if first & 0xE0 == 0x20 {
                // §6.3 Dynamic Table Size Update.
                let newSize = try Self.integer(block, &offset, prefixBits: 5)
                guard newSize <= sizeLimit else { throw .tableSizeAboveLimit }
                maxSize = newSize
                evict(toFit: 0)
                if newSize == 0 { isSynchronized = true }
            } else {
                // §6.2.2 without indexing, §6.2.3 never indexed: both 4-bit prefixes.
                try literal(block, &offset, prefixBits: 4, scratch: &scratch, indexed: false, field: field)
            }
        }
    }

    /// A literal field (§6.2): an indexed or literal name, a literal value; added to the table if `indexed`.
    private mutating func literal(_ block: UnsafeRawBufferPointer, _ offset: inout Int, prefixBits: Int, scratch: inout [UInt8],
                                  indexed: Bool, field: (Field) -> Void) throws(DecodingError) {
        let nameIndex = try Self.integer(block, &offset, prefixBits: prefixBits)
        scratch.removeAll(keepingCapacity: true)
        var nameKnown = true
        var nameLength: Int
        if nameIndex == 0 {
            nameLength = try Self.string(block, &offset, into: &scratch)
        } else {
            nameLength = 0
            try withEntry(nameIndex) { name, _ in
                scratch.append(contentsOf: name)
                nameLength = name.count
            } unknown: { nameKnown = false }
        }
        let nameEnd = scratch.count
        let valueLength = try Self.string(block, &offset, into: &scratch)
        if nameKnown {
            scratch.withUnsafeBytes { bytes in
                field(.known(name: UnsafeRawBufferPointer(rebasing: bytes[..<nameEnd]),
                             value: UnsafeRawBufferPointer(rebasing: bytes[nameEnd...])))
            }
        } else {
            field(.unknown)
        }
        guard indexed else { return }
        // An entry of unknown name takes its place all the same, so the entries after it stay addressable.
        // Its size is a lower bound: the eviction of what is kept only bounds memory (the encoder never
        // refers to an entry it evicted, and evicting early makes later references unknown, never wrong).
        add(Entry(name: nameKnown ? Array(scratch[..<nameEnd]) : nil, value: Array(scratch[nameEnd...]),
                  size: nameLength + valueLength + 32))
    }

    /// §4.4: evicts until the entry fits; an entry larger than the table empties it and is not added.
    private mutating func add(_ entry: Entry) {
        evict(toFit: entry.size)
        guard entry.size <= maxSize else { return }
        entries.insert(entry, at: 0)
        size += entry.size
    }

    private mutating func evict(toFit incoming: Int) {
        while !entries.isEmpty && size + incoming > maxSize {
            size -= entries.removeLast().size
        }
    }

    /// Calls `body` with the name and value at `index` (§2.3.3: 1…61 static, then dynamic, newest first),
    /// or `unknown` for a dynamic entry the agent did not see.
    private func withEntry(_ index: Int, _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Void,
                           unknown: () -> Void) throws(DecodingError) {
        guard index > 0 else { throw .invalidIndex }
        if index <= HPACKStaticTable.entries.count {
            let entry = HPACKStaticTable.entries[index - 1]
            entry.name.utf8Bytes { name in entry.value.utf8Bytes { value in body(name, value) } }
            return
        }
        let dynamicIndex = index - HPACKStaticTable.entries.count - 1
        guard dynamicIndex < entries.count else {
            if isSynchronized { throw .invalidIndex }
            unknown()
            return
        }
        let entry = entries[dynamicIndex]
        guard let name = entry.name else {
            unknown()
            return
        }
        name.withUnsafeBytes { name in entry.value.withUnsafeBytes { value in body(name, value) } }
    }

    /// §5.1: an integer with an N-bit prefix; at most 2^28 (larger would be no real header).
    static func integer(_ block: UnsafeRawBufferPointer, _ offset: inout Int, prefixBits: Int) throws(DecodingError) -> Int {
        guard offset < block.count else { throw .truncated }
        let maxPrefix = (1 << prefixBits) - 1
        var value = Int(block[offset]) & maxPrefix
        offset += 1
        guard value == maxPrefix else { return value }
        var shift = 0
        while true {
            guard offset < block.count else { throw .truncated }
            let byte = block[offset]
            offset += 1
            value += Int(byte & 0x7F) << shift
            shift += 7
            guard value <= 1 << 28, shift <= 28 || byte & 0x80 == 0 else { throw .integerOverflow }
            if byte & 0x80 == 0 { return value }
        }
    }

    /// §5.2: a string literal (Huffman or raw) appended to `output` (cut at `maxStringLength`); returns its
    /// decoded length.
    static func string(_ block: UnsafeRawBufferPointer, _ offset: inout Int, into output: inout [UInt8]) throws(DecodingError) -> Int {
        guard offset < block.count else { throw .truncated }
        let huffman = block[offset] & 0x80 != 0
        let length = try integer(block, &offset, prefixBits: 7)
        guard length <= block.count - offset else { throw .truncated }
        let encoded = UnsafeRawBufferPointer(rebasing: block[offset..<(offset + length)])
        offset += length
        guard huffman else {
            output.append(contentsOf: encoded.prefix(maxStringLength))
            return length
        }
        guard let decoded = HPACKHuffman.decode(encoded, into: &output, limit: maxStringLength) else { throw .invalidHuffman }
        return decoded
    }
}

/// The static table (RFC 7541 Appendix A).
enum HPACKStaticTable {
    static let entries: [(name: StaticString, value: StaticString)] = [
        (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
        (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
        (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
        ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
        ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
        ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
        ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
        ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
        ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
        ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
        ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
        ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
    ]
}

extension StaticString {
    /// The string's UTF-8 bytes, without a copy.
    func utf8Bytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        body(UnsafeRawBufferPointer(start: utf8Start, count: utf8CodeUnitCount))
    }
}
