/// Structural checks of an untrusted BPF ELF object before libbpf parses it. libbpf 1.1 (Debian 12) trusts
/// parts of the ELF and BTF it reads: a type id past the end of `.BTF`, a string offset past its string
/// section, a relocation naming a missing symbol or section make it dereference NULL (found by
/// scripts/fuzz-object.sh; libbpf 1.3 added its own `btf_validate_type`). These checks reject such files with a
/// reason instead: the ELF header and section table, the symbol table and relocations, `.BTF` (every type's
/// size, kind, string offsets and type references) and the string and type references of `.BTF.ext`.
public enum BPFObjectValidation {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    struct Section {
        let index: Int
        let name: String
        let type: UInt32
        let flags: UInt64
        let offset: Int
        let size: Int
        let link: Int
        let info: Int
        let entrySize: Int
    }

    /// Throws a `Failure` naming the first defect found.
    public static func check(_ bytes: [UInt8]) throws(Failure) {
        let sections = try sectionTable(bytes)
        let symbolCount = try checkSymbols(bytes, sections)
        try checkRelocations(bytes, sections, symbolCount: symbolCount)
        for section in sections where section.flags & 0x4 != 0 && section.size % 8 != 0 { // SHF_EXECINSTR
            throw Failure(description: "section \(section.name) holds code but its size \(section.size) is not a multiple of 8")
        }
        if let btfSection = sections.first(where: { $0.name == ".BTF" }) {
            let btf = try BTFCheck(bytes, btfSection)
            if let ext = sections.first(where: { $0.name == ".BTF.ext" }) { try btf.checkExtension(bytes, ext) }
        }
    }

    static func u16(_ bytes: [UInt8], _ offset: Int) -> Int { Int(bytes[offset]) | Int(bytes[offset + 1]) << 8 }
    static func u32(_ bytes: [UInt8], _ offset: Int) -> Int { u16(bytes, offset) | u16(bytes, offset + 2) << 16 }
    static func u64(_ bytes: [UInt8], _ offset: Int) -> UInt64 { UInt64(u32(bytes, offset)) | UInt64(u32(bytes, offset + 4)) << 32 }

    /// `offset..<offset+size` lies inside `0..<limit` (no overflow).
    static func fits(_ offset: UInt64, _ size: UInt64, _ limit: Int) -> Bool {
        offset <= UInt64(limit) && size <= UInt64(limit) - offset
    }

