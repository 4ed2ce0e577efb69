import Foundation
import TestSupport
import XCTest
@testable import ExecutableInspection

final class InspectorTests: XCTestCase {
    /// DWARF offsets of go1.19: `runtime.g.goid` is 152 (measured on this platform, see PLATFORM.md),
    /// and the project's table agrees with DWARF for every field.
    func testDWARFOffsetsAndTableAgree() throws {
        let elf = try ELFFile(path: Fixtures.goBinary("go-plain"))
        XCTAssertTrue(elf.hasDWARF)
        let offsets = try elf.goFieldOffsets(GoField.netHTTP, buildInfo: elf.goBuildInfo())
        XCTAssertEqual(offsets.source, .dwarf)
        XCTAssertEqual(offsets.missing, ["runtime.g.parentGoid"], "go1.21 added it")
        XCTAssertEqual(offsets.offset(GoField("runtime.g", "goid")), 152)
        XCTAssertEqual(offsets.offset(GoField("net/http.Request", "Method")), 0)
        XCTAssertEqual(offsets.offset(GoField("net/url.URL", "Path")), 56)
        let table = try XCTUnwrap(GoOffsetsTable.shared.offsets(forGoVersion: "go1.19.8"))
        XCTAssertEqual(table.line, "go1.19")
        XCTAssertEqual(table.offsets, offsets.offsets)
        // Both against a reader that is not ours: binutils' readelf on the same binary's DWARF.
        let reference = try Self.readelfMemberOffsets(Fixtures.goBinary("go-plain"))
        let expected = Dictionary(uniqueKeysWithValues: GoField.netHTTP.compactMap { field in reference[field.description].map { (field.description, $0) } })
        XCTAssertEqual(expected.count, GoField.netHTTP.count - 1, "readelf finds every field go1.19 has")
        XCTAssertEqual(table.offsets, expected)
    }

    /// `type.member` → `DW_AT_data_member_location` of every struct member, from `readelf --debug-dump=info`.
    static func readelfMemberOffsets(_ path: String) throws -> [String: UInt64] {
        try requireExecutable("/usr/bin/readelf", package: "binutils")
        let dump = try TestSupport.run("/usr/bin/readelf", ["--debug-dump=info", path])
        var offsets: [String: UInt64] = [:]
        var structure: String?
        var member: String?
        var tag = ""
        for line in dump.split(separator: "\n") {
            if line.hasPrefix(" <"), let open = line.lastIndex(of: "("), line.hasSuffix(")") {
                tag = String(line[line.index(after: open)..<line.index(before: line.endIndex)])
                if line.hasPrefix(" <1>") { structure = nil }
                member = nil
                continue
            }
            guard let colon = line.range(of: ": ") else { continue }
            let value = line[colon.upperBound...].trimmingCharacters(in: .whitespaces)
            if line.contains("DW_AT_name") {
                if tag == "DW_TAG_structure_type" { structure = value } else if tag == "DW_TAG_member" { member = value }
            } else if line.contains("DW_AT_data_member_location"), tag == "DW_TAG_member", let structure, let member,
                      let offset = UInt64(value) {
                offsets["\(structure).\(member)"] = offset
            }
        }
        return offsets
    }

    /// Built with `-ldflags=-w` (no DWARF): offsets come from the table, equal to the DWARF ones.
    func testOffsetsFromTableWithoutDWARF() throws {
        let withDWARF = try ELFFile(path: Fixtures.goBinary("go-plain"))
        let expected = try withDWARF.goFieldOffsets(GoField.netHTTP, buildInfo: withDWARF.goBuildInfo())
        let path = try Fixtures.goBinary("go-plain-stripped", flags: ["-ldflags=-s -w"])
        let info = try ExecutableInspector(goFields: GoField.netHTTP).inspect(path: path, queries: ProbeTargetQuery.goNetHTTP)
        XCTAssertEqual(info.go?.fieldOffsets?.source, .table(goVersion: "go1.19"))
        XCTAssertEqual(info.go?.fieldOffsets?.offsets, expected.offsets)
        XCTAssertNil(info.go?.notInstrumentableReason)
        XCTAssertEqual(GoOffsetsTable.shared.offsets(forGoVersion: "go1.20.3")?.line, nil, "no go1.20 toolchain was available: never guess")
        XCTAssertNil(GoOffsetsTable.shared.offsets(forGoVersion: "devel go1.30-abcdef"))
    }

