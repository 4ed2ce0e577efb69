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

/// Reads program, map and global names from the object with libelf: programs are global functions in
/// executable sections other than `.text` (which holds subprograms), maps live in `.maps`, globals in
/// `.rodata`/`.data`/`.bss`.
func readNames(of path: String) throws -> ObjectNames {
    guard elf_version(UInt32(EV_CURRENT)) != UInt32(EV_NONE) else { throw ToolError("libelf: \(String(cString: elf_errmsg(-1)))") }
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw ToolError("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    guard let elf = elf_begin(fd, ELF_C_READ, nil) else { throw ToolError("libelf: \(String(cString: elf_errmsg(-1)))") }
    defer { elf_end(elf) }
    var stringSectionIndex = 0
    guard elf_getshdrstrndx(elf, &stringSectionIndex) == 0 else { throw ToolError("\(path): no section names") }

    var sectionNames: [Int: String] = [:]
    var executable: Set<Int> = []
    var symbolSection: OpaquePointer?
    var section = elf_nextscn(elf, nil)
    while let current = section {
        var header = GElf_Shdr()
        if gelf_getshdr(current, &header) != nil {
            let index = elf_ndxscn(current)
            if let name = elf_strptr(elf, stringSectionIndex, Int(header.sh_name)) { sectionNames[index] = String(cString: name) }
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
    let names = try readNames(of: objectPath)
    let object = try Data(contentsOf: URL(fileURLWithPath: objectPath))
    let source = swiftSource(objectName: objectName, sourceName: sourceName, namespace: options.namespace, names: names, object: object)
    try source.write(toFile: options.output, atomically: true, encoding: .utf8)
} catch {
    FileHandle.standardError.write(Data("BPFEmbedTool: \(error)\n".utf8))
    exit(1)
}
