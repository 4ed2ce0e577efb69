import CLibElf
import Foundation

/// Build tool behind `BPFEmbedPlugin`: compiles one `NAME.bpf.c` with clang for the BPF target and writes
/// a Swift file embedding the object (base64: a large array literal compiles far slower) with constants
/// for its programs, maps and globals, so renaming one in C breaks the Swift build.
struct Options {
    var clang = ""
    var input = ""
    var output = ""
    var namespace = ""
    var includes: [String] = []

    init(_ arguments: [String]) throws {
        var iterator = arguments.dropFirst().makeIterator()
        while let flag = iterator.next() {
            guard let value = iterator.next() else { throw ToolError("missing value after \(flag)") }
            switch flag {
            case "--clang": clang = value
            case "--input": input = value
            case "--output": output = value
            case "--namespace": namespace = value
            case "--include": includes.append(value)
            default: throw ToolError("unknown option \(flag)")
            }
        }
        if clang.isEmpty || input.isEmpty || output.isEmpty || namespace.isEmpty {
            throw ToolError("usage: BPFEmbedTool --clang PATH --input X.bpf.c --output X.swift --namespace NAME [--include DIR]...")
        }
    }
}

struct ToolError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Names found in a BPF object's symbol table.
struct ObjectNames {
    var programs: [String] = []
    var maps: [String] = []
    var globals: [String] = []
}

func compile(_ options: Options, into object: String) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: options.clang)
    process.arguments = ["-target", "bpf", "-O2", "-g", "-D__TARGET_ARCH_x86", "-Wall", "-Werror",
                         "-idirafter", "/usr/include"]
        + options.includes.flatMap { ["-I", $0] } + ["-c", options.input, "-o", object]
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw ToolError("clang failed (exit \(process.terminationStatus)) compiling \(options.input)")
    }
}

/// An object opened with libelf (read-only, or for rewriting in place), closed on deinit.
final class ELFObject {
    let fd: Int32
    let elf: OpaquePointer
    /// Index of the section-name string table.
    let sectionNameTable: Int

    init(_ path: String, writable: Bool) throws {
        guard elf_version(UInt32(EV_CURRENT)) != UInt32(EV_NONE) else { throw ToolError("libelf: \(String(cString: elf_errmsg(-1)))") }
        fd = open(path, writable ? O_RDWR : O_RDONLY)
        guard fd >= 0 else { throw ToolError("cannot open \(path): \(String(cString: strerror(errno)))") }
        guard let elf = elf_begin(fd, writable ? ELF_C_RDWR : ELF_C_READ, nil) else {
            close(fd)
            throw ToolError("libelf: \(String(cString: elf_errmsg(-1)))")
        }
        self.elf = elf
        var index = 0
        guard elf_getshdrstrndx(elf, &index) == 0 else {
            elf_end(elf)
            close(fd)
            throw ToolError("\(path): no section names")
        }
        sectionNameTable = index
    }

    deinit {
        elf_end(elf)
        close(fd)
    }

    func name(of header: GElf_Shdr) -> String? {
        elf_strptr(elf, sectionNameTable, Int(header.sh_name)).map { String(cString: $0) }
    }
}

/// Empties the sections libbpf never reads (`ignore_elf_section`): the DWARF `.debug_*` sections and the
/// relocations of DWARF, `.BTF` and `.BTF.ext`. clang needs `-g` to emit BTF, but the DWARF it emits with
/// it is 80-95 % of the object, and the embedded objects are read-only data the agent keeps resident
/// (the five objects' base64: 3.1 MB with it, 0.44 MB without). Sections keep their indexes, so symbols
/// and the remaining links stay valid.
func dropUnreadSections(of path: String) throws {
    func unread(_ name: String) -> Bool {
        if name.hasPrefix(".debug_") { return true }
        guard name.hasPrefix(".rel") else { return false }
        let target = name.dropFirst(".rel".count)
        return target.hasPrefix(".debug_") || target == ".BTF" || target == ".BTF.ext"
    }
    let object = try ELFObject(path, writable: true)
    var section = elf_nextscn(object.elf, nil)
    while let current = section {
        var header = GElf_Shdr()
        if gelf_getshdr(current, &header) != nil, let name = object.name(of: header), unread(name) {
            var data = elf_getdata(current, nil)
            while let chunk = data {
                chunk.pointee.d_size = 0  // d_buf stays: libelf would keep the old size of a chunk without one
                elf_flagdata(chunk, ELF_C_SET, UInt32(ELF_F_DIRTY))
                data = elf_getdata(current, chunk)
            }
        }
        section = elf_nextscn(object.elf, current)
    }
    let size = elf_update(object.elf, ELF_C_WRITE)
    guard size >= 0, ftruncate(object.fd, off_t(size)) == 0 else {
        throw ToolError("\(path): cannot rewrite without DWARF: \(String(cString: elf_errmsg(-1)))")
    }
}

