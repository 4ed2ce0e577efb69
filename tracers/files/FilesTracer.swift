import BPFRuntime
import CTracerABI
import Foundation
import TracerFramework

/// File events for audit (files.bpf.c, the open/creat/unlink/rename syscall tracepoints): each `open`,
/// `create` (creat, or an open with O_CREAT), `unlink` and `rename` of a path under the configured prefixes,
/// with the process, the flags, the path(s) and the result (file descriptor, or the errno's name).
public struct FilesTracer: KernelTracer {
    public init() {}

    public var name: String { "files" }
    public var summary: String { "open/create/unlink/rename events under path prefixes (--path-prefix), with pid, comm, flags, result (open/creat/unlink/rename tracepoints)" }
    public var costNotice: String? {
        "cost: syscall tracepoints make every syscall of every process take the kernel's slow syscall path while attached (not only the traced ones)"
    }
    public var object: EmbeddedBPFObject { Tracers.Files.object }
    public var emitsEvents: Bool { true }
    public var followsAgentSelection: Bool { true }

    typealias Program = Tracers.Files.Program

    /// The syscalls hooked, in order: x86-64 has the legacy open/creat/unlink/rename; other architectures
    /// (asm-generic) only the *at forms.
    static let legacySyscalls: [(String, BPFProgramName)] = [
        ("open", Program.filesEnterOpen), ("creat", Program.filesEnterCreat), ("unlink", Program.filesEnterUnlink),
        ("rename", Program.filesEnterRename), ("renameat", Program.filesEnterRenameat),
    ]
    static let atSyscalls: [(String, BPFProgramName)] = [
        ("openat", Program.filesEnterOpenat), ("openat2", Program.filesEnterOpenat2), ("unlinkat", Program.filesEnterUnlinkat),
        ("renameat2", Program.filesEnterRenameat2),
    ]

    public var hookSets: [KernelHookSet] {
        func hooks(_ syscalls: [(String, BPFProgramName)]) -> KernelHookSet {
            let attachments = syscalls.flatMap { syscall, program -> [KernelAttachment] in
                [.tracepoint(category: "syscalls", event: "sys_enter_\(syscall)", program: program),
                 .tracepoint(category: "syscalls", event: "sys_exit_\(syscall)", program: Program.filesExit)]
            }
            return KernelHookSet("tracepoints syscalls:sys_enter/sys_exit_{\(syscalls.map(\.0).joined(separator: ","))}", attachments)
        }
        return [hooks(Self.atSyscalls + Self.legacySyscalls), hooks(Self.atSyscalls)]
    }

    /// Prefixes must be absolute, at most FILES_PREFIX_MAX of them, each shorter than the path buffer.
    public func validate(_ options: KernelTracerOptions) throws {
        guard options.pathPrefixes.count <= Int(FILES_PREFIX_MAX) else {
            throw KernelTracerError("\(name): at most \(FILES_PREFIX_MAX) path prefixes, not \(options.pathPrefixes.count)")
        }
        for prefix in options.pathPrefixes {
            guard prefix.hasPrefix("/") else { throw KernelTracerError("\(name): path prefix '\(prefix)' is not absolute (start it with /)") }
            guard prefix.utf8.count <= MemoryLayout<files_prefix>.size - 4 - 1, !prefix.utf8.contains(0) else {
                throw KernelTracerError("\(name): path prefix '\(prefix.prefix(40))...' is longer than \(MemoryLayout<files_prefix>.size - 5) bytes")
            }
        }
    }

    public func configure(_ spec: inout BPFObjectSpec, options: KernelTracerOptions) {
        guard !options.pathPrefixes.isEmpty else { return }
        let entrySize = MemoryLayout<files_prefix>.size
        var bytes = [UInt8](repeating: 0, count: entrySize * Int(FILES_PREFIX_MAX))
        for (index, prefix) in options.pathPrefixes.enumerated() {
            let utf8 = Array(prefix.utf8)
            let base = index * entrySize
            withUnsafeBytes(of: UInt32(utf8.count).littleEndian) { bytes.replaceSubrange(base..<base + 4, with: $0) }
            bytes.replaceSubrange(base + 4..<base + 4 + utf8.count, with: utf8)
        }
        spec.set(BPFGlobalName("files_prefixes"), bytes: bytes)
        spec.set(BPFGlobalName("files_prefix_count"), to: UInt32(options.pathPrefixes.count))
    }

