import Foundation

/// The cgroup v2 hierarchy of this machine: `/sys/fs/cgroup` on a v2 system, `/sys/fs/cgroup/unified` on a
/// hybrid (v1 controllers) one. BPF cgroup programs attach to its directories.
public enum Cgroup2 {
    /// Where the cgroup2 filesystem is mounted, from /proc/self/mountinfo (the field after " - " is the
    /// type; the fifth before it the mount point); nil when it is not.
    public static func mountPoint() -> String? {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].hasPrefix("cgroup2 ") else { continue }
            let fields = halves[0].split(separator: " ")
            if fields.count > 4 { return String(fields[4]) }
        }
        return nil
    }
}