    private static func sectionTable(_ bytes: [UInt8]) throws(Failure) -> [Section] {
        guard bytes.count >= 64, bytes[0] == 0x7f, bytes[1] == 0x45, bytes[2] == 0x4c, bytes[3] == 0x46 else {
            throw Failure(description: "not an ELF file")
        }
        guard bytes[4] == 2, bytes[5] == 1 else { throw Failure(description: "not a 64-bit little-endian ELF file") }
        guard u16(bytes, 16) == 1, u16(bytes, 18) == 247 else { throw Failure(description: "not a BPF relocatable object (e_type/e_machine)") }
        let tableOffset = u64(bytes, 0x28)
        let entrySize = u16(bytes, 0x3a), count = u16(bytes, 0x3c), namesIndex = u16(bytes, 0x3e)
        guard entrySize == 64, count > 0, namesIndex < count, fits(tableOffset, UInt64(count) * 64, bytes.count) else {
            throw Failure(description: "section header table out of the file or malformed")
        }
        func raw(_ index: Int) -> (name: Int, type: UInt32, flags: UInt64, offset: UInt64, size: UInt64, link: Int, info: Int, entrySize: UInt64) {
            let base = Int(tableOffset) + index * 64
            return (u32(bytes, base), UInt32(u32(bytes, base + 4)), u64(bytes, base + 8), u64(bytes, base + 24), u64(bytes, base + 32),
                    u32(bytes, base + 40), u32(bytes, base + 44), u64(bytes, base + 56))
        }
        func inFile(_ entry: (name: Int, type: UInt32, flags: UInt64, offset: UInt64, size: UInt64, link: Int, info: Int, entrySize: UInt64)) -> Bool {
            entry.type == 8 /* SHT_NOBITS */ || entry.type == 0 || fits(entry.offset, entry.size, bytes.count)
        }
        let names = raw(namesIndex)
        guard names.type == 3, inFile(names) else { throw Failure(description: "section name table is not a string table inside the file") }
        let namesStart = Int(names.offset), namesSize = Int(names.size)
        var sections: [Section] = []
        for index in 0..<count {
            let entry = raw(index)
            guard inFile(entry) else { throw Failure(description: "section \(index) lies outside the file") }
            guard entry.name < namesSize, let end = bytes[(namesStart + entry.name)..<(namesStart + namesSize)].firstIndex(of: 0) else {
                throw Failure(description: "section \(index) has a name outside the section name table")
            }
            let name = String(decoding: bytes[(namesStart + entry.name)..<end], as: UTF8.self)
            guard entry.entrySize < 1 << 16, entry.link < count || entry.type != 9 && entry.type != 2 else {
                throw Failure(description: "section \(name) links to section \(entry.link) of \(count)")
            }
            let empty = entry.type == 8 || entry.type == 0 // NOBITS and NULL sections have no bytes in the file
            sections.append(Section(index: index, name: name, type: entry.type, flags: entry.flags, offset: empty ? 0 : Int(entry.offset),
                                    size: empty ? 0 : Int(entry.size), link: entry.link, info: entry.info, entrySize: Int(entry.entrySize)))
        }
        return sections
    }

    /// Checks the one symbol table and its string table; returns the number of symbols.
    private static func checkSymbols(_ bytes: [UInt8], _ sections: [Section]) throws(Failure) -> Int {
        let tables = sections.filter { $0.type == 2 }
        guard tables.count == 1, let table = tables.first else { throw Failure(description: "\(tables.count) symbol tables (expected one)") }
        guard table.entrySize == 24, table.size % 24 == 0 else { throw Failure(description: "symbol table entries are not 24 bytes") }
        let strings = sections[table.link]
        guard strings.type == 3, strings.size > 0 else { throw Failure(description: "symbol table does not link to a string table") }
        let count = table.size / 24
        for symbol in 0..<count {
            let base = table.offset + symbol * 24
            let name = u32(bytes, base), sectionIndex = u16(bytes, base + 6)
            guard name < strings.size, bytes[(strings.offset + name)..<(strings.offset + strings.size)].contains(0) else {
                throw Failure(description: "symbol \(symbol) has a name outside its string table")
            }
            guard sectionIndex < sections.count || sectionIndex >= 0xff00 else {
                throw Failure(description: "symbol \(symbol) is in section \(sectionIndex) of \(sections.count)")
            }
        }
        return count
    }

    private static func checkRelocations(_ bytes: [UInt8], _ sections: [Section], symbolCount: Int) throws(Failure) {
        for section in sections where section.type == 9 || section.type == 4 { // SHT_REL, SHT_RELA
            let entry = section.type == 9 ? 16 : 24
            guard section.entrySize == entry || section.entrySize == 0, section.size % entry == 0 else {
                throw Failure(description: "relocation section \(section.name) has entries of \(section.entrySize) bytes")
            }
            guard sections.indices.contains(section.link), sections[section.link].type == 2, sections.indices.contains(section.info) else {
                throw Failure(description: "relocation section \(section.name) names section \(section.info) or symbol table \(section.link), which do not exist")
            }
            let target = sections[section.info]
            for index in 0..<(section.size / entry) {
                let base = section.offset + index * entry
                let offset = u64(bytes, base), symbol = Int(u64(bytes, base + 8) >> 32)
                guard symbol < symbolCount else { throw Failure(description: "relocation \(index) of \(section.name) names symbol \(symbol) of \(symbolCount)") }
                guard target.type == 8 || target.name.hasPrefix(".debug") || fits(offset, 8, target.size) else {
                    throw Failure(description: "relocation \(index) of \(section.name) points past the end of \(target.name)")
                }
            }
        }
    }
}

