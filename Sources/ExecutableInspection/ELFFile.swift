internal import CLibElf
#if canImport(Glibc)
import Glibc
#endif

/// What an ELF file is, from `e_type`, `PT_INTERP` and `DT_FLAGS_1` (`DF_1_PIE`).
public enum ELFKind: String, Sendable, Codable {
    /// `ET_EXEC`: linked at fixed addresses; file offsets and addresses differ by the segment base.
    case executable
    /// `ET_DYN` with `PT_INTERP` (or `DF_1_PIE`): a position-independent executable.
    case pie
    /// `ET_DYN` with `DF_1_PIE` and no `PT_INTERP` (`gcc -static-pie`): relocates itself.
    case staticPIE = "static-pie"
    /// `ET_DYN` library (has `DT_SONAME` or no interpreter and no `DF_1_PIE`).
    case sharedObject = "shared-object"
    /// `ET_REL` object file.
    case relocatable
    /// `ET_CORE` or an unknown `e_type`.
    case other
}

/// One defined symbol of `.symtab` / `.dynsym` (`Elf64_Sym`): its virtual address and size.
public struct ELFSymbol: Sendable, Equatable, Codable {
    public let name: String
    /// `st_value`: the link-time virtual address.
    public let address: UInt64
    /// `st_size` (0 when the producer did not record it).
    public let size: UInt64
    /// `STT_FUNC`.
    public let isFunction: Bool
}

/// One `Elf64_Shdr`, validated against the file size.
struct ELFSection {
    let index: Int
    let name: String
    let type: UInt32
    let flags: UInt64
    let address: UInt64
    let offset: UInt64
    let size: UInt64
    let link: UInt32
    let entrySize: UInt64
}

/// One `PT_LOAD` program header (`Elf64_Phdr`), validated against the file size.
struct LoadSegment {
    let virtualAddress: UInt64
    let offset: UInt64
    let fileSize: UInt64
    let flags: UInt32
}

/// An ELF object opened through libelf (`elf_memory` over a private `mmap`). Every header, section
/// and segment is checked against the file size when the file is opened, so later reads cannot
/// leave the file; a malformed file fails in `init` with one ``InspectionError`` line.
///
/// Keep it only while inspecting: ``ExecutableInfo`` is what outlives it.
public final class ELFFile {
    /// The path (or name, for in-memory images) used in every error.
    public let path: String
    public let kind: ELFKind
    /// `e_machine` (62 = `EM_X86_64`).
    public let machine: UInt16
    /// `ELFCLASS64`.
    public let is64Bit: Bool
    /// `e_entry`.
    public let entry: UInt64
    /// The GNU build-id note (`NT_GNU_BUILD_ID`, usually `.note.gnu.build-id`) as lowercase hex.
    public let buildID: String?
    /// The Go build ID note (`.note.go.buildid`, note type 4 named "Go").
    public let goBuildID: String?
    /// `PT_INTERP` contents, e.g. `/lib64/ld-linux-x86-64.so.2`.
    public let interpreter: String?
    /// `DT_SONAME` of a shared object.
    public let soname: String?
    /// `DT_NEEDED` entries, in order.
    public let neededLibraries: [String]

    let bytes: FileBytes
    let elf: OpaquePointer
    let sections: [ELFSection]
    let loadSegments: [LoadSegment]
    /// `PT_TLS` (`p_memsz`, `p_align`), used for Go's TLS `g` slot in cgo binaries.
    let tlsSegment: (memorySize: UInt64, alignment: UInt64)?

    /// `e_machine` names for the machines the project meets.
    public var machineName: String {
        switch machine {
        case 62: "x86-64"
        case 183: "aarch64"
        case 3: "i386"
        case 243: "riscv"
        default: "machine \(machine)"
        }
    }

    /// Opens the file at `path`. Errors name `path`: missing, a directory, empty, not ELF, malformed.
    public convenience init(path: String) throws(InspectionError) {
        try self.init(bytes: FileBytes(path: path), name: path)
    }

