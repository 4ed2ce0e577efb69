import FuzzDriver
import Telemetry
import TracerFramework
import Tracers

/// One fuzz input through everything that reads captured bytes: the request and response parsers, query
/// redaction, and the capture layer's user-space entry point (the connection tracker) with the HTTP/2 (frames,
/// HPACK, gRPC) and HTTP/1 parsers behind it, in the registry's order. The input is cut into records — a control byte (bit 0: direction, bit 1: close,
/// bit 2: raw event bytes, bits 3-4: connection, bits 5-7: a length multiplier for transfers without data),
/// a length byte, then that many bytes — so sequences of chunks, odd lengths and truncated events all occur.
func fuzzOne(_ data: UnsafeRawBufferPointer) {
    _ = HTTPMessageParser.parseRequest(data)
    _ = HTTPMessageParser.parseResponse(data)
    _ = HTTPSpans.redactQuery(Substring(String(decoding: data, as: UTF8.self)))
    let tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: parsers) }, countOnly: { _ in })
    var exchanges: [Exchange] = []
    var offset = 0
    var time: UInt64 = 1
    while offset + 2 <= data.count {
        let control = data[offset], length = Int(data[offset + 1])
        let bytes = Array(data[(offset + 2)..<min(offset + 2 + length, data.count)])
        offset += 2 + length
        time += 1
        let connection = UInt64(control >> 3 & 3)
        let event: [UInt8]
        if control & 4 != 0 {
            event = bytes
        } else if control & 2 != 0 {
            event = CaptureEvents.close(connection: connection, pid: 1, timestamp: time)
        } else {
            let extra = bytes.isEmpty ? Int(control >> 5) << 20 : 0
            event = CaptureEvents.chunk(connection: connection, pid: 1, goid: connection, direction: control & 1 == 0 ? .receive : .send,
                                        data: bytes, length: bytes.count + extra, timestamp: time)
        }
        event.withUnsafeBytes { tracker.handle($0, into: &exchanges) }
    }
    for exchange in exchanges {
        switch exchange {
        case .http(let exchange): _ = HTTPSpans.span(exchange, resource: .empty, scope: scope) { $0 }
        case .rpc(let exchange): _ = RPCSpans.span(exchange, resource: .empty, scope: scope) { $0 }
        default: break
        }
    }
}

let parsers = [HTTP2Tracer().parser!, HTTPTracer().parser!]
let scope = InstrumentationScope(name: "fuzz")

runFuzzTarget(named: "HTTPFuzz", fuzzOne)
