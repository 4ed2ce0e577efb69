import Synchronization
import Telemetry
import TracerFramework

/// memcached's binary protocol (memcached's doc/protocol-binary.txt): each message is a 24-byte header — magic
/// (0x80 request, 0x81 response), opcode, key length, extras length, data type, vbucket or status, total body
/// length, opaque, CAS — then extras, key and value. An incremental reader of one direction: headers may be split
/// over reads, bodies are skipped by length (also where their bytes were not captured); a body's first bytes
/// (extras and key) are kept.
struct MemcachedBinaryStream {
    static let headerLength = 24
    /// Body bytes kept (extras and the key: memcached's keys are at most 250 bytes).
    static let keptCapacity = 320
    /// Longest body accepted: memcached's largest item (`-I 1024m`) with its extras and key.
    static let maxBodyLength = (1 << 30) + 512

    struct Header {
        var magic: UInt8
        var opcode: UInt8
        var keyLength: Int
        var extrasLength: Int
        /// Requests: vbucket; responses: the status.
        var status: UInt16
        var bodyLength: Int
        var opaque: UInt32

        init(_ bytes: UnsafeRawBufferPointer) {
            magic = bytes[0]
            opcode = bytes[1]
            keyLength = Int(bytes[2]) << 8 | Int(bytes[3])
            extrasLength = Int(bytes[4])
            status = UInt16(bytes[6]) << 8 | UInt16(bytes[7])
            bodyLength = Int(bytes[8]) << 24 | Int(bytes[9]) << 16 | Int(bytes[10]) << 8 | Int(bytes[11])
            opaque = UInt32(bytes[12]) << 24 | UInt32(bytes[13]) << 16 | UInt32(bytes[14]) << 8 | UInt32(bytes[15])
        }

        /// A header this protocol could send: the magic, data type 0 (raw bytes), a key within memcached's limit,
        /// a body that holds the extras and key and stays within the item limit.
        static func valid(_ bytes: UnsafeRawBufferPointer, magic: UInt8) -> Bool {
            guard bytes.count >= headerLength, bytes[0] == magic, bytes[5] == 0 else { return false }
            let header = Header(bytes)
            return header.keyLength <= 250 && header.extrasLength <= 32 && header.bodyLength >= header.keyLength + header.extrasLength
                && header.bodyLength <= maxBodyLength
        }
    }

    /// One message that went by: its header and its body's first bytes.
    struct Message {
        var header: Header
        var body: UnsafeRawBufferPointer
        /// Where the message starts in this direction's byte stream.
        var start: UInt64
    }

    private let magic: UInt8
    /// The input stopped being this protocol, or its uncaptured part held a header.
    private(set) var broken = false
    private var headerBytes: [UInt8] = []
    private var header: Header?
    private var messageStart: UInt64 = 0
    private var remaining = 0
    private var kept: [UInt8] = []

    init(magic: UInt8) {
        self.magic = magic
        headerBytes.reserveCapacity(Self.headerLength)
        kept.reserveCapacity(64)
    }

    mutating func reset() {
        self = MemcachedBinaryStream(magic: magic)
    }

    mutating func feed(_ data: UnsafeRawBufferPointer, length: UInt64, position: UInt64, _ report: (Message) -> Void) {
        guard !broken else { return }
        var index = 0
        while index < data.count && !broken {
            if header != nil {
                let take = min(remaining, data.count - index)
                let room = Self.keptCapacity - kept.count
                if room > 0 { kept.append(contentsOf: UnsafeRawBufferPointer(rebasing: data[index..<(index + min(room, take))])) }
                index += take
                remaining -= take
                if remaining == 0 { finish(report) }
                continue
            }
            if headerBytes.isEmpty { messageStart = position + UInt64(index) }
            let take = min(Self.headerLength - headerBytes.count, data.count - index)
            headerBytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: data[index..<(index + take)]))
            index += take
            guard headerBytes.count == Self.headerLength else { continue }
            let valid = headerBytes.withUnsafeBytes { Header.valid($0, magic: magic) }
            guard valid else { return broken = true }
            header = headerBytes.withUnsafeBytes { Header($0) }
            headerBytes.removeAll(keepingCapacity: true)
            remaining = header!.bodyLength
            kept.removeAll(keepingCapacity: true)
            if remaining == 0 { finish(report) }
        }
        let uncaptured = length > UInt64(data.count) ? length - UInt64(data.count) : 0
        guard uncaptured > 0, !broken else { return }
        if header != nil && UInt64(remaining) >= uncaptured {
            remaining -= Int(uncaptured)
            if remaining == 0 { finish(report) }
        } else {
            broken = true
        }
    }

    private mutating func finish(_ report: (Message) -> Void) {
        guard let header else { return }
        self.header = nil
        let kept = self.kept
        kept.withUnsafeBytes { report(Message(header: header, body: $0, start: messageStart)) }
    }
}

