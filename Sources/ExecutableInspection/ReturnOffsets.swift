internal import CCapstone
#if canImport(Glibc)
import Glibc
#endif

/// The six capstone functions the RET search calls, looked up once in `libcapstone.so.4` opened with
/// `dlopen` on first use: an agent that never inspects a Go function (the only caller) never maps the
/// library, whose relocated tables are 4-5 MiB of resident memory. Once opened it stays (no `dlclose`).
struct Capstone: Sendable {
    typealias Open = @convention(c) (cs_arch, cs_mode, UnsafeMutablePointer<csh>?) -> cs_err
    typealias Option = @convention(c) (csh, cs_opt_type, Int) -> cs_err
    typealias Malloc = @convention(c) (csh) -> UnsafeMutablePointer<cs_insn>?
    typealias Close = @convention(c) (UnsafeMutablePointer<csh>?) -> cs_err
    typealias Free = @convention(c) (UnsafeMutablePointer<cs_insn>?, Int) -> Void
    typealias DisasmIter = @convention(c) (csh, UnsafeMutablePointer<UnsafePointer<UInt8>?>?, UnsafeMutablePointer<Int>?,
                                           UnsafeMutablePointer<UInt64>?, UnsafeMutablePointer<cs_insn>?) -> Bool
    typealias Version = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Int32>?) -> UInt32

    let open: Open
    let option: Option
    let malloc: Malloc
    let close: Close
    let free: Free
    let disasmIter: DisasmIter

    /// Why capstone cannot be used, naming the library.
    struct Unavailable: Error { let reason: String }

    /// Loaded on first access; Swift runs a global's initializer exactly once, thread-safely.
    static let shared: Result<Capstone, Unavailable> = load()

    private static func load() -> Result<Capstone, Unavailable> {
        let soname = TRACER_CAPSTONE_SONAME
        guard let library = dlopen(soname, RTLD_NOW | RTLD_LOCAL) else {
            let error = dlerror().map { String(cString: $0) } ?? "not found"
            return .failure(Unavailable(reason: "cannot load \(soname) (Debian: libcapstone4): \(error)"))
        }
        func symbol<Function>(_ name: String, as type: Function.Type) throws(Unavailable) -> Function {
            guard let address = dlsym(library, name) else {
                throw Unavailable(reason: "\(soname) has no \(name)")
            }
            return unsafeBitCast(address, to: type)
        }
        do throws(Unavailable) {
            // The headers' structures (cs_insn) must be those of the library's major version.
            var major: Int32 = 0, minor: Int32 = 0
            _ = try symbol("cs_version", as: Version.self)(&major, &minor)
            guard major == CS_API_MAJOR else {
                throw Unavailable(reason: "\(soname) is capstone \(major).\(minor), built against \(CS_API_MAJOR).x headers")
            }
            return .success(Capstone(open: try symbol("cs_open", as: Open.self),
                                     option: try symbol("cs_option", as: Option.self),
                                     malloc: try symbol("cs_malloc", as: Malloc.self),
                                     close: try symbol("cs_close", as: Close.self),
                                     free: try symbol("cs_free", as: Free.self),
                                     disasmIter: try symbol("cs_disasm_iter", as: DisasmIter.self)))
        } catch {
            return .failure(error)
        }
    }
}

/// A capstone handle (`cs_open(CS_ARCH_X86, CS_MODE_64)`) with `CS_OPT_SKIPDATA` on, so bytes that
/// do not decode are skipped instead of ending the walk.
final class Disassembler {
    private let capstone: Capstone
    private var handle: csh = 0
    private let instruction: UnsafeMutablePointer<cs_insn>

    /// Throws when capstone cannot be loaded or cannot open an x86-64 disassembler.
    init() throws(Capstone.Unavailable) {
        capstone = try Capstone.shared.get()
        guard capstone.open(CS_ARCH_X86, CS_MODE_64, &handle) == CS_ERR_OK else {
            throw Capstone.Unavailable(reason: "capstone could not open an x86-64 disassembler")
        }
        _ = capstone.option(handle, CS_OPT_SKIPDATA, Int(CS_OPT_ON.rawValue))
        guard let insn = capstone.malloc(handle) else {
            _ = capstone.close(&handle)
            throw Capstone.Unavailable(reason: "capstone could not allocate an instruction")
        }
        instruction = insn
    }

