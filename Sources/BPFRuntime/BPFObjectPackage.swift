internal import CZlib
import Foundation

/// A BPF object shipped as one JSON file (the eunomia-bpf `package.json` layout): `bpf_object` is the ELF
/// object, zlib-compressed and base64-encoded, `bpf_object_size` its uncompressed size, and `meta` says how
/// to run it (export types, data sections with documented variables, maps and how to sample them,
/// programs, buffer and poll settings).
public struct BPFObjectPackage: Sendable {
    public var object: [UInt8]
    public var meta: PackageMeta

    /// Largest object accepted when unpacking (a declared size beyond it is refused before allocating).
    public static let maximumObjectSize = 64 << 20

    public init(object: [UInt8], meta: PackageMeta) {
        self.object = object
        self.meta = meta
    }

    /// Whether `bytes` look like a JSON package rather than an ELF object.
    public static func isPackage(_ bytes: [UInt8]) -> Bool {
        bytes.first { ![0x20, 0x09, 0x0a, 0x0d].contains($0) } == UInt8(ascii: "{")
    }

    /// Reads a package; every defect is a `PackageError` naming the field.
    public init(json bytes: [UInt8]) throws(PackageError) {
        let top: Any
        do { top = try JSONSerialization.jsonObject(with: Data(bytes)) } catch {
            throw PackageError("is not valid JSON (\(Self.shortReason(error)))")
        }
        guard let dictionary = top as? [String: Any] else { throw PackageError("is not a JSON object") }
        guard let encoded = dictionary["bpf_object"] as? String else { throw PackageError("has no \"bpf_object\" string") }
        guard let declared = dictionary["bpf_object_size"] as? Int, declared > 0, declared <= Self.maximumObjectSize else {
            throw PackageError("has no valid \"bpf_object_size\" (1 to \(Self.maximumObjectSize) bytes)")
        }
        guard let compressed = Data(base64Encoded: encoded, options: .ignoreUnknownCharacters), !compressed.isEmpty else {
            throw PackageError("\"bpf_object\" is not valid base64")
        }
        object = try Self.inflate([UInt8](compressed), size: declared)
        guard let metaObject = dictionary["meta"] else { throw PackageError("has no \"meta\" object") }
        do {
            let metaData = try JSONSerialization.data(withJSONObject: metaObject)
            meta = try JSONDecoder().decode(PackageMeta.self, from: metaData)
        } catch {
            throw PackageError("\"meta\" does not have the expected shape (\(Self.shortReason(error)))")
        }
    }

    /// The package as JSON text (pretty-printed, keys sorted).
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let metaObject = try JSONSerialization.jsonObject(with: try encoder.encode(meta))
        let top: [String: Any] = [
            "bpf_object": Data(try Self.deflate(object)).base64EncodedString(),
            "bpf_object_size": object.count,
            "meta": metaObject,
        ]
        return try JSONSerialization.data(withJSONObject: top, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    }

    /// zlib `uncompress2` into exactly `size` bytes; a stream that is longer, shorter, cut off or corrupt is
    /// an error.
    static func inflate(_ compressed: [UInt8], size: Int) throws(PackageError) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: size + 1)
        var length = uLongf(output.count)
        var consumed = uLong(compressed.count)
        let status = output.withUnsafeMutableBufferPointer { out in
            compressed.withUnsafeBufferPointer { input in
                uncompress2(out.baseAddress, &length, input.baseAddress, &consumed)
            }
        }
        switch status {
        case Z_OK:
            guard Int(length) == size else {
                throw PackageError("\"bpf_object\" inflates to \(length) bytes, but \"bpf_object_size\" says \(size)")
            }
            output.removeLast()
            return output
        case Z_BUF_ERROR:
            throw PackageError("\"bpf_object\" inflates to more than \"bpf_object_size\" (\(size)) bytes")
        case Z_DATA_ERROR where Int(consumed) == compressed.count && length > 0:
            throw PackageError("\"bpf_object\" is a truncated zlib stream (\(compressed.count) bytes end it after \(length) bytes of object)")
        default:
            throw PackageError("\"bpf_object\" is not a valid zlib stream (zlib error \(status))")
        }
    }

    static func deflate(_ bytes: [UInt8]) throws -> [UInt8] {
        var output = [UInt8](repeating: 0, count: Int(compressBound(uLong(bytes.count))))
        var length = uLongf(output.count)
        let status = output.withUnsafeMutableBufferPointer { out in
            bytes.withUnsafeBufferPointer { compress2(out.baseAddress, &length, $0.baseAddress, uLong($0.count), Z_BEST_COMPRESSION) }
        }
        guard status == Z_OK else { throw PackageError("could not be compressed (zlib error \(status))") }
        return Array(output.prefix(Int(length)))
    }

    private static func shortReason(_ error: Error) -> String {
        if case DecodingError.typeMismatch(_, let context) = error { return "\(path(context.codingPath)): \(context.debugDescription)" }
        if case DecodingError.keyNotFound(let key, let context) = error { return "\(path(context.codingPath + [key])) is missing" }
        if case DecodingError.valueNotFound(_, let context) = error { return "\(path(context.codingPath)) is null" }
        if case DecodingError.dataCorrupted(let context) = error { return "\(path(context.codingPath)): \(context.debugDescription)" }
        return String(describing: error).split(separator: "\n").first.map(String.init) ?? "unreadable"
    }

    private static func path(_ keys: [CodingKey]) -> String {
        "meta" + keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
    }
}

