internal import CLibBPF

/// A data type from an object's BTF, resolved through typedefs and qualifiers (`btf__type_by_id` and
/// the `btf_*` accessors of libbpf's btf.h; BTF itself is Linux 4.18+, enum64 Linux 6.0).
/// What the runner needs to print records, build options and read maps without user-space code.
public indirect enum BTFType: Sendable, Equatable {
    /// An integer; `isChar` for `char` (printed as text inside arrays), `isBool` for `_Bool`.
    case integer(name: String, size: Int, signed: Bool, isChar: Bool, isBool: Bool)
    case float(name: String, size: Int)
    case enumeration(name: String, size: Int, signed: Bool, cases: [BTFEnumCase])
    /// A struct or union (`isUnion`); the members' offsets are from the start of the value.
    case structure(name: String, size: Int, isUnion: Bool, members: [BTFMember])
    case array(element: BTFType, count: Int)
    case pointer
    /// Anything else with a size (forward declarations, functions, types nested too deep): bytes only.
    case opaque(name: String, size: Int)

    /// The value's size in bytes.
    public var size: Int {
        switch self {
        case .integer(_, let size, _, _, _), .float(_, let size), .enumeration(_, let size, _, _),
             .structure(_, let size, _, _), .opaque(_, let size): size
        case .array(let element, let count): element.size.multipliedReportingOverflow(by: count).overflow ? 0 : element.size * count
        case .pointer: 8
        }
    }

    /// The C spelling, as the package meta writes types: `unsigned int`, `char[16]`, `struct event`, `enum state`.
    public var cName: String {
        switch self {
        case .integer(let name, _, _, _, _), .float(let name, _), .opaque(let name, _): name
        case .enumeration(let name, _, _, _): name.isEmpty ? "enum" : "enum \(name)"
        case .structure(let name, _, let isUnion, _): "\(isUnion ? "union" : "struct")\(name.isEmpty ? "" : " \(name)")"
        case .array(let element, let count): "\(element.cName)[\(count)]"
        case .pointer: "void *"
        }
    }

    /// Whether this is a `char` array, printed as text.
    public var isCharArray: Bool {
        if case .array(.integer(_, 1, _, true, _), _) = self { return true }
        return false
    }
}

public struct BTFEnumCase: Sendable, Equatable {
    public let name: String
    public let value: Int64
}

public struct BTFMember: Sendable, Equatable {
    public let name: String
    /// Offset from the start of the struct in bits (bitfields need the bits).
    public let bitOffset: Int
    /// Width of a bitfield member, 0 for an ordinary member.
    public let bitSize: Int
    public let type: BTFType
}

/// Reads types out of a `struct btf` into `BTFType` values. Depth and the number of nodes built are
/// bounded, so a hostile object (a struct of a thousand members of a struct of a thousand members ...)
/// cannot make it recurse without end or build an exponential tree: past the budget, types become opaque.
final class BTFTypeReader {
    let btf: OpaquePointer
    static let maximumDepth = 24
    /// Type nodes this reader may still build.
    private var budget: Int

    init(_ btf: OpaquePointer, budget: Int = 200_000) {
        self.btf = btf
        self.budget = budget
    }

    func name(_ offset: UInt32) -> String {
        guard let name = btf__name_by_offset(btf, offset) else { return "" }
        return String(cString: name)
    }

    /// The id after skipping typedefs, const/volatile/restrict and type tags (at most `maximumDepth` steps).
    func resolve(_ id: UInt32) -> UInt32 {
        var id = id
        for _ in 0..<Self.maximumDepth {
            guard let type = btf__type_by_id(btf, id) else { return id }
            switch Int(btf_kind(type)) {
            case 8, 9, 10, 11, 18: id = type.pointee.type // typedef, volatile, const, restrict, type tag
            default: return id
            }
        }
        return id
    }

