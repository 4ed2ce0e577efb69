import TracerFramework

/// An incremental reader of one direction of a memcached text-protocol connection (memcached's
/// doc/protocol.txt): lines ended by `\r\n` (a bare `\n` is accepted, as memcached does), some followed by a
/// data block of a length the line announced and its own `\r\n`. Lines may be split over reads, and a read may
/// be only partly captured (its first bytes, its length): a data block is skipped by its length, also where its
/// bytes were not captured; a line is kept up to a bound.
struct MemcachedLineStream {
    /// Line bytes kept (a command's text is kept up to the query-text limit).
    static let keptCapacity = DatabaseQueryText.limit + 512
    /// Longest line accepted: memcached refuses lines over 2048 bytes except key lists of retrievals, which
    /// are bounded here.
    static let maxLineLength = 65536
    /// Longest data block accepted: memcached's item size limit at its largest (`-I 1024m`).
    static let maxDataLength = 1 << 30

    /// One line that went by.
    typealias Line = LineReader.Line

    /// What follows a line: nothing, a data block of this many bytes (and its `\r\n`), or nothing more
    /// (the parser refuses the stream).
    enum Next: Equatable {
        case line
        case data(Int)
        case refuse
    }

    /// The input stopped being this protocol, or its uncaptured part held more than a data block.
    private(set) var broken = false

    private var lines = LineReader(keptCapacity: Self.keptCapacity, maxLength: Self.maxLineLength)
    /// Bytes of a data block still to pass, its `\r\n` included.
    private var dataRemaining = 0

    mutating func reset() {
        self = MemcachedLineStream()
    }

    /// Reads one transfer: `data` its captured prefix, `length` its full size, `tail` its last bytes
    /// (``CaptureChunk/tail``), `position` where it starts in the byte stream. `report` sees each line and says
    /// what follows it.
    mutating func feed(_ data: UnsafeRawBufferPointer, length: UInt64, tail: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                       position: UInt64, _ report: (Line) -> Next) {
        guard !broken else { return }
        var index = 0
        while index < data.count && !broken {
            if dataRemaining > 0 {
                // The block, skipped whole, then its `\r\n`, checked.
                let body = min(max(dataRemaining - 2, 0), data.count - index)
                index += body
                dataRemaining -= body
                while dataRemaining > 0 && index < data.count {
                    guard data[index] == (dataRemaining == 2 ? 0x0D : 0x0A) else { return broken = true }
                    index += 1
                    dataRemaining -= 1
                }
                continue
            }
            switch lines.read(data, at: &index, position: position, report) {
            case .partial, .line(.line): continue
            case .line(.data(let count)):
                guard count >= 0, count <= Self.maxDataLength else { return broken = true }
                dataRemaining = count + 2
            case .tooLong, .line(.refuse): return broken = true
            }
        }
        // What was not captured: only the rest of a data block may hide there.
        let uncaptured = length > UInt64(data.count) ? length - UInt64(data.count) : 0
        guard uncaptured > 0, !broken else { return }
        if UInt64(dataRemaining) >= uncaptured {
            dataRemaining -= Int(uncaptured)
            return
        }
        // The block ends uncaptured and lines follow it (a retrieval's `END`): read them from the transfer's
        // last bytes when they are all there.
        let following = uncaptured - UInt64(dataRemaining)
        guard following <= UInt64(tail.count) else { return broken = true }
        dataRemaining = 0
        feed(UnsafeRawBufferPointer(rebasing: tail.suffix(Int(following))), length: following, position: position + length - following, report)
    }
}

/// The space-separated words of a line.
struct MemcachedWords {
    private let line: UnsafeRawBufferPointer
    private var index = 0

    init(_ line: UnsafeRawBufferPointer) { self.line = line }

    mutating func next() -> UnsafeRawBufferPointer? {
        while index < line.count && line[index] == 0x20 { index += 1 }
        guard index < line.count else { return nil }
        let start = index
        while index < line.count && line[index] != 0x20 { index += 1 }
        return UnsafeRawBufferPointer(rebasing: line[start..<index])
    }

    /// All words (at most `limit`, at most 16), held inline: no allocation per line.
    static func all(_ line: UnsafeRawBufferPointer, limit: Int = 16) -> List {
        var words = MemcachedWords(line)
        var result = List()
        while result.endIndex < min(limit, List.capacity), let word = words.next() { result.append(word) }
        return result
    }

    /// The words of one line.
    struct List: RandomAccessCollection {
        static let capacity = InlineArray<16, UnsafeRawBufferPointer>.count
        private var words = InlineArray<16, UnsafeRawBufferPointer>(repeating: UnsafeRawBufferPointer(start: nil, count: 0))
        private(set) var endIndex = 0

        var startIndex: Int { 0 }
        subscript(position: Int) -> UnsafeRawBufferPointer { words[position] }

        fileprivate mutating func append(_ word: UnsafeRawBufferPointer) {
            words[endIndex] = word
            endIndex += 1
        }
    }

    /// A decimal number of at most 18 digits.
    static func number(_ word: UnsafeRawBufferPointer) -> Int? {
        guard !word.isEmpty, word.count <= 18, word.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return word.reduce(0) { $0 * 10 + Int($1 - 0x30) }
    }
}
