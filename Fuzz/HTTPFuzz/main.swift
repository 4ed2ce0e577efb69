import CTracerABI
import Telemetry
import TracerFramework
import Tracers

#if canImport(Glibc)
import Glibc
#endif

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

#if FUZZING
/// libFuzzer's driver (`LLVMFuzzerRunDriver`, LLVM ≥ 13), linked in by `-sanitize=fuzzer`.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { bytes, count in
    fuzzOne(UnsafeRawBufferPointer(start: bytes, count: count))
    return 0
})
#else
// Without -sanitize=fuzzer: replay the given files (a corpus or a crash reproducer).
for path in CommandLine.arguments.dropFirst() {
    guard let file = fopen(path, "rb") else {
        print("HTTPFuzz: cannot open \(path)")
        exit(1)
    }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while case let n = fread(&buffer, 1, buffer.count, file), n > 0 { bytes += buffer[0..<n] }
    fclose(file)
    bytes.withUnsafeBytes(fuzzOne)
    print("ok \(path) (\(bytes.count) bytes)")
}
#endif
