internal import CLibBPF
internal import CTracerShim
#if canImport(Glibc)
import Glibc
#endif

/// What to load from an embedded object, and how (cilium/ebpf's `CollectionSpec`): inert until
/// `load()`, which opens, configures and loads it in one step (`bpf_object__open_mem` + `bpf_object__load`).
public struct BPFObjectSpec: Sendable {
    public let embedded: EmbeddedBPFObject
    /// The programs to load; `nil` loads every program of the object.
    public var programs: Set<BPFProgramName>?
    /// Programs to load with expected attach type `BPF_TRACE_UPROBE_MULTI` (Linux 6.6), for `attachUprobeMulti`.
    public var uprobeMultiPrograms: Set<BPFProgramName> = []
    /// Values of `const volatile` globals, written into `.rodata`/`.data`/`.bss` before load.
    public private(set) var globals: [BPFGlobalName: [UInt8]] = [:]
    /// `max_entries` overrides.
    public var mapMaxEntries: [BPFMapName: UInt32] = [:]
    /// Maps that reuse an existing map instead of creating one (`bpf_map__reuse_fd`).
    public var sharedMaps: [BPFMapName: BPFMap] = [:]
    /// Maps of the object that are not to be created (`bpf_map__set_autocreate`, libbpf 1.0).
    public var skippedMaps: Set<BPFMapName> = []

    public init(_ embedded: EmbeddedBPFObject, programs: Set<BPFProgramName>? = nil) {
        self.embedded = embedded
        self.programs = programs
    }

    /// Sets a global of the object before load to raw bytes (its size, as in the object's BTF).
    public mutating func set(_ global: BPFGlobalName, bytes: [UInt8]) {
        globals[global] = bytes
    }

    /// Sets a `const volatile` global of the object before load.
    public mutating func set<Value: FixedWidthInteger>(_ global: BPFGlobalName, to value: Value) {
        globals[global] = withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }

    /// Opens and loads the object. On failure everything created so far is released and the error names
    /// the step, the program (with the verifier log) or map.
    public func load() throws -> BPFObject {
        LibbpfLog.install()
        let bytes = embedded.bytes
        let name = embedded.name
        var options = bpf_object_open_opts()
        options.sz = MemoryLayout<bpf_object_open_opts>.size
        let handle: OpaquePointer? = name.withCString { objectName in
            options.object_name = objectName
            return bytes.withUnsafeBytes { bpf_object__open_mem($0.baseAddress, $0.count, &options) }
        }
        guard let handle else { throw BPFError("open BPF object \(name)", errno: errno) }
        let object = BPFObject(handle: handle, name: name)
        try configure(object)
        let (result, messages) = LibbpfLog.capturing { bpf_object__load(handle) }
        guard result == 0 else {
            throw BPFError(loadFailure(of: object, messages: messages), errno: result,
                           verifierLog: LibbpfLog.verifierLog(in: messages))
        }
        return object
    }

    private func configure(_ object: BPFObject) throws {
        let known = Set(object.programNames)
        for program in (programs ?? []).union(uprobeMultiPrograms) where !known.contains(program) {
            throw BPFError("select program \(program) of object \(object.name): no such program", errno: ENOENT)
        }
        for program in object.programHandles {
            let name = BPFProgramName(String(cString: bpf_program__name(program)))
            let wanted = programs?.contains(name) ?? true
            try check(bpf_program__set_autoload(program, wanted), "select program \(name) of object \(object.name)")
            if uprobeMultiPrograms.contains(name) {
                try check(bpf_program__set_expected_attach_type(program, bpf_attach_type(UInt32(TRACER_BPF_TRACE_UPROBE_MULTI))),
                          "set attach type uprobe_multi on program \(name)")
            }
        }
        for (map, entries) in mapMaxEntries {
            try check(bpf_map__set_max_entries(try object.mapHandle(map), entries), "set max_entries of map \(map)")
        }
        for map in skippedMaps {
            try check(bpf_map__set_autocreate(try object.mapHandle(map), false), "skip creating map \(map)")
        }
        for (map, shared) in sharedMaps {
            try check(bpf_map__reuse_fd(try object.mapHandle(map), shared.fd), "share map \(map) into object \(object.name)")
        }
        for (global, value) in globals {
            try object.write(global, value)
        }
    }

    /// Names the program the kernel rejected when libbpf's messages say which one it was.
    private func loadFailure(of object: BPFObject, messages: String) -> String {
        let failed = object.programNames.first { messages.contains("prog '\($0.rawValue)': failed to load") }
        if let failed { return "load program \(failed) of object \(object.name)" }
        let mapFailure = object.mapHandles.map { String(cString: bpf_map__name($0)) }.first { messages.contains("map '\($0)': failed to create") }
        if let mapFailure { return "create map \(mapFailure) of object \(object.name)" }
        return "load BPF object \(object.name)"
    }
}

