import Synchronization
import Telemetry
import TracerFramework

/// Claims HTTP/2 connections (RFC 9113): the client preface (`PRI * HTTP/2.0`, prior knowledge) read or
/// written, a server's SETTINGS written before anything was read, an HTTP/1.1 request asking to upgrade to
/// `h2c` (RFC 7540 §3.2), or — for a connection opened before the agent — a run of plausible frames whose
/// header block shows the side (a request's pseudo-headers read ⇒ server).
struct HTTP2Parser: ProtocolParser {
    var protocolName: String { "http/2" }
    let counters: HTTP2TracerCounters

    func claim(_ chunk: CaptureChunk, connection: CaptureConnection) -> (any ConnectionParser)? {
        let data = chunk.data
        let sent = chunk.direction == .send
        let prefaceLength = min(data.count, HTTP2FrameReader.preface.count)
        if prefaceLength >= 4, data.prefix(prefaceLength).elementsEqual(HTTP2FrameReader.preface.prefix(prefaceLength)) {
            return HTTP2ConnectionParser(connection: connection, role: sent ? .client : .server, start: .preface, counters: counters)
        }
        if let upgrade = HTTP1Upgrade.request(data) {
            return HTTP2ConnectionParser(connection: connection, role: sent ? .client : .server, start: .upgrade(upgrade), counters: counters)
        }
        guard HTTP2FrameReader.startsWithFrames(data), let header = HTTP2FrameHeader(data) else { return nil }
        if sent && header.type == HTTP2FrameHeader.FrameType.settings && header.flags & HTTP2FrameHeader.Flag.ack == 0 {
            // A server's connection preface: its SETTINGS, written before it read the client's.
            return HTTP2ConnectionParser(connection: connection, role: .server, start: .serverSettings, counters: counters)
        }
        guard let isRequest = HTTP2ConnectionParser.firstHeaderBlockIsRequest(data) else { return nil }
        let role: ExchangeRole = isRequest != sent ? .server : .client
        counters.joinedMidStream.add(1, ordering: .relaxed)
        return HTTP2ConnectionParser(connection: connection, role: role, start: .midStream, counters: counters)
    }
}

/// One HTTP/2 connection: each direction's frames and HPACK decoder (RFC 7541: its dynamic table is the
/// peer encoder's, per direction), streams by id, one exchange per stream when its response ends
/// (END_STREAM) or it is reset. gRPC streams (`content-type: application/grpc*`) become RPC exchanges with
/// the status of their trailers; the others HTTP exchanges with `network.protocol.version` 2.
final class HTTP2ConnectionParser: ConnectionParser {
    enum Start {
        case preface, serverSettings, midStream
        case upgrade(HTTP1Upgrade)
    }

    /// A stream seen from its request headers until its response ends.
    struct Stream {
        var pid: UInt32
        var start: UInt64
        var end: UInt64
        var method: String?
        var path: String?
        var requestContentType: String?
        var responseContentType: String?
        var traceparent: W3CTraceContext?
        var status: Int?
        var grpcStatus: Int?
        var requestBodyBytes: Int64 = 0
        var responseBodyBytes: Int64 = 0
        var responseHeadersSeen = false
        /// A header block after the response's headers: trailers (every gRPC response ends with them).
        var responseTrailersSeen = false
        /// The response ended with END_STREAM (not a reset, not a closed connection).
        var responseEnded = false
        /// RST_STREAM ended it.
        var wasReset = false
        var partialHeaders = false
        /// When frames of the stream's connection were lost while it was open (0: never): its end may have
        /// been among them, and its body sizes are unknown.
        var framesLostAt: UInt64 = 0
        var identity: SpanIdentity
        /// A client's HTTP request whose span another tracer makes (Go's net/http client): none made here.
        var ofAnotherTracer = false
        /// A server stream, as the framework knows it while its handler runs (``TraceContexts/openServedStream(_:_:)``).
        var served: TraceContexts.Stream?

        var isGRPC: Bool {
            grpcStatus != nil || requestContentType?.hasPrefix("application/grpc") == true
                || responseContentType?.hasPrefix("application/grpc") == true
        }

