internal import CLibElf
#if canImport(Glibc)
import Glibc
#endif

/// Checks, before attaching, that a uprobe offset lands in an executable `PT_LOAD` segment of an ELF file:
/// a wrong offset would otherwise plant a breakpoint in data, or fail deep inside the kernel.
enum UprobeTarget {
    static func validate(path: String, offsets: [UInt64]) throws {
        let operation = "check uprobe target \(path)"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BPFError(operation, errno: errno) }
        defer { close(fd) }
        _ = elf_version(UInt32(EV_CURRENT))
        guard let elf = elf_begin(fd, ELF_C_READ_MMAP, nil) else {
            throw BPFError("\(operation): not an ELF file (\(String(cString: elf_errmsg(-1))))", errno: ENOEXEC)
        }
        defer { elf_end(elf) }
        var count = 0
        guard elf_kind(elf) == ELF_K_ELF, elf_getphdrnum(elf, &count) == 0 else {
            throw BPFError("\(operation): not an ELF file with program headers", errno: ENOEXEC)
        }
        var executable: [Range<UInt64>] = []
        for index in 0..<Int32(count) {
            var header = GElf_Phdr()
            if gelf_getphdr(elf, index, &header) != nil, header.p_type == PT_LOAD, header.p_flags & UInt32(PF_X) != 0 {
                executable.append(header.p_offset..<header.p_offset + header.p_filesz)
            }
        }
        for offset in offsets where !executable.contains(where: { $0.contains(offset) }) {
            throw BPFError("\(operation): offset 0x\(String(offset, radix: 16)) is outside every executable segment", errno: EINVAL)
        }
    }
}

/// Links attached as one unit: if any attach fails, the ones made before it are detached and the error
/// is rethrown, so a set of probes is attached whole or not at all.
public struct BPFLinkGroup: Sendable {
    public private(set) var links: [BPFLink] = []

    public init(attaching attachments: [() throws -> BPFLink]) throws {
        do {
            for attach in attachments { links.append(try attach()) }
        } catch {
            links.forEach { $0.close() }
            throw error
        }
    }

    /// Detaches every link of the group.
    public func close() { links.forEach { $0.close() } }
}
