import BPFPrograms
import BPFRuntime
import Foundation
import XCTest

final class EmbeddingTests: XCTestCase {
    func testSelftestObjectIsEmbeddedWithNameConstants() {
        XCTAssertEqual(BPFPrograms.Selftest.object.name, "selftest")
        XCTAssertEqual(Array(BPFPrograms.Selftest.object.bytes.prefix(4)), [0x7f, 0x45, 0x4c, 0x46])
        XCTAssertEqual(BPFPrograms.Selftest.Program.selftestUprobe.rawValue, "selftest_uprobe")
        XCTAssertEqual(BPFPrograms.Selftest.Map.tracerEvents.rawValue, "tracer_events")
        XCTAssertEqual(BPFPrograms.Selftest.Global.floodCount.rawValue, "flood_count")
    }

    /// BPFEmbedTool empties what libbpf never reads (DWARF, relocations of DWARF and BTF): it was most of
    /// the embedded bytes, resident in the agent. BTF stays.
    func testEmbeddedObjectsKeepBTFAndNoDWARF() throws {
        let sizes = try sectionSizes(BPFPrograms.Selftest.object.bytes)
        XCTAssertGreaterThan(sizes[".BTF"] ?? 0, 0)
        XCTAssertGreaterThan(sizes[".BTF.ext"] ?? 0, 0)
        XCTAssertNotNil(sizes[".debug_info"], "the sections stay (their indexes are referenced), empty: \(sizes.keys.sorted())")
        let unread = sizes.filter { $0.key.hasPrefix(".debug_") || $0.key.hasPrefix(".rel.debug_") || $0.key.hasPrefix(".rel.BTF") }
        XCTAssertEqual(unread.values.reduce(0, +), 0, "\(unread)")
    }

    /// Section name → size, from the ELF64 little-endian section headers.
    private func sectionSizes(_ bytes: [UInt8]) throws -> [String: UInt64] {
        func load<T: FixedWidthInteger>(_ offset: Int, as type: T.Type) throws -> T {
            guard offset >= 0, offset + MemoryLayout<T>.size <= bytes.count else { throw CocoaError(.fileReadCorruptFile) }
            return bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
        }
        let headers = Int(try load(0x28, as: UInt64.self)), entrySize = Int(try load(0x3a, as: UInt16.self))
        let count = Int(try load(0x3c, as: UInt16.self)), namesIndex = Int(try load(0x3e, as: UInt16.self))
        let names = Int(try load(headers + namesIndex * entrySize + 0x18, as: UInt64.self))
        var sizes: [String: UInt64] = [:]
        for index in 0..<count {
            let header = headers + index * entrySize
            let nameStart = names + Int(try load(header, as: UInt32.self))
            guard let end = bytes[nameStart...].firstIndex(of: 0) else { throw CocoaError(.fileReadCorruptFile) }
            sizes[String(decoding: bytes[nameStart..<end], as: UTF8.self)] = try load(header + 0x20, as: UInt64.self)
        }
        return sizes
    }
}