/// The binary protocol's opcodes (doc/protocol-binary.txt): the operation each names, as the text protocol
/// spells it (`getq`, `getk` and `getkq` are `get`), and whether it is quiet (no response on success; GetQ none on
/// a miss either).
enum MemcachedOpcodes {
    static func operation(_ opcode: UInt8) -> String? {
        switch opcode {
        case 0x00, 0x09, 0x0C, 0x0D: "get"
        case 0x01, 0x11: "set"
        case 0x02, 0x12: "add"
        case 0x03, 0x13: "replace"
        case 0x04, 0x14: "delete"
        case 0x05, 0x15: "incr"
        case 0x06, 0x16: "decr"
        case 0x07, 0x17: "quit"
        case 0x08, 0x18: "flush_all"
        case 0x0A: "noop"
        case 0x0B: "version"
        case 0x0E, 0x19: "append"
        case 0x0F, 0x1A: "prepend"
        case 0x10: "stats"
        case 0x1C: "touch"
        case 0x1D, 0x1E, 0x23, 0x24: "gat"
        default: nil
        }
    }

    static func isQuiet(_ opcode: UInt8) -> Bool {
        [0x09, 0x0D, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1E, 0x24].contains(opcode)
    }

    /// Statuses that are outcomes, not errors: success, key not found, key exists, item not stored.
    static func isError(_ status: UInt16) -> Bool { ![0x0000, 0x0001, 0x0002, 0x0005].contains(status) }
}

/// One binary-protocol connection: requests wait in order and each response names its request by opcode and
/// opaque. A quiet request (GetQ, SetQ, …) answered by nothing succeeded (or, for GetQ, missed): it ends when a
/// later request's response comes (memcached answers in order). A non-quiet request passed over was lost: dropped
/// and counted. A status other than success, not found, exists or not stored is an error (its status code as
/// `0x0081`).
final class MemcachedBinaryConnectionParser: ConnectionParser {
    private struct Pending {
        var opcode: UInt8
        var opaque: UInt32
        var text: String?
        var start: UInt64
        var pid: UInt32
        var identity: SpanIdentity
    }

    let kind: ExchangeKind
    private let connection: CaptureConnection
    private let role: ExchangeRole
    private let queryText: DatabaseQueryText
    private let counters: MemcachedTracerCounters
    private var requests = MemcachedBinaryStream(magic: 0x80)
    private var responses = MemcachedBinaryStream(magic: 0x81)
    private var pending: [Pending] = []

    init(connection: CaptureConnection, role: ExchangeRole, queryText: DatabaseQueryText, counters: MemcachedTracerCounters) {
        self.connection = connection
        self.role = role
        self.queryText = queryText
        self.counters = counters
        kind = ExchangeKind(.database, role)
        pending.reserveCapacity(16)
    }

    private var requestDirection: CaptureChunk.Direction { role == .client ? .send : .receive }

