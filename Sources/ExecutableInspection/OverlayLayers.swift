#if canImport(Glibc)
import Glibc
#endif

extension FileIdentity {
    /// The file a uprobe on `path` lands on. The kernel attaches uprobes to the inode behind an overlay
    /// (`d_real_inode()` in `bpf_uprobe_multi_link_attach`, Linux 6.6; OverlayIdentityTests saw every event
    /// twice when an overlay file and its lower file were attached separately), so a file
    /// seen through an overlay and through its lower directory (or through two containers' overlays of one
    /// image layer) is one probe target; keying it by the overlay's own `st_dev` would attach twice and emit
    /// every event twice. For a file on overlayfs this is the file of the topmost layer holding it (upperdir,
    /// then each lowerdir, from the mount's options in `/proc/PID/mountinfo`); any other file is its own.
    /// `path` may be `/proc/PID/exe` or `/proc/PID/root/...` (read in that process's mount namespace).
    public init(attachmentTargetOf path: String) throws(InspectionError) {
        let own = try FileIdentity(path: path)
        self = own.deviceMajor == 0 ? OverlayLayers.realFile(of: path, identity: own, depth: 0) ?? own : own
    }
}

/// The layers of overlay mounts, from mountinfo (`proc_pid_mountinfo(5)`).
enum OverlayLayers {
    /// The identity of the layer file behind `path` when `identity` is on an overlay mount, else nil.
    static func realFile(of path: String, identity: FileIdentity, depth: Int) -> FileIdentity? {
        guard depth < 4 else { return nil }
        let (mountinfoPath, processPath) = processView(of: path)
        guard let processPath, let mountinfo = try? ProcessInspection.readProcFile(mountinfoPath, subject: path) else { return nil }
        let device = "\(identity.deviceMajor):\(identity.deviceMinor)"
        var best: (mountPoint: String, root: String, layers: [String])?
        for line in mountinfo.split(separator: "\n") {
            let halves = line.split(separator: " - ", maxSplits: 1)
            guard halves.count == 2 else { continue }
            let fields = halves[0].split(separator: " ")
            let tail = halves[1].split(separator: " ")
            guard fields.count >= 5, fields[2] == device, tail.count >= 3, tail[0] == "overlay" else { continue }
            let mountPoint = unescape(fields[4]), root = unescape(fields[3])
            let inside = mountPoint == "/" ? processPath.hasPrefix("/") : processPath == mountPoint || processPath.hasPrefix(mountPoint + "/")
            guard inside, mountPoint.count >= (best?.mountPoint.count ?? -1) else { continue }
            best = (mountPoint, root, layers(fromOptions: String(tail[2])))
        }
        guard let best, !best.layers.isEmpty else { return nil }
        let relative = (best.root == "/" ? "" : best.root) + (best.mountPoint == "/" ? processPath : String(processPath.dropFirst(best.mountPoint.count)))
        for layer in best.layers {
            guard let found = try? FileIdentity(path: layer + relative) else { continue }
            return found.deviceMajor == 0 ? realFile(of: layer + relative, identity: found, depth: depth + 1) ?? found : found
        }
        return nil
    }

    /// Which mountinfo describes `path`'s mount namespace, and `path` as that namespace sees it:
    /// `/proc/PID/exe` → the process's executable path, `/proc/PID/root/X` → `/X`, else this process's view.
    static func processView(of path: String) -> (mountinfo: String, path: String?) {
        let parts = path.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: true)
        if parts.count >= 3, parts[0] == "proc", Int32(parts[1]) != nil {
            let mountinfo = "/proc/\(parts[1])/mountinfo"
            if parts.count == 3, parts[2] == "exe" {
                return (mountinfo, readLink(path))
            }
            if parts[2] == "root" { return (mountinfo, parts.count == 4 ? "/" + parts[3] : "/") }
        }
        return ("/proc/self/mountinfo", path.hasPrefix("/") ? path : nil)
    }

    /// `upperdir` then every `lowerdir` (`a:b:c`, topmost first) of overlay mount options.
    static func layers(fromOptions options: String) -> [String] {
        var upper: [String] = [], lower: [String] = []
        for option in options.split(separator: ",") {
            if option.hasPrefix("upperdir=") { upper = [unescape(option.dropFirst(9))] }
            if option.hasPrefix("lowerdir=") { lower = option.dropFirst(9).split(separator: ":").map(unescape) }
        }
        return upper + lower
    }

    /// Undoes mountinfo's octal escapes (`\040` for a space).
    static func unescape(_ text: Substring) -> String {
        guard text.contains("\\") else { return String(text) }
        var bytes: [UInt8] = []
        let utf8 = Array(text.utf8)
        var i = 0
        while i < utf8.count {
            if utf8[i] == UInt8(ascii: "\\"), i + 3 < utf8.count, let value = UInt8(String(decoding: utf8[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                bytes.append(value)
                i += 4
            } else {
                bytes.append(utf8[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