        /// Partly decoded, with trailers and no content type known: gRPC whose `content-type` and
        /// `grpc-status` were compressed against table entries the agent never saw.
        var looksLikeGRPC: Bool {
            partialHeaders && responseTrailersSeen && requestContentType == nil && responseContentType == nil
        }
    }

    /// One direction: its frames, its HPACK decoder, the header block being assembled.
    struct Direction {
        var reader: HTTP2FrameReader
        var decoder: HPACKDecoder
        /// HEADERS/PUSH_PROMISE fragments waiting for END_HEADERS.
        var block: [UInt8] = []
        var blockStream: UInt32 = 0
        var blockEndsStream = false
        var blockIsPushPromise = false
        var assembling = false
        /// Bytes of an HTTP/1.1 upgrade head still to pass before the frames (nil: none).
        var http1Head: [UInt8]?
    }

    /// Most streams open at once on a connection (SETTINGS_MAX_CONCURRENT_STREAMS is commonly 100–250);
    /// beyond it the oldest is dropped and counted.
    static let maxStreams = 256
    /// Longest header block assembled from HEADERS and CONTINUATION frames.
    static let maxHeaderBlock = 65_536

    let kind: ExchangeKind
    private let connection: CaptureConnection
    private let role: ExchangeRole
    private let counters: HTTP2TracerCounters
    /// Requests the process reads (server) or writes (client).
    private var requests: Direction
    private var responses: Direction
    private var streams: [UInt32: Stream] = [:]
    private var scratch: [UInt8] = []
    /// The connection has carried gRPC: a stream whose content type was not decoded is taken as gRPC.
    private var carriesGRPC = false
    /// An upgrade the server declined: the connection is HTTP/1 and none of this parser's.
    private var declined = false

    init(connection: CaptureConnection, role: ExchangeRole, start: Start, counters: HTTP2TracerCounters) {
        self.connection = connection
        self.role = role
        self.counters = counters
        kind = ExchangeKind(.rpc, role)
        let synchronized: Bool
        if case .midStream = start { synchronized = false } else { synchronized = true }
        var expectsPreface = false
        if case .preface = start { expectsPreface = true }
        if case .serverSettings = start { expectsPreface = true }
        requests = Direction(reader: HTTP2FrameReader(expectingPreface: expectsPreface, synchronized: true),
                             decoder: HPACKDecoder(synchronized: synchronized))
        responses = Direction(reader: HTTP2FrameReader(expectingPreface: false, synchronized: true),
                              decoder: HPACKDecoder(synchronized: synchronized))
        if case .upgrade = start {
            requests.reader = HTTP2FrameReader(expectingPreface: true)
            requests.http1Head = []
            responses.http1Head = []
        }
        if case .upgrade(let upgrade) = start { pendingUpgrade = upgrade }
    }

    /// The upgraded request: stream 1, opened when its chunk is consumed.
    private var pendingUpgrade: HTTP1Upgrade?

    /// Bytes this connection's parser holds (HPACK tables and buffers), for the memory bound.
    var retainedBytes: Int {
        requests.decoder.tableSize + responses.decoder.tableSize + requests.block.capacity + responses.block.capacity
            + requests.reader.bufferedBytes + responses.reader.bufferedBytes + scratch.capacity
            + streams.count * MemoryLayout<Stream>.stride
    }

    private var requestDirection: CaptureChunk.Direction { role == .server ? .receive : .send }

