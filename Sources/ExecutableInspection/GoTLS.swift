extension ELFFile {
    /// Where a linux/amd64 Go binary keeps the running goroutine's `g` pointer, as an offset from the
    /// thread pointer (`task->thread.fsbase`), so a BPF program can read it in any hook.
    ///
    /// - Internally linked binaries have no `PT_TLS`: the Go linker addresses `g` as `-8(FS)`.
    /// - Externally linked (cgo) binaries place the TLS symbol `runtime.tlsg` in the executable's TLS
    ///   block, which on x86-64 (TLS variant II) ends at the thread pointer:
    ///   `g = fsbase − alignUp(PT_TLS p_memsz, p_align) + st_value(runtime.tlsg)`. Stripped binaries
    ///   lack the symbol; if the block holds only the 8-byte slot it is at 0, otherwise the answer is nil.
    ///
    /// Nil for other machines and when the slot cannot be located without guessing.
    public var goGSlotThreadPointerOffset: Int64? {
        guard machine == 62 else { return nil }
        guard let tls = tlsSegment else { return -8 }
        let alignment = max(tls.alignment, 1)
        let blockSize = (tls.memorySize + alignment - 1) / alignment * alignment
        let slot: UInt64
        if let symbol = symbol(named: "runtime.tlsg") {
            slot = symbol.address  // st_value of an STT_TLS symbol: offset inside the TLS segment
        } else if tls.memorySize == 8 {
            slot = 0
        } else {
            return nil
        }
        guard slot < blockSize, blockSize < 1 << 32 else { return nil }
        return -Int64(blockSize) + Int64(slot)
    }
}
