internal import CLibElf
internal import CTracerShim
#if canImport(Glibc)
import Glibc
#endif

/// A struct field a Go tracer reads from process memory, named as in Go's DWARF
/// (`DW_TAG_structure_type` "net/http.Request", `DW_TAG_member` "Method").
public struct GoField: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The Go type as DWARF names it: `package/path.Type`.
    public let type: String
    public let field: String

    public init(_ type: String, _ field: String) {
        self.type = type
        self.field = field
    }

    /// `type.field`, the key used in JSON and the offsets table.
    public var description: String { "\(type).\(field)" }

    /// A broad list of `net/http` fields (the offsets table's columns, and the inspection tests' and
    /// benchmark's sample). The agent resolves only the fields its tracers declare (`Tracer.goFields`).
    /// What a Go `net/http` server and client tracer may read: the request line and headers
    /// (`net/http.Request`, `net/url.URL`), the server's response status (`net/http.response`), the
    /// client's response (`net/http.Response`), where a client request's headers are written
    /// (`net/http.transferWriter`, `bufio.Writer`: context propagation), connection addresses
    /// (`net/http.conn`, `net.netFD`, `net.TCPAddr`, `internal/poll.FD`) the goroutine id and its
    /// creator's (`runtime.g.goid`, `parentGoid` since go1.21).
    public static let netHTTP: [GoField] = [
        ("net/http.Request", ["Method", "URL", "Proto", "Header", "Body", "ContentLength", "Host", "RemoteAddr", "RequestURI", "TLS", "ctx"]),
        ("net/url.URL", ["Scheme", "Host", "Path", "RawPath", "RawQuery"]),
        ("net/http.response", ["conn", "req", "status", "contentLength", "handlerHeader", "written"]),
        ("net/http.Response", ["Status", "StatusCode", "Header", "ContentLength", "Request"]),
        ("net/http.conn", ["server", "rwc", "remoteAddr"]),
        ("net/http.persistConn", ["conn", "br"]),
        ("net/http.transferWriter", ["Header"]),
        ("bufio.Writer", ["buf", "n"]),
        ("net.conn", ["fd"]),
        ("net.netFD", ["pfd", "laddr", "raddr"]),
        ("internal/poll.FD", ["Sysfd"]),
        ("net.TCPAddr", ["IP", "Port"]),
        ("runtime.g", ["goid", "m", "parentGoid"]),
    ].flatMap { type, fields in fields.map { GoField(type, $0) } } + cryptoTLSReads

    /// Where a `crypto/tls.Conn` keeps what its Reads hand out: the decrypted record `input` (a
    /// `bytes.Reader`: array `s`, read index `i`), the number of the last record read (`in.seq`) and what
    /// ended reading (`in.err`). The capture layer takes a Read's plaintext from them at the connection's
    /// next call (no RET probe).
    public static let cryptoTLSReads: [GoField] = [
        ("crypto/tls.Conn", ["in", "input"]), ("crypto/tls.halfConn", ["seq", "err"]), ("bytes.Reader", ["s", "i"]),
    ].flatMap { type, fields in fields.map { GoField(type, $0) } }
}

/// Where struct field offsets came from.
public enum GoOffsetSource: Sendable, Equatable, Codable, CustomStringConvertible {
    /// The binary's own DWARF (`.debug_info`, read with libdw).
    case dwarf
    /// The project's offsets table (``GoOffsetsTable``), for the named Go release line (e.g. `go1.19`).
    case table(goVersion: String)

    public var description: String {
        switch self {
        case .dwarf: "DWARF"
        case .table(let version): "offsets table (\(version))"
        }
    }
}

/// Field offsets resolved for one binary.
public struct GoFieldOffsets: Sendable, Equatable, Codable {
    public let source: GoOffsetSource
    /// Byte offset of each field inside its struct (`DW_AT_data_member_location`).
    public let offsets: [String: UInt64]
    /// Requested fields this binary does not have (type not linked in, or field absent in this Go version).
    public let missing: [String]

    public func offset(_ field: GoField) -> UInt64? { offsets[field.description] }
}

extension ELFFile {
    /// Whether the file has DWARF type information (`.debug_info`, compressed or not).
    public var hasDWARF: Bool { sections.contains { $0.name == ".debug_info" || $0.name == ".zdebug_info" } }

