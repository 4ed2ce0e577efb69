import BPFRuntime
import Foundation

/// A failure `tracer object` reports as one line (plus, for a rejected program, the verifier log's tail)
/// and exits 1 on.
struct ObjectCommandError: Error, CustomStringConvertible {
    let description: String
    /// Lines printed after the error line (the end of the verifier log).
    var detail: [String] = []

    init(_ description: String, detail: [String] = []) {
        self.description = description
        self.detail = detail
    }
}

/// The file given to `tracer object run|pack`: a BPF ELF object or a JSON package, read and checked.
struct ObjectInput {
    let path: String
    let object: BPFObjectFile
    /// The package's meta; for a plain object, meta generated from its BTF.
    let meta: PackageMeta
    let isPackage: Bool

    /// The object's name: the file name without `.bpf.o`, `.o` or `.json`.
    static func objectName(of path: String) -> String {
        var name = URL(fileURLWithPath: path).lastPathComponent
        for suffix in [".bpf.o", ".o", ".json"] where name.hasSuffix(suffix) {
            name.removeLast(suffix.count)
            break
        }
        return name.isEmpty ? "object" : name
    }

    init(path: String) throws(ObjectCommandError) {
        let bytes: [UInt8]
        do {
            bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw ObjectCommandError("cannot read \(path): \(Self.reason(error)); give a .bpf.o object or a JSON package")
        }
        try self.init(bytes: bytes, path: path)
    }

    /// Reads `bytes` as the contents of the file `path`.
    init(bytes: [UInt8], path: String) throws(ObjectCommandError) {
        self.path = path
        let name = Self.objectName(of: path)
        var objectBytes = bytes
        var meta: PackageMeta?
        isPackage = BPFObjectPackage.isPackage(bytes)
        if isPackage {
            do {
                let package = try BPFObjectPackage(json: bytes)
                objectBytes = package.object
                meta = package.meta
            } catch {
                throw ObjectCommandError("package \(path) \(error.description)")
            }
        }
        do {
            object = try BPFObjectFile(bytes: objectBytes, name: meta?.bpfSkel.objName.map(Self.sanitized) ?? name)
        } catch {
            throw ObjectCommandError("\(isPackage ? "package \(path): its object" : path): \(error)")
        }
        if let meta {
            do { try meta.validate(against: object) } catch {
                throw ObjectCommandError("package \(path): \(error.description)")
            }
            self.meta = meta
        } else {
            self.meta = PackageMeta(generatedFrom: object)
        }
    }

