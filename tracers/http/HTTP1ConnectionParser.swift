import Synchronization
import Telemetry
import TracerFramework

/// Claims connections whose first bytes are an HTTP/1.x request: read first, the process is the server;
/// written first, the client. HTTP/2's preface (`PRI * HTTP/2.0`) is not claimed.
struct HTTP1Parser: ProtocolParser {
    var protocolName: String { "http/1" }
    let counters: HTTPTracerCounters

    func claim(_ chunk: CaptureChunk, connection: CaptureConnection) -> (any ConnectionParser)? {
        guard let head = HTTPMessageParser.parseRequest(chunk.data), head.method != "PRI",
              head.version.map({ $0.hasPrefix("1.") }) ?? true else { return nil }
        return HTTP1ConnectionParser(connection: connection, role: chunk.direction == .receive ? .server : .client, counters: counters)
    }
}

/// One HTTP/1.x connection, chunk by chunk, in order: requests (several when pipelined, heads split over
/// reads), then responses matched to them in order. A response ends when its framing says its last byte
/// crossed the socket (RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; `Content-Length`; the last chunk
/// of a chunked body), or else when the next request starts or the connection closes. Byte counts come
/// from every transfer, also those without captured bytes (sendfile), so a download ends when its bytes
/// were sent, not when its head was written.
final class HTTP1ConnectionParser: ConnectionParser {
    /// A request seen, waiting for (or receiving) its response.
    private struct Pending {
        var pid: UInt32
        var head: HTTPRequestHead
        var start: UInt64
        var lastRequestByte: UInt64
        var goid: UInt64
        var requestBytes: UInt64
        var identity: SpanIdentity
        /// Where the request starts in the connection's request-direction byte stream (same-host linking).
        var streamStart: UInt64

        /// Bytes of the request by its framing (head and body); nil when unknown (chunked, head cut off).
        var expectedBytes: UInt64? {
            guard let headLength = head.headLength, !head.isChunked else { return nil }
            return UInt64(headLength) + UInt64(max(head.contentLength ?? 0, 0))
        }
    }

    /// Most requests waiting for responses on one connection (pipelining); older ones are abandoned.
    static let maxPending = 64
    /// Largest request head assembled over several reads.
    static let maxHeadBuffer = 4096

    let kind: ExchangeKind
    private let connection: CaptureConnection
    private let role: ExchangeRole
    private let counters: HTTPTracerCounters
    private var pending: [Pending] = []
    /// Bytes of a request head that did not fit the read that started it (the head continues in the next).
    private var headBuffer: [UInt8] = []
    /// A few bytes of the next request read on their own (Go's net/http background read takes one byte).
    private var carry: [UInt8] = []
    private var carryTimestamp: UInt64 = 0
    /// The response of `pending.first`, once its head was seen.
    private var response: HTTPResponseHead?
    private var responseBytes: UInt64 = 0
    private var responseEnd: UInt64 = 0

    init(connection: CaptureConnection, role: ExchangeRole, counters: HTTPTracerCounters) {
        self.connection = connection
        self.role = role
        self.counters = counters
        kind = ExchangeKind(.http, role)
    }

    private var requestDirection: CaptureChunk.Direction { role == .server ? .receive : .send }

    func consume(_ chunk: CaptureChunk, context: ParserContext, into exchanges: inout [Exchange]) {
        if chunk.direction == requestDirection {
            request(chunk, context: context, into: &exchanges)
        } else {
            respond(chunk, context: context, into: &exchanges)
        }
    }

    func close(at timestamp: UInt64, context: ParserContext, into exchanges: inout [Exchange]) {
        if response != nil { complete(context: context, into: &exchanges) }
        while !pending.isEmpty { complete(context: context, into: &exchanges) }
    }

    // MARK: Requests

    private func request(_ chunk: CaptureChunk, context: ParserContext, into exchanges: inout [Exchange]) {
        if !headBuffer.isEmpty {
            continueHead(chunk, context: context)
            return
        }
        guard !carry.isEmpty else {
            request(chunk.data, chunk: chunk, start: chunk.timestamp, context: context, into: &exchanges)
            return
        }
        var joined: [UInt8] = []
        joined.reserveCapacity(carry.count + chunk.data.count)
        joined += carry
        joined += chunk.data
        let start = carryTimestamp
        carry = []
        joined.withUnsafeBytes { request($0, chunk: chunk, start: start, context: context, into: &exchanges) }
    }

    /// `data`: the chunk's bytes, or those of a carried prefix and the chunk's.
    private func request(_ data: UnsafeRawBufferPointer, chunk: CaptureChunk, start: UInt64, context: ParserContext,
                         into exchanges: inout [Exchange]) {
        // A new request: a request line with its version (or cut off by the capture), while no request
        // still expects body bytes.
        let bodyExpected = pending.last.map { last in last.expectedBytes.map { last.requestBytes < $0 } ?? false } ?? false
        guard !bodyExpected, let head = HTTPMessageParser.parseRequest(data), head.version != nil || data.count < chunk.length else {
            bodyBytes(chunk, data: data)
            return
        }
        // The response in progress had no framing: it ended with its last byte, before this request.
        if response != nil { complete(context: context, into: &exchanges) }
        requests(in: data, first: head, chunk: chunk, start: start, extra: UInt64(data.count - chunk.data.count), context: context)
    }

