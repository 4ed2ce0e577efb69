#if canImport(Glibc)
import Glibc
#endif

/// A file-backed mapping of a process (`/proc/PID/maps`), one per file.
public struct MappedFile: Sendable, Codable, Equatable {
    /// The path as the process sees it (in its own mount namespace).
    public let path: String
    /// Identity of `/proc/PID/root/<path>` (what a uprobe attaches to); nil if it cannot be stat'ed
    /// (deleted, or replaced since it was mapped).
    public let identity: FileIdentity?
    /// Load base: start of the mapping with the lowest file offset, minus that offset.
    public let base: UInt64
}

/// libssl as mapped by a process: the TLS tracer hooks `SSL_read`/`SSL_write` there.
public struct LibSSL: Sendable, Codable, Equatable {
    public let path: String
    public let identity: FileIdentity?
    /// The soname version (`libssl.so.3` → `3`, `libssl.so.1.1` → `1.1`).
    public let sonameVersion: String
    /// `OpenSSL 3.0.x ...` from the mapped libcrypto's `.rodata`, when found.
    public let version: String?
}

/// What the agent knows about a running process before choosing tracers.
public struct ProcessSnapshot: Sendable, Codable, Equatable {
    public let pid: Int32
    /// `NSpid` from `/proc/PID/status`: this PID in each nested PID namespace, outermost first.
    public let namespacePIDs: [Int32]
    /// The executable path as the process sees it (`readlink /proc/PID/exe`).
    public let executablePath: String
    /// Where the agent opens the executable: `/proc/PID/exe`, valid across mount namespaces.
    public let executableOpenPath: String
    public let executableIdentity: FileIdentity
    /// Every mapped file other than the executable.
    public let libraries: [MappedFile]
    /// From the mapped modules and the executable's name; refined to `go` by ``ExecutableInspector``.
    public let languageHint: Language
    public let libssl: LibSSL?
}

/// Reads `/proc/PID/...`. Every read that fails because the process is gone (`ENOENT`, `ESRCH`)
/// becomes one ``InspectionError`` with reason ``InspectionError/Reason/processGone``.
public enum ProcessInspection {
    /// A snapshot of process `pid`; `procRoot` is `/proc` except in tests.
    public static func snapshot(pid: Int32, procRoot: String = "/proc") throws(InspectionError) -> ProcessSnapshot {
        let subject = "pid \(pid)"
        let dir = "\(procRoot)/\(pid)"
        let status = try readProcFile("\(dir)/status", subject: subject)
        let nspid = status.split(separator: "\n").first { $0.hasPrefix("NSpid:") }
            .map { $0.dropFirst(6).split(whereSeparator: \.isWhitespace).compactMap { Int32($0) } } ?? [pid]
        let exePath = try readLink("\(dir)/exe", subject: subject)
        let exeIdentity: FileIdentity
        do { exeIdentity = try FileIdentity(attachmentTargetOf: "\(dir)/exe") } catch {
            throw gone(subject, error)
        }
        let maps = try readProcFile("\(dir)/maps", subject: subject)
        var bases: [String: (base: UInt64, offset: UInt64)] = [:]
        var order: [String] = []
        for line in maps.split(separator: "\n") {
            guard let mapping = MapsLine(line), mapping.inode != 0, mapping.path.hasPrefix("/") else { continue }
            if let known = bases[mapping.path] {
                if mapping.offset < known.offset { bases[mapping.path] = (mapping.start &- mapping.offset, mapping.offset) }
            } else {
                bases[mapping.path] = (mapping.start &- mapping.offset, mapping.offset)
                order.append(mapping.path)
            }
        }
        let libraries = order.filter { $0 != exePath }.map { path in
            MappedFile(path: path, identity: try? FileIdentity(attachmentTargetOf: "\(dir)/root\(path)"), base: bases[path]?.base ?? 0)
        }
        let language = Language.detect(executable: exePath, libraries: libraries.map(\.path))
        var libssl: LibSSL?
        if let ssl = libraries.first(where: { fileName($0.path).hasPrefix("libssl.so") }) {
            let soname = fileName(ssl.path).dropFirst("libssl.so".count).drop { $0 == "." }
            let crypto = libraries.first { fileName($0.path).hasPrefix("libcrypto.so") }
            libssl = LibSSL(path: ssl.path, identity: ssl.identity, sonameVersion: String(soname),
                            version: crypto.flatMap { openSSLVersion(path: "\(dir)/root\($0.path)") })
        }
        // The process may have exited while we read: one last check makes the snapshot consistent.
        guard access(dir, F_OK) == 0 else { throw InspectionError(.processGone, subject, "process exited during inspection") }
        return ProcessSnapshot(pid: pid, namespacePIDs: nspid, executablePath: exePath, executableOpenPath: "\(dir)/exe",
                               executableIdentity: exeIdentity, libraries: libraries, languageHint: language, libssl: libssl)
    }

