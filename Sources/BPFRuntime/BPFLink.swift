internal import CLibBPF
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// An attached program (`struct bpf_link`, or a raw link fd for links libbpf 1.1 cannot make).
/// `close()` detaches it; so does deinit. Detaching a perf-event uprobe waits for an RCU grace
/// period (~100 ms), so callers detach off their event path.
public final class BPFLink: Sendable, CustomStringConvertible {
    /// The link pointer is used only under the mutex.
    private enum Backing: @unchecked Sendable {
        case libbpf(OpaquePointer)
        case fd(Int32)
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

    deinit { close() }

    /// Whether the link is still attached.
    public var isAttached: Bool { backing.withLock { $0 != nil } }

    /// The kernel's id of the link (`bpf_link_info.id`), as `bpftool link` lists it.
    public var kernelID: UInt32? {
        let fd: Int32? = backing.withLock { backing in
            switch backing {
            case .libbpf(let link): bpf_link__fd(link)
            case .fd(let fd): fd
            case nil: nil
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
        case nil: break
        }
    }
}