    func consume(_ chunk: CaptureChunk, context: ParserContext, into exchanges: inout [Exchange]) {
        guard !declined else { return }
        let isRequest = chunk.direction == requestDirection
        var data = chunk.data
        var length = Int(clamping: chunk.length)
        if let upgrade = pendingUpgrade, isRequest {
            pendingUpgrade = nil
            open(streamID: 1, chunk: chunk, context: context) { stream in
                stream.method = upgrade.method
                stream.path = upgrade.target
                stream.traceparent = upgrade.traceparent
            }
        }
        if (isRequest ? requests.http1Head : responses.http1Head) != nil {
            guard let rest = passHTTP1Head(data, isRequest: isRequest) else { return }
            length -= data.count - rest
            data = UnsafeRawBufferPointer(rebasing: data[(data.count - rest)...])
        }
        // The reader is taken out while it feeds: its events change the rest of the direction.
        var reader = isRequest ? requests.reader : responses.reader
        withDirection(isRequest) { $0.reader = HTTP2FrameReader.idle }
        reader.feed(data, length: length) { handle($0, isRequest: isRequest, chunk: chunk, context: context, into: &exchanges) }
        withDirection(isRequest) { $0.reader = reader }
    }

    func close(at timestamp: UInt64, context: ParserContext, into exchanges: inout [Exchange]) {
        for id in streams.keys.sorted() {
            guard var stream = streams.removeValue(forKey: id) else { continue }
            // A stream whose frames were lost may have ended among them: it was last known alive then.
            if stream.end == 0 { stream.end = stream.framesLostAt != 0 ? stream.framesLostAt : timestamp }
            complete(stream, context: context, into: &exchanges)
        }
    }

    /// Passes the HTTP/1.1 head of an upgrade (the request, or the `101` response); returns how many bytes of
    /// `data` follow it (nil while the head continues, or when the server declined the upgrade).
    private func passHTTP1Head(_ data: UnsafeRawBufferPointer, isRequest: Bool) -> Int? {
        var head = (isRequest ? requests.http1Head : responses.http1Head) ?? []
        let before = head.count
        head.append(contentsOf: data.prefix(HTTP1Upgrade.maxHead - before))
        guard let end = HTTP1Upgrade.headEnd(head) else {
            if head.count >= HTTP1Upgrade.maxHead { decline() } else if isRequest { requests.http1Head = head } else { responses.http1Head = head }
            return nil
        }
        if !isRequest {
            guard HTTP1Upgrade.isSwitchingProtocols(head) else {
                decline()
                return nil
            }
        }
        if isRequest { requests.http1Head = nil } else { responses.http1Head = nil }
        return data.count - (end - before)
    }

    private func decline() {
        declined = true
        streams.removeAll()
        counters.declinedUpgrades.add(1, ordering: .relaxed)
    }

    // MARK: Frames

    private func handle(_ event: HTTP2FrameReader.Event, isRequest: Bool, chunk: CaptureChunk, context: ParserContext,
                        into exchanges: inout [Exchange]) {
        switch event {
        case .lost:
            counters.lostFrames.add(1, ordering: .relaxed)
            for id in streams.keys { streams[id]?.framesLostAt = chunk.timestamp }
            withDirection(isRequest) { direction in
                direction.decoder.desynchronize()
                direction.block.removeAll()
                direction.assembling = false
            }
        case .frame(let header, let payload):
            frame(header, payload: payload, isRequest: isRequest, chunk: chunk, context: context, into: &exchanges)
        case .truncated(let header, let prefix):
            truncatedHeaderBlock(header, prefix: prefix, isRequest: isRequest, chunk: chunk, context: context, into: &exchanges)
        }
    }

    private func withDirection<R>(_ isRequest: Bool, _ body: (inout Direction) -> R) -> R {
        isRequest ? body(&requests) : body(&responses)
    }