    /// libbpf prefixes internal map names with the object name: keep it to characters it accepts.
    private static func sanitized(_ name: String) -> String {
        let kept = String(name.unicodeScalars.filter { $0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" }.prefix(64))
        return kept.isEmpty ? "object" : kept
    }

    private static func reason(_ error: Error) -> String {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if nsError.domain == NSCocoaErrorDomain && nsError.code == NSFileReadNoSuchFileError { return "no such file" }
        return nsError.localizedDescription
    }
}

/// One `const volatile` setting of `.rodata` as a command-line option (`min_us` → `--min-us`).
struct ObjectSetting {
    let variable: BPFObjectFile.Variable
    let description: String?
    /// The meta's default, when it gives one (it overrides the object's initial value).
    let metaDefault: JSONScalar?

    var optionName: String { "--" + variable.name.replacingOccurrences(of: "_", with: "-") }

    var isFlag: Bool {
        if case .integer(_, _, _, _, true) = variable.type { return true }
        return false
    }

    /// The kind of value, as `--help` shows it.
    var valueKind: String? {
        switch variable.type {
        case .integer(_, _, _, _, true): "bool"
        case .integer(_, let size, let signed, _, _): "\(signed ? "int" : "uint")\(size * 8)"
        case .float: "float"
        case .enumeration(_, _, _, let cases): cases.map(\.name).joined(separator: "|")
        case .array(_, let count) where variable.type.isCharArray: "string(\(count - 1))"
        default: nil
        }
    }

    /// The bytes for `text`, checked against the variable's type.
    func encode(_ text: String) throws(ObjectCommandError) -> [UInt8] {
        let size = variable.type.size
        func bad(_ expected: String) -> ObjectCommandError {
            ObjectCommandError("option \(optionName): expected \(expected), not '\(text)'")
        }
        switch variable.type {
        case .integer(_, _, _, _, true):
            switch text.lowercased() {
            case "true", "1", "yes", "on": return littleEndian(1, size)
            case "false", "0", "no", "off": return littleEndian(0, size)
            default: throw bad("true or false")
            }
        case .integer(_, let size, let signed, _, _):
            let bits = size * 8
            if signed {
                guard let value = Self.parseSigned(text) else { throw bad("a signed \(bits)-bit integer") }
                let limit = bits >= 64 ? Int64.max : (Int64(1) << (bits - 1)) - 1
                guard value <= limit && value >= -limit - 1 else { throw bad("a signed \(bits)-bit integer (\(-limit - 1)...\(limit))") }
                return littleEndian(UInt64(bitPattern: value), size)
            }
            guard let value = Self.parseUnsigned(text) else { throw bad("an unsigned \(bits)-bit integer") }
            guard bits >= 64 || value < (UInt64(1) << bits) else { throw bad("an unsigned \(bits)-bit integer (0...\((UInt64(1) << bits) - 1))") }
            return littleEndian(value, size)
        case .float(_, let size):
            guard let value = Double(text), value.isFinite else { throw bad("a number") }
            return size == 4 ? littleEndian(UInt64(Float(value).bitPattern), 4) : littleEndian(value.bitPattern, 8)
        case .enumeration(_, let size, _, let cases):
            if let match = cases.first(where: { $0.name == text || $0.name.lowercased() == text.lowercased() }) {
                return littleEndian(UInt64(bitPattern: match.value), size)
            }
            if let number = Self.parseSigned(text), cases.contains(where: { $0.value == number }) {
                return littleEndian(UInt64(bitPattern: number), size)
            }
            throw bad("one of \(cases.map(\.name).joined(separator: ", "))")
        case .array(_, let count) where variable.type.isCharArray:
            let utf8 = Array(text.utf8)
            guard utf8.count < count else { throw bad("text of at most \(count - 1) bytes") }
            return utf8 + [UInt8](repeating: 0, count: count - utf8.count)
        default:
            throw ObjectCommandError("option \(optionName): variables of type \(variable.type.cName) cannot be set from the command line")
        }
    }

    private func littleEndian(_ value: UInt64, _ size: Int) -> [UInt8] {
        (0..<size).map { UInt8(truncatingIfNeeded: $0 < 8 ? value >> UInt64($0 * 8) : 0) }
    }

    static func parseUnsigned(_ text: String) -> UInt64? {
        let trimmed = text.replacingOccurrences(of: "_", with: "")
        if trimmed.lowercased().hasPrefix("0x") { return UInt64(trimmed.dropFirst(2), radix: 16) }
        return UInt64(trimmed)
    }

    static func parseSigned(_ text: String) -> Int64? {
        if text.hasPrefix("-") { return parseUnsigned(String(text.dropFirst())).flatMap { $0 <= UInt64(Int64.max) + 1 ? Int64(truncatingIfNeeded: 0 &- $0) : nil } }
        return parseUnsigned(text).flatMap { $0 <= UInt64(Int64.max) ? Int64($0) : nil }
    }
}

extension ObjectInput {
    /// The object's settings with their descriptions and defaults from the meta.
    var settings: [ObjectSetting] {
        let described = (meta.bpfSkel.dataSections ?? []).filter { $0.name == ".rodata" }.flatMap(\.variables)
        return object.settings.filter { ObjectSetting(variable: $0, description: nil, metaDefault: nil).valueKind != nil }.map { variable in
            let entry = described.first { $0.name == variable.name }
            return ObjectSetting(variable: variable, description: entry?.description, metaDefault: entry?.default)
        }
    }

    /// Parses `arguments` (what follows `--`) into global values: `--name VALUE`, `--name=VALUE`, and bare
    /// `--flag` for bools. Meta defaults that differ from the object's are included.
    func settingValues(_ arguments: [String]) throws(ObjectCommandError) -> [String: [UInt8]] {
        let settings = self.settings
        var values: [String: [UInt8]] = [:]
        for setting in settings {
            if let metaDefault = setting.metaDefault { values[setting.variable.name] = try setting.encode(metaDefault.text) }
        }
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("--"), argument.count > 2 else {
                throw ObjectCommandError("\(path): unexpected argument '\(argument)' among the object's options (options look like --name VALUE)")
            }
            let parts = argument.split(separator: "=", maxSplits: 1)
            let name = String(parts[0])
            guard let setting = settings.first(where: { $0.optionName == name || "--" + $0.variable.name == name }) else {
                let known = settings.map(\.optionName).joined(separator: ", ")
                throw ObjectCommandError("\(path) has no option \(name) (\(known.isEmpty ? "it has no options" : "its options: \(known)"))")
            }
            let value: String
            if parts.count == 2 {
                value = String(parts[1])
            } else if setting.isFlag {
                value = "true"
            } else {
                guard index < arguments.count else { throw ObjectCommandError("option \(name) needs a value (\(setting.valueKind ?? ""))") }
                value = arguments[index]
                index += 1
            }
            values[setting.variable.name] = try setting.encode(value)
        }
        return values
    }

    /// The `--help` text after the file: what the object is and its options.
    var optionsHelp: String {
        var lines = ["USAGE: tracer object run \(path) [--json] [--interval S] [...] -- [OBJECT OPTIONS]", ""]
        if let doc = meta.bpfSkel.doc {
            for text in [doc.brief, doc.description, doc.details].compactMap({ $0 }) where !text.isEmpty { lines.append(text) }
            lines.append("")
        }
        let programs = object.programs.map { "\($0.name) (\($0.section))" }.joined(separator: ", ")
        lines.append("Programs: \(programs.isEmpty ? "none" : programs)")
        let settings = self.settings
        lines.append(settings.isEmpty ? "\(object.name) has no options (no const volatile variables in .rodata)." : "OBJECT OPTIONS (const volatile variables of .rodata, set before load):")
        for setting in settings {
            let defaultText = setting.metaDefault?.text ?? setting.variable.defaultValue.text
            var line = "  \(setting.optionName) <\(setting.valueKind ?? "")>"
            line = line.padding(toLength: max(line.count + 2, 34), withPad: " ", startingAt: 0)
            line += [setting.description, "(default \(defaultText.isEmpty ? "\"\"" : defaultText))"].compactMap { $0 }.joined(separator: " ")
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }
}