/// `.BTF` parsed just far enough to check it (kernel's `include/uapi/linux/btf.h` layout).
private struct BTFCheck {
    typealias Failure = BPFObjectValidation.Failure
    let stringsStart: Int
    let stringsSize: Int
    /// Kinds of types 1...n (index 0 is void).
    var kinds: [Int] = [0]

    init(_ bytes: [UInt8], _ section: BPFObjectValidation.Section) throws(Failure) {
        let u16 = BPFObjectValidation.u16, u32 = BPFObjectValidation.u32, fits = BPFObjectValidation.fits
        let start = section.offset, size = section.size
        guard size >= 24, u16(bytes, start) == 0xeb9f, bytes[start + 2] == 1 else { throw Failure(description: ".BTF has no valid header") }
        let headerSize = u32(bytes, start + 4)
        let typesOffset = u32(bytes, start + 8), typesSize = u32(bytes, start + 12)
        let stringsOffset = u32(bytes, start + 16), stringsSize = u32(bytes, start + 20)
        guard headerSize >= 24, headerSize <= size, typesOffset % 4 == 0,
              fits(UInt64(typesOffset), UInt64(typesSize), size - headerSize), fits(UInt64(stringsOffset), UInt64(stringsSize), size - headerSize),
              stringsSize > 0 else {
            throw Failure(description: ".BTF header places its types or strings outside the section")
        }
        stringsStart = start + headerSize + stringsOffset
        self.stringsSize = stringsSize
        guard bytes[stringsStart] == 0, bytes[stringsStart + stringsSize - 1] == 0 else {
            throw Failure(description: ".BTF strings do not start and end with NUL")
        }
        // First pass: sizes and kinds; second: references (a type may refer to a later one).
        var references: [(type: Int, target: Int)] = []
        /// References that must land on one kind: DATASEC entries on VARs (14), FUNCs on FUNC_PROTOs (13).
        var typedReferences: [(type: Int, target: Int, kind: Int)] = []
        var names: [(type: Int, offset: Int)] = []
        var offset = start + headerSize + typesOffset
        let end = offset + typesSize
        while offset < end {
            guard end - offset >= 12 else { throw Failure(description: ".BTF type \(kinds.count) is cut off") }
            let id = kinds.count
            let info = u32(bytes, offset + 4), referenced = u32(bytes, offset + 8)
            let kind = (info >> 24) & 0x1f, count = info & 0xffff
            names.append((id, u32(bytes, offset)))
            var extra = 0
            switch kind {
            case 1: extra = 4
            case 2, 8, 9, 10, 11, 18: references.append((id, referenced))
            case 3:
                extra = 12
                guard end - offset >= 24 else { throw Failure(description: ".BTF type \(id) is cut off") }
                references.append((id, u32(bytes, offset + 12)))
                references.append((id, u32(bytes, offset + 16)))
            case 4, 5: extra = count * 12
            case 6: extra = count * 8
            case 7: break
            case 12: typedReferences.append((id, referenced, 13))
            case 13: extra = count * 8; references.append((id, referenced))
            case 14: extra = 4; references.append((id, referenced))
            case 15: extra = count * 12
            case 16: break
            case 17: extra = 4; references.append((id, referenced))
            case 19: extra = count * 12
            default: throw Failure(description: ".BTF type \(id) has unknown kind \(kind)")
            }
            guard end - offset - 12 >= extra else { throw Failure(description: ".BTF type \(id) is cut off") }
            let members = offset + 12
            switch kind {
            case 4, 5, 15:
                for index in 0..<count {
                    if kind != 15 { names.append((id, u32(bytes, members + index * 12))) }
                    if kind == 15 { typedReferences.append((id, u32(bytes, members + index * 12), 14)) }
                    else { references.append((id, u32(bytes, members + index * 12 + 4))) }
                }
            case 6: for index in 0..<count { names.append((id, u32(bytes, members + index * 8))) }
            case 19: for index in 0..<count { names.append((id, u32(bytes, members + index * 12))) }
            case 13:
                for index in 0..<count {
                    names.append((id, u32(bytes, members + index * 8)))
                    references.append((id, u32(bytes, members + index * 8 + 4)))
                }
            default: break
            }
            kinds.append(kind)
            offset += 12 + extra
        }
        for name in names where name.offset >= stringsSize {
            throw Failure(description: ".BTF type \(name.type) has a name outside the strings")
        }
        for reference in references where reference.target >= kinds.count {
            throw Failure(description: ".BTF type \(reference.type) refers to type \(reference.target) of \(kinds.count - 1)")
        }
        for reference in typedReferences where reference.target >= kinds.count || kinds[reference.target] != reference.kind {
            throw Failure(description: ".BTF type \(reference.type) refers to type \(reference.target), which is missing or of the wrong kind")
        }
    }