    private func frame(_ header: HTTP2FrameHeader, payload: UnsafeRawBufferPointer?, isRequest: Bool, chunk: CaptureChunk,
                       context: ParserContext, into exchanges: inout [Exchange]) {
        typealias FrameType = HTTP2FrameHeader.FrameType
        typealias Flag = HTTP2FrameHeader.Flag
        switch header.type {
        case FrameType.data:
            // In place: a stream copied out and back is a retain and release of each of its strings.
            guard let index = streams.index(forKey: header.streamID) else { return }
            if isRequest {
                streams.values[index].requestBodyBytes += Int64(header.length)
            } else {
                streams.values[index].responseBodyBytes += Int64(header.length)
                if header.flags & Flag.endStream != 0 {
                    var stream = streams.remove(at: index).value
                    stream.end = chunk.timestamp
                    stream.responseEnded = true
                    complete(stream, context: context, into: &exchanges)
                }
            }
        case FrameType.headers, FrameType.pushPromise:
            guard let payload else { return }
            guard let fragment = Self.headerBlockFragment(header, payload) else {
                counters.malformed.add(1, ordering: .relaxed)
                withDirection(isRequest) { $0.decoder.desynchronize() }
                return
            }
            withDirection(isRequest) { direction in
                direction.block.removeAll(keepingCapacity: true)
                direction.block.append(contentsOf: fragment)
                direction.blockStream = header.streamID
                direction.blockEndsStream = header.type == FrameType.headers && header.flags & Flag.endStream != 0
                direction.blockIsPushPromise = header.type == FrameType.pushPromise
                direction.assembling = true
            }
            if header.flags & Flag.endHeaders != 0 { headerBlock(isRequest: isRequest, chunk: chunk, context: context, into: &exchanges) }
        case FrameType.continuation:
            guard let payload else { return }
            let fits = withDirection(isRequest) { direction -> Bool in
                guard direction.assembling, direction.blockStream == header.streamID else { return false }
                guard direction.block.count + payload.count <= Self.maxHeaderBlock else {
                    direction.assembling = false
                    direction.block.removeAll()
                    direction.decoder.desynchronize()
                    return false
                }
                direction.block.append(contentsOf: payload)
                return true
            }
            guard fits else {
                counters.malformed.add(1, ordering: .relaxed)
                return
            }
            if header.flags & Flag.endHeaders != 0 { headerBlock(isRequest: isRequest, chunk: chunk, context: context, into: &exchanges) }
        case FrameType.settings:
            guard header.flags & Flag.ack == 0, let payload else { return }
            // SETTINGS_HEADER_TABLE_SIZE (0x1) bounds the table of the peer's encoder, i.e. of the decoder of
            // the other direction.
            var offset = 0
            while offset + 6 <= payload.count {
                let identifier = UInt16(payload[offset]) << 8 | UInt16(payload[offset + 1])
                let value = UInt32(payload[offset + 2]) << 24 | UInt32(payload[offset + 3]) << 16 | UInt32(payload[offset + 4]) << 8 | UInt32(payload[offset + 5])
                if identifier == 1 { withDirection(!isRequest) { $0.decoder.setSizeLimit(value) } }
                offset += 6
            }
        case FrameType.rstStream:
            guard var stream = streams.removeValue(forKey: header.streamID) else { return }
            stream.end = chunk.timestamp
            stream.wasReset = true
            counters.resetStreams.add(1, ordering: .relaxed)
            complete(stream, context: context, into: &exchanges)
        default:
            break
        }
    }

    /// The captured start of a HEADERS frame (or of a CONTINUATION of the block being assembled) cut by bytes
    /// the capture did not keep: the fields wholly inside it are decoded, the stream's headers are partial.
    /// (gRPC C-core writes a request's header block as one iovec per name and value: the capture gathers
    /// the first segments only.)
    private func truncatedHeaderBlock(_ header: HTTP2FrameHeader, prefix: UnsafeRawBufferPointer, isRequest: Bool, chunk: CaptureChunk,
                                      context: ParserContext, into exchanges: inout [Exchange]) {
        typealias Flag = HTTP2FrameHeader.Flag
        if header.type == HTTP2FrameHeader.FrameType.headers {
            var start = 0
            var end = header.length
            if header.flags & Flag.padded != 0 {
                guard !prefix.isEmpty else { return }
                start = 1
                end -= Int(prefix[0])
            }
            if header.flags & Flag.priority != 0 { start += 5 }
            end = min(end, prefix.count)
            guard start < end else { return }
            withDirection(isRequest) { direction in
                direction.block.removeAll(keepingCapacity: true)
                direction.block.append(contentsOf: UnsafeRawBufferPointer(rebasing: prefix[start..<end]))
                direction.blockStream = header.streamID
                direction.blockEndsStream = header.flags & Flag.endStream != 0
                direction.blockIsPushPromise = false
                direction.assembling = true
            }
        } else if header.type == HTTP2FrameHeader.FrameType.continuation {
            let continues = withDirection(isRequest) { direction -> Bool in
                guard direction.assembling, direction.blockStream == header.streamID,
                      direction.block.count + prefix.count <= Self.maxHeaderBlock else { return false }
                direction.block.append(contentsOf: prefix)
                return true
            }
            guard continues else { return }
        } else {
            return
        }
        headerBlock(isRequest: isRequest, truncated: true, chunk: chunk, context: context, into: &exchanges)
    }

