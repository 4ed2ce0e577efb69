/// The byte-level parsing entry points, for the fuzzer (`Fuzz/InspectionFuzz`). Each takes untrusted
/// bytes and may only return or throw ``InspectionError``: any trap, hang or unbounded allocation is a bug.
public enum FuzzEntryPoints {
    /// The whole ELF path: headers, sections, symbols, notes, dynamic section, Go build info,
    /// pclntab, DWARF offsets and RET offsets of every function the image names.
    public static func elf(_ bytes: UnsafeRawBufferPointer) {
        guard let elf = try? ELFFile(bytes: bytes, name: "fuzz") else { return }
        let names: Set<String> = ["main", "main.main", "runtime.goexit", "net/http.serverHandler.ServeHTTP"]
        for symbol in elf.symbols(named: names).values {
            _ = try? elf.returnOffsets(address: symbol.address, size: min(symbol.size, 1 << 16))
        }
        _ = try? elf.fileOffset(forVirtualAddress: elf.entry)
        _ = try? elf.goBuildInfo()
        if let functions = try? elf.goFunctions(named: names) {
            for function in functions.values { _ = try? elf.returnOffsets(address: function.address, size: min(function.size, 1 << 16)) }
        }
        _ = try? elf.dwarfFieldOffsets(GoField.netHTTP)
    }

    /// A `.go.buildinfo` blob; pointer-format string headers are resolved inside the same bytes
    /// (virtual address = offset).
    public static func goBuildInfo(_ bytes: UnsafeRawBufferPointer) {
        let view = ByteView(bytes)
        _ = try? GoBuildInfo.parse(blob: view, subject: "fuzz") { address, length in view.sub(address, length) }
    }

    /// A `.gopclntab` section with text start 0x1000 and every function looked up by name.
    public static func goPCLNTab(_ bytes: UnsafeRawBufferPointer) {
        let table = try? GoPCLNTab(data: ByteView(bytes), subject: "fuzz") { _, _, _ in 0x1000 }
        _ = table?.functions(named: ["main.main", "runtime.goexit"])
        _ = table?.allFunctions()
    }
}
