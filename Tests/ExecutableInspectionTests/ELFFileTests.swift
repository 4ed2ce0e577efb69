import Foundation
import XCTest
@testable import ExecutableInspection

final class ELFFileTests: XCTestCase {
    /// PIE, non-PIE and static-PIE C programs: kind, build-id, symbol addresses (cross-checked with
    /// `nm`) and the uprobe file offset (cross-checked by reading the function's bytes at that offset).
    func testCBinariesKindsSymbolsAndOffsets() throws {
        let cases: [(String, [String], ELFKind)] = [
            ("c-pie", ["-pie", "-fPIE"], .pie),
            ("c-nopie", ["-no-pie", "-fno-pie"], .executable),
            ("c-static-pie", ["-static-pie", "-fPIE"], .staticPIE),
        ]
        for (name, flags, kind) in cases {
            let path = try Fixtures.cBinary(name, flags: flags)
            let elf = try ELFFile(path: path)
            XCTAssertEqual(elf.kind, kind, name)
            XCTAssertEqual(elf.machineName, "x86-64")
            XCTAssertEqual(elf.buildID?.count, 40, "\(name): SHA-1 build-id from gcc's default --build-id")
            let symbol = try XCTUnwrap(elf.symbol(named: "probe_me"), name)
            XCTAssertTrue(symbol.isFunction)
            XCTAssertGreaterThan(symbol.size, 0)
            XCTAssertEqual(symbol.address, try Fixtures.nm(path)["probe_me"], name)
            let offset = try elf.uprobeOffset(ofSymbol: "probe_me")
            if kind == .executable { XCTAssertNotEqual(offset, symbol.address, "non-PIE addresses are not offsets") }
            // The bytes at the computed file offset are the function's first bytes (objdump agrees).
            let fileBytes = try Data(contentsOf: URL(fileURLWithPath: path))
            let dump = try Fixtures.run(["objdump", "-d", "--start-address=0x\(String(symbol.address, radix: 16))",
                                         "--stop-address=0x\(String(symbol.address + 4, radix: 16))", path])
            let firstLine = try XCTUnwrap(dump.split(separator: "\n").first { $0.contains(String(symbol.address, radix: 16) + ":") })
            let objdumpByte = try XCTUnwrap(UInt8(firstLine.split(separator: "\t")[1].split(separator: " ")[0], radix: 16))
            XCTAssertEqual(fileBytes[Int(offset)], objdumpByte, name)
        }
    }

    /// Every offset returned is the first byte of a RET (`c3`, `c2`, or `f3 c3`), and the count
    /// matches objdump's disassembly of the function.
    func testReturnOffsetsPointAtRetInstructions() throws {
        for (name, flags) in [("c-pie", ["-pie", "-fPIE"]), ("c-nopie", ["-no-pie", "-fno-pie"])] {
            let path = try Fixtures.cBinary(name, flags: flags)
            let elf = try ELFFile(path: path)
            let offsets = try elf.returnOffsets(ofSymbol: "probe_me")
            XCTAssertFalse(offsets.isEmpty)
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            for offset in offsets {
                let byte = bytes[Int(offset)]
                XCTAssertTrue(byte == 0xc3 || byte == 0xc2 || (byte == 0xf3 && bytes[Int(offset) + 1] == 0xc3),
                              "byte 0x\(String(byte, radix: 16)) at 0x\(String(offset, radix: 16))")
            }
            let symbol = try XCTUnwrap(elf.symbol(named: "probe_me"))
            let dump = try Fixtures.run(["objdump", "-d", "--start-address=0x\(String(symbol.address, radix: 16))",
                                         "--stop-address=0x\(String(symbol.address + symbol.size, radix: 16))", path])
            let rets = dump.split(separator: "\n").filter { $0.split(separator: "\t").count >= 3 && $0.split(separator: "\t")[2].hasPrefix("ret") }
            XCTAssertEqual(offsets.count, rets.count, name)
        }
    }

    func testSharedObjectAndDynamicSymbols() throws {
        let libc = try ELFFile(path: "/lib/x86_64-linux-gnu/libc.so.6")
        XCTAssertEqual(libc.kind, .sharedObject)
        XCTAssertEqual(libc.soname, "libc.so.6")
        let malloc = try XCTUnwrap(libc.symbol(named: "malloc"), "from .dynsym")
        XCTAssertEqual(try libc.fileOffset(forVirtualAddress: malloc.address), malloc.address, "libc's text has p_vaddr == p_offset")
        XCTAssertNil(libc.symbol(named: "no_such_symbol_here"))
        XCTAssertThrowsError(try libc.uprobeOffset(ofSymbol: "no_such_symbol_here")) { error in
            XCTAssertEqual((error as? InspectionError)?.reason, .symbolNotFound)
        }
        let pie = try ELFFile(path: Fixtures.cBinary("c-pie", flags: ["-pie", "-fPIE"]))
        XCTAssertTrue(pie.neededLibraries.contains("libc.so.6"))
        XCTAssertEqual(pie.interpreter, "/lib64/ld-linux-x86-64.so.2")
    }

    func testFileIdentityIsDeviceAndInode() throws {
        let path = try Fixtures.cBinary("c-pie", flags: ["-pie", "-fPIE"])
        let identity = try FileIdentity(path: path)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        XCTAssertEqual(identity.inode, (attributes[.systemFileNumber] as? NSNumber)?.uint64Value)
        XCTAssertEqual(identity.device, (attributes[.systemNumber] as? NSNumber)?.uint64Value)
        XCTAssertNotEqual(identity, try FileIdentity(path: "/lib/x86_64-linux-gnu/libc.so.6"))
        XCTAssertThrowsError(try FileIdentity(path: "/no/such/file")) { error in
            XCTAssertEqual((error as? InspectionError)?.reason, .notFound)
        }
    }
}