    /// The `OpenSSL X.Y.Z ...` version string in libcrypto's `.rodata` (`OPENSSL_VERSION_TEXT`).
    static func openSSLVersion(path: String) -> String? {
        guard let elf = try? ELFFile(path: path), let rodata = elf.section(named: ".rodata") else { return nil }
        let data = elf.contents(of: rodata)
        let needle = Array("OpenSSL ".utf8)
        var from: UInt64 = 0
        while let view = data.sub(from, UInt64(data.count) - from), let hit = view.firstIndex(of: needle) {
            let at = from + hit
            if let next = data.u8(at + UInt64(needle.count)), (0x30...0x39).contains(next), let text = data.cString(at, limit: 80) {
                return text
            }
            from = at + 1
        }
        return nil
    }

    private static func fileName(_ path: String) -> String { path.split(separator: "/").last.map(String.init) ?? path }

    private static func gone(_ subject: String, _ error: InspectionError) -> InspectionError {
        error.reason == .notFound
            ? InspectionError(.processGone, subject, "process exited during inspection")
            : InspectionError(error.reason, subject, error.description)
    }

    /// Reads a whole `/proc` file (they report size 0, so read until EOF).
    static func readProcFile(_ path: String, subject: String) throws(InspectionError) -> String {
        var fd: Int32
        repeat { fd = open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw procError(errno, path, subject) }
        defer { close(fd) }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw procError(errno, path, subject)
            }
            if n == 0 { break }
            result.append(contentsOf: buffer[0..<n])
        }
        return String(decoding: result, as: UTF8.self)
    }

    static func readLink(_ path: String, subject: String) throws(InspectionError) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { throw procError(errno, path, subject) }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func procError(_ err: Int32, _ path: String, _ subject: String) -> InspectionError {
        if err == ENOENT || err == ESRCH {
            return InspectionError(.processGone, subject, "process does not exist or exited during inspection")
        }
        return InspectionError(.io, subject, "cannot read \(path): \(String(cString: strerror(err)))")
    }
}

/// One line of `/proc/PID/maps`: `start-end perms offset major:minor inode   path` (the path may contain
/// spaces and is absent for anonymous mappings).
struct MapsLine {
    let start: UInt64
    let offset: UInt64
    let inode: UInt64
    let path: String

    init?(_ line: Substring) {
        var rest = line[...]
        func field() -> Substring? {
            rest = rest.drop { $0 == " " }
            guard !rest.isEmpty else { return nil }
            let end = rest.firstIndex(of: " ") ?? rest.endIndex
            defer { rest = rest[end...] }
            return rest[..<end]
        }
        guard let range = field(), let _ = field(), let offsetText = field(), let _ = field(), let inodeText = field(),
              let startText = range.split(separator: "-").first, let start = UInt64(startText, radix: 16),
              let offset = UInt64(offsetText, radix: 16), let inode = UInt64(inodeText) else { return nil }
        self.start = start
        self.offset = offset
        self.inode = inode
        path = String(rest.drop { $0 == " " })
    }
}
