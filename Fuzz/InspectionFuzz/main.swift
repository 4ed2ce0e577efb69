import FuzzDriver
import ExecutableInspection

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

runFuzzTarget(named: "InspectionFuzz", fuzzOne)
