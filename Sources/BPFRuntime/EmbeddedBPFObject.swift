import Foundation

/// A BPF object compiled at build time and embedded in the binary (see `BPFEmbedPlugin`).
public struct EmbeddedBPFObject: Sendable {
    /// The object's name: the `.bpf.c` file name without its extension.
    public let name: String
    private let base64: String

    public init(name: String, base64: String) {
        self.name = name
        self.base64 = base64
    }

    /// The ELF bytes of the object.
    public var bytes: [UInt8] {
        guard let data = Data(base64Encoded: base64) else { preconditionFailure("embedded BPF object \(name) is not valid base64") }
        return [UInt8](data)
    }
}

/// The name of a BPF program (its C function name), as generated from the object.
public struct BPFProgramName: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }
}

/// The name of a BPF map defined in a `.maps` section.
public struct BPFMapName: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }
}

/// The name of a global variable (`const volatile` settings live in `.rodata`).
public struct BPFGlobalName: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }
}

/// A struct as the object's BTF describes it: what the BPF side really compiled, to compare with Swift's
/// `MemoryLayout` of the same imported C struct.
public struct BTFStructLayout: Sendable, Equatable {
    public let name: String
    public let size: Int
    /// Member name and byte offset, in declaration order.
    public let members: [Member]

    public struct Member: Sendable, Equatable {
        public let name: String
        public let offset: Int
    }
}