    /// The type `id` names, resolved; nil when the id is not in the BTF.
    func type(_ id: UInt32, depth: Int = 0) -> BTFType? {
        let id = resolve(id)
        guard let type = btf__type_by_id(btf, id) else { return nil }
        let typeName = name(type.pointee.name_off)
        let size = Int(type.pointee.size)
        budget -= 1
        if depth >= Self.maximumDepth || budget < 0 { return .opaque(name: typeName, size: max(0, Int(btf__resolve_size(btf, id)))) }
        switch Int(btf_kind(type)) {
        case 0: return .opaque(name: "void", size: 0)
        case 1:
            let encoding = Int32(btf_int_encoding(type))
            return .integer(name: typeName, size: size, signed: encoding & 1 != 0, isChar: encoding & 2 != 0 || typeName == "char",
                            isBool: encoding & 4 != 0)
        case 2: return .pointer
        case 3:
            let array = btf_array(type)!.pointee
            guard let element = self.type(array.type, depth: depth + 1) else { return nil }
            return .array(element: element, count: Int(array.nelems))
        case 4, 5:
            let members = btf_members(type)!
            var result: [BTFMember] = []
            for index in 0..<Int(btf_vlen(type)) {
                guard let memberType = self.type(members[index].type, depth: depth + 1) else { return nil }
                result.append(BTFMember(name: name(members[index].name_off),
                                        bitOffset: Int(btf_member_bit_offset(type, UInt32(index))),
                                        bitSize: Int(btf_member_bitfield_size(type, UInt32(index))), type: memberType))
            }
            return .structure(name: typeName, size: size, isUnion: btf_kind(type) == 5, members: result)
        case 6:
            let values = btf_enum(type)!
            let signed = btf_kflag(type)
            let cases = (0..<Int(btf_vlen(type))).map { index in
                BTFEnumCase(name: name(values[index].name_off),
                            value: signed ? Int64(values[index].val) : Int64(UInt32(bitPattern: values[index].val)))
            }
            return .enumeration(name: typeName, size: size, signed: signed, cases: cases)
        case 19:
            let values = btf_enum64(type)!
            let cases = (0..<Int(btf_vlen(type))).map { index in
                BTFEnumCase(name: name(values[index].name_off), value: Int64(bitPattern: btf_enum64_value(values + index)))
            }
            return .enumeration(name: typeName, size: size, signed: btf_kflag(type), cases: cases)
        case 16: return .float(name: typeName, size: size)
        default: return .opaque(name: typeName, size: max(0, Int(btf__resolve_size(btf, id))))
        }
    }

    /// The id of `struct name` (or union), if the BTF has one.
    func structID(named name: String) -> UInt32? {
        for kind in [4, 5] {
            let id = btf__find_by_name_kind(btf, name, UInt32(kind))
            if id > 0 { return UInt32(id) }
        }
        return nil
    }

    /// The variables of a data section (`.rodata`, `.data`, `.bss`, ...) with offset and size.
    func variables(inSection section: String) -> [(name: String, typeID: UInt32, offset: Int, size: Int, isConst: Bool)] {
        let sectionID = btf__find_by_name_kind(btf, section, 15)
        guard sectionID > 0, let sectionType = btf__type_by_id(btf, UInt32(sectionID)) else { return [] }
        let infos = btf_var_secinfos(sectionType)!
        return (0..<Int(btf_vlen(sectionType))).compactMap { index in
            let info = infos[index]
            guard let variable = btf__type_by_id(btf, info.type), btf_kind(variable) == 14 else { return nil }
            return (name(variable.pointee.name_off), variable.pointee.type, Int(info.offset), Int(info.size), isConst(variable.pointee.type))
        }
    }

    /// Whether the chain of modifiers above a type contains `const` (for arrays, above their element:
    /// `const volatile char name[16]` is an array of const chars).
    private func isConst(_ id: UInt32) -> Bool {
        var id = id
        for _ in 0..<Self.maximumDepth {
            guard let type = btf__type_by_id(btf, id) else { return false }
            switch Int(btf_kind(type)) {
            case 10: return true
            case 3: id = btf_array(type)!.pointee.type
            case 8, 9, 11, 18: id = type.pointee.type
            default: return false
            }
        }
        return false
    }

    /// Every data section named in the BTF (DATASEC types).
    func dataSectionNames() -> [String] {
        let count = btf__type_cnt(btf)
        guard count > 1 else { return [] }
        return (1..<count).compactMap { id in
            guard let type = btf__type_by_id(btf, id), btf_kind(type) == 15 else { return nil }
            return name(type.pointee.name_off)
        }
    }

    /// The structs that global variables point to (`const struct event *unused_event;`, the libbpf-tools and
    /// project convention that keeps an event type in the BTF), in the order the variables appear.
    func pointedToStructs() -> [(name: String, id: UInt32)] {
        var result: [(String, UInt32)] = []
        for section in dataSectionNames() {
            for variable in variables(inSection: section) {
                let pointer = resolve(variable.typeID)
                guard let pointerType = btf__type_by_id(btf, pointer), btf_kind(pointerType) == 2 else { continue }
                let target = resolve(pointerType.pointee.type)
                guard let targetType = btf__type_by_id(btf, target), btf_kind(targetType) == 4 else { continue }
                let structName = name(targetType.pointee.name_off)
                if !structName.isEmpty && !result.contains(where: { $0.0 == structName }) { result.append((structName, target)) }
            }
        }
        return result
    }
}