    /// Parses an in-memory image (tests, fuzzing); `name` is used in errors.
    public convenience init(bytes: some Collection<UInt8>, name: String = "<memory>") throws(InspectionError) {
        try self.init(bytes: FileBytes(copying: bytes), name: name)
    }

    init(bytes: FileBytes, name: String) throws(InspectionError) {
        path = name
        self.bytes = bytes
        let size = UInt64(bytes.count)
        func fail(_ reason: InspectionError.Reason, _ detail: String) -> InspectionError {
            InspectionError(reason, name, detail)
        }
        func malformed(_ detail: String) -> InspectionError { InspectionError(.malformed, name, detail) }
        guard let ident = bytes.slice(offset: 0, length: 16), let base = bytes.base else {
            throw fail(.notELF, bytes.count == 0 ? "empty file" : "not an ELF file (\(bytes.count) bytes, too short)")
        }
        guard ident[0] == 0x7f, ident[1] == 0x45, ident[2] == 0x4c, ident[3] == 0x46 else {
            throw fail(.notELF, "not an ELF file (no \\x7fELF magic)")
        }
        guard ident[4] == 1 || ident[4] == 2 else { throw malformed("invalid EI_CLASS \(ident[4])") }
        guard ident[5] == 1 else { throw fail(.unsupported, "big-endian or invalid EI_DATA \(ident[5]) is not supported") }
        is64Bit = ident[4] == 2
        let ehdrSize: UInt64 = is64Bit ? 64 : 52
        guard size >= ehdrSize else { throw malformed("truncated ELF header (\(size) of \(ehdrSize) bytes)") }

        _ = libelfReady
        guard let elf = elf_memory(base.assumingMemoryBound(to: CChar.self), bytes.count) else {
            throw fail(.malformed, "libelf: \(libelfError())")
        }
        var closeOnFailure = true
        defer { if closeOnFailure { elf_end(elf) } }
        guard elf_kind(elf) == ELF_K_ELF else { throw fail(.notELF, "not an ELF object") }
        var ehdr = GElf_Ehdr()
        guard gelf_getehdr(elf, &ehdr) != nil else { throw malformed("bad ELF header: \(libelfError())") }
        machine = ehdr.e_machine
        entry = ehdr.e_entry

        // libelf quietly reports 0 headers when a table lies past the end of the image, so the raw
        // header fields are checked first (PN_XNUM / e_shnum 0 keep their extended counts in section 0).
        let phentsize: UInt64 = is64Bit ? 56 : 32
        let shentsize: UInt64 = is64Bit ? 64 : 40
        if ehdr.e_phnum != 0 && ehdr.e_phnum != 0xffff
            && bytes.slice(offset: ehdr.e_phoff, length: UInt64(ehdr.e_phnum) * UInt64(ehdr.e_phentsize)) == nil {
            throw malformed("program headers (e_phoff 0x\(hex(ehdr.e_phoff)), \(ehdr.e_phnum) entries) extend past end of file (\(size) bytes)")
        }
        if ehdr.e_shoff != 0
            && bytes.slice(offset: ehdr.e_shoff, length: max(UInt64(ehdr.e_shnum), 1) * UInt64(ehdr.e_shentsize)) == nil {
            throw malformed("section headers (e_shoff 0x\(hex(ehdr.e_shoff)), \(ehdr.e_shnum) entries) extend past end of file (\(size) bytes)")
        }

        // Program headers: the table itself, then every PT_LOAD's file range.
        var phnum = 0
        guard elf_getphdrnum(elf, &phnum) == 0 else { throw malformed("bad program header count: \(libelfError())") }
        if ehdr.e_phnum != 0xffff && phnum != Int(ehdr.e_phnum) {
            throw malformed("libelf sees \(phnum) of e_phnum \(ehdr.e_phnum) program headers")
        }
        if phnum > 0 {
            guard UInt64(ehdr.e_phentsize) == phentsize else { throw malformed("e_phentsize \(ehdr.e_phentsize) is not \(phentsize)") }
            guard bytes.slice(offset: ehdr.e_phoff, length: UInt64(phnum) * phentsize) != nil else {
                throw malformed("program headers (e_phoff 0x\(hex(ehdr.e_phoff)), \(phnum) entries) extend past end of file (\(size) bytes)")
            }
        }
        var loads: [LoadSegment] = []
        var interpRange: (UInt64, UInt64)?
        var tls: (UInt64, UInt64)?
        var noteRanges: [(UInt64, UInt64)] = []
        for i in 0..<phnum {
            var phdr = GElf_Phdr()
            guard gelf_getphdr(elf, Int32(i), &phdr) != nil else { throw malformed("bad program header \(i): \(libelfError())") }
            let inFile = bytes.slice(offset: phdr.p_offset, length: phdr.p_filesz) != nil
            switch phdr.p_type {
            case UInt32(PT_LOAD):
                guard inFile else {
                    throw malformed("PT_LOAD segment \(i) (offset 0x\(hex(phdr.p_offset)), size 0x\(hex(phdr.p_filesz))) extends past end of file (\(size) bytes)")
                }
                loads.append(LoadSegment(virtualAddress: phdr.p_vaddr, offset: phdr.p_offset, fileSize: phdr.p_filesz,
                                         flags: phdr.p_flags))
            case UInt32(PT_INTERP):
                guard inFile else { throw malformed("PT_INTERP extends past end of file") }
                interpRange = (phdr.p_offset, phdr.p_filesz)
            case UInt32(PT_NOTE):
                if inFile { noteRanges.append((phdr.p_offset, phdr.p_filesz)) }
            case UInt32(PT_TLS):
                tls = (phdr.p_memsz, phdr.p_align)
            default: break
            }
        }
        loadSegments = loads
        tlsSegment = tls.map { (memorySize: $0.0, alignment: $0.1) }

        // Section headers: the table, e_shstrndx, then every section's file range.
        var shnum = 0
        guard elf_getshdrnum(elf, &shnum) == 0 else { throw malformed("bad section header count: \(libelfError())") }
        if ehdr.e_shnum != 0 && shnum != Int(ehdr.e_shnum) {
            throw malformed("libelf sees \(shnum) of e_shnum \(ehdr.e_shnum) section headers")
        }
        if ehdr.e_shoff != 0 && shnum == 0 { throw malformed("e_shoff 0x\(hex(ehdr.e_shoff)) but no readable section headers") }
        var parsed: [ELFSection] = []
        if shnum > 0 {
            guard UInt64(ehdr.e_shentsize) == shentsize else { throw malformed("e_shentsize \(ehdr.e_shentsize) is not \(shentsize)") }
            guard bytes.slice(offset: ehdr.e_shoff, length: UInt64(shnum) * shentsize) != nil else {
                throw malformed("section headers (e_shoff 0x\(hex(ehdr.e_shoff)), \(shnum) entries) extend past end of file (\(size) bytes)")
            }
            var shstrndx = 0
            guard elf_getshdrstrndx(elf, &shstrndx) == 0 else { throw malformed("bad e_shstrndx: \(libelfError())") }
            guard shstrndx < shnum else { throw malformed("e_shstrndx \(shstrndx) out of range (\(shnum) sections)") }
            var headers: [GElf_Shdr] = []
            headers.reserveCapacity(shnum)
            for i in 0..<shnum {
                var shdr = GElf_Shdr()
                guard let scn = elf_getscn(elf, i), gelf_getshdr(scn, &shdr) != nil else {
                    throw malformed("bad section header \(i): \(libelfError())")
                }
                headers.append(shdr)
            }
            var names: ByteView?
            if shstrndx != 0 {
                let h = headers[shstrndx]
                guard h.sh_type == UInt32(SHT_STRTAB), let view = bytes.slice(offset: h.sh_offset, length: h.sh_size) else {
                    throw malformed("section name table (section \(shstrndx)) is not a string table inside the file")
                }
                names = ByteView(view)
            }
            for (i, h) in headers.enumerated() {
                let name = names.flatMap { $0.cString(UInt64(h.sh_name)) } ?? ""
                if h.sh_type != UInt32(SHT_NOBITS) && h.sh_size > 0 && bytes.slice(offset: h.sh_offset, length: h.sh_size) == nil {
                    throw malformed("section \(i) '\(name)' (offset 0x\(hex(h.sh_offset)), size 0x\(hex(h.sh_size))) extends past end of file (\(size) bytes)")
                }
                if (h.sh_type == UInt32(SHT_SYMTAB) || h.sh_type == UInt32(SHT_DYNSYM) || h.sh_type == UInt32(SHT_DYNAMIC))
                    && Int(h.sh_link) >= shnum {
                    throw malformed("section \(i) '\(name)' links to section \(h.sh_link), out of range (\(shnum) sections)")
                }
                parsed.append(ELFSection(index: i, name: name, type: h.sh_type, flags: h.sh_flags, address: h.sh_addr,
                                         offset: h.sh_offset, size: h.sh_size, link: h.sh_link, entrySize: h.sh_entsize))
                if h.sh_type == UInt32(SHT_NOTE) { noteRanges.append((h.sh_offset, h.sh_size)) }
            }
        }
        sections = parsed

        interpreter = interpRange.flatMap { bytes.slice(offset: $0.0, length: $0.1) }.flatMap { ByteView($0).cString(0) }
        let notes = Self.parseNotes(noteRanges, in: bytes)
        buildID = notes.gnu
        goBuildID = notes.go
        let dynamic = Self.parseDynamic(parsed, in: bytes, is64Bit: is64Bit)
        soname = dynamic.soname
        neededLibraries = dynamic.needed

        switch Int32(ehdr.e_type) {
        case ET_EXEC: kind = .executable
        case ET_DYN:
            let pieFlag: UInt64 = 0x0800_0000  // DF_1_PIE
            if dynamic.flags1 & pieFlag != 0 {
                kind = interpRange != nil ? .pie : .staticPIE
            } else {
                kind = interpRange != nil && dynamic.soname == nil ? .pie : .sharedObject
            }
        case ET_REL: kind = .relocatable
        default: kind = .other
        }
        self.elf = elf
        closeOnFailure = false
    }

