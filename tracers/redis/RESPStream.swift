#if canImport(Glibc)
import Glibc
#endif

/// An incremental reader of one direction of a Redis connection (RESP2 and RESP3, redis.io "Redis
/// serialization protocol specification"): values may be split over reads, and a read may be only partly
/// captured (its first bytes, its length). It reports values as they go by, copying nothing: header lines
/// are carried over reads in a small fixed buffer, bulk payloads are skipped by their length, also where
/// their bytes were not captured.
struct RESPStream {
    /// Longest bulk string or blob accepted (Redis' own `proto-max-bulk-len` default, 512 MiB); longer is garbage.
    static let maxBulkLength: Int64 = 512 << 20
    /// Most elements of one aggregate accepted.
    static let maxAggregateCount: Int64 = 1 << 32
    /// Deepest nesting followed (the capacity of the aggregate stack).
    static let maxDepth = InlineArray<16, Int64>.count
    /// Bytes of a header line kept (an error line's message beyond this is skipped).
    static let lineCapacity = 96

    /// What went by.
    enum Item {
        /// A top-level value starts with this type byte (`*`, `+`, `-`, `$`, …; a letter for an inline command).
        case start(UInt8)
        /// A simple line (`+`, `-`, `:`, `_`, `#`, `,`, `(`) at `depth` (0: top level), the bytes after the type.
        case line(type: UInt8, depth: Int, index: Int, UnsafeRawBufferPointer)
        /// A bulk string or blob (`$`, `!`, `=`): what of its payload this read captured, whole or not.
        case bulk(type: UInt8, depth: Int, index: Int, UnsafeRawBufferPointer, whole: Bool)
        /// The top-level value that started ended; `outOfBand`: a RESP3 push (`>`) or attribute (`|`), which
        /// answer no command.
        case end(outOfBand: Bool)
    }

    /// The input is not RESP (or a length is absurd); the stream knows nothing until `reset`.
    private(set) var broken = false
    /// Bytes of a bulk payload (and its CRLF) still to pass.
    private var skip: Int64 = 0
    /// Remaining elements of each open aggregate, outermost first, and the index of its next element: a
    /// stack of `depth` entries held inline, so following a command's array costs no reference counting.
    private var remaining = InlineArray<16, Int64>(repeating: 0)
    private var nextIndex = InlineArray<16, Int>(repeating: 0)
    private var depth = 0
    /// The top-level value is a push or an attribute.
    private var outOfBand = false
    /// A header line read in part (carried to the next read).
    private var line: [UInt8] = []
    private var lineOverflow = false
    /// The carried line while it is read (swapped with `line`, so neither allocates again).
    private var spareLine: [UInt8] = []

    init() {
        line.reserveCapacity(Self.lineCapacity)
        spareLine.reserveCapacity(Self.lineCapacity)
    }

    /// Whether the stream is between top-level values.
    var atBoundary: Bool { !broken && skip == 0 && depth == 0 && line.isEmpty && !lineOverflow }

    mutating func reset() {
        broken = false
        skip = 0
        depth = 0
        line.removeAll(keepingCapacity: true)
        lineOverflow = false
        outOfBand = false
    }

    /// Reads one transfer: `data` its captured prefix, `length` its full size. Reports what went by; marks the
    /// stream broken when the bytes are not RESP, or when uncaptured bytes held more than a payload.
    @inline(__always)
    mutating func feed(_ data: UnsafeRawBufferPointer, length: UInt64, _ report: (Item) -> Void) {
        guard !broken else { return }
        var index = 0
        while index < data.count && !broken {
            if skip > 0 {
                let available = min(Int64(data.count - index), skip)
                index += Int(available)
                skip -= available
                if skip == 0 { finishElement(report) }
                continue
            }
            // A header line: up to LF.
            let start = data.baseAddress! + index
            guard let newline = memchr(start, 0x0A, data.count - index) else {
                appendLine(UnsafeRawBufferPointer(start: start, count: data.count - index))
                index = data.count
                break
            }
            let piece = UnsafeRawBufferPointer(start: start, count: UnsafeRawPointer(newline) - start)
            index += piece.count + 1
            if line.isEmpty && !lineOverflow {
                header(piece, data: data, index: &index, report)
            } else {
                appendLine(piece)
                let overflow = lineOverflow
                swap(&line, &spareLine)
                lineOverflow = false
                var carried = spareLine
                spareLine = []
                carried.withUnsafeBytes { carried in
                    var none = 0
                    header(carried, data: UnsafeRawBufferPointer(start: nil, count: 0), index: &none, overflow: overflow, report)
                }
                carried.removeAll(keepingCapacity: true)
                spareLine = carried
            }
        }
        // What was not captured: only a payload may hide there.
        let uncaptured = length > UInt64(data.count) ? length - UInt64(data.count) : 0
        guard uncaptured > 0, !broken else { return }
        if skip >= Int64(clamping: uncaptured) && line.isEmpty && !lineOverflow {
            skip -= Int64(clamping: uncaptured)
            if skip == 0 { finishElement(report) }
        } else {
            broken = true
        }
    }