    func close() {
        capstone.free(instruction, 1)
        _ = capstone.close(&handle)
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
            guard capstone.disasmIter(handle, &cursor, &remaining, &address, instruction) else { break }
            if instruction.pointee.id == X86_INS_RET.rawValue { offsets.append(at) }
        }
        return offsets
    }

    /// The offset (relative to `code`, a Go function) of the conditional jump of its stack check when only
    /// instructions that change no argument register come before it, else 0. Go functions start
    /// `cmp rsp, [r14+16]` (or `lea r12, [rsp-N]; cmp r12, [r14+16]`), then `jbe` to morestack: at the jump
    /// every argument register, the stack pointer and the return address are still those of the entry. A
    /// uprobe there costs one trap the kernel emulates (`branch_setup_xol_ops`: jcc rel8/rel32), where one on
    /// the `cmp` is single-stepped out of line, a second trap (~22 µs against ~0.6 µs on this VM's kernel).
    func emulatedEntryOffset(in code: UnsafeRawBufferPointer) -> UInt64 {
        guard let start = code.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return 0 }
        var cursor: UnsafePointer<UInt8>? = UnsafePointer(start)
        var remaining = code.count
        var address: UInt64 = 0
        for _ in 0..<3 {
            let at = address
            guard capstone.disasmIter(handle, &cursor, &remaining, &address, instruction) else { return 0 }
            let bytes = withUnsafeBytes(of: instruction.pointee.bytes) { Array($0.prefix(Int(instruction.pointee.size))) }
            switch instruction.pointee.id {
            case X86_INS_CMP.rawValue, X86_INS_TEST.rawValue:
                continue // flags only
            case X86_INS_LEA.rawValue where Self.writesScratchRegister(lea: bytes):
                continue // r12 or r13: no argument of Go's register ABI
            default:
                return Self.isEmulatedConditionalJump(bytes) ? at : 0
            }
        }
        return 0
    }

    /// `jcc rel8` (70–7f) or `jcc rel32` (0f 80–8f) without prefixes: a jump the kernel emulates.
    static func isEmulatedConditionalJump(_ bytes: [UInt8]) -> Bool {
        (bytes.count == 2 && (0x70...0x7F).contains(bytes[0])) || (bytes.count == 6 && bytes[0] == 0x0F && (0x80...0x8F).contains(bytes[1]))
    }

    /// `lea r12, [...]` or `lea r13, [...]`: REX.W + REX.R (4c), 8d, ModRM reg 4 or 5.
    static func writesScratchRegister(lea bytes: [UInt8]) -> Bool {
        bytes.count >= 3 && bytes[0] == 0x4C && bytes[1] == 0x8D && [0x20, 0x28].contains(bytes[2] & 0x38)
    }
}

extension ELFFile {
    /// File offset where an entry uprobe on the Go function `[address, address + size)` costs least: its stack
    /// check's conditional jump (``Disassembler/emulatedEntryOffset(in:)``), else its first instruction.
    public func goEntryProbeOffset(address: UInt64, size: UInt64) throws(InspectionError) -> UInt64 {
        let start = try fileOffset(forVirtualAddress: address)
        guard machine == 62, size > 0, let code = read(virtualAddress: address, length: min(size, 32)) else { return start }
        return start + (try disassembler()).emulatedEntryOffset(in: code.bytes)
    }

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
        return try disassembler().returnInstructionOffsets(in: code.bytes).map { start + $0 }
    }

    /// The file's disassembler, opened on first use.
    private func disassembler() throws(InspectionError) -> Disassembler {
        if let capstone { return capstone }
        do throws(Capstone.Unavailable) {
            let opened = try Disassembler()
            capstone = opened
            return opened
        } catch {
            throw InspectionError(.unsupported, path, "disassembly needs capstone: \(error.reason)")
        }
    }

    /// ``returnOffsets(address:size:)`` of the symbol `name` (its `st_size` bounds the function).
    public func returnOffsets(ofSymbol name: String) throws(InspectionError) -> [UInt64] {
        guard let symbol = symbol(named: name) else {
            throw InspectionError(.symbolNotFound, path, "symbol '\(name)' not found in .symtab or .dynsym")
        }
        return try returnOffsets(address: symbol.address, size: symbol.size)
    }
}