    deinit {
        if let capstone { capstone.close() }
        elf_end(elf)
    }

    /// Lazily opened disassembler for ``returnOffsets(ofSymbol:)``.
    var capstone: Disassembler?

    // MARK: Sections and addresses

    func section(named name: String) -> ELFSection? { sections.first { $0.name == name } }

    /// The file bytes of a section (empty for `SHT_NOBITS`); bounds were checked in `init`.
    func contents(of section: ELFSection) -> ByteView {
        guard section.type != UInt32(SHT_NOBITS), let view = bytes.slice(offset: section.offset, length: section.size) else {
            return ByteView(UnsafeRawBufferPointer(start: nil, count: 0))
        }
        return ByteView(view)
    }

    /// The `PT_LOAD` segment whose file-backed part contains `address`.
    func loadSegment(containing address: UInt64) -> LoadSegment? {
        loadSegments.first { address >= $0.virtualAddress && address - $0.virtualAddress < $0.fileSize }
    }

    /// The file offset of a link-time virtual address: `address - p_vaddr + p_offset` of the `PT_LOAD`
    /// segment that maps it. This is what a uprobe takes (`uprobe_register(inode, offset)`), and it is
    /// the same computation for non-PIE (`p_vaddr` ≈ 0x400000), PIE and static-PIE (`p_vaddr` ≈ 0).
    public func fileOffset(forVirtualAddress address: UInt64) throws(InspectionError) -> UInt64 {
        guard let segment = loadSegment(containing: address) else {
            throw InspectionError(.addressNotMapped, path, "address 0x\(hex(address)) is in no PT_LOAD segment's file data")
        }
        return address - segment.virtualAddress + segment.offset
    }

