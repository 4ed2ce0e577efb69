internal import CLibBPF
#if canImport(Glibc)
import Glibc
#endif

/// What a compiled BPF object file holds, read from its ELF and BTF without loading anything
/// (`bpf_object__open_mem`, no privileges needed): programs with their sections, maps with their BTF
/// key/value types, the global variables of the data sections with their defaults, and the event structs
/// it exports. The runner builds options, printers and samplers from this.
public struct BPFObjectFile: Sendable {
    public let name: String
    public let bytes: [UInt8]
    public let programs: [Program]
    public let maps: [Map]
    public let variables: [Variable]
    /// Structs named by pointer globals (`const struct event *unused;`), the types records are printed with.
    public let exportTypes: [(name: String, type: BTFType)]

    public struct Program: Sendable, Equatable {
        public let name: String
        /// The ELF section, e.g. `tracepoint/sched/sched_process_exec`, `uprobe//bin/bash:readline`.
        public let section: String
    }

    public struct Map: Sendable {
        public let name: String
        /// `enum bpf_map_type` (27 ring buffer, 4 perf event array, 1 hash, 2 array, ...).
        public let type: UInt32
        public let keySize: Int
        public let valueSize: Int
        public let keyType: BTFType?
        public let valueType: BTFType?
        /// libbpf's maps for `.rodata`, `.data`, `.bss` and `.kconfig`.
        public let isInternal: Bool
    }

    public struct Variable: Sendable {
        public let name: String
        public let section: String
        public let type: BTFType
        public let offset: Int
        /// The initial bytes from the section (zeros for `.bss`).
        public let defaultBytes: [UInt8]
        public let isConst: Bool

        /// The default as a value.
        public var defaultValue: BTFValue { defaultBytes.withUnsafeBytes { BTFValue(type, in: $0) } }
    }

    /// Reads the object in `bytes`. Throws when it is malformed (`BPFObjectValidation`, checked before libbpf
    /// sees it), libbpf cannot open it, or it has no BTF.
    public init(bytes: [UInt8], name: String) throws {
        LibbpfLog.install()
        self.name = name
        self.bytes = bytes
        do { try BPFObjectValidation.check(bytes) } catch {
            throw BPFError("open BPF object \(name) (malformed: \(error.description))", errno: EINVAL)
        }
        var options = bpf_object_open_opts()
        options.sz = MemoryLayout<bpf_object_open_opts>.size
        let (opened, messages) = LibbpfLog.capturing { () -> (OpaquePointer?, Int32) in
            let handle: OpaquePointer? = name.withCString { objectName in
                options.object_name = objectName
                return bytes.withUnsafeBytes { $0.count == 0 ? nil : bpf_object__open_mem($0.baseAddress, $0.count, &options) }
            }
            return (handle, errno)
        }
        guard let object = opened.0 else {
            var reason = messages.split(separator: "\n").last.map { " (\($0.trimmingCharacters(in: .whitespaces)))" } ?? ""
            if messages.contains("BTF") { reason += "; compile it with clang -g" }
            // libbpf's own codes (LIBBPF_ERRNO__*, 4000 and up) mean the file is not a usable BPF object.
            throw BPFError("open BPF object \(name)\(reason)", errno: bytes.isEmpty || opened.1 >= 4000 ? EINVAL : opened.1)
        }
        defer { bpf_object__close(object) }
        guard let btf = bpf_object__btf(object) else {
            throw BPFError("read BTF of object \(name): it has none (compile with clang -g)", errno: ENOENT)
        }
        let reader = BTFTypeReader(btf)

        var programs: [Program] = []
        var program = bpf_object__next_program(object, nil)
        while let current = program {
            programs.append(Program(name: String(cString: bpf_program__name(current)), section: String(cString: bpf_program__section_name(current))))
            program = bpf_object__next_program(object, current)
        }
        self.programs = programs

        var maps: [Map] = []
        var initialValues: [String: UnsafeRawBufferPointer] = [:]
        var map = bpf_object__next_map(object, nil)
        while let current = map {
            let mapName = String(cString: bpf_map__name(current))
            let keyID = bpf_map__btf_key_type_id(current), valueID = bpf_map__btf_value_type_id(current)
            let isInternalMap = bpf_map__is_internal(current)
            maps.append(Map(name: mapName, type: bpf_map__type(current).rawValue,
                            keySize: Int(bpf_map__key_size(current)), valueSize: Int(bpf_map__value_size(current)),
                            keyType: keyID == 0 ? nil : reader.type(keyID), valueType: valueID == 0 ? nil : reader.type(valueID),
                            isInternal: isInternalMap))
            if isInternalMap {
                var size = 0
                if let initial = bpf_map__initial_value(current, &size), size > 0 {
                    initialValues[mapName] = UnsafeRawBufferPointer(start: initial, count: size) // valid while the object is open
                }
            }
            map = bpf_object__next_map(object, current)
        }
        self.maps = maps

        var variables: [Variable] = []
        for section in reader.dataSectionNames() where [".rodata", ".data", ".bss"].contains(section) {
            let initial = maps.first { $0.isInternal && $0.name.hasSuffix(section) }.flatMap { initialValues[$0.name] } ?? UnsafeRawBufferPointer(start: nil, count: 0)
            for variable in reader.variables(inSection: section) {
                // A variable must lie inside its section's data (a corrupt DATASEC may say otherwise); at most
                // 1 MiB of a default is kept.
                guard variable.size > 0, variable.size <= 1 << 20, variable.offset >= 0, variable.size <= initial.count, variable.offset <= initial.count - variable.size,
                      let type = reader.type(variable.typeID) else { continue }
                let defaults = Array(initial[variable.offset..<(variable.offset + variable.size)])
                variables.append(Variable(name: variable.name, section: section, type: type, offset: variable.offset,
                                          defaultBytes: defaults, isConst: variable.isConst))
            }
        }
        self.variables = variables
        exportTypes = reader.pointedToStructs().compactMap { entry in reader.type(entry.id).map { (entry.name, $0) } }
        structTypes = Dictionary(reader.allStructs().map { ($0.name, $0.type) }, uniquingKeysWith: { first, _ in first })
    }

    private let structTypes: [String: BTFType]

    /// `struct name` from the object's BTF (for export types a package's meta names).
    public func structType(named name: String) -> BTFType? { structTypes[name] }

    /// The settings a user can set before load: `const volatile` globals of `.rodata`.
    /// Function-local statics (`handle_exec.____fmt`, bpf_printk's format) are not settings.
    public var settings: [Variable] { variables.filter { $0.section == ".rodata" && $0.isConst && !$0.name.contains(".") } }
}

extension BTFTypeReader {
    /// Every named struct in the BTF, resolved (bounded: at most 4096 structs).
    func allStructs() -> [(name: String, type: BTFType)] {
        let count = btf__type_cnt(btf)
        guard count > 1 else { return [] }
        var result: [(String, BTFType)] = []
        for id in 1..<count where result.count < 4096 {
            guard let raw = btf__type_by_id(btf, id), btf_kind(raw) == 4 else { continue }
            let structName = name(raw.pointee.name_off)
            if !structName.isEmpty, let type = type(id) { result.append((structName, type)) }
        }
        return result
    }
}