    func consume(_ chunk: CaptureChunk, context: ParserContext, into exchanges: inout [Exchange]) {
        if chunk.direction == requestDirection {
            if requests.broken || responses.broken {
                // Resume at a request that starts this read, once nothing waits.
                guard pending.isEmpty, MemcachedBinaryStream.Header.valid(chunk.data, magic: 0x80) else { return }
                requests.reset()
                responses.reset()
            }
            requests.feed(chunk.data, length: chunk.length, position: context.position) { request($0, chunk: chunk, context: context) }
            if requests.broken { desynchronized() }
        } else {
            guard !requests.broken, !responses.broken else { return }
            responses.feed(chunk.data, length: chunk.length, position: context.position) { response($0, at: chunk.timestamp, into: &exchanges) }
            if responses.broken { desynchronized() }
        }
    }

    func close(at timestamp: UInt64, context: ParserContext, into exchanges: inout [Exchange]) {
        counters.withoutReply.add(UInt64(pending.count), ordering: .relaxed)
        pending.removeAll()
    }

    private func desynchronized() {
        counters.malformed.add(1, ordering: .relaxed)
        counters.withoutReply.add(UInt64(pending.count), ordering: .relaxed)
        pending.removeAll(keepingCapacity: true)
    }

    private func request(_ message: MemcachedBinaryStream.Message, chunk: CaptureChunk, context: ParserContext) {
        let header = message.header
        let fingerprint = UInt64(header.opcode) << 32 | UInt64(header.bodyLength)
        let identity = role == .server
            ? context.identity(incoming: nil, requestStart: message.start, fingerprint: fingerprint)
            : context.clientIdentity(goid: chunk.goid, carried: nil, requestStart: message.start, fingerprint: fingerprint)
        if pending.count >= MemcachedConnectionParser.maxPending {
            pending.removeFirst()
            counters.abandoned.add(1, ordering: .relaxed)
        }
        pending.append(Pending(opcode: header.opcode, opaque: header.opaque, text: text(message), start: chunk.timestamp, pid: chunk.pid,
                               identity: identity))
    }

    /// `db.query.text`: the operation and its key (sanitized: `?`).
    private func text(_ message: MemcachedBinaryStream.Message) -> String? {
        guard queryText != .off, let operation = MemcachedOpcodes.operation(message.header.opcode) else { return nil }
        guard message.header.keyLength > 0 else { return operation }
        guard queryText == .full else { return operation + " ?" }
        let key = message.body.dropFirst(message.header.extrasLength).prefix(message.header.keyLength)
        return operation + " " + String(decoding: key, as: UTF8.self) + (key.count < message.header.keyLength ? "…" : "")
    }

    private func response(_ message: MemcachedBinaryStream.Message, at end: UInt64, into exchanges: inout [Exchange]) {
        let header = message.header
        guard let index = pending.firstIndex(where: { $0.opcode == header.opcode && $0.opaque == header.opaque }) else {
            counters.unmatchedResponses.add(1, ordering: .relaxed)
            return
        }
        // A stat response per statistic: the last one has no key and no body.
        if MemcachedOpcodes.operation(header.opcode) == "stats" && header.bodyLength > 0 && header.status == 0 { return }
        for skipped in pending[..<index] {
            if MemcachedOpcodes.isQuiet(skipped.opcode) {
                append(skipped, failed: false, code: nil, end: end, into: &exchanges)
            } else {
                counters.withoutReply.add(1, ordering: .relaxed)
            }
        }
        let item = pending[index]
        pending.removeFirst(index + 1)
        let failed = MemcachedOpcodes.isError(header.status)
        append(item, failed: failed, code: failed ? "0x" + String(header.status, radix: 16).leftPadded(to: 4) : nil, end: end, into: &exchanges)
    }

    private func append(_ item: Pending, failed: Bool, code: String?, end: UInt64, into exchanges: inout [Exchange]) {
        guard let operation = MemcachedOpcodes.operation(item.opcode), operation != "quit" else { return }
        exchanges.append(.database(DatabaseExchange(
            pid: item.pid, role: role, system: "memcached", operation: operation, start: item.start, end: end, identity: item.identity,
            queryText: item.text, failed: failed, statusCode: code, local: connection.local, peer: connection.peer)))
    }
}

private extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