/// Reads program, map and global names from the object with libelf: programs are global functions in
/// executable sections other than `.text` (which holds subprograms), maps live in `.maps`, globals in
/// `.rodata`/`.data`/`.bss`.
func readNames(of path: String) throws -> ObjectNames {
    let object = try ELFObject(path, writable: false)
    let elf = object.elf
    var sectionNames: [Int: String] = [:]
    var executable: Set<Int> = []
    var symbolSection: OpaquePointer?
    var section = elf_nextscn(elf, nil)
    while let current = section {
        var header = GElf_Shdr()
        if gelf_getshdr(current, &header) != nil {
            let index = elf_ndxscn(current)
            if let name = object.name(of: header) { sectionNames[index] = name }
            if header.sh_flags & UInt64(SHF_EXECINSTR) != 0 { executable.insert(index) }
            if header.sh_type == SHT_SYMTAB { symbolSection = current }
        }
        section = elf_nextscn(elf, current)
    }
    guard let symbols = symbolSection else { throw ToolError("\(path): no symbol table") }
    var header = GElf_Shdr()
    gelf_getshdr(symbols, &header)
    guard let data = elf_getdata(symbols, nil), header.sh_entsize > 0 else { throw ToolError("\(path): unreadable symbol table") }

    var names = ObjectNames()
    for index in 0..<Int32(header.sh_size / header.sh_entsize) {
        var symbol = GElf_Sym()
        guard gelf_getsym(data, index, &symbol) != nil,
              let rawName = elf_strptr(elf, Int(header.sh_link), Int(symbol.st_name)) else { continue }
        let name = String(cString: rawName)
        let type = Int32(symbol.st_info & 0xf), binding = Int32(symbol.st_info >> 4)
        let sectionName = sectionNames[Int(symbol.st_shndx)] ?? ""
        guard binding == STB_GLOBAL, !name.isEmpty else { continue }
        if type == STT_FUNC && executable.contains(Int(symbol.st_shndx)) && sectionName != ".text" {
            names.programs.append(name)
        } else if sectionName == ".maps" {
            names.maps.append(name)
        } else if [".rodata", ".data", ".bss"].contains(sectionName) && type == STT_OBJECT && !name.hasSuffix("_anchor") {
            names.globals.append(name)
        }
    }
    return names
}

/// `selftest_uprobe` → `selftestUprobe`; `http_server` as a type → `HttpServer`.
func camelCase(_ snake: String, upperFirst: Bool) -> String {
    let parts = snake.split(separator: "_").filter { !$0.isEmpty }
    return parts.enumerated().map { index, part in
        index == 0 && !upperFirst ? part.lowercased() : part.prefix(1).uppercased() + part.dropFirst()
    }.joined()
}

func swiftSource(objectName: String, sourceName: String, namespace: String, names: ObjectNames, object: Data) -> String {
    func constants(_ kind: String, _ type: String, _ values: [String]) -> String {
        let lines = values.sorted().map { "            public static let \(camelCase($0, upperFirst: false)) = \(type)(\"\($0)\")" }
        return "        public enum \(kind) {\n" + lines.joined(separator: "\n") + "\n        }\n"
    }
    return """
    // Generated by BPFEmbedTool from \(sourceName); do not edit.
    import BPFRuntime

    extension \(namespace) {
        /// The BPF object compiled from `\(sourceName)`.
        public enum \(camelCase(objectName, upperFirst: true)) {
            public static let object = EmbeddedBPFObject(name: "\(objectName)", base64: "\(object.base64EncodedString())")

    \(constants("Program", "BPFProgramName", names.programs))\(constants("Map", "BPFMapName", names.maps))\(constants("Global", "BPFGlobalName", names.globals))    }
    }

    """
}

do {
    let options = try Options(CommandLine.arguments)
    let sourceName = URL(fileURLWithPath: options.input).lastPathComponent
    let objectName = String(sourceName.dropLast(".bpf.c".count))
    let objectPath = options.output + ".o"
    defer { try? FileManager.default.removeItem(atPath: objectPath) }
    try compile(options, into: objectPath)
    try dropUnreadSections(of: objectPath)
    let names = try readNames(of: objectPath)
    let object = try Data(contentsOf: URL(fileURLWithPath: objectPath))
    let source = swiftSource(objectName: objectName, sourceName: sourceName, namespace: options.namespace, names: names, object: object)
    try source.write(toFile: options.output, atomically: true, encoding: .utf8)
} catch {
    FileHandle.standardError.write(Data("BPFEmbedTool: \(error)\n".utf8))
    exit(1)
}