    /// Bytes in the request direction that start no request: the body of the last request, or the first
    /// bytes of the next one read on their own.
    private func bodyBytes(_ chunk: CaptureChunk, data: UnsafeRawBufferPointer) {
        if var last = pending.last, response == nil || pending.count > 1 {
            last.requestBytes += chunk.length
            last.lastRequestByte = chunk.timestamp
            pending[pending.count - 1] = last
        } else if data.count < 16 && chunk.isComplete && data.allSatisfy({ $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) {
            carry = Array(data)
            carryTimestamp = chunk.timestamp
        }
    }

    /// The requests that start at the beginning of `data` (several when pipelined into one write).
    /// `first`: the head already parsed at the start of `data`.
    private func requests(in data: UnsafeRawBufferPointer, first: HTTPRequestHead, chunk: CaptureChunk, start: UInt64, extra: UInt64,
                          context: ParserContext) {
        var offset = 0
        let total = chunk.length + extra
        while offset < data.count {
            let rest = UnsafeRawBufferPointer(rebasing: data[offset...])
            guard let head = offset == 0 ? first : HTTPMessageParser.parseRequest(rest) else { break }
            let bodyLength = head.isChunked ? nil : head.contentLength ?? 0
            let end = head.headLength.flatMap { length in bodyLength.map { offset + length + $0 } }
            let ownBytes = end.map { UInt64($0 - offset) } ?? (total - UInt64(offset))
            // Carried bytes (`extra`) came in the reads before this chunk.
            let streamStart = (context.position + UInt64(offset)) - min(extra, context.position + UInt64(offset))
            add(head, start: start, chunk: chunk, bytes: min(ownBytes, total - UInt64(offset)), streamStart: streamStart, context: context)
            if head.headLength == nil, chunk.isComplete, rest.count < Self.maxHeadBuffer {
                headBuffer = Array(rest) // the head goes on in the next read
                return
            }
            guard let end, end < data.count, UInt64(end) < total else { return }
            offset = end
        }
    }

    /// More of a request head that the previous read cut off.
    private func continueHead(_ chunk: CaptureChunk, context: ParserContext) {
        headBuffer += chunk.data.prefix(Self.maxHeadBuffer - headBuffer.count)
        let complete = headBuffer.count >= Self.maxHeadBuffer || !chunk.isComplete
        guard let head = headBuffer.withUnsafeBytes({ HTTPMessageParser.parseRequest($0) }), var last = pending.popLast() else {
            headBuffer = []
            return
        }
        last.head = head
        last.requestBytes += chunk.length
        last.lastRequestByte = chunk.timestamp
        if role == .server, last.goid == 0 { last.goid = chunk.goid }
        last.identity = identity(for: head, goid: last.goid, streamStart: last.streamStart, context: context)
        pending.append(last)
        if head.headLength != nil || complete { headBuffer = [] }
    }

    private func add(_ head: HTTPRequestHead, start: UInt64, chunk: CaptureChunk, bytes: UInt64, streamStart: UInt64, context: ParserContext) {
        if pending.count >= Self.maxPending {
            pending.removeFirst()
            counters.abandoned.add(1, ordering: .relaxed)
        }
        let identity = identity(for: head, goid: chunk.goid, streamStart: streamStart, context: context)
        pending.append(Pending(pid: chunk.pid, head: head, start: start, lastRequestByte: chunk.timestamp, goid: chunk.goid, requestBytes: bytes,
                               identity: identity, streamStart: streamStart))
        if role == .server { context.traceContexts.startServing(.init(pid: chunk.pid, goid: chunk.goid), identity) }
    }

    /// The framework decides (``ParserContext``): a server span is the child of the traced client at the other
    /// end of the connection on this host, else continues an incoming traceparent; a client span takes the
    /// ids of a traceparent it carries, else is the child of the request its goroutine serves.
    /// `streamStart`: where the request starts in its byte stream.
    private func identity(for head: HTTPRequestHead, goid: UInt64, streamStart: UInt64, context: ParserContext) -> SpanIdentity {
        // The request line identifies the request on both ends of the connection.
        var hasher = Hasher()
        hasher.combine(head.method)
        hasher.combine(head.target)
        let fingerprint = UInt64(bitPattern: Int64(hasher.finalize())) | 1
        if role == .server { return context.identity(incoming: head.traceContext, goid: goid, requestStart: streamStart, fingerprint: fingerprint) }
        return context.clientIdentity(goid: goid, carried: head.traceContext, requestStart: streamStart, fingerprint: fingerprint)
    }

    // MARK: Responses

    private func respond(_ chunk: CaptureChunk, context: ParserContext, into exchanges: inout [Exchange]) {
        guard !pending.isEmpty else {
            counters.unmatchedResponses.add(1, ordering: .relaxed)
            return
        }
        headBuffer = []
        var offset = 0
        var remaining = chunk.length
        while remaining > 0, !pending.isEmpty {
            if response == nil {
                guard offset < chunk.data.count,
                      let head = HTTPMessageParser.parseResponse(UnsafeRawBufferPointer(rebasing: chunk.data[offset...])) else {
                    // Not a response head where one must start: count the bytes, framing unknown.
                    if offset == 0 { counters.unparsedResponses.add(1, ordering: .relaxed) }
                    return
                }
                if (100..<200).contains(head.statusCode) {
                    // An interim response (100 Continue): the final one follows.
                    guard let length = head.headLength, UInt64(length) < remaining else { return }
                    offset += length
                    remaining -= UInt64(length)
                    continue
                }
                response = head
                responseBytes = 0
            }
            let needed = expectedLength().map { $0 > responseBytes ? $0 - responseBytes : 0 }
            let taken = needed.map { min($0, remaining) } ?? remaining
            responseBytes += taken
            remaining -= taken
            offset += Int(clamping: taken)
            responseEnd = chunk.timestamp
            let framedEnd = needed.map { taken == $0 } ?? false
            let chunkedEnd = response?.isChunked == true && remaining == 0 && endsLastChunk(chunk.tail)
            guard framedEnd || chunkedEnd else { return }
            complete(context: context, into: &exchanges)
        }
    }

    /// Bytes of the current response by its framing (head and body); nil when only its end tells.
    private func expectedLength() -> UInt64? {
        guard let response, let headLength = response.headLength, let request = pending.first else { return nil }
        if request.head.method == "HEAD" || response.statusCode == 204 || response.statusCode == 304 { return UInt64(headLength) }
        if response.isChunked { return nil }
        return response.contentLength.map { UInt64(headLength) + UInt64(max($0, 0)) }
    }

    /// Whether a chunked body ends with the last bytes of this transfer: `0 CRLF CRLF`.
    private func endsLastChunk(_ tail: UnsafeRawBufferPointer) -> Bool {
        tail.count >= 5 && tail.suffix(5).elementsEqual("0\r\n\r\n".utf8)
    }

    // MARK: Exchanges

    /// Ends the exchange of `pending.first` (with the response seen so far, or none).
    private func complete(context: ParserContext, into exchanges: inout [Exchange]) {
        guard !pending.isEmpty else { return }
        // The only request (no pipelining, the common case) is popped: `removeFirst` goes through replaceSubrange.
        let request = pending.count == 1 ? pending.removeLast() : pending.removeFirst()
        let response = self.response
        self.response = nil
        var identity = request.identity
        if role == .server {
            let goroutine = TraceContexts.Goroutine(pid: request.pid, goid: request.goid)
            // Ids BPF decided for this request (context propagation) win.
            if let decided = context.traceContexts.finishServing(goroutine, spanID: identity.spanID) { identity = decided }
        }
        // The head's fields are read in place: a copy of the whole head is a reference count per string.
        var requestBodySize: Int64?
        if let length = request.head.contentLength {
            requestBodySize = Int64(length)
        } else if !request.head.isChunked, let headLength = request.head.headLength, request.requestBytes >= UInt64(headLength) {
            requestBodySize = Int64(clamping: request.requestBytes - UInt64(headLength))
        }
        if response == nil { counters.withoutResponse.add(1, ordering: .relaxed) }
        exchanges.append(.http(HTTPExchange(
            pid: request.pid, role: role, method: request.head.method, path: request.head.path, query: request.head.query,
            target: request.head.target, tls: connection.isTLS, start: request.start,
            end: response == nil ? request.lastRequestByte : responseEnd, identity: identity,
            protocolVersion: response?.version ?? request.head.version, statusCode: response?.statusCode,
            requestBodySize: requestBodySize, responseBodySize: response?.contentLength.map { Int64($0) },
            local: connection.local, peer: connection.peer)))
    }
}

/// Counters of the HTTP/1 parser, for the agent's self-metrics.
public final class HTTPTracerCounters: Sendable {
    /// Requests dropped unanswered because too many were pipelined on one connection.
    public let abandoned = Atomic<UInt64>(0)
    /// Exchanges that ended (close, next request) before a response was seen.
    public let withoutResponse = Atomic<UInt64>(0)
    /// Response bytes with no request waiting for them (a connection seen mid-stream).
    public let unmatchedResponses = Atomic<UInt64>(0)
    /// Bytes where a response head had to start but none did.
    public let unparsedResponses = Atomic<UInt64>(0)

    public init() {}
}