    /// The header block fragment of a HEADERS or PUSH_PROMISE frame: without padding, priority fields and
    /// the promised stream id (RFC 9113 §6.2, §6.6); nil when they do not fit.
    static func headerBlockFragment(_ header: HTTP2FrameHeader, _ payload: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        var start = 0
        var end = payload.count
        if header.flags & HTTP2FrameHeader.Flag.padded != 0 {
            guard payload.count >= 1 else { return nil }
            start = 1
            end -= Int(payload[0])
        }
        if header.type == HTTP2FrameHeader.FrameType.headers && header.flags & HTTP2FrameHeader.Flag.priority != 0 { start += 5 }
        if header.type == HTTP2FrameHeader.FrameType.pushPromise { start += 4 }
        guard start <= end, end <= payload.count else { return nil }
        return UnsafeRawBufferPointer(rebasing: payload[start..<end])
    }

    // MARK: Header blocks

    /// The header fields this parser reads; no other value is kept.
    struct DecodedHeaders {
        var method: String?
        var path: String?
        var status: Int?
        var contentType: String?
        var grpcStatus: Int?
        var traceparent: W3CTraceContext?
        var unknownFields = 0
        var isRequest: Bool?
    }

    /// A complete header block of `direction`: decoded (HPACK state advances even for blocks no stream wants).
    /// A `truncated` block (its end not captured) ends in an error by design: partial, not malformed.
    private func headerBlock(isRequest: Bool, truncated: Bool = false, chunk: CaptureChunk, context: ParserContext,
                             into exchanges: inout [Exchange]) {
        var decoded = DecodedHeaders()
        var failed = false
        withDirection(isRequest) { direction in
            direction.assembling = false
            direction.block.withUnsafeBytes { block in
                do {
                    try direction.decoder.decode(block, scratch: &scratch) { Self.read($0, into: &decoded) }
                } catch {
                    failed = true
                }
            }
        }
        if failed && !truncated { counters.malformed.add(1, ordering: .relaxed) }
        let (streamID, endsStream, isPushPromise) = withDirection(isRequest) { ($0.blockStream, $0.blockEndsStream, $0.blockIsPushPromise) }
        guard !isPushPromise else { return }
        let partial = failed || truncated || decoded.unknownFields > 0
        if isRequest {
            guard streams[streamID] == nil else {
                // Request trailers.
                if partial { streams[streamID]?.partialHeaders = true }
                return
            }
            open(streamID: streamID, chunk: chunk, context: context) { stream in
                stream.method = decoded.method
                stream.path = decoded.path
                stream.requestContentType = decoded.contentType
                stream.traceparent = decoded.traceparent
                stream.partialHeaders = partial
            }
        } else {
            guard let index = streams.index(forKey: streamID) else {
                counters.unmatchedStreams.add(1, ordering: .relaxed)
                return
            }
            Self.response(decoded, partial: partial, into: &streams.values[index])
            if endsStream {
                var stream = streams.remove(at: index).value
                stream.end = chunk.timestamp
                stream.responseEnded = true
                complete(stream, context: context, into: &exchanges)
            }
        }
    }

    /// Response headers (the first block) or trailers (a later one) of `stream`.
    private static func response(_ decoded: DecodedHeaders, partial: Bool, into stream: inout Stream) {
        if !stream.responseHeadersSeen {
            stream.responseHeadersSeen = true
            stream.status = decoded.status
            stream.responseContentType = decoded.contentType
        } else {
            stream.responseTrailersSeen = true
        }
        if let code = decoded.grpcStatus { stream.grpcStatus = code }
        if partial { stream.partialHeaders = true }
    }