    /// `length` bytes at a link-time virtual address, if they are all file-backed in one segment.
    func read(virtualAddress address: UInt64, length: UInt64) -> ByteView? {
        guard let segment = loadSegment(containing: address),
              length <= segment.fileSize - (address - segment.virtualAddress),
              let view = bytes.slice(offset: address - segment.virtualAddress + segment.offset, length: length)
        else { return nil }
        return ByteView(view)
    }

    // MARK: Symbols

    /// Number of entries in `.symtab` plus `.dynsym` (0 for a stripped binary without dynamic symbols).
    public var symbolCount: Int {
        sections.filter { $0.type == UInt32(SHT_SYMTAB) || $0.type == UInt32(SHT_DYNSYM) }
            .reduce(0) { $0 + Int($1.size / max($1.entrySize, 1)) }
    }

    /// Whether the file has a `.symtab` (i.e. is not stripped).
    public var hasSymbolTable: Bool { sections.contains { $0.type == UInt32(SHT_SYMTAB) } }

    /// The defined symbol `name` from `.symtab`, else `.dynsym`.
    public func symbol(named name: String) -> ELFSymbol? { symbols(named: [name])[name] }

    /// Every defined symbol whose name is in `names`, in one pass over `.symtab` then `.dynsym`
    /// (the first definition wins). Nothing of the tables is kept.
    public func symbols(named names: Set<String>) -> [String: ELFSymbol] {
        var found: [String: ELFSymbol] = [:]
        let matcher = NameMatcher(names)
        for table in sections where table.type == UInt32(SHT_SYMTAB) || table.type == UInt32(SHT_DYNSYM) {
            forEachSymbol(in: table) { nameOffset, strings, value, size, info in
                if let name = matcher.match(strings, at: nameOffset), found[name] == nil {
                    found[name] = ELFSymbol(name: name, address: value, size: size, isFunction: info & 0xf == 2)
                }
                return found.count < names.count
            }
            if found.count == names.count { break }
        }
        return found
    }

