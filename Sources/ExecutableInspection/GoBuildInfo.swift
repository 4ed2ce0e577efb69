/// A module line of Go's build info (`runtime/debug.Module`): `mod`/`dep` with an optional `=>` replacement.
public struct GoModule: Sendable, Equatable, Codable {
    public let path: String
    public let version: String
    /// The `go.sum` hash (`h1:...`), empty when not recorded.
    public let sum: String
    /// The `=>` replacement module, if any, as `path version`.
    public let replacement: String?
}

/// The build information the Go linker embeds (`runtime/debug.BuildInfo`, read by `debug/buildinfo`):
/// the toolchain version and the module graph.
public struct GoBuildInfo: Sendable, Equatable, Codable {
    /// `runtime.Version()` of the toolchain, e.g. `go1.19.8`.
    public let goVersion: String
    /// The main package path (`path` line), e.g. `example.com/server` or `command-line-arguments`.
    public let mainPackage: String?
    /// The main module (`mod` line), absent for `go run`/GOPATH builds.
    public let mainModule: GoModule?
    /// `dep` lines in order.
    public let dependencies: [GoModule]
    /// `build key=value` lines (go1.18+): `-ldflags`, `CGO_ENABLED`, `vcs.revision`...
    public let settings: [String: String]

    /// `(major, minor)` of ``goVersion`` (`go1.19.8` → (1, 19)); nil for development builds (`devel ...`).
    public var languageVersion: (major: Int, minor: Int)? { GoBuildInfo.parseVersion(goVersion) }

    static func parseVersion(_ version: String) -> (major: Int, minor: Int)? {
        guard version.hasPrefix("go") else { return nil }
        let numbers = version.dropFirst(2).split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        return numbers.count == 2 ? (numbers[0], numbers[1]) : nil
    }

    /// The `dep` (or main) module with import path `path`.
    public func module(_ path: String) -> GoModule? {
        mainModule?.path == path ? mainModule : dependencies.first { $0.path == path }
    }

    /// The 14-byte magic that starts the build info blob (`buildInfoMagic` in `debug/buildinfo`).
    static let magic: [UInt8] = [0xff] + Array(" Go buildinf:".utf8)

    /// Parses the 32-byte-header blob that starts with ``magic``.
    ///
    /// Header: magic (14 bytes), pointer size (byte 14), flags (byte 15: bit 0 big-endian, bit 1
    /// "strings inline"). go1.18+ puts two varint-length-prefixed strings (version, modinfo) at byte 32;
    /// older toolchains put two pointers at byte 16 to Go string headers `{data, len}` that
    /// `readMemory(virtualAddress, length)` resolves through the file's segments.
    static func parse(blob: ByteView, subject: String,
                      readMemory: (UInt64, UInt64) -> ByteView?) throws(InspectionError) -> GoBuildInfo {
        func malformed(_ detail: String) -> InspectionError { InspectionError(.malformed, subject, "Go build info: \(detail)") }
        guard blob.count >= 32, magic.indices.allSatisfy({ blob.u8(UInt64($0)) == magic[$0] }) else {
            throw malformed("no '\\xff Go buildinf:' header")
        }
        let pointerSize = Int(blob.u8(14) ?? 0)
        let flags = blob.u8(15) ?? 0
        var version: [UInt8]
        var modinfo: [UInt8]
        if flags & 2 != 0 {
            var at: UInt64 = 32
            func inlineString() throws(InspectionError) -> [UInt8] {
                guard let (length, used) = blob.uvarint(at), let data = blob.sub(at + used, length) else {
                    throw malformed("inline string at \(at) runs past the end of the data")
                }
                at += used + length
                return Array(data.bytes)
            }
            version = try inlineString()
            modinfo = try inlineString()
        } else {
            guard flags & 1 == 0 else { throw InspectionError(.unsupported, subject, "Go build info: big-endian binary") }
            guard pointerSize == 4 || pointerSize == 8 else { throw malformed("pointer size \(pointerSize)") }
            func pointedString(_ headerAddress: UInt64) throws(InspectionError) -> [UInt8] {
                guard let header = readMemory(headerAddress, UInt64(2 * pointerSize)),
                      let data = header.word(0, size: pointerSize), let length = header.word(UInt64(pointerSize), size: pointerSize)
                else { throw malformed("string header at 0x\(hex(headerAddress)) is not in the file") }
                if length == 0 { return [] }
                guard let bytes = readMemory(data, length) else {
                    throw malformed("string data at 0x\(hex(data)) (\(length) bytes) is not in the file")
                }
                return Array(bytes.bytes)
            }
            guard let versionAddress = blob.word(16, size: pointerSize),
                  let modinfoAddress = blob.word(16 + UInt64(pointerSize), size: pointerSize) else { throw malformed("truncated header") }
            version = try pointedString(versionAddress)
            modinfo = try pointedString(modinfoAddress)
        }
        let versionString = String(decoding: version, as: UTF8.self)
        guard versionString.hasPrefix("go") || versionString.hasPrefix("devel") else {
            throw malformed("version string '\(versionString.prefix(40))' does not start with 'go'")
        }
        // The linker wraps modinfo in 16-byte binary sentinels (cmd/go's `modload.ModInfoData`).
        if modinfo.count >= 33 && modinfo[modinfo.count - 17] == UInt8(ascii: "\n") {
            modinfo = Array(modinfo[16..<(modinfo.count - 16)])
        }
        return parseModinfo(version: versionString, String(decoding: modinfo, as: UTF8.self))
    }

