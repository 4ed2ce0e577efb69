/// The lines of one direction of a text protocol (memcached, NATS): ended by `\r\n`, a bare `\n` accepted,
/// assembled across reads. A line is kept up to `keptCapacity` bytes (longer ones are reported cut, `whole`
/// false); one longer than `maxLength` is not this protocol.
public struct LineReader {
    public struct Line {
        /// The line without its `\r\n`, or as much of it as was kept.
        public var bytes: UnsafeRawBufferPointer
        /// `bytes` is the whole line.
        public var whole: Bool
        /// Where the line starts in this direction's byte stream (``ParserContext/position`` counting).
        public var start: UInt64
        /// The line's length, its `\r\n` included.
        public var length: Int
    }

    /// What reading up to the end of a line gave.
    public enum Step<Result> {
        /// The read ended inside the line: what it held is kept for the next read.
        case partial
        /// The line is longer than `maxLength`.
        case tooLong
        /// The line ended: what `body` made of it.
        case line(Result)
    }

    private let keptCapacity: Int
    private let maxLength: Int
    private var kept: [UInt8] = []
    private var keptWhole = true
    private var length = 0
    private var start: UInt64 = 0

    public init(keptCapacity: Int, maxLength: Int) {
        self.keptCapacity = keptCapacity
        self.maxLength = maxLength
        kept.reserveCapacity(128)
    }

    /// Reads `data` from `index` (a read that starts at `position` of the byte stream) up to the end of the
    /// current line, moving `index` past what it read; `body` sees the line when it ends.
    public mutating func read<Result>(_ data: UnsafeRawBufferPointer, at index: inout Int, position: UInt64,
                                      _ body: (Line) -> Result) -> Step<Result> {
        if length == 0 { start = position + UInt64(index) }
        let rest = UnsafeRawBufferPointer(rebasing: data[index...])
        let newline = rest.firstIndex(of: 0x0A)
        let piece = UnsafeRawBufferPointer(rebasing: rest[..<(newline ?? rest.count)])
        length += piece.count + (newline == nil ? 0 : 1)
        guard length <= maxLength else { return .tooLong }
        guard newline != nil else {
            keep(piece)
            index += piece.count
            return .partial
        }
        index += piece.count + 1
        let result: Result
        if kept.isEmpty && keptWhole {
            result = body(Line(bytes: Self.trimmed(piece), whole: true, start: start, length: length))
        } else {
            keep(piece)
            let (whole, start, length) = (keptWhole, start, length)
            result = kept.withUnsafeBytes { body(Line(bytes: Self.trimmed($0), whole: whole, start: start, length: length)) }
        }
        kept.removeAll(keepingCapacity: true)
        keptWhole = true
        length = 0
        return .line(result)
    }

    private mutating func keep(_ piece: UnsafeRawBufferPointer) {
        let room = keptCapacity - kept.count
        if room > 0 { kept.append(contentsOf: piece.prefix(room)) }
        if piece.count > room { keptWhole = false }
    }

    /// A line without the `\r` before its `\n`.
    private static func trimmed(_ line: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        line.last == 0x0D ? UnsafeRawBufferPointer(rebasing: line.dropLast()) : line
    }
}
