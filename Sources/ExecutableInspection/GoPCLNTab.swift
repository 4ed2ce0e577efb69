/// A Go function found in `.gopclntab`: entry address and size (up to the next function's entry).
public struct GoFunction: Sendable, Equatable, Codable {
    public let name: String
    public let address: UInt64
    public let size: UInt64
}

/// Go's function table (`runtime.pcHeader` + `functab` + `_func`, go1.18+ layout; `debug/gosym`
/// reads the same). It survives `-ldflags='-s -w'`, which removes `.symtab` and DWARF, because the
/// runtime needs it for stack traces.
///
/// Layout (`runtime/symtab.go`): header `magic u32` (0xfffffff0 go1.18–1.19, 0xfffffff1 go1.20+),
/// 2 zero bytes, `minLC u8`, `ptrSize u8`, then pointer-sized `nfunc, nfiles, textStart,
/// funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset`. `functab` (at pclnOffset) holds
/// `nfunc+1` pairs `(entryoff u32, funcoff u32)`; each `_func` starts `entryoff u32, nameoff i32`.
struct GoPCLNTab {
    let data: ByteView
    let pointerSize: Int
    let functionCount: UInt64
    let nameTable: UInt64
    let functionTable: UInt64
    /// `runtime.text`: the base every `entryoff` is relative to.
    let textStart: UInt64

    /// Parses the header; `textStart` is chosen by the caller (see ``ELFFile/goTextStart(pclntab:address:)``).
    init(data: ByteView, subject: String,
         textStart resolve: (_ headerValue: UInt64, _ pointerSize: Int, _ firstEntryOffset: UInt32) throws(InspectionError) -> UInt64)
        throws(InspectionError)
    {
        func malformed(_ detail: String) -> InspectionError { InspectionError(.malformed, subject, ".gopclntab: \(detail)") }
        guard let magic = data.u32(0), data.u8(4) == 0, data.u8(5) == 0, let ptrSize = data.u8(7) else {
            throw malformed("truncated header")
        }
        guard magic == 0xffff_fff0 || magic == 0xffff_fff1 else {
            if magic == 0xffff_fffa || magic == 0xffff_fffb {
                throw InspectionError(.unsupported, subject, ".gopclntab: pre-go1.18 table (magic 0x\(hex(UInt64(magic)))) is not supported")
            }
            throw malformed("unknown magic 0x\(hex(UInt64(magic)))")
        }
        guard ptrSize == 4 || ptrSize == 8 else { throw malformed("pointer size \(ptrSize)") }
        pointerSize = Int(ptrSize)
        func field(_ i: UInt64) throws(InspectionError) -> UInt64 {
            guard let value = data.word(8 + i * UInt64(ptrSize), size: Int(ptrSize)) else { throw malformed("truncated header") }
            return value
        }
        functionCount = try field(0)
        let headerTextStart = try field(2)
        nameTable = try field(3)
        functionTable = try field(7)
        guard nameTable < UInt64(data.count), functionTable < UInt64(data.count) else {
            throw malformed("table offsets past the end of the section")
        }
        guard functionCount < UInt64(data.count) / 8,
              data.sub(functionTable, (functionCount + 1) * 8) != nil else {
            throw malformed("\(functionCount) functions do not fit in the section")
        }
        self.data = data
        textStart = try resolve(headerTextStart, Int(ptrSize), data.u32(functionTable) ?? 0)
    }

    /// `(entryoff, funcoff)` of functab entry `i` (0...functionCount).
    private func entry(_ i: UInt64) -> (UInt32, UInt32)? {
        guard let entry = data.u32(functionTable + i * 8), let function = data.u32(functionTable + i * 8 + 4) else { return nil }
        return (entry, function)
    }

    /// The functions whose names are in `names`, with sizes from the next entry.
    func functions(named names: Set<String>) -> [String: GoFunction] {
        let matcher = NameMatcher(names)
        var found: [String: GoFunction] = [:]
        var i: UInt64 = 0
        while i < functionCount && found.count < names.count {
            defer { i += 1 }
            guard let (entryOffset, functionOffset) = entry(i),
                  let nameOffset = data.u32(functionTable + UInt64(functionOffset) + 4),
                  let name = matcher.match(data, at: nameTable + UInt64(nameOffset)), found[name] == nil,
                  let (nextEntry, _) = entry(i + 1) else { continue }
            let size = nextEntry >= entryOffset ? UInt64(nextEntry - entryOffset) : 0
            found[name] = GoFunction(name: name, address: textStart + UInt64(entryOffset), size: size)
        }
        return found
    }

    /// Every function name (tests and the fuzzer walk the whole table).
    func allFunctions() -> [GoFunction] {
        var result: [GoFunction] = []
        for i in 0..<functionCount {
            guard let (entryOffset, functionOffset) = entry(i), let (nextEntry, _) = entry(i + 1),
                  let nameOffset = data.u32(functionTable + UInt64(functionOffset) + 4),
                  let name = data.cString(nameTable + UInt64(nameOffset)) else { continue }
            result.append(GoFunction(name: name, address: textStart + UInt64(entryOffset),
                                     size: nextEntry >= entryOffset ? UInt64(nextEntry - entryOffset) : 0))
        }
        return result
    }
}

extension ELFFile {
    /// The `.gopclntab` section (`.data.rel.ro.gopclntab` in PIE builds) or, failing that, the
    /// `runtime.pclntab`..`runtime.epclntab` symbol range.
    func goPCLNTabLocation() -> (data: ByteView, address: UInt64)? {
        if let section = sections.first(where: { $0.name == ".gopclntab" || $0.name == ".data.rel.ro.gopclntab" }) {
            return (contents(of: section), section.address)
        }
        let symbols = symbols(named: ["runtime.pclntab", "runtime.epclntab"])
        guard let start = symbols["runtime.pclntab"], let end = symbols["runtime.epclntab"], end.address > start.address,
              let data = read(virtualAddress: start.address, length: end.address - start.address) else { return nil }
        return (data, start.address)
    }

