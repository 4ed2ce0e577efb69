import Foundation
import XCTest
@testable import ExecutableInspection

/// Every bad input of issue 3: each is one `InspectionError` naming the file, never a crash or hang.
final class BadInputTests: XCTestCase {
    override func tearDown() { Fixtures.removeInputFiles() }

    private func assertInspectionError(_ path: String, _ reason: InspectionError.Reason? = nil, contains text: String? = nil,
                                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try ExecutableInspector(goFields: GoField.netHTTP).inspect(path: path, queries: ProbeTargetQuery.goNetHTTP),
                             file: file, line: line) { error in
            guard let error = error as? InspectionError else { return XCTFail("not an InspectionError: \(error)", file: file, line: line) }
            if let reason { XCTAssertEqual(error.reason, reason, error.description, file: file, line: line) }
            if let text { XCTAssertTrue(error.description.contains(text), error.description, file: file, line: line) }
            XCTAssertTrue(error.description.hasPrefix(path + ": "), error.description, file: file, line: line)
            XCTAssertFalse(error.description.contains("\n"), file: file, line: line)
        }
    }

    private func pieBytes() throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: Fixtures.cBinary("c-pie", flags: ["-pie", "-fPIE"]))))
    }

    private func put<T: FixedWidthInteger>(_ value: T, at offset: Int, in bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { for (i, byte) in $0.enumerated() { bytes[offset + i] = byte } }
    }

    private func read64(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
        bytes[offset..<offset + 8].reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    func testEmptyNonELFDirectoryMissing() throws {
        assertInspectionError(try Fixtures.file("empty", []), .notELF, contains: "empty file")
        assertInspectionError(try Fixtures.file("script.sh", Array("#!/bin/sh\necho hi\n".utf8)), .notELF, contains: "not an ELF")
        assertInspectionError(try Fixtures.file("short", [0x7f, 0x45]), .notELF)
        assertInspectionError(Fixtures.directory.path, .notRegularFile, contains: "not a regular file")
        assertInspectionError("/no/such/binary", .notFound)
    }

    /// Truncation anywhere (inside the ELF header, the program headers, the code, the section headers)
    /// is detected: every cut fails with one line, none crashes.
    func testTruncatedAtManyOffsets() throws {
        let bytes = try pieBytes()
        var cuts = [1, 4, 15, 16, 40, 63, 64, 100, 64 + 56 * 3, 1000, 4096, bytes.count / 2, bytes.count - 64, bytes.count - 1]
        cuts += stride(from: 0, to: bytes.count, by: max(1, bytes.count / 97)).map { $0 }
        for cut in Set(cuts) where cut > 0 && cut < bytes.count {
            assertInspectionError(try Fixtures.file("truncated-\(cut)", Array(bytes[..<cut])))
        }
    }

    func testShstrndxOutOfRange() throws {
        var bytes = try pieBytes()
        let shnum = Int(bytes[0x3c]) | Int(bytes[0x3d]) << 8
        put(UInt16(shnum + 5), at: 0x3e, in: &bytes)
        assertInspectionError(try Fixtures.file("bad-shstrndx", bytes), .malformed, contains: "e_shstrndx")
    }

    func testSectionOffsetPastEndAndHugeSize() throws {
        let original = try pieBytes()
        let shoff = Int(read64(original, 0x28))
        // Section 1 (.interp) — its header starts 64 bytes after the null section header.
        var pastEnd = original
        put(UInt64(original.count + 4096), at: shoff + 64 + 0x18, in: &pastEnd)
        assertInspectionError(try Fixtures.file("section-past-end", pastEnd), .malformed, contains: "past end of file")
        var huge = original
        put(UInt64(0x7fff_ffff_ffff_0000), at: shoff + 64 + 0x20, in: &huge)
        assertInspectionError(try Fixtures.file("section-huge", huge), .malformed, contains: "past end of file")
        var hugeHeaders = original
        put(UInt64.max - 10, at: 0x28, in: &hugeHeaders)
        assertInspectionError(try Fixtures.file("shoff-huge", hugeHeaders), .malformed)
    }

    /// A corrupt `.debug_info` (unit length and version overwritten) fails the DWARF read with one line.
    func testCorruptDWARF() throws {
        let path = try Fixtures.cBinary("c-nopie", flags: ["-no-pie", "-fno-pie"])
        let elf = try ELFFile(path: path)
        let info = try XCTUnwrap(elf.section(named: ".debug_info"))
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        for i in 0..<Int(min(info.size, 64)) { bytes[Int(info.offset) + i] = 0xff }
        put(UInt32(0x7fff_0000), at: Int(info.offset), in: &bytes)
        put(UInt16(99), at: Int(info.offset) + 4, in: &bytes)
        let corrupt = try ELFFile(path: Fixtures.file("corrupt-dwarf", bytes))
        XCTAssertThrowsError(try corrupt.dwarfFieldOffsets(GoField.netHTTP)) { error in
            let error = error as? InspectionError
            XCTAssertEqual(error?.reason, .malformed)
            XCTAssertTrue(error?.description.contains("DWARF") ?? false, "\(String(describing: error))")
        }
    }

    /// A Go binary without DWARF whose Go version is in no table entry (`go1.99`, patched into the build
    /// info) is not instrumentable as Go, with the reason — inspection itself still succeeds.
    func testGoBinaryOfUnknownVersionWithoutDWARF() throws {
        let stripped = try Fixtures.goBinary("go-plain-stripped", flags: ["-ldflags=-s -w"])
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: stripped)))
        let elf = try ELFFile(path: stripped)
        let version = try XCTUnwrap(elf.goBuildInfo()?.goVersion)
        let buildinfo = try XCTUnwrap(elf.section(named: ".go.buildinfo"))
        let region = Int(buildinfo.offset)..<Int(buildinfo.offset + buildinfo.size)
        let needle = Array(version.utf8)
        let at = try XCTUnwrap(region.first { Array(bytes[$0..<$0 + needle.count]) == needle })
        let patched = Array("go1.99".utf8) + needle.dropFirst(6)
        bytes.replaceSubrange(at..<at + needle.count, with: patched)
        let path = try Fixtures.file("go-unknown-version", bytes)

        let info = try ExecutableInspector(goFields: GoField.netHTTP).inspect(path: path, queries: ProbeTargetQuery.goNetHTTP)
        XCTAssertEqual(info.go?.buildInfo?.goVersion.hasPrefix("go1.99"), true)
        XCTAssertNil(info.go?.fieldOffsets)
        let reason = try XCTUnwrap(info.go?.notInstrumentableReason)
        XCTAssertTrue(reason.contains("not instrumentable as Go") && reason.contains("go1.99"), reason)
        XCTAssertThrowsError(try ELFFile(path: path).goFieldOffsets(GoField.netHTTP, buildInfo: info.go?.buildInfo)) { error in
            XCTAssertEqual((error as? InspectionError)?.reason, .notInstrumentableAsGo)
        }
    }

    /// Corrupt build info (length varint pointing past the section) is an error, not a crash.
    func testCorruptGoBuildInfo() throws {
        let stripped = try Fixtures.goBinary("go-plain-stripped", flags: ["-ldflags=-s -w"])
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: stripped)))
        let buildinfo = try XCTUnwrap(ELFFile(path: stripped).section(named: ".go.buildinfo"))
        bytes.replaceSubrange(Int(buildinfo.offset) + 32..<Int(buildinfo.offset) + 36, with: [0xff, 0xff, 0xff, 0x7f])
        assertInspectionError(try Fixtures.file("go-bad-buildinfo", bytes), .malformed, contains: "Go build info")
    }

    /// A PID that does not exist, and processes that exit while being inspected: one error line with
    /// reason `processGone`, or a complete snapshot — never anything else.
    func testProcessThatExits() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/true")
        try process.run()
        process.waitUntilExit()
        XCTAssertThrowsError(try ProcessInspection.snapshot(pid: process.processIdentifier)) { error in
            let error = error as? InspectionError
            XCTAssertEqual(error?.reason, .processGone)
            XCTAssertEqual(error?.subject, "pid \(process.processIdentifier)")
        }
        for _ in 0..<20 {
            let child = Process()
            child.executableURL = URL(fileURLWithPath: "/bin/sleep")
            child.arguments = ["0.00\(Int.random(in: 1...9))"]
            try child.run()
            do {
                let snapshot = try ProcessInspection.snapshot(pid: child.processIdentifier)
                XCTAssertEqual(snapshot.pid, child.processIdentifier)
            } catch {
                XCTAssertEqual(error.reason, .processGone, error.description)
            }
            child.waitUntilExit()
        }
    }
}