    /// Member offsets of the requested structs from DWARF, via libdw: every compile unit's top-level
    /// `DW_TAG_structure_type` whose `DW_AT_name` is a requested type, then its `DW_TAG_member`
    /// children's `DW_AT_data_member_location`. Nil when the file has no DWARF; corrupt DWARF throws.
    func dwarfFieldOffsets(_ fields: [GoField]) throws(InspectionError) -> [GoField: UInt64]? {
        guard hasDWARF else { return nil }
        // libdw decompresses every debug section it knows when it opens a file; Go compresses them all
        // and only type information is needed, so libdw gets an image holding just those sections.
        let image = typeInformationImage()
        defer {
            withExtendedLifetime(image) {}  // libelf and libdw point into it until the end
            // libelf's decompressed sections are large malloc blocks glibc keeps after free (its mmap
            // threshold adapts upwards); hand them back so inspection leaves no RSS behind.
            tracer_release_free_heap()
        }
        var typesElf = elf
        if let image, let base = image.base, let minimal = elf_memory(base.assumingMemoryBound(to: CChar.self), image.count) {
            typesElf = minimal
        }
        defer { if typesElf != elf { elf_end(typesElf) } }
        guard let dwarf = dwarf_begin_elf(typesElf, DWARF_C_READ, nil) else {
            throw InspectionError(.malformed, path, "DWARF: \(dwarfError(dwarf_errno()))")
        }
        defer { dwarf_end(dwarf) }
        var wanted: [String: Set<String>] = [:]
        for field in fields { wanted[field.type, default: []].insert(field.field) }
        var found: [GoField: UInt64] = [:]
        var remainingTypes = Set(wanted.keys)
        // Unit offsets, the Go runtime's unit first: the Go linker puts every type DIE there, so the
        // other units (one per package, thousands of subprogram DIEs) need no walk at all.
        var units: [Dwarf_Off] = []
        var offset: Dwarf_Off = 0
        var next: Dwarf_Off = 0
        var headerSize = 0
        while true {
            let status = dwarf_nextcu(dwarf, offset, &next, &headerSize, nil, nil, nil)
            if status == 1 {
                // libdw reports "no more units" for a unit header it cannot parse; at offset 0 that is corrupt DWARF.
                if offset == 0 { throw InspectionError(.malformed, path, "DWARF: no readable compile unit in .debug_info") }
                break
            }
            guard status == 0 else { throw InspectionError(.malformed, path, "DWARF: \(dwarfError(dwarf_errno()))") }
            // dwarf_nextcu does not check a unit's length or version; reading its DIE does.
            var unit = Dwarf_Die()
            guard dwarf_offdie(dwarf, offset + Dwarf_Off(headerSize), &unit) != nil else {
                throw InspectionError(.malformed, path, "DWARF: unit at .debug_info offset 0x\(hex(offset)) unreadable: \(dwarfError(dwarf_errno()))")
            }
            let isRuntime = dwarf_diename(&unit).map { String(cString: $0) == "runtime" } ?? false
            if isRuntime { units.insert(offset + Dwarf_Off(headerSize), at: 0) } else { units.append(offset + Dwarf_Off(headerSize)) }
            offset = next
        }
        for unitOffset in units where !remainingTypes.isEmpty {
            var unit = Dwarf_Die()
            var child = Dwarf_Die()
            guard dwarf_offdie(dwarf, unitOffset, &unit) != nil, dwarf_child(&unit, &child) == 0 else { continue }
            repeat {
                guard dwarf_tag(&child) == DW_TAG_structure_type, let cName = dwarf_diename(&child) else { continue }
                let name = String(cString: cName)
                guard remainingTypes.contains(name), let members = wanted[name] else { continue }
                remainingTypes.remove(name)
                var member = Dwarf_Die()
                guard dwarf_child(&child, &member) == 0 else { continue }
                repeat {
                    guard dwarf_tag(&member) == DW_TAG_member, let cMember = dwarf_diename(&member) else { continue }
                    let memberName = String(cString: cMember)
                    guard members.contains(memberName) else { continue }
                    var attribute = Dwarf_Attribute()
                    var value: Dwarf_Word = 0
                    guard dwarf_attr(&member, UInt32(DW_AT_data_member_location), &attribute) != nil,
                          dwarf_formudata(&attribute, &value) == 0 else {
                        throw InspectionError(.malformed, path, "DWARF: \(name).\(memberName) has no constant DW_AT_data_member_location")
                    }
                    found[GoField(name, memberName)] = value
                } while nextSibling(&member)
            } while !remainingTypes.isEmpty && nextSibling(&child)
        }
        return found
    }

    /// Offsets of `fields` for this Go binary: from DWARF when present, else from the project's
    /// ``GoOffsetsTable`` for the binary's Go release line. Never guesses: a binary without DWARF whose Go
    /// version is not in the table is "not instrumentable as Go" (``InspectionError/Reason/notInstrumentableAsGo``).
    public func goFieldOffsets(_ fields: [GoField], buildInfo: GoBuildInfo?) throws(InspectionError) -> GoFieldOffsets {
        if let fromDWARF = try dwarfFieldOffsets(fields) {
            return GoFieldOffsets(source: .dwarf, fields: fields, found: fromDWARF)
        }
        guard let buildInfo else {
            throw InspectionError(.notInstrumentableAsGo, path,
                                  "not instrumentable as Go: no DWARF and no Go build info to pick offsets by version; use the generic tracer")
        }
        guard let (line, table) = GoOffsetsTable.shared.offsets(forGoVersion: buildInfo.goVersion) else {
            throw InspectionError(.notInstrumentableAsGo, path,
                                  "not instrumentable as Go: no DWARF and \(buildInfo.goVersion) is not in the offsets table (\(GoOffsetsTable.shared.versionRange)); use the generic tracer")
        }
        var found: [GoField: UInt64] = [:]
        for field in fields { if let offset = table[field.description] { found[field] = offset } }
        return GoFieldOffsets(source: .table(goVersion: line), fields: fields, found: found)
    }
}

