#if canImport(Glibc)
import Glibc
#endif

/// The identity of a file on this host: `st_dev` + `st_ino` from `stat(2)`.
///
/// An inode number alone is not unique across filesystems, so the device is part of the key. This is the
/// key of ``InspectionCache`` and of per-file uprobe attachment (the kernel's uprobe is per inode); for a
/// file on overlayfs that key is the layer file behind it (``init(attachmentTargetOf:)``), as the kernel's.
public struct FileIdentity: Hashable, Sendable, Codable, CustomStringConvertible {
    /// `st_dev` of the file.
    public let device: UInt64
    /// `st_ino` of the file.
    public let inode: UInt64

    public init(device: UInt64, inode: UInt64) {
        self.device = device
        self.inode = inode
    }

    /// `stat(2)`s `path` (following symlinks, so `/proc/PID/exe` names the running executable).
    public init(path: String) throws(InspectionError) {
        let st = try statFile(path)
        self.init(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// `major(st_dev)` with glibc's `dev_t` encoding (`gnu_dev_major`).
    public var deviceMajor: UInt64 { ((device >> 8) & 0xfff) | ((device >> 32) & ~0xfff) }
    /// `minor(st_dev)` with glibc's `dev_t` encoding (`gnu_dev_minor`).
    public var deviceMinor: UInt64 { (device & 0xff) | ((device >> 12) & ~0xff) }

    /// `major:minor inode`, as in `/proc/PID/maps` (with the kernel's `dev_t` split).
    public var description: String {
        "\(deviceMajor):\(deviceMinor) \(inode)"
    }
}

/// `stat(2)` with EINTR retry, mapped to ``InspectionError``.
func statFile(_ path: String) throws(InspectionError) -> stat {
    var st = stat()
    while stat(path, &st) != 0 {
        let err = errno
        if err == EINTR { continue }
        throw InspectionError(
            err == ENOENT || err == ENOTDIR ? .notFound : .io, path, "cannot stat: \(String(cString: strerror(err)))")
    }
    return st
}