@inline(__always)
func check(_ result: Int32, _ operation: @autoclosure () -> String) throws {
    if result < 0 { throw BPFError(operation(), errno: result) }
}

/// A loaded BPF object (`struct bpf_object`): owns its programs and maps; `close()` or deinit releases
/// them (links made from its programs are separate and detach on their own).
public final class BPFObject: @unchecked Sendable {
    let handle: OpaquePointer
    public let name: String

    fileprivate init(handle: OpaquePointer, name: String) {
        self.handle = handle
        self.name = name
    }

    deinit { bpf_object__close(handle) }

    fileprivate var programHandles: [OpaquePointer] {
        var result: [OpaquePointer] = []
        var program = bpf_object__next_program(handle, nil)
        while let current = program {
            result.append(current)
            program = bpf_object__next_program(handle, current)
        }
        return result
    }

    fileprivate var programNames: [BPFProgramName] {
        programHandles.map { BPFProgramName(String(cString: bpf_program__name($0))) }
    }

    fileprivate var mapHandles: [OpaquePointer] {
        var result: [OpaquePointer] = []
        var map = bpf_object__next_map(handle, nil)
        while let current = map {
            result.append(current)
            map = bpf_object__next_map(handle, current)
        }
        return result
    }

    fileprivate func mapHandle(_ name: BPFMapName) throws -> OpaquePointer {
        guard let map = bpf_object__find_map_by_name(handle, name.rawValue) else {
            throw BPFError("find map \(name) in object \(self.name)", errno: ENOENT)
        }
        return map
    }

    /// Writes a global's bytes into the initial value of the internal map of its section, at the offset
    /// the object's BTF gives for it (DATASEC `.rodata`, `.data` or `.bss`).
    fileprivate func write(_ global: BPFGlobalName, _ value: [UInt8]) throws {
        let operation = "set global \(global) of object \(name)"
        guard let btf = bpf_object__btf(handle) else { throw BPFError("\(operation): object has no BTF", errno: ENOENT) }
        for section in [".rodata", ".data", ".bss"] {
            let sectionID = btf__find_by_name_kind(btf, section, 15 /* BTF_KIND_DATASEC */)
            guard sectionID > 0, let sectionType = btf__type_by_id(btf, UInt32(sectionID)) else { continue }
            let variables = btf_var_secinfos(sectionType)!
            for index in 0..<Int(btf_vlen(sectionType)) {
                let variable = variables[index]
                guard let variableType = btf__type_by_id(btf, variable.type),
                      String(cString: btf__name_by_offset(btf, variableType.pointee.name_off)) == global.rawValue else { continue }
                guard value.count == Int(variable.size) else {
                    throw BPFError("\(operation): value has \(value.count) bytes, the global \(variable.size)", errno: EINVAL)
                }
                guard let map = mapHandles.first(where: { bpf_map__is_internal($0) && String(cString: bpf_map__name($0)).hasSuffix(section) }) else {
                    throw BPFError("\(operation): no internal map for \(section)", errno: ENOENT)
                }
                var size = 0
                guard let initial = bpf_map__initial_value(map, &size), Int(variable.offset) + value.count <= size else {
                    throw BPFError("\(operation): \(section) is smaller than the global's offset", errno: EINVAL)
                }
                var data = [UInt8](UnsafeRawBufferPointer(start: initial, count: size))
                data.replaceSubrange(Int(variable.offset)..<Int(variable.offset) + value.count, with: value)
                try check(data.withUnsafeBytes { bpf_map__set_initial_value(map, $0.baseAddress, $0.count) }, operation)
                return
            }
        }
        throw BPFError("\(operation): no such global", errno: ENOENT)
    }

    /// The programs that were loaded.
    public var loadedPrograms: [BPFProgram] {
        programHandles.filter { bpf_program__fd($0) >= 0 }.map { BPFProgram(handle: $0, object: self) }
    }

    /// A loaded program of this object.
    public func program(_ name: BPFProgramName) throws -> BPFProgram {
        guard let program = bpf_object__find_program_by_name(handle, name.rawValue), bpf_program__fd(program) >= 0 else {
            throw BPFError("find program \(name) in object \(self.name) (not in the object or not loaded)", errno: ENOENT)
        }
        return BPFProgram(handle: program, object: self)
    }

    /// A created map of this object.
    public func map(_ name: BPFMapName) throws -> BPFMap {
        let map = try mapHandle(name)
        guard bpf_map__fd(map) >= 0 else { throw BPFError("find map \(name) in object \(self.name) (not created)", errno: ENOENT) }
        return BPFMap(objectMap: map, object: self)
    }
}