    private mutating func appendLine(_ bytes: UnsafeRawBufferPointer) {
        let room = Self.lineCapacity - line.count
        line.append(contentsOf: bytes.prefix(room))
        if bytes.count > room { lineOverflow = true }
    }

    /// One header line without its LF (`data`/`index`: the read, to report a bulk payload that follows).
    @inline(__always)
    private mutating func header(_ rawLine: UnsafeRawBufferPointer, data: UnsafeRawBufferPointer, index: inout Int,
                                 overflow: Bool = false, _ report: (Item) -> Void) {
        var text = rawLine
        if let last = text.last, last == 0x0D { text = UnsafeRawBufferPointer(start: text.baseAddress, count: text.count - 1) }
        guard let type = text.first else { return broken = true }
        let body = UnsafeRawBufferPointer(start: text.baseAddress! + 1, count: text.count - 1)
        let depth = self.depth
        let elementIndex = depth > 0 ? nextIndex[depth - 1] : 0
        if depth == 0 {
            outOfBand = type == UInt8(ascii: ">") || type == UInt8(ascii: "|")
            report(.start(type))
        }
        switch type {
        case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "_"), UInt8(ascii: "#"), UInt8(ascii: ","),
             UInt8(ascii: "("):
            report(.line(type: type, depth: depth, index: elementIndex, body))
            finishElement(report)
        case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
            guard !overflow, let length = Self.number(body), length >= -1, length <= Self.maxBulkLength else { return broken = true }
            if length == -1 {
                finishElement(report) // RESP2 null bulk
                return
            }
            let available = max(0, min(Int(length), data.count - index))
            report(.bulk(type: type, depth: depth, index: elementIndex,
                         UnsafeRawBufferPointer(start: data.baseAddress.map { $0 + index }, count: available), whole: available == Int(length)))
            // The payload and its CRLF are passed by length (the read loop, or the uncaptured rest).
            index += available
            skip = length + 2 - Int64(available)
        case UInt8(ascii: "*"), UInt8(ascii: "%"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "|"):
            guard !overflow, let count = Self.number(body), count >= -1, count <= Self.maxAggregateCount else { return broken = true }
            let elements = type == UInt8(ascii: "%") || type == UInt8(ascii: "|") ? count * 2 : count
            guard elements > 0 else {
                finishElement(report)
                return
            }
            guard depth < Self.maxDepth else { return broken = true }
            remaining[depth] = elements
            nextIndex[depth] = 0
            self.depth = depth + 1
        default:
            guard depth == 0, (type | 0x20) >= UInt8(ascii: "a"), (type | 0x20) <= UInt8(ascii: "z") else { return broken = true }
            // An inline command (`PING\r\n`, as telnet sends it): one line, one value.
            report(.line(type: type, depth: 0, index: 0, text))
            finishElement(report)
        }
    }

    /// An element ended: the aggregates it completes end too; at the top, the value ends.
    @inline(__always)
    private mutating func finishElement(_ report: (Item) -> Void) {
        while depth > 0 {
            let top = depth - 1
            remaining[top] -= 1
            nextIndex[top] += 1
            guard remaining[top] == 0 else { return }
            depth = top
        }
        report(.end(outOfBand: outOfBand))
        outOfBand = false
    }

    /// A decimal integer (optional sign), or nil.
    static func number(_ bytes: UnsafeRawBufferPointer) -> Int64? {
        guard !bytes.isEmpty, bytes.count <= 20 else { return nil }
        var value: Int64 = 0
        var negative = false
        for (position, byte) in bytes.enumerated() {
            if position == 0 && byte == UInt8(ascii: "-") { negative = true; continue }
            guard byte >= 0x30 && byte <= 0x39 else { return nil }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Int64(byte - 0x30))
            guard !overflow1 && !overflow2 else { return nil }
            value = sum
        }
        if negative && bytes.count == 1 { return nil }
        return negative ? -value : value
    }
}