    /// Calls `body(st_name, strtab, st_value, st_size, st_info)` for every defined (`st_shndx != SHN_UNDEF`)
    /// `Elf64_Sym`/`Elf32_Sym` of `table` until it returns false. Malformed tables yield nothing.
    func forEachSymbol(in table: ELFSection, _ body: (UInt64, ByteView, UInt64, UInt64, UInt8) -> Bool) {
        let entrySize: UInt64 = is64Bit ? 24 : 16
        guard table.entrySize == entrySize, Int(table.link) < sections.count,
              sections[Int(table.link)].type == UInt32(SHT_STRTAB) else { return }
        let strings = contents(of: sections[Int(table.link)])
        let symbols = contents(of: table)
        var offset: UInt64 = entrySize  // entry 0 is the reserved null symbol
        while offset + entrySize <= UInt64(symbols.count) {
            defer { offset += entrySize }
            let name, value, size: UInt64
            let info: UInt8
            let shndx: UInt16
            if is64Bit {
                guard let n = symbols.u32(offset), let i = symbols.u8(offset + 4), let x = symbols.u16(offset + 6),
                      let v = symbols.u64(offset + 8), let s = symbols.u64(offset + 16) else { return }
                (name, info, shndx, value, size) = (UInt64(n), i, x, v, s)
            } else {
                guard let n = symbols.u32(offset), let v = symbols.u32(offset + 4), let s = symbols.u32(offset + 8),
                      let i = symbols.u8(offset + 12), let x = symbols.u16(offset + 14) else { return }
                (name, info, shndx, value, size) = (UInt64(n), i, x, UInt64(v), UInt64(s))
            }
            if shndx == 0 { continue }
            if !body(name, strings, value, size, info) { return }
        }
    }