    /// Opens a stream from its request headers (its identity is decided now, so calls it makes can name it).
    private func open(streamID: UInt32, chunk: CaptureChunk, context: ParserContext, _ fill: (inout Stream) -> Void) {
        if streams.count >= Self.maxStreams, let oldest = streams.keys.min() {
            if let served = streams.removeValue(forKey: oldest)?.served { context.traceContexts.closeServedStream(served) }
            counters.abandonedStreams.add(1, ordering: .relaxed)
        }
        var stream = Stream(pid: chunk.pid, start: chunk.timestamp, end: 0, identity: SpanIdentity(traceID: .invalid, spanID: .invalid, parentSpanID: .invalid, flags: 0))
        fill(&stream)
        stream.ofAnotherTracer = role == .client && !stream.isGRPC && !carriesGRPC && context.isOwnedElsewhere(ExchangeKind(.http, .client))
        stream.identity = identity(of: stream, streamID: streamID, goid: chunk.goid, context: context)
        if role == .server {
            // The handler of a Go HTTP/2 or gRPC server runs on a goroutine of its own, which a tracer names.
            let served = TraceContexts.Stream(pid: chunk.pid, mover: chunk.goid, id: streamID)
            context.traceContexts.openServedStream(served, stream.identity)
            stream.served = served
        }
        streams[streamID] = stream
    }

    /// The framework decides (``ParserContext``): a server stream is the child of the traced client's stream at
    /// the other end of the connection on this host, else continues its traceparent; a client stream takes
    /// the ids of a traceparent it carries, else is the child of the request its goroutine serves. The two
    /// ends of a connection agree on a stream's id (where HTTP/1 uses the request's byte offset), and on its
    /// method and path when both were decoded.
    private func identity(of stream: Stream, streamID: UInt32, goid: UInt64, context: ParserContext) -> SpanIdentity {
        let link = Self.linkPosition | UInt64(streamID)
        var fingerprint: UInt64 = 0
        if let method = stream.method, let path = stream.path {
            var hasher = Hasher()
            hasher.combine(method)
            hasher.combine(path)
            fingerprint = UInt64(bitPattern: Int64(hasher.finalize())) | 1
        }
        if role == .server { return context.identity(incoming: stream.traceparent, goid: goid, requestStart: link, fingerprint: fingerprint) }
        return context.clientIdentity(goid: goid, carried: stream.traceparent, requestStart: link, fingerprint: fingerprint,
                                      ofAnotherTracer: stream.ofAnotherTracer, streamID: streamID)
    }

    /// Stream ids as link positions, apart from byte offsets (an h2c connection's upgrade request has one).
    static let linkPosition: UInt64 = 1 << 63

    /// Keeps the fields a span needs from one decoded field.
    private static func read(_ field: HPACKDecoder.Field, into decoded: inout DecodedHeaders) {
        guard case .known(let name, let value) = field else {
            decoded.unknownFields += 1
            return
        }
        guard let first = name.first else { return }
        if first == UInt8(ascii: ":") {
            switch name.count {
            case 7 where Self.equal(name, ":method"):
                decoded.method = String(decoding: value, as: UTF8.self)
                decoded.isRequest = true
            case 5 where Self.equal(name, ":path"):
                decoded.path = String(decoding: value, as: UTF8.self)
                decoded.isRequest = true
            case 7 where Self.equal(name, ":status"):
                decoded.status = decimal(value)
                if decoded.isRequest == nil { decoded.isRequest = false }
            case 7 where Self.equal(name, ":scheme"), 10 where Self.equal(name, ":authority"):
                decoded.isRequest = true
            default:
                break
            }
            return
        }
        switch name.count {
        case 12 where Self.equal(name, "content-type"):
            decoded.contentType = String(decoding: value.prefix(64), as: UTF8.self)
        case 11 where Self.equal(name, "grpc-status"):
            decoded.grpcStatus = decimal(value)
        case 11 where Self.equal(name, "traceparent"):
            decoded.traceparent = W3CTraceContext(traceparent: value)
        default:
            break
        }
    }

