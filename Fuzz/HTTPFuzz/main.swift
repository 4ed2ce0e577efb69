import FuzzDriver
import CTracerABI
import Telemetry
import TracerFramework
import Tracers

/// One fuzz input through everything that reads captured bytes: the request and response parsers, query
/// redaction, and the whole event decoder (the input becomes an `http_event`'s bytes, padded with zeros).
func fuzzOne(_ data: UnsafeRawBufferPointer) {
    _ = HTTPMessageParser.parseRequest(data)
    _ = HTTPMessageParser.parseResponse(data)
    _ = HTTPMessageParser.redactQuery(Substring(String(decoding: data, as: UTF8.self)))
    var event = [UInt8](repeating: 0, count: max(data.count, MemoryLayout<http_event>.size))
    event.withUnsafeMutableBytes { $0.copyMemory(from: data) }
    _ = event.withUnsafeBytes { tracer.decode($0, context: context) }
}

let tracer = HTTPTracer()
let context = DecodeContext(monotonicToUnixOffset: 1_700_000_000_000_000_000, scope: InstrumentationScope(name: "fuzz")) { _ in
    Resource.empty
}

runFuzzTarget(named: "HTTPFuzz", fuzzOne)
