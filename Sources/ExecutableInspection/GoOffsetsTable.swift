import Foundation

/// The project's own table of Go struct field offsets, one entry per Go release line (`go1.19`,
/// `go1.20`, ...), used for binaries built without DWARF (`-ldflags=-w`). It is produced by
/// `scripts/generate-go-offsets.sh`, which builds a small net/http program with each toolchain and
/// reads the offsets from its DWARF with this same inspector (`tracer inspect --json`); the data lives
/// in `GoOffsetsTableData.swift`.
public struct GoOffsetsTable: Sendable {
    /// One Go release line: the exact toolchain the offsets were read from, and `type.field` → offset.
    public struct Line: Sendable, Codable, Equatable {
        public let toolchain: String
        public let offsets: [String: UInt64]
    }

    /// `go1.19` → offsets.
    public let lines: [String: Line]

    /// The table compiled into the binary.
    public static let shared: GoOffsetsTable = {
        do { return try GoOffsetsTable(json: Data(goOffsetsTableJSON.utf8)) } catch {
            preconditionFailure("GoOffsetsTableData.swift does not decode: \(error)")
        }
    }()

    public init(json: Data) throws {
        struct File: Decodable { let lines: [String: Line] }
        lines = try JSONDecoder().decode(File.self, from: json).lines
    }

    /// The entry for `go1.X.Y` (by its `go1.X` line), if the table has it. Development builds and
    /// unknown lines give nil: layouts change between releases, so nothing is guessed.
    public func offsets(forGoVersion version: String) -> (line: String, offsets: [String: UInt64])? {
        guard let (major, minor) = GoBuildInfo.parseVersion(version), let line = lines["go\(major).\(minor)"] else { return nil }
        return ("go\(major).\(minor)", line.offsets)
    }

    /// The release lines covered, e.g. `go1.19, go1.21–go1.27`.
    public var versionRange: String {
        let sorted = lines.keys.compactMap { GoBuildInfo.parseVersion($0) }.sorted { $0 < $1 }
        return sorted.isEmpty ? "empty" : sorted.map { "go\($0.major).\($0.minor)" }.joined(separator: ", ")
    }
}
