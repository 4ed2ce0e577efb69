#if canImport(Glibc)
import Glibc
#endif

/// A failed BPF operation: which step failed, on what, the errno, and for program loads the
/// verifier's log.
public struct BPFError: Error, CustomStringConvertible, Sendable {
    /// What was attempted, e.g. `load program selftest_rejected of object selftest`.
    public let operation: String
    /// The errno the kernel or libbpf reported (positive).
    public let errno: Int32
    /// The verifier log, for programs the kernel rejected.
    public let verifierLog: String?

    public init(_ operation: String, errno: Int32, verifierLog: String? = nil) {
        self.operation = operation
        self.errno = errno < 0 ? -errno : errno
        self.verifierLog = verifierLog
    }

    public var description: String {
        var text = "\(operation) failed: \(errnoName(errno)) (\(String(cString: strerror(errno))))"
        if let verifierLog, !verifierLog.isEmpty { text += "\nverifier log:\n\(verifierLog)" }
        return text
    }
}

/// The symbolic name of an errno (`EPERM`), for error messages a user can search for.
func errnoName(_ value: Int32) -> String {
    let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", EINTR: "EINTR", EIO: "EIO", E2BIG: "E2BIG",
        EBADF: "EBADF", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM", EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY",
        EEXIST: "EEXIST", ENODEV: "ENODEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EINVAL: "EINVAL",
        ENOSPC: "ENOSPC", ERANGE: "ERANGE", ENOSYS: "ENOSYS", EOPNOTSUPP: "EOPNOTSUPP", 524: "ENOTSUPP",
    ]
    return names[value] ?? "errno \(value)"
}

/// Runs a syscall-like call, retrying while it fails with EINTR; returns the result or `-errno`.
@inline(__always)
func retryingEINTR(_ call: () -> Int32) -> Int32 {
    while true {
        let result = call()
        if result >= 0 { return result }
        let error = errno
        if error != EINTR { return -error }
    }
}
