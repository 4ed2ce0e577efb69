#if canImport(Glibc)
import Glibc
#endif

/// The input handler of this process's fuzz target (libFuzzer's callback is a C function: no captures).
nonisolated(unsafe) private var fuzzTarget: ((UnsafeRawBufferPointer) -> Void)?

/// Runs a fuzz target. Built with `-sanitize=fuzzer -DFUZZING` (scripts/fuzz-*.sh) it hands control to
/// libFuzzer's driver (`LLVMFuzzerRunDriver`, LLVM ≥ 13); otherwise it replays the files named on the
/// command line (a corpus or a crash reproducer) through `fuzzOne`.
public func runFuzzTarget(named name: String, _ fuzzOne: @escaping (UnsafeRawBufferPointer) -> Void) -> Never {
    fuzzTarget = fuzzOne
    #if FUZZING
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv) { bytes, count in
        fuzzTarget?(UnsafeRawBufferPointer(start: bytes, count: count))
        return 0
    })
    #else
    for path in CommandLine.arguments.dropFirst() {
        guard let file = fopen(path, "rb") else {
            print("\(name): cannot open \(path)")
            exit(1)
        }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while case let n = fread(&buffer, 1, buffer.count, file), n > 0 { bytes += buffer[0..<n] }
        fclose(file)
        bytes.withUnsafeBytes(fuzzOne)
        print("ok \(path) (\(bytes.count) bytes)")
    }
    exit(0)
    #endif
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32
#endif