extension GoFieldOffsets {
    init(source: GoOffsetSource, fields: [GoField], found: [GoField: UInt64]) {
        self.source = source
        offsets = Dictionary(uniqueKeysWithValues: found.map { ($0.key.description, $0.value) })
        missing = fields.filter { found[$0] == nil }.map(\.description)
    }
}

extension ELFFile {
    /// The debug sections type lookups need (`.debug_info`, `.debug_abbrev` and the string/address
    /// tables DWARF 5 forms refer to), still compressed if they were, in a minimal 64-bit ELF image
    /// (header, data, `.shstrtab`, section headers). Nil for 32-bit files, which get the whole file.
    func typeInformationImage() -> FileBytes? {
        let wanted: Set<String> = [".debug_info", ".debug_abbrev", ".debug_str", ".debug_line_str", ".debug_str_offsets",
                                   ".debug_addr", ".zdebug_info", ".zdebug_abbrev", ".zdebug_str"]
        let chosen = sections.filter { wanted.contains($0.name) && $0.type != UInt32(SHT_NOBITS) }
        guard is64Bit, !chosen.isEmpty else { return nil }
        // Layout: Elf64_Ehdr | each section's bytes (8-aligned) | .shstrtab | Elf64_Shdr[null, chosen..., .shstrtab].
        var names: [UInt8] = [0]
        var placed: [(name: Int, section: ELFSection, offset: Int)] = []
        var end = 64
        for section in chosen {
            end = (end + 7) & ~7
            placed.append((names.count, section, end))
            names += Array(section.name.utf8) + [0]
            end += Int(section.size)
        }
        let namesName = names.count
        names += Array(".shstrtab".utf8) + [0]
        let namesOffset = end
        let headersOffset = (namesOffset + names.count + 7) & ~7
        var tail: [UInt8] = []  // section headers
        func append<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { tail += $0 } }
        func sectionHeader(name: Int, type: UInt32, flags: UInt64, offset: Int, size: Int, alignment: UInt64) {
            append(UInt32(name)); append(type); append(flags); append(UInt64(0))  // sh_name, sh_type, sh_flags, sh_addr
            append(UInt64(offset)); append(UInt64(size)); append(UInt32(0)); append(UInt32(0))  // sh_offset, sh_size, sh_link, sh_info
            append(alignment); append(UInt64(0))  // sh_addralign, sh_entsize
        }
        sectionHeader(name: 0, type: 0, flags: 0, offset: 0, size: 0, alignment: 0)
        for p in placed {
            sectionHeader(name: p.name, type: UInt32(SHT_PROGBITS), flags: p.section.flags, offset: p.offset, size: Int(p.section.size), alignment: 8)
        }
        sectionHeader(name: namesName, type: UInt32(SHT_STRTAB), flags: 0, offset: namesOffset, size: names.count, alignment: 1)
        // Elf64_Ehdr: ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ET_EXEC (no relocations to apply), this file's e_machine.
        var header: [UInt8] = [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1] + [UInt8](repeating: 0, count: 9)
        withUnsafeBytes(of: UInt16(2).littleEndian) { header += $0 }
        withUnsafeBytes(of: machine.littleEndian) { header += $0 }
        withUnsafeBytes(of: UInt32(1).littleEndian) { header += $0 }
        header += [UInt8](repeating: 0, count: 16)  // e_entry, e_phoff
        withUnsafeBytes(of: UInt64(headersOffset).littleEndian) { header += $0 }
        header += [UInt8](repeating: 0, count: 4)  // e_flags
        for field: UInt16 in [64, 0, 0, 64, UInt16(placed.count + 2), UInt16(placed.count + 1)] {
            withUnsafeBytes(of: field.littleEndian) { header += $0 }  // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
        }
        let image = FileBytes(zeroed: headersOffset + tail.count)
        guard let base = image.base else { return nil }
        base.copyMemory(from: header, byteCount: header.count)
        for p in placed {
            let data = contents(of: p.section)
            if let source = data.bytes.baseAddress { (base + p.offset).copyMemory(from: source, byteCount: data.count) }
        }
        (base + namesOffset).copyMemory(from: names, byteCount: names.count)
        (base + headersOffset).copyMemory(from: tail, byteCount: tail.count)
        return image
    }
}

/// Moves `die` to its next sibling (`dwarf_siblingof`); false at the end of the list or on error.
private func nextSibling(_ die: inout Dwarf_Die) -> Bool {
    var current = die
    return dwarf_siblingof(&current, &die) == 0
}

/// `dwarf_errmsg` for an error code.
func dwarfError(_ code: Int32) -> String {
    guard let message = dwarf_errmsg(code) else { return "unknown libdw error \(code)" }
    return String(cString: message)
}
