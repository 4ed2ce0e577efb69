/// One control line of the NATS client protocol, parsed: its operation and, for messages, the subject, reply
/// subject and sizes; for `-ERR`, its text. Byte slices point into the line (valid while it is).
struct NATSLine {
    enum Verb: Equatable {
        case info, connect, pub, hpub, sub, unsub, msg, hmsg, ping, pong, ok, err
    }

    /// nats-server refuses payloads above 64 MiB (`max_payload` at its largest); beyond is no NATS.
    static let maxPayload = 64 << 20

    var verb: Verb
    /// `PUB`/`HPUB`/`MSG`/`HMSG`/`SUB`: the subject.
    var subject = UnsafeRawBufferPointer(start: nil, count: 0)
    /// The reply subject, when the message has one.
    var reply: UnsafeRawBufferPointer?
    /// Header bytes (`HPUB`, `HMSG`; 0 otherwise) and total payload bytes (headers included).
    var headerBytes = 0
    var totalBytes = 0
    /// The rest of the line after the verb (`CONNECT`'s JSON, `-ERR`'s quoted text).
    var argument = UnsafeRawBufferPointer(start: nil, count: 0)

    /// Whether the message carries a payload (`PUB`, `HPUB`, `MSG`, `HMSG`).
    var isMessage: Bool { verb == .pub || verb == .hpub || verb == .msg || verb == .hmsg }

    /// The verbs by their upper-case bytes packed big-endian into an integer (7 bytes at most).
    private static let verbs: [UInt64: Verb] = {
        let names: [(String, Verb)] = [("INFO", .info), ("CONNECT", .connect), ("PUB", .pub), ("HPUB", .hpub), ("SUB", .sub),
                                       ("UNSUB", .unsub), ("MSG", .msg), ("HMSG", .hmsg), ("PING", .ping), ("PONG", .pong),
                                       ("+OK", .ok), ("-ERR", .err)]
        return Dictionary(uniqueKeysWithValues: names.map { name, verb in (name.utf8.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }, verb) })
    }()

    /// The verb a line (or the first bytes of a read) starts with, case-insensitive as nats-server reads it,
    /// followed by a space, a tab or the end of the line; nil for anything else.
    static func verb(_ bytes: UnsafeRawBufferPointer) -> (Verb, length: Int)? {
        var end = 0
        while end < bytes.count && end < 8 && bytes[end] != 0x20 && bytes[end] != 0x09 && bytes[end] != 0x0D && bytes[end] != 0x0A { end += 1 }
        guard end > 0, end <= 7 else { return nil }
        var word: UInt64 = 0
        for byte in bytes[0..<end] { word = word << 8 | UInt64(byte >= 0x61 && byte <= 0x7A ? byte - 0x20 : byte) }
        guard let verb = verbs[word] else { return nil }
        return (verb, end)
    }

    /// The line parsed; nil when it is not a well-formed NATS control line (unknown verb, wrong number of
    /// arguments, a size that is not a number or beyond 64 MiB, headers larger than the payload).
    init?(_ line: UnsafeRawBufferPointer) {
        guard let (verb, length) = Self.verb(line) else { return nil }
        self.verb = verb
        let rest = UnsafeRawBufferPointer(rebasing: line[length...])
        argument = rest
        var words = Words(rest)
        switch verb {
        case .ping, .pong, .ok:
            guard words.next() == nil else { return nil }
        case .info, .connect:
            // A JSON object follows.
            guard let first = rest.first(where: { $0 != 0x20 && $0 != 0x09 }), first == UInt8(ascii: "{") else { return nil }
        case .err:
            break
        case .sub, .unsub:
            // SUB <subject> [queue group] <sid>; UNSUB <sid> [max messages].
            let count = words.count()
            guard verb == .sub ? (count == 2 || count == 3) : (count == 1 || count == 2) else { return nil }
            if verb == .sub { subject = words.next()! }
        case .pub, .hpub, .msg, .hmsg:
            // PUB <subject> [reply] <size>; HPUB <subject> [reply] <headers> <total>;
            // MSG <subject> <sid> [reply] <size>; HMSG <subject> <sid> [reply] <headers> <total>.
            let sizes = verb == .hpub || verb == .hmsg ? 2 : 1
            let fixed = 1 + (verb == .msg || verb == .hmsg ? 1 : 0) + sizes
            let count = words.count()
            guard count == fixed || count == fixed + 1 else { return nil }
            subject = words.next()!
            guard Self.validSubject(subject) else { return nil }
            if verb == .msg || verb == .hmsg { _ = words.next() }
            if count == fixed + 1 {
                reply = words.next()!
                guard Self.validSubject(reply!) else { return nil }
            }
            if sizes == 2 {
                guard let headers = words.next().flatMap(Self.number) else { return nil }
                headerBytes = headers
            }
            guard let total = words.next().flatMap(Self.number), total >= headerBytes else { return nil }
            totalBytes = total
        }
    }

    /// Printable ASCII without spaces (`split` already took those out); nats-server accepts UTF-8 too.
    static func validSubject(_ subject: UnsafeRawBufferPointer) -> Bool {
        !subject.isEmpty && subject.allSatisfy { $0 > 0x20 && $0 != 0x7F }
    }

    /// A decimal number of at most 9 digits, within `maxPayload`.
    static func number(_ word: UnsafeRawBufferPointer) -> Int? {
        guard !word.isEmpty, word.count <= 9, word.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        let value = word.reduce(0) { $0 * 10 + Int($1 - 0x30) }
        return value <= maxPayload ? value : nil
    }

    /// The words of a line separated by spaces or tabs, without allocation.
    struct Words {
        private let line: UnsafeRawBufferPointer
        private var index = 0

        init(_ line: UnsafeRawBufferPointer) { self.line = line }

        private static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }

        mutating func next() -> UnsafeRawBufferPointer? {
            while index < line.count && Self.isSpace(line[index]) { index += 1 }
            guard index < line.count else { return nil }
            let start = index
            while index < line.count && !Self.isSpace(line[index]) { index += 1 }
            return UnsafeRawBufferPointer(rebasing: line[start..<index])
        }

        /// How many words remain (the position does not move).
        func count() -> Int {
            var copy = self
            var count = 0
            while copy.next() != nil { count += 1 }
            return count
        }
    }
}
