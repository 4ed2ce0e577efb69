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
        let disassembler: Disassembler
        if let capstone {
            disassembler = capstone
        } else {
            do throws(Capstone.Unavailable) { disassembler = try Disassembler() } catch {
                throw InspectionError(.unsupported, path, "RET offsets need capstone: \(error.reason)")
            }
            capstone = disassembler
        }
        return disassembler.returnInstructionOffsets(in: code.bytes).map { start + $0 }
    }

    /// ``returnOffsets(address:size:)`` of the symbol `name` (its `st_size` bounds the function).
    public func returnOffsets(ofSymbol name: String) throws(InspectionError) -> [UInt64] {
        guard let symbol = symbol(named: name) else {
            throw InspectionError(.symbolNotFound, path, "symbol '\(name)' not found in .symtab or .dynsym")
        }
        return try returnOffsets(address: symbol.address, size: symbol.size)
    }
}
