internal import CLibBPF
#if canImport(Glibc)
import Glibc
#endif

extension EmbeddedBPFObject {
    /// The layout of `struct name` in the object's BTF. Opens the object without loading it, so it needs
    /// no privileges (`bpf_object__open_mem` + `btf__find_by_name_kind`).
    public func structLayout(named structName: String) throws -> BTFStructLayout {
        LibbpfLog.install()
        let bytes = self.bytes
        var options = bpf_object_open_opts()
        options.sz = MemoryLayout<bpf_object_open_opts>.size
        guard let object = bytes.withUnsafeBytes({ bpf_object__open_mem($0.baseAddress, $0.count, &options) }) else {
            throw BPFError("open BPF object \(name)", errno: errno)
        }
        defer { bpf_object__close(object) }
        guard let btf = bpf_object__btf(object) else { throw BPFError("read BTF of object \(name)", errno: ENOENT) }
        let id = btf__find_by_name_kind(btf, structName, 4 /* BTF_KIND_STRUCT */)
        guard id > 0, let type = btf__type_by_id(btf, UInt32(id)) else {
            throw BPFError("find struct \(structName) in the BTF of object \(name)", errno: ENOENT)
        }
        let members = btf_members(type)!
        let layout = (0..<Int(btf_vlen(type))).map { index in
            BTFStructLayout.Member(name: String(cString: btf__name_by_offset(btf, members[index].name_off)),
                                   offset: Int(btf_member_bit_offset(type, UInt32(index)) / 8))
        }
        return BTFStructLayout(name: structName, size: Int(type.pointee.size), members: layout)
    }
}