    /// The text format of `runtime/debug.BuildInfo.String`: tab-separated `path`, `mod`, `dep`, `=>`, `build` lines.
    static func parseModinfo(version: String, _ text: String) -> GoBuildInfo {
        var mainPackage: String?
        var mainModule: GoModule?
        var dependencies: [GoModule] = []
        var settings: [String: String] = [:]
        var lastWasMain = false
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard let key = fields.first else { continue }
            func module() -> GoModule? {
                fields.count >= 3 ? GoModule(path: fields[1], version: fields[2], sum: fields.count > 3 ? fields[3] : "", replacement: nil) : nil
            }
            switch key {
            case "path" where fields.count >= 2: mainPackage = fields[1]
            case "mod": mainModule = module(); lastWasMain = true
            case "dep":
                if let dep = module() { dependencies.append(dep) }
                lastWasMain = false
            case "=>" where fields.count >= 3:
                let replacement = "\(fields[1]) \(fields[2])"
                if lastWasMain, let m = mainModule {
                    mainModule = GoModule(path: m.path, version: m.version, sum: m.sum, replacement: replacement)
                } else if let last = dependencies.popLast() {
                    dependencies.append(GoModule(path: last.path, version: last.version, sum: last.sum, replacement: replacement))
                }
            case "build" where fields.count >= 2:
                let setting = fields[1...].joined(separator: "\t")
                if let eq = setting.firstIndex(of: "=") {
                    settings[String(setting[..<eq])] = String(setting[setting.index(after: eq)...])
                }
            default: break
            }
        }
        return GoBuildInfo(goVersion: version, mainPackage: mainPackage, mainModule: mainModule,
                           dependencies: dependencies, settings: settings)
    }
}

extension ELFFile {
    /// Whether this looks like a Go binary: a `.go.buildinfo` or `.gopclntab` section or a Go build ID note.
    public var isGo: Bool {
        goBuildID != nil || sections.contains { $0.name == ".go.buildinfo" || $0.name.hasSuffix(".gopclntab") }
            || goBuildInfoBlob() != nil
    }

    /// The build info blob: the `.go.buildinfo` section, or (section headers stripped) the first
    /// 16-byte-aligned ``GoBuildInfo/magic`` in a writable `PT_LOAD` segment, as `debug/buildinfo` does.
    func goBuildInfoBlob() -> ByteView? {
        if let section = section(named: ".go.buildinfo") { return contents(of: section) }
        guard sections.isEmpty else { return nil }
        for segment in loadSegments where segment.flags & 2 != 0 {
            guard let data = bytes.slice(offset: segment.offset, length: segment.fileSize) else { continue }
            let view = ByteView(data)
            var from: UInt64 = 0
            while let hit = view.sub(from, UInt64(view.count) - from)?.firstIndex(of: GoBuildInfo.magic) {
                let at = from + hit
                if at % 16 == 0 { return view.sub(at, UInt64(view.count) - at) }
                from = at + 1
            }
        }
        return nil
    }

    /// The Go build info, or nil for a non-Go file; malformed build info throws.
    public func goBuildInfo() throws(InspectionError) -> GoBuildInfo? {
        guard let blob = goBuildInfoBlob() else { return nil }
        return try GoBuildInfo.parse(blob: blob, subject: path) { address, length in
            read(virtualAddress: address, length: length)
        }
    }
}

extension GoBuildInfo {
    /// Module path prefixes of libraries that Go tracers hook or that change what a request looks like
    /// (HTTP/2, gRPC, routers, SQL drivers, Redis, Kafka).
    public static let modulePrefixesOfInterest = [
        "golang.org/x/net", "google.golang.org/grpc", "github.com/gin-gonic/gin", "github.com/gorilla/mux",
        "github.com/labstack/echo", "github.com/go-chi/chi", "github.com/gofiber/fiber", "github.com/valyala/fasthttp",
        "github.com/go-sql-driver/mysql", "github.com/jackc/pgx", "github.com/lib/pq", "github.com/redis/go-redis",
        "github.com/go-redis/redis", "github.com/segmentio/kafka-go", "github.com/IBM/sarama", "github.com/Shopify/sarama",
        "go.mongodb.org/mongo-driver",
    ]

    /// The dependencies matching ``modulePrefixesOfInterest``.
    public var modulesOfInterest: [GoModule] {
        dependencies.filter { dep in Self.modulePrefixesOfInterest.contains { dep.path.hasPrefix($0) } }
    }
}
