internal import CLibBPF
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// An attached program (`struct bpf_link`, a raw link fd for links libbpf 1.1 cannot make, or a
/// `BPF_PROG_ATTACH` attachment to a map, which has no link before Linux 6.10).
/// `close()` detaches it; so does deinit. Detaching a perf-event uprobe waits for an RCU grace
/// period (~100 ms), so callers detach off their event path.
public final class BPFLink: Sendable, CustomStringConvertible {
    /// The link pointer is used only under the mutex.
    private enum Backing: @unchecked Sendable {
        case libbpf(OpaquePointer)
        case fd(Int32)
        /// `bpf_prog_attach(program, target, type)`: undone with `bpf_prog_detach2`; both fds are duplicates.
        case attachment(program: Int32, target: Int32, type: bpf_attach_type)
    }

    private let backing: Mutex<Backing?>
    /// What was attached, e.g. `uprobe on_read at /usr/bin/app+0x1234`.
    public let description: String

    init(libbpfLink link: OpaquePointer?, errno error: Int32, description: String) throws {
        guard let link else { throw BPFError("attach \(description)", errno: error) }
        backing = Mutex(.libbpf(link))
        self.description = description
    }

    init(fd: Int32, description: String) {
        backing = Mutex(.fd(fd))
        self.description = description
    }

    /// Attaches `program` to `target` (e.g. an sk_msg verdict to a SOCKHASH) with `BPF_PROG_ATTACH`.
    init(attaching program: Int32, to target: Int32, type: bpf_attach_type, description: String) throws {
        let programCopy = fcntl(program, F_DUPFD_CLOEXEC, 0)
        let targetCopy = fcntl(target, F_DUPFD_CLOEXEC, 0)
        guard programCopy >= 0, targetCopy >= 0 else {
            let error = errno
            for fd in [programCopy, targetCopy] where fd >= 0 { _ = Glibc.close(fd) }
            throw BPFError("attach \(description)", errno: error)
        }
        guard bpf_prog_attach(programCopy, targetCopy, type, 0) == 0 else {
            let error = errno
            _ = Glibc.close(programCopy)
            _ = Glibc.close(targetCopy)
            throw BPFError("attach \(description)", errno: error)
        }
        backing = Mutex(.attachment(program: programCopy, target: targetCopy, type: type))
        self.description = description
    }

    deinit { close() }

    /// Whether the link is still attached.
    public var isAttached: Bool { backing.withLock { $0 != nil } }

    /// The kernel's id of the link (`bpf_link_info.id`), as `bpftool link` lists it.
    public var kernelID: UInt32? {
        let fd: Int32? = backing.withLock { backing in
            switch backing {
            case .libbpf(let link): bpf_link__fd(link)
            case .fd(let fd): fd
            case .attachment, nil: nil
            }
        }
        guard let fd, fd >= 0 else { return nil }
        var info = bpf_link_info()
        var length = UInt32(MemoryLayout<bpf_link_info>.size)
        guard bpf_obj_get_info_by_fd(fd, &info, &length) == 0 else { return nil }
        return info.id
    }

    /// Detaches the program; safe to call more than once.
    public func close() {
        let taken = backing.withLock { backing -> Backing? in
            defer { backing = nil }
            return backing
        }
        switch taken {
        case .libbpf(let link): bpf_link__destroy(link)
        case .fd(let fd): _ = Glibc.close(fd)
        case .attachment(let program, let target, let type):
            _ = bpf_prog_detach2(program, target, type)
            _ = Glibc.close(program)
            _ = Glibc.close(target)
        case nil: break
        }
    }
}