    /// Probe targets: symtab on the plain binary, pclntab on the stripped one, same file offsets and
    /// RET offsets (the code is identical), and queries for absent symbols are reported missing.
    func testProbeTargetsFromSymtabAndPCLNTab() throws {
        let queries = ProbeTargetQuery.goNetHTTP + [ProbeTargetQuery(tracer: "demo", symbol: "no.such.function", needsReturnOffsets: true)]
        let plain = try ExecutableInspector(goFields: GoField.netHTTP).inspect(path: Fixtures.goBinary("go-plain"), queries: queries)
        let stripped = try ExecutableInspector(goFields: GoField.netHTTP).inspect(
            path: Fixtures.goBinary("go-plain-stripped", flags: ["-ldflags=-s -w"]), queries: queries)
        XCTAssertEqual(plain.language, .go)
        XCTAssertEqual(plain.kind, .executable)
        XCTAssertEqual(plain.probeTargets.map(\.source), Array(repeating: .symbolTable, count: 6))
        XCTAssertEqual(stripped.probeTargets.map(\.source), Array(repeating: .goPCLNTab, count: 6))
        XCTAssertEqual(plain.probeTargets.map(\.symbol), stripped.probeTargets.map(\.symbol))
        XCTAssertEqual(plain.missingProbeTargets.map(\.symbol), ["no.such.function"])
        XCTAssertEqual(stripped.missingProbeTargets.map(\.symbol), ["no.such.function"])
        let serve = try XCTUnwrap(stripped.probeTargets.first { $0.symbol == "net/http.serverHandler.ServeHTTP" })
        XCTAssertFalse(serve.returnOffsets.isEmpty)
        XCTAssertEqual(serve.returnOffsets, plain.probeTargets.first { $0.symbol == serve.symbol }?.returnOffsets)
        XCTAssertTrue(try XCTUnwrap(stripped.probeTargets.first { $0.symbol == "runtime.goexit1" }).returnOffsets.isEmpty,
                      "no RET offsets unless asked")
    }

    /// The cache inspects a file once per identity and returns the stored info afterwards.
    func testCacheKeyedByIdentity() throws {
        let cache = InspectionCache(inspector: ExecutableInspector(goFields: GoField.netHTTP))
        let path = try Fixtures.cBinary("c-pie", flags: ["-pie", "-fPIE"])
        let queries = [ProbeTargetQuery(tracer: "demo", symbol: "probe_me", needsReturnOffsets: true)]
        let first = try cache.info(path: path, queries: queries)
        XCTAssertEqual(cache.count, 1)
        // A hard link is the same inode: served from the cache, path of the first inspection.
        let link = Fixtures.directory.appendingPathComponent("link-\(getpid())").path
        try? FileManager.default.removeItem(atPath: link)
        try FileManager.default.linkItem(atPath: path, toPath: link)
        defer { try? FileManager.default.removeItem(atPath: link) }
        let second = try cache.info(path: link, queries: queries)
        XCTAssertEqual(second, first)
        XCTAssertEqual(cache.count, 1)
        XCTAssertEqual(cache.cached(try FileIdentity(path: path))?.probeTargets.first?.symbol, "probe_me")
        cache.remove(try FileIdentity(path: path))
        XCTAssertEqual(cache.count, 0)
    }

