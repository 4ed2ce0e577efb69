import CTracerABI
import Telemetry

/// Capture events built in user space, byte for byte as bpf/capture.bpf.c emits them: for tests, fuzzing
/// and replays of the parsers without a kernel.
public enum CaptureEvents {
    /// A `CAPTURE_EVENT_CHUNK` record: `data` captured (at most `CAPTURE_MAX_DATA` bytes kept) of a transfer
    /// of `length` bytes (default: `data.count`).
    public static func chunk(connection: UInt64, pid: UInt32, goid: UInt64 = 0, direction: CaptureChunk.Direction, data: [UInt8],
                             length: Int? = nil, timestamp: UInt64, tls: Bool = false, tuple: capture_tuple = capture_tuple()) -> [UInt8] {
        var event = capture_chunk_event()
        event.header.type = UInt32(CAPTURE_EVENT_CHUNK)
        event.header.pid = pid
        event.header.tid = pid
        event.header.timestamp_ns = timestamp
        event.connection = connection
        event.goid = goid
        let kept = Array(data.prefix(Int(CAPTURE_MAX_DATA)))
        event.length = UInt32(clamping: length ?? data.count)
        event.captured = UInt32(kept.count)
        event.fd = 3
        event.direction = UInt8(direction == .send ? CAPTURE_DIRECTION_SEND : CAPTURE_DIRECTION_RECEIVE)
        event.source = UInt8(tls ? CAPTURE_SOURCE_LIBSSL : CAPTURE_SOURCE_SOCKET)
        event.flags = UInt8(tls ? CAPTURE_FLAG_TLS : 0) | UInt8(data.isEmpty ? CAPTURE_FLAG_NO_BUFFER : 0)
        if (length ?? data.count) > kept.count && (length ?? data.count) == data.count {
            let tail = Array(data.suffix(Int(CAPTURE_TAIL)))
            withUnsafeMutableBytes(of: &event.tail) { $0.copyBytes(from: tail) }
            event.tail_captured = UInt8(tail.count)
        }
        event.tuple = tuple
        return withUnsafeBytes(of: &event) { Array($0) } + kept
    }

    /// A `CAPTURE_EVENT_CONTEXT` record: ids the kernel decided for the next chunk of `connection` in `direction`
    /// (`injected`: a traceparent line of that many bytes went out with a send).
    public static func context(connection: UInt64, pid: UInt32, direction: CaptureChunk.Direction, traceID: TraceID, spanID: SpanID,
                               parentSpanID: SpanID = .invalid, injected: UInt32 = 0, timestamp: UInt64) -> [UInt8] {
        var event = capture_context_event()
        event.header.type = UInt32(CAPTURE_EVENT_CONTEXT)
        event.header.pid = pid
        event.header.tid = pid
        event.header.timestamp_ns = timestamp
        event.connection = connection
        withUnsafeMutableBytes(of: &event.trace_id) { $0.copyBytes(from: traceID.bytes) }
        withUnsafeMutableBytes(of: &event.span_id) { $0.copyBytes(from: spanID.bytes) }
        withUnsafeMutableBytes(of: &event.parent_span_id) { $0.copyBytes(from: parentSpanID.bytes) }
        event.injected = injected
        event.direction = UInt8(direction == .send ? CAPTURE_DIRECTION_SEND : CAPTURE_DIRECTION_RECEIVE)
        let sent = injected > 0 ? CAPTURE_CONTEXT_INJECTED : 0
        let carried = direction == .receive && parentSpanID != .invalid ? CAPTURE_CONTEXT_TRACEPARENT : 0
        event.flags = UInt8(sent | carried)
        return withUnsafeBytes(of: &event) { Array($0) }
    }

    /// A `CAPTURE_EVENT_CLOSE` record.
    public static func close(connection: UInt64, pid: UInt32, timestamp: UInt64) -> [UInt8] {
        var event = capture_close_event()
        event.header.type = UInt32(CAPTURE_EVENT_CLOSE)
        event.header.pid = pid
        event.header.timestamp_ns = timestamp
        event.connection = connection
        return withUnsafeBytes(of: &event) { Array($0) }
    }

    /// A tuple of two IPv4 loopback ends (`127.0.0.1:local` and `127.0.0.1:remote`) or two IPv6 ones.
    public static func tuple(local: [UInt8], localPort: UInt16, remote: [UInt8], remotePort: UInt16) -> capture_tuple {
        var tuple = capture_tuple()
        func mapped(_ address: [UInt8]) -> [UInt8] { address.count == 4 ? Array(repeating: 0, count: 10) + [0xFF, 0xFF] + address : address }
        withUnsafeMutableBytes(of: &tuple.local_address) { $0.copyBytes(from: mapped(local)) }
        withUnsafeMutableBytes(of: &tuple.remote_address) { $0.copyBytes(from: mapped(remote)) }
        tuple.local_port = localPort
        tuple.remote_port = remotePort
        tuple.family = 10
        return tuple
    }
}