    /// `runtime.text`, the base of every pclntab entry. `debug/gosym` uses the `.text` section address,
    /// which is wrong for cgo / externally linked binaries (the C start-up code precedes the Go text).
    /// In order:
    /// 1. the `runtime.text` symbol;
    /// 2. the header's `textStart` (filled in by older linkers, and by the static linker in non-PIE
    ///    external links; PIE files hold 0 and an `R_X86_64_RELATIVE` relocation whose addend is the value);
    /// 3. `runtime.firstmoduledata.text`: newer toolchains leave the header field 0, so the module data is
    ///    found by its first field, the pointer to this pclntab, and `text` read at word 22 (after
    ///    `pcHeader`, six slices, `findfunctab`, `minpc`, `maxpc`). It is accepted only if
    ///    `minpc == text + functab[0].entryoff`, so a different layout fails instead of guessing.
    func goTextStart(pclntabAddress: UInt64, headerValue: UInt64, pointerSize: Int, firstEntryOffset: UInt32)
        throws(InspectionError) -> UInt64
    {
        if let symbol = symbol(named: "runtime.text") { return symbol.address }
        var candidate = headerValue
        if candidate == 0 {
            candidate = relativeRelocationAddend(at: pclntabAddress + 8 + 2 * UInt64(pointerSize)) ?? 0
        }
        if candidate == 0 {
            candidate = moduleDataText(pclntabAddress: pclntabAddress, pointerSize: pointerSize, firstEntryOffset: firstEntryOffset) ?? 0
        }
        guard candidate != 0, let segment = loadSegment(containing: candidate), segment.flags & 1 != 0 else {
            throw InspectionError(.malformed, path, ".gopclntab: text start 0x\(hex(candidate)) is not in an executable segment")
        }
        return candidate
    }

    /// `runtime.firstmoduledata.text` (see ``goTextStart(pclntabAddress:headerValue:pointerSize:firstEntryOffset:)``).
    private func moduleDataText(pclntabAddress: UInt64, pointerSize: Int, firstEntryOffset: UInt32) -> UInt64? {
        let word = UInt64(pointerSize)
        /// A pointer-sized value at `address`: the file's bytes, or the addend of its RELATIVE relocation (PIE).
        func pointer(at address: UInt64) -> UInt64? {
            if let value = read(virtualAddress: address, length: word)?.word(0, size: pointerSize), value != 0 { return value }
            return relativeRelocationAddend(at: address)
        }
        func validated(_ moduleData: UInt64) -> UInt64? {
            guard let minpc = pointer(at: moduleData + 20 * word), let text = pointer(at: moduleData + 22 * word),
                  minpc == text &+ UInt64(firstEntryOffset) else { return nil }
            return text
        }
        // PIE: the module data's first word is relocated; its RELATIVE entry names the address.
        for address in relativeRelocations(withAddend: pclntabAddress) {
            if let text = validated(address) { return text }
        }
        // Non-PIE: scan writable segments for the pointer itself.
        for segment in loadSegments where segment.flags & 2 != 0 {
            guard let data = bytes.slice(offset: segment.offset, length: segment.fileSize) else { continue }
            let view = ByteView(data)
            var at: UInt64 = 0
            while at + word <= UInt64(view.count) {
                if view.word(at, size: pointerSize) == pclntabAddress, let text = validated(segment.virtualAddress + at) { return text }
                at += word
            }
        }
        return nil
    }

    /// `r_offset` of every `R_X86_64_RELATIVE` `Elf64_Rela` whose addend is `addend`.
    func relativeRelocations(withAddend addend: UInt64) -> [UInt64] {
        guard is64Bit else { return [] }
        var found: [UInt64] = []
        for section in sections where section.type == 4 /* SHT_RELA */ && section.entrySize == 24 {
            let table = contents(of: section)
            var at: UInt64 = 0
            while let offset = table.u64(at), let info = table.u64(at + 8), let value = table.u64(at + 16) {
                if value == addend && info & 0xffff_ffff == 8 { found.append(offset) }
                at += 24
            }
        }
        return found
    }

    /// The addend of an `R_X86_64_RELATIVE` (type 8) `Elf64_Rela` in a `SHT_RELA` section with `r_offset == address`.
    func relativeRelocationAddend(at address: UInt64) -> UInt64? {
        guard is64Bit else { return nil }
        for section in sections where section.type == 4 /* SHT_RELA */ && section.entrySize == 24 {
            let table = contents(of: section)
            var at: UInt64 = 0
            while let offset = table.u64(at), let info = table.u64(at + 8), let addend = table.u64(at + 16) {
                if offset == address && info & 0xffff_ffff == 8 { return addend }
                at += 24
            }
        }
        return nil
    }

    func goFunctionTable() throws(InspectionError) -> GoPCLNTab? {
        guard let location = goPCLNTabLocation() else { return nil }
        return try GoPCLNTab(data: location.data, subject: path) { headerValue, pointerSize, firstEntry throws(InspectionError) in
            try goTextStart(pclntabAddress: location.address, headerValue: headerValue, pointerSize: pointerSize,
                            firstEntryOffset: firstEntry)
        }
    }

    /// Go functions by name from `.gopclntab` (works on stripped binaries). Nil when there is no pclntab.
    public func goFunctions(named names: Set<String>) throws(InspectionError) -> [String: GoFunction]? {
        try goFunctionTable()?.functions(named: names)
    }
}