    /// A running cgo Go program: /proc/PID/exe, mapped libc with its base, NSpid, language.
    func testRunningProcess() throws {
        let path = try Fixtures.goBinary("go-cgo", source: Fixtures.cgoSource, cgo: true)
        let child = Process()
        child.executableURL = URL(fileURLWithPath: path)
        child.arguments = ["1", "2", "3", "4", "5"]  // > 5 args: serve forever
        child.standardOutput = FileHandle.nullDevice
        try child.run()
        defer { child.terminate(); child.waitUntilExit() }
        usleep(200_000)
        let snapshot = try ProcessInspection.snapshot(pid: child.processIdentifier)
        XCTAssertEqual(snapshot.executablePath, path)
        XCTAssertEqual(snapshot.executableIdentity, try FileIdentity(path: path))
        XCTAssertEqual(snapshot.namespacePIDs.last, child.processIdentifier)
        let libc = try XCTUnwrap(snapshot.libraries.first { $0.path.hasSuffix("/libc.so.6") })
        XCTAssertEqual(libc.identity, try FileIdentity(path: libc.path))
        XCTAssertEqual(libc.base % 4096, 0)
        XCTAssertNil(snapshot.libssl)
        let maps = try String(contentsOfFile: "/proc/\(child.processIdentifier)/maps", encoding: .utf8)
        XCTAssertTrue(maps.contains(String(libc.base, radix: 16)), "libc base is a mapping start (offset 0)")
        let info = try ExecutableInspector(goFields: GoField.netHTTP).inspect(path: snapshot.executableOpenPath, queries: ProbeTargetQuery.goNetHTTP,
                                                     languageHint: snapshot.languageHint)
        XCTAssertEqual(info.language, .go)
        XCTAssertEqual(info.identity, snapshot.executableIdentity)
    }

    /// Language from process modules, and libssl with its version from a Python process that imported ssl.
    func testLanguageDetectionAndLibSSL() throws {
        XCTAssertEqual(Language.detect(executable: "/usr/bin/python3.11", libraries: []), .python)
        XCTAssertEqual(Language.detect(executable: "/opt/app/server", libraries: ["/usr/lib/libnode.so.108"]), .node)
        XCTAssertEqual(Language.detect(executable: "/usr/bin/java", libraries: []), .java)
        XCTAssertEqual(Language.detect(executable: "/app/x", libraries: ["/usr/lib/jvm/lib/server/libjvm.so"]), .java)
        XCTAssertEqual(Language.detect(executable: "/app/api", libraries: ["/usr/share/dotnet/shared/libcoreclr.so"]), .dotnet)
        XCTAssertEqual(Language.detect(executable: "/usr/bin/ruby3.1", libraries: []), .ruby)
        XCTAssertEqual(Language.detect(executable: "/usr/bin/pythonic-tool", libraries: []), .native)
        let python = Process()
        python.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        python.arguments = ["python3", "-c", "import ssl, sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()"]
        let input = Pipe()
        let output = Pipe()
        python.standardInput = input
        python.standardOutput = output
        try python.run()
        defer { try? input.fileHandleForWriting.close(); python.waitUntilExit() }
        _ = output.fileHandleForReading.availableData  // "ready": ssl is imported and mapped
        let snapshot = try ProcessInspection.snapshot(pid: python.processIdentifier)
        XCTAssertEqual(snapshot.languageHint, .python)
        let ssl = try XCTUnwrap(snapshot.libssl)
        XCTAssertTrue(ssl.path.contains("libssl.so"))
        XCTAssertEqual(ssl.sonameVersion, "3")
        XCTAssertTrue(ssl.version?.hasPrefix("OpenSSL 3.") ?? false, "\(String(describing: ssl.version))")
    }

    func testMapsLineParsing() throws {
        let line = MapsLine("7f1c2a000000-7f1c2a028000 r--p 00028000 fe:00 1234567                    /usr/lib/my lib.so (deleted)")
        XCTAssertEqual(line?.start, 0x7f1c_2a00_0000)
        XCTAssertEqual(line?.offset, 0x28000)
        XCTAssertEqual(line?.inode, 1_234_567)
        XCTAssertEqual(line?.path, "/usr/lib/my lib.so (deleted)")
        XCTAssertEqual(MapsLine("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ")?.path, "")
        XCTAssertNil(MapsLine("garbage"))
    }
}