    /// Whether `bytes` are the literal's (byte by byte: no String indexing on the per-field path).
    static func equal(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        literal.utf8Bytes { expected in
            guard bytes.count == expected.count else { return false }
            for i in 0..<expected.count where bytes[i] != expected[i] { return false }
            return true
        }
    }

    static func decimal(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard !bytes.isEmpty, bytes.count <= 9 else { return nil }
        var value = 0
        for byte in bytes {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }

    /// For a chunk joined mid-stream: whether its first complete header block is a request's (its first
    /// decodable pseudo-header), decoded against an unknown dynamic table. Nil when no block says.
    static func firstHeaderBlockIsRequest(_ data: UnsafeRawBufferPointer) -> Bool? {
        var offset = 0
        var decoder = HPACKDecoder(synchronized: false)
        var scratch: [UInt8] = []
        while data.count - offset >= HTTP2FrameHeader.size {
            guard let header = HTTP2FrameHeader(UnsafeRawBufferPointer(rebasing: data[offset...])) else { return nil }
            let payloadStart = offset + HTTP2FrameHeader.size
            guard header.length <= data.count - payloadStart else { return nil }
            let payload = UnsafeRawBufferPointer(rebasing: data[payloadStart..<(payloadStart + header.length)])
            offset = payloadStart + header.length
            guard header.type == HTTP2FrameHeader.FrameType.headers, let fragment = headerBlockFragment(header, payload) else { continue }
            var decoded = DecodedHeaders()
            try? decoder.decode(fragment, scratch: &scratch) { read($0, into: &decoded) }
            if let isRequest = decoded.isRequest { return isRequest }
        }
        return nil
    }

    // MARK: Exchanges

    private func complete(_ stream: Stream, context: ParserContext, into exchanges: inout [Exchange]) {
        var stream = stream
        if let served = stream.served { context.traceContexts.closeServedStream(served) }
        // Its end was not seen and frames were lost while it was open: its trailers may have been among them.
        let endMayBeLost = stream.framesLostAt != 0 && !stream.responseEnded && !stream.wasReset
        if endMayBeLost { stream.partialHeaders = true }
        let finished = stream.responseHeadersSeen && (stream.grpcStatus != nil || stream.status != nil)
        if stream.partialHeaders { counters.partialHeaders.add(1, ordering: .relaxed) }
        if stream.isGRPC || stream.looksLikeGRPC { carriesGRPC = true }
        if stream.isGRPC || stream.looksLikeGRPC || (carriesGRPC && stream.partialHeaders && stream.requestContentType == nil) {
            var exchange = RPCExchange(pid: stream.pid, role: role, system: "grpc", tls: connection.isTLS,
                                       start: stream.start, end: max(stream.end, stream.start), identity: stream.identity)
            if let path = stream.path, let (service, method) = Self.grpcServiceAndMethod(path) {
                exchange.service = service
                exchange.method = method
            }
            exchange.grpcStatusCode = stream.grpcStatus
            // No status is a failure (a reset, a connection closed mid-call) unless it may be in a field not
            // decoded (trailers that ended the call with fields of unknown entries) or in lost frames.
            exchange.failed = stream.wasReset
                || (stream.grpcStatus == nil && !(stream.partialHeaders && (stream.responseEnded || endMayBeLost)))
            exchange.partialHeaders = stream.partialHeaders
            exchange.protocolVersion = "2"
            exchange.local = connection.local
            exchange.peer = connection.peer
            exchanges.append(.rpc(exchange))
            return
        }
        if stream.ofAnotherTracer { return }
        let target = stream.path ?? ""
        // Searched as bytes: a Character search walks grapheme clusters (it was a tenth of the agent's CPU).
        let query = target.utf8.firstIndex(of: UInt8(ascii: "?"))
        var exchange = HTTPExchange(pid: stream.pid, role: role, method: stream.method ?? "_OTHER",
                                    path: query.map { String(target[..<$0]) } ?? target,
                                    query: query.map { HTTPSpans.redactQuery(target[target.utf8.index(after: $0)...]) },
                                    target: target, tls: connection.isTLS,
                                    start: stream.start, end: max(stream.end, stream.start), identity: stream.identity)
        exchange.protocolVersion = "2"
        exchange.statusCode = finished ? stream.status : nil
        let bodiesKnown = stream.framesLostAt == 0
        if bodiesKnown && (stream.requestBodyBytes > 0 || stream.method == "POST" || stream.method == "PUT") {
            exchange.requestBodySize = stream.requestBodyBytes
        }
        if finished && bodiesKnown { exchange.responseBodySize = stream.responseBodyBytes }
        exchange.local = connection.local
        exchange.peer = connection.peer
        exchanges.append(.http(exchange))
    }

    /// `/package.Service/Method` → (`package.Service`, `Method`) (gRPC over HTTP/2: the path names both).
    static func grpcServiceAndMethod(_ path: String) -> (String, String)? {
        let bytes = path.utf8
        guard bytes.first == UInt8(ascii: "/"), let slash = bytes.lastIndex(of: UInt8(ascii: "/")), slash != bytes.startIndex else { return nil }
        let service = path[bytes.index(after: bytes.startIndex)..<slash]
        let method = path[bytes.index(after: slash)...]
        guard !service.isEmpty, !method.isEmpty else { return nil }
        return (String(service), String(method))
    }
}

/// The HTTP/1.1 request of an upgrade to cleartext HTTP/2 (`Upgrade: h2c`, RFC 7540 §3.2): its method,
/// target and `traceparent`. It becomes stream 1.
struct HTTP1Upgrade {
    static let maxHead = 4096