/// A package that cannot be used; `description` completes "package FILE ...".
public struct PackageError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The `meta` object of a package. Unknown keys are ignored, so hand-edited files from other tools load.
public struct PackageMeta: Codable, Sendable, Equatable {
    public var exportTypes: [ExportType]?
    public var bpfSkel: Skeleton
    public var perfBufferPages: Int?
    public var perfBufferTimeMs: Int?
    public var pollTimeoutMs: Int?
    public var printHeader: Bool?
    public var debugVerbose: Bool?

    public init(exportTypes: [ExportType]?, bpfSkel: Skeleton) {
        self.exportTypes = exportTypes
        self.bpfSkel = bpfSkel
    }

    enum CodingKeys: String, CodingKey {
        case exportTypes = "export_types", bpfSkel = "bpf_skel", perfBufferPages = "perf_buffer_pages"
        case perfBufferTimeMs = "perf_buffer_time_ms", pollTimeoutMs = "poll_timeout_ms", printHeader = "print_header"
        case debugVerbose = "debug_verbose"
    }

    public struct ExportType: Codable, Sendable, Equatable {
        public var name: String
        public var members: [ExportMember]?
        public var size: Int?
        public var typeID: Int?
        enum CodingKeys: String, CodingKey { case name, members, size, typeID = "type_id" }
    }

    public struct ExportMember: Codable, Sendable, Equatable {
        public var name: String
        public var type: String
    }

    public struct Skeleton: Codable, Sendable, Equatable {
        public var objName: String?
        public var doc: Doc?
        public var dataSections: [DataSection]?
        public var maps: [Map]?
        public var progs: [Prog]?
        enum CodingKeys: String, CodingKey { case objName = "obj_name", doc, dataSections = "data_sections", maps, progs }
    }

    public struct Doc: Codable, Sendable, Equatable {
        public var brief: String?
        public var description: String?
        public var details: String?
        public var version: String?
    }

    public struct DataSection: Codable, Sendable, Equatable {
        public var name: String
        public var variables: [Variable]
    }

    public struct Variable: Codable, Sendable, Equatable {
        public var name: String
        public var type: String?
        public var description: String?
        /// The default as JSON (number, bool or string); it overrides the object's initial value.
        public var `default`: JSONScalar?
    }

    public struct Map: Codable, Sendable, Equatable {
        public var name: String
        public var ident: String?
        public var mmaped: Bool?
        public var sample: Sample?
    }

    /// How a map is sampled: every `interval` ms, printed as `type`, cleared after printing when `clearMap`.
    public struct Sample: Codable, Sendable, Equatable {
        public var interval: Int?
        public var type: String?
        public var unit: String?
        public var clearMap: Bool?
        enum CodingKeys: String, CodingKey { case interval, type, unit, clearMap = "clear_map" }

        public init(interval: Int?, type: String?, unit: String?, clearMap: Bool?) {
            (self.interval, self.type, self.unit, self.clearMap) = (interval, type, unit, clearMap)
        }
    }

    public struct Prog: Codable, Sendable, Equatable {
        public var name: String
        public var attach: String?
        public var link: Bool?
    }
}

/// A JSON number, bool or string (a variable's default in the meta).
public enum JSONScalar: Codable, Sendable, Equatable {
    case integer(Int64)
    case unsigned(UInt64)
    case double(Double)
    case bool(Bool)
    case string(String)

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Int64.self) { self = .integer(value) }
        else if let value = try? container.decode(UInt64.self) { self = .unsigned(value) }
        else if let value = try? container.decode(Double.self) { self = .double(value) }
        else { self = .string(try container.decode(String.self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .integer(let value): try container.encode(value)
        case .unsigned(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        }
    }

    /// The value as the command line would spell it.
    public var text: String {
        switch self {
        case .integer(let value): String(value)
        case .unsigned(let value): String(value)
        case .double(let value): String(value)
        case .bool(let value): String(value)
        case .string(let value): value
        }
    }
}
