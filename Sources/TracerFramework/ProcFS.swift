import Foundation

/// Small readers of /proc, each returning nil (or empty) when the process is gone or unreadable: a PID
/// can vanish between any two reads, and that is not an error.
enum ProcFS {
    static func read(_ path: String, limit: Int = 1 << 20) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let data = try? handle.read(upToCount: limit) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// Every numeric entry of /proc: the processes (thread-group leaders) alive now.
    static func pids() -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
    }

    static func comm(_ pid: Int32) -> String? {
        read("/proc/\(pid)/comm").map { $0.trimmingCharacters(in: .newlines) }
    }

    static func executablePath(_ pid: Int32) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")
    }

    /// The command line (`/proc/PID/cmdline`, NUL-separated); empty for kernel threads and zombies.
    static func commandLine(_ pid: Int32) -> [String] {
        guard let text = read("/proc/\(pid)/cmdline", limit: 64 << 10) else { return [] }
        return text.split(separator: "\0", omittingEmptySubsequences: false).map(String.init).reversed()
            .drop { $0.isEmpty }.reversed()
    }

    /// The working directory (`readlink /proc/PID/cwd`), as the process sees it.
    static func workingDirectory(_ pid: Int32) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd")
    }

    /// Whether the task is a kernel thread: `PF_KTHREAD` (0x00200000) in the flags of `/proc/PID/stat`
    /// (field 9). Kernel threads have no executable or user memory to trace.
    static func isKernelThread(_ pid: Int32) -> Bool {
        guard let stat = read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return false }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the comm: state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9).
        guard fields.count > 6, let flags = UInt64(fields[6]) else { return false }
        return flags & 0x0020_0000 != 0
    }

    /// The cgroup v2 path (or all v1 lines joined), e.g. `/system.slice/nginx.service`.
    static func cgroup(_ pid: Int32) -> String {
        (read("/proc/\(pid)/cgroup") ?? "").split(separator: "\n").map { line in
            line.split(separator: ":", maxSplits: 2).last.map(String.init) ?? ""
        }.joined(separator: "\n")
    }

    /// The thread-group id of a task (threads also appear as /proc/TID).
    static func threadGroup(_ task: Int32) -> Int32? {
        field("Tgid", in: "/proc/\(task)/status").flatMap { Int32($0) }
    }

    static func parent(_ pid: Int32) -> Int32? {
        field("PPid", in: "/proc/\(pid)/status").flatMap { Int32($0) }
    }

    private static func field(_ name: String, in path: String) -> String? {
        guard let status = read(path) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("\(name):") {
            return line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)
        }
        return nil
    }

    /// The process's environment variables (needs CAP_SYS_PTRACE for other users' processes).
    static func environment(_ pid: Int32) -> [String: String] {
        guard let text = read("/proc/\(pid)/environ") else { return [:] }
        var environment: [String: String] = [:]
        for entry in text.split(separator: "\0") {
            guard let equals = entry.firstIndex(of: "=") else { continue }
            environment[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
        }
        return environment
    }

    /// TCP ports the process listens on: its socket inodes (from /proc/PID/fd) matched against the LISTEN
    /// sockets of its network namespace (/proc/PID/net/tcp and tcp6, state 0A).
    static func listeningPorts(_ pid: Int32) -> [UInt16] {
        var listening: [UInt64: UInt16] = [:]
        for table in ["tcp", "tcp6"] {
            guard let text = read("/proc/\(pid)/net/\(table)", limit: 16 << 20) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count > 9, fields[3] == "0A",
                      let portText = fields[1].split(separator: ":").last, let port = UInt16(portText, radix: 16),
                      let inode = UInt64(fields[9]) else { continue }
                listening[inode] = port
            }
        }
        guard !listening.isEmpty else { return [] }
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        var ports: Set<UInt16> = []
        for descriptor in descriptors {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(descriptor)"),
                  target.hasPrefix("socket:["), let inode = UInt64(target.dropFirst(8).dropLast()) else { continue }
            if let port = listening[inode] { ports.insert(port) }
        }
        return ports.sorted()
    }
}
