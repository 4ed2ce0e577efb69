import ExecutableInspection

#if canImport(Glibc)
import Glibc
#endif

/// One fuzz input: the first byte picks the parser (0 ELF, 1 Go build info, 2 Go pclntab), the rest is its input.
func fuzzOne(_ data: UnsafeRawBufferPointer) {
    guard let selector = data.first else { return }
    let input = UnsafeRawBufferPointer(rebasing: data.dropFirst())
    switch selector % 3 {
    case 0: FuzzEntryPoints.elf(input)
    case 1: FuzzEntryPoints.goBuildInfo(input)
    default: FuzzEntryPoints.goPCLNTab(input)
    }
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
// Without -sanitize=fuzzer: replay the given files (a corpus or a crash reproducer) through the parsers.
for path in CommandLine.arguments.dropFirst() {
    guard let file = fopen(path, "rb") else {
        print("InspectionFuzz: cannot open \(path)")
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
