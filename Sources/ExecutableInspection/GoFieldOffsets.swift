internal import CLibElf

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

    /// Parses `package/path.Type.field` (the field is after the last dot).
    public init?(_ key: String) {
        guard let dot = key.lastIndex(of: "."), dot != key.startIndex else { return nil }
        self.init(String(key[..<dot]), String(key[key.index(after: dot)...]))
    }

    /// What a Go `net/http` server and client tracer reads: the request line and headers
    /// (`net/http.Request`, `net/url.URL`), the server's response status (`net/http.response`), the
    /// client's response (`net/http.Response`), connection addresses (`net/http.conn`, `net.netFD`,
    /// `net.TCPAddr`, `internal/poll.FD`) and the goroutine id (`runtime.g.goid`).
    public static let netHTTP: [GoField] = [
        ("net/http.Request", ["Method", "URL", "Proto", "Header", "Body", "ContentLength", "Host", "RemoteAddr", "RequestURI", "TLS", "ctx"]),
        ("net/url.URL", ["Scheme", "Host", "Path", "RawPath", "RawQuery"]),
        ("net/http.response", ["conn", "req", "status", "contentLength", "handlerHeader", "written"]),
        ("net/http.Response", ["Status", "StatusCode", "Header", "ContentLength", "Request"]),
        ("net/http.conn", ["server", "rwc", "remoteAddr"]),
        ("net/http.persistConn", ["conn", "br"]),
        ("net.conn", ["fd"]),
        ("net.netFD", ["pfd", "laddr", "raddr"]),
        ("internal/poll.FD", ["Sysfd"]),
        ("net.TCPAddr", ["IP", "Port"]),
        ("runtime.g", ["goid", "m"]),
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
        _ = libelfReady
        guard let dwarf = dwarf_begin_elf(elf, DWARF_C_READ, nil) else {
            throw InspectionError(.malformed, path, "DWARF: \(dwarfError(dwarf_errno()))")
        }
        defer { dwarf_end(dwarf) }
        var wanted: [String: Set<String>] = [:]
        for field in fields { wanted[field.type, default: []].insert(field.field) }
        var found: [GoField: UInt64] = [:]
        var remainingTypes = Set(wanted.keys)
        var offset: Dwarf_Off = 0
        var next: Dwarf_Off = 0
        var headerSize = 0
        while !remainingTypes.isEmpty {
            let status = dwarf_nextcu(dwarf, offset, &next, &headerSize, nil, nil, nil)
            if status == 1 { break }
            guard status == 0 else { throw InspectionError(.malformed, path, "DWARF: \(dwarfError(dwarf_errno()))") }
            var unit = Dwarf_Die()
            var child = Dwarf_Die()
            if dwarf_offdie(dwarf, offset + Dwarf_Off(headerSize), &unit) != nil, dwarf_child(&unit, &child) == 0 {
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
                } while nextSibling(&child)
            }
            offset = next
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

extension ELFFile {
    /// Offset of Go's TLS slot for the current `runtime.g` from the thread pointer, for x86-64 (TLS
    /// variant II: the executable's TLS block ends at the thread pointer, so it starts at
    /// `tp − roundup(p_memsz, p_align)`). An internally linked binary's `PT_TLS` holds only that 8-byte
    /// slot (−8, the runtime's `-8(FS)`); an externally linked one places `runtime.tlsg` (an `STT_TLS`
    /// symbol whose value is its offset in the block) among the C libraries' TLS. Nil when neither holds
    /// (no `PT_TLS`, another machine, or an externally linked binary whose symbols were stripped).
    public var goGTLSOffset: Int64? {
        guard machine == UInt16(EM_X86_64), let tls = tlsSegment, tls.memorySize > 0 else { return nil }
        let alignment = max(tls.alignment, 1)
        let block = Int64((tls.memorySize + alignment - 1) / alignment * alignment)
        if tls.memorySize == 8 { return -8 }
        guard let tlsg = symbol(named: "runtime.tlsg") else { return nil }
        return Int64(tlsg.address) - block
    }
}
