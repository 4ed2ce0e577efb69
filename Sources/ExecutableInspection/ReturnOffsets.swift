internal import CCapstone

/// A capstone handle (`cs_open(CS_ARCH_X86, CS_MODE_64)`) with `CS_OPT_SKIPDATA` on, so bytes that
/// do not decode are skipped instead of ending the walk.
final class Disassembler {
    private var handle: csh = 0
    private let instruction: UnsafeMutablePointer<cs_insn>

    init?() {
        guard cs_open(CS_ARCH_X86, CS_MODE_64, &handle) == CS_ERR_OK else { return nil }
        cs_option(handle, CS_OPT_SKIPDATA, Int(CS_OPT_ON.rawValue))
        guard let insn = cs_malloc(handle) else {
            cs_close(&handle)
            return nil
        }
        instruction = insn
    }

    func close() {
        cs_free(instruction, 1)
        cs_close(&handle)
    }

    /// Byte offsets (relative to `code`) of every near `RET` (`c3`, `c2 iw`, with prefixes such as
    /// `f3 c3`) found by decoding `code` linearly from its first byte.
    func returnInstructionOffsets(in code: UnsafeRawBufferPointer) -> [UInt64] {
        guard let start = code.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return [] }
        var cursor: UnsafePointer<UInt8>? = UnsafePointer(start)
        var remaining = code.count
        var address: UInt64 = 0
        var offsets: [UInt64] = []
        while remaining > 0 {
            let at = address
            guard cs_disasm_iter(handle, &cursor, &remaining, &address, instruction) else { break }
            if instruction.pointee.id == X86_INS_RET.rawValue { offsets.append(at) }
        }
        return offsets
    }
}

extension ELFFile {
    /// File offsets of every `RET` inside the function `[address, address + size)`, found with the
    /// capstone x86-64 disassembler. Go functions must never get a uretprobe (the Go runtime copies
    /// stacks and the return-address trampoline crashes the program): put a uprobe on each of these.
    public func returnOffsets(address: UInt64, size: UInt64) throws(InspectionError) -> [UInt64] {
        guard machine == 62 else {
            throw InspectionError(.unsupported, path, "return offsets need x86-64 code, not \(machineName)")
        }
        guard size > 0 else {
            throw InspectionError(.malformed, path, "function at 0x\(hex(address)) has no recorded size")
        }
        guard let code = read(virtualAddress: address, length: size) else {
            throw InspectionError(.addressNotMapped, path,
                                  "function 0x\(hex(address))+0x\(hex(size)) is not inside one PT_LOAD segment's file data")
        }
        let start = try fileOffset(forVirtualAddress: address)
        if capstone == nil { capstone = Disassembler() }
        guard let capstone else { throw InspectionError(.unsupported, path, "capstone could not open an x86-64 disassembler") }
        return capstone.returnInstructionOffsets(in: code.bytes).map { start + $0 }
    }

    /// ``returnOffsets(address:size:)`` of the symbol `name` (its `st_size` bounds the function).
    public func returnOffsets(ofSymbol name: String) throws(InspectionError) -> [UInt64] {
        guard let symbol = symbol(named: name) else {
            throw InspectionError(.symbolNotFound, path, "symbol '\(name)' not found in .symtab or .dynsym")
        }
        return try returnOffsets(address: symbol.address, size: symbol.size)
    }
}