    /// The file offset for a uprobe on the entry of symbol `name`.
    public func uprobeOffset(ofSymbol name: String) throws(InspectionError) -> UInt64 {
        guard let symbol = symbol(named: name) else {
            throw InspectionError(.symbolNotFound, path, "symbol '\(name)' not found in .symtab or .dynsym")
        }
        return try fileOffset(forVirtualAddress: symbol.address)
    }

    // MARK: Notes and dynamic section

    /// `Elf64_Nhdr` notes: the GNU build-id (`NT_GNU_BUILD_ID` = 3, "GNU") and Go build ID (4, "Go").
    private static func parseNotes(_ ranges: [(UInt64, UInt64)], in bytes: FileBytes) -> (gnu: String?, go: String?) {
        var gnu: String?
        var go: String?
        for (offset, length) in ranges {
            guard let region = bytes.slice(offset: offset, length: length) else { continue }
            let view = ByteView(region)
            var at: UInt64 = 0
            while let nameSize = view.u32(at), let descSize = view.u32(at + 4), let type = view.u32(at + 8) {
                let nameStart = at + 12
                let descStart = nameStart + (UInt64(nameSize) + 3) & ~3
                guard let name = view.sub(nameStart, UInt64(nameSize)), let desc = view.sub(descStart, UInt64(descSize)) else { break }
                let noteName = String(decoding: name.bytes.prefix { $0 != 0 }, as: UTF8.self)
                if noteName == "GNU" && type == 3 && gnu == nil {
                    gnu = desc.bytes.map { hex(UInt64($0), width: 2) }.joined()
                } else if noteName == "Go" && type == 4 && go == nil {
                    go = String(decoding: desc.bytes, as: UTF8.self)
                }
                at = descStart + (UInt64(descSize) + 3) & ~3
            }
        }
        return (gnu, go)
    }

    /// `SHT_DYNAMIC` entries: `DT_NEEDED` (1), `DT_SONAME` (14), `DT_FLAGS_1` (0x6ffffffb).
    private static func parseDynamic(_ sections: [ELFSection], in bytes: FileBytes, is64Bit: Bool)
        -> (needed: [String], soname: String?, flags1: UInt64)
    {
        var needed: [String] = []
        var soname: String?
        var flags1: UInt64 = 0
        guard let dynamic = sections.first(where: { $0.type == UInt32(SHT_DYNAMIC) }),
              let table = bytes.slice(offset: dynamic.offset, length: dynamic.size),
              Int(dynamic.link) < sections.count else { return (needed, soname, flags1) }
        let strtab = sections[Int(dynamic.link)]
        let strings = bytes.slice(offset: strtab.offset, length: strtab.size).map(ByteView.init)
        let view = ByteView(table)
        let word = is64Bit ? 8 : 4
        var at: UInt64 = 0
        while let tag = view.word(at, size: word), let value = view.word(at + UInt64(word), size: word), tag != 0 {
            switch tag {
            case 1: if let name = strings?.cString(value) { needed.append(name) }
            case 14: soname = strings?.cString(value)
            case 0x6fff_fffb: flags1 = value
            default: break
            }
            at += UInt64(2 * word)
        }
        return (needed, soname, flags1)
    }
}

/// `elf_version(EV_CURRENT)`, once per process, before any other libelf call.
let libelfReady: Void = { _ = elf_version(UInt32(EV_CURRENT)) }()

/// The thread's last libelf error (`elf_errmsg(-1)`).
func libelfError() -> String {
    guard let message = elf_errmsg(-1) else { return "unknown libelf error" }
    return String(cString: message)
}

/// Lowercase hex, zero-padded to `width` digits.
func hex(_ value: UInt64, width: Int = 0) -> String {
    let digits = String(value, radix: 16)
    return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}