    /// `.BTF.ext`: every record's section name and string offsets inside `.BTF`'s strings, type ids inside its types.
    func checkExtension(_ bytes: [UInt8], _ section: BPFObjectValidation.Section) throws(Failure) {
        let u16 = BPFObjectValidation.u16, u32 = BPFObjectValidation.u32, fits = BPFObjectValidation.fits
        let start = section.offset, size = section.size
        guard size >= 24, u16(bytes, start) == 0xeb9f, bytes[start + 2] == 1 else { throw Failure(description: ".BTF.ext has no valid header") }
        let headerSize = u32(bytes, start + 4)
        guard headerSize >= 24, headerSize <= size else { throw Failure(description: ".BTF.ext header is larger than the section") }
        var parts = [(u32(bytes, start + 8), u32(bytes, start + 12), "func_info"), (u32(bytes, start + 16), u32(bytes, start + 20), "line_info")]
        if headerSize >= 32 { parts.append((u32(bytes, start + 24), u32(bytes, start + 28), "core_relo")) }
        for (offset, length, name) in parts where length > 0 {
            guard fits(UInt64(offset), UInt64(length), size - headerSize), length >= 4 else {
                throw Failure(description: ".BTF.ext \(name) lies outside the section")
            }
            var position = start + headerSize + offset
            let end = position + length
            let recordSize = u32(bytes, position)
            let minimum = name == "func_info" ? 8 : name == "line_info" ? 16 : 16
            guard recordSize >= minimum, recordSize % 4 == 0 else { throw Failure(description: ".BTF.ext \(name) records of \(recordSize) bytes") }
            position += 4
            while position < end {
                guard end - position >= 8 else { throw Failure(description: ".BTF.ext \(name) is cut off") }
                let sectionName = u32(bytes, position), records = u32(bytes, position + 4)
                guard sectionName < stringsSize else { throw Failure(description: ".BTF.ext \(name) names a section outside the strings") }
                guard records > 0, UInt64(records) * UInt64(recordSize) <= UInt64(end - position - 8) else {
                    throw Failure(description: ".BTF.ext \(name) has a bad record count")
                }
                for record in 0..<records {
                    let base = position + 8 + record * recordSize
                    switch name {
                    case "func_info":
                        guard u32(bytes, base + 4) < kinds.count else { throw Failure(description: ".BTF.ext func_info refers to a missing type") }
                    case "line_info":
                        guard u32(bytes, base + 4) < stringsSize, u32(bytes, base + 8) < stringsSize else {
                            throw Failure(description: ".BTF.ext line_info has a string outside the strings")
                        }
                    default:
                        guard u32(bytes, base + 4) < kinds.count, u32(bytes, base + 8) < stringsSize else {
                            throw Failure(description: ".BTF.ext core_relo refers to a missing type or string")
                        }
                    }
                }
                position += 8 + records * recordSize
            }
        }
    }
}