    var method: String
    var target: String
    var traceparent: W3CTraceContext?

    /// The upgrade request at the start of `data`, or nil when these bytes are not one.
    static func request(_ data: UnsafeRawBufferPointer) -> HTTP1Upgrade? {
        guard let lineEnd = data.firstIndex(of: UInt8(ascii: "\n")), lineEnd > 0 else { return nil }
        let line = data[..<lineEnd].split(separator: UInt8(ascii: " "))
        guard line.count == 3, line[0].allSatisfy({ $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }),
              line[2].starts(with: "HTTP/1.1".utf8) else { return nil }
        var upgrade = HTTP1Upgrade(method: String(decoding: line[0], as: UTF8.self), target: String(decoding: line[1], as: UTF8.self))
        var wantsH2C = false
        for headerLine in data[(lineEnd + 1)...].split(separator: UInt8(ascii: "\n")) {
            let text = String(decoding: headerLine, as: UTF8.self)
            guard let colon = text.firstIndex(of: ":") else { continue }
            let name = text[..<colon].lowercased()
            let value = text[text.index(after: colon)...].trimmingCharacters(in: " \r")
            if name == "upgrade" && value.lowercased().split(separator: ",").contains(where: { $0.trimmingCharacters(in: " ") == "h2c" }) {
                wantsH2C = true
            } else if name == "traceparent" {
                var bytes = Array(value.utf8)
                upgrade.traceparent = bytes.withUnsafeMutableBytes { W3CTraceContext(traceparent: UnsafeRawBufferPointer($0)) }
            }
        }
        return wantsH2C ? upgrade : nil
    }

    /// Where the head in `bytes` ends (after its blank line).
    static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 3..<bytes.count where bytes[i] == 10 && bytes[i - 1] == 13 && bytes[i - 2] == 10 && bytes[i - 3] == 13 { return i + 1 }
        return nil
    }

    static func isSwitchingProtocols(_ head: [UInt8]) -> Bool {
        head.starts(with: "HTTP/1.1 101".utf8)
    }
}

extension String {
    /// The string without leading and trailing characters of `set` (spaces, CR).
    fileprivate func trimmingCharacters(in set: String) -> String {
        String(drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String { String(self).trimmingCharacters(in: set) }
}