    public func decode(event: UnsafeRawBufferPointer, header: KernelEventHeader) -> KernelEvent? {
        guard event.count >= MemoryLayout<files_event>.size else { return nil }
        let file = event.loadUnaligned(as: files_event.self)
        let name: String
        switch Int32(header.type) {
        case FILES_EVENT_OPEN: name = "open"
        case FILES_EVENT_CREATE: name = "create"
        case FILES_EVENT_UNLINK: name = "unlink"
        case FILES_EVENT_RENAME: name = "rename"
        default: return nil
        }
        let path = Self.text(file.path, length: file.path_length)
        var fields = [KernelLabel("file.path", .string(path))]
        if let directory = Self.directory(of: path, dirfd: file.dirfd, pid: header.pid) {
            fields.append(KernelLabel("file.directory", .string(directory)))
        }
        if header.type == UInt32(FILES_EVENT_RENAME) {
            let newPath = Self.text(file.new_path, length: file.new_path_length)
            fields.append(KernelLabel("file.new_path", .string(newPath)))
            if let directory = Self.directory(of: newPath, dirfd: file.new_dirfd, pid: header.pid) {
                fields.append(KernelLabel("file.new_directory", .string(directory)))
            }
        }
        switch Int32(header.type) {
        case FILES_EVENT_OPEN, FILES_EVENT_CREATE:
            fields.append(KernelLabel("flags", .string(Self.openFlags(file.flags))))
            if file.flags & UInt32(O_CREAT) != 0 { fields.append(KernelLabel("mode", .string(String(file.mode, radix: 8)))) }
        case FILES_EVENT_UNLINK:
            if file.flags & UInt32(AT_REMOVEDIR) != 0 { fields.append(KernelLabel("flags", .string("AT_REMOVEDIR"))) }
        default:
            if file.flags != 0 { fields.append(KernelLabel("flags", .string(Self.renameFlags(file.flags)))) }
        }
        if file.result >= 0 {
            if header.type == UInt32(FILES_EVENT_OPEN) || header.type == UInt32(FILES_EVENT_CREATE) {
                fields.append(KernelLabel("fd", .int(file.result)))
            }
        } else {
            fields.append(KernelLabel("error.type", .string(Self.errnoName(-file.result))))
        }
        return KernelEvent(tracer: self.name, name: name, timeUnixNano: 0, pid: header.pid, comm: header.comm, fields: fields)
    }

    /// A relative path (passed by the kernel unjudged) is kept when, joined to the directory it is relative
    /// to, it lies under a prefix; kept too when that directory is unknown (the process is gone).
    public func keeps(_ event: KernelEvent, options: KernelTracerOptions) -> Bool {
        guard !options.pathPrefixes.isEmpty else { return true }
        func field(_ key: String) -> String? {
            guard case .string(let text)? = event.fields.first(where: { $0.key == key })?.value else { return nil }
            return text
        }
        func wanted(_ pathKey: String, _ directoryKey: String) -> Bool? {
            guard let path = field(pathKey) else { return nil }
            if path.hasPrefix("/") { return options.pathPrefixes.contains { path.hasPrefix($0) } }
            guard let directory = field(directoryKey) else { return true }
            let full = URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: directory, isDirectory: true)).standardized.path
            return options.pathPrefixes.contains { full.hasPrefix($0) }
        }
        return wanted("file.path", "file.directory") == true || wanted("file.new_path", "file.new_directory") == true
    }

    static func text<T>(_ tuple: T, length: UInt16) -> String {
        withUnsafeBytes(of: tuple) { String(decoding: $0.prefix(Int(length)), as: UTF8.self) }
    }

    /// The directory a relative path starts from (the process's working directory, or the directory open
    /// as `dirfd`), read from /proc now; nil for an absolute path or when the process is gone.
    static func directory(of path: String, dirfd: Int32, pid: UInt32) -> String? {
        guard !path.hasPrefix("/") else { return nil }
        let link = dirfd == AT_FDCWD ? "/proc/\(pid)/cwd" : "/proc/\(pid)/fd/\(dirfd)"
        return try? FileManager.default.destinationOfSymbolicLink(atPath: link)
    }

    /// `errno` by its C name (`ENOENT`), from the build machine's kernel headers.
    static func errnoName(_ number: Int64) -> String {
        LinuxSyscallTable.errnoNames[Int32(clamping: number)] ?? "errno \(number)"
    }

    /// Open flags by their C names: the access mode, then each flag set (`O_WRONLY|O_CREAT|O_TRUNC`).
    static func openFlags(_ flags: UInt32) -> String {
        let access = ["O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"][Int(flags & 3)]
        let named: [(Int32, String)] = [
            (O_CREAT, "O_CREAT"), (O_EXCL, "O_EXCL"), (O_NOCTTY, "O_NOCTTY"), (O_TRUNC, "O_TRUNC"), (O_APPEND, "O_APPEND"),
            (O_NONBLOCK, "O_NONBLOCK"), (O_DSYNC, "O_DSYNC"), (O_DIRECTORY, "O_DIRECTORY"), (O_NOFOLLOW, "O_NOFOLLOW"),
            (O_CLOEXEC, "O_CLOEXEC"), (O_SYNC & ~O_DSYNC, "O_SYNC"),
        ] + linuxOpenFlags
        var parts = [access]
        var rest = flags & ~3
        for (bit, name) in named where rest & UInt32(bit) != 0 {
            parts.append(name)
            rest &= ~UInt32(bit)
        }
        if rest != 0 { parts.append("0x" + String(rest, radix: 16)) }
        return parts.joined(separator: "|")
    }

    /// The Linux-only open flags Glibc's module does not export (they need _GNU_SOURCE), with the values of
    /// the kernel's asm-generic/fcntl.h, which x86-64 uses (other architectures: printed as hex).
    #if arch(x86_64)
    static let linuxOpenFlags: [(Int32, String)] = [
        (0o40000, "O_DIRECT"), (0o100000, "O_LARGEFILE"), (0o1000000, "O_NOATIME"), (0o10000000, "O_PATH"), (0o20000000, "O_TMPFILE"),
    ]
    #else
    static let linuxOpenFlags: [(Int32, String)] = []
    #endif

    static func renameFlags(_ flags: UInt32) -> String {
        var parts: [String] = []
        for (bit, name) in [(UInt32(1), "RENAME_NOREPLACE"), (2, "RENAME_EXCHANGE"), (4, "RENAME_WHITEOUT")] where flags & bit != 0 { parts.append(name) }
        if flags & ~7 != 0 { parts.append("0x" + String(flags & ~7, radix: 16)) }
        return parts.joined(separator: "|")
    }
}
