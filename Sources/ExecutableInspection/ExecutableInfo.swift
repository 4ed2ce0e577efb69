/// A function a tracer wants to probe. The tracer registry (not yet built) will hand the inspector
/// one list per registered tracer; until then ``goNetHTTP`` is the built-in list.
public struct ProbeTargetQuery: Sendable, Hashable, Codable {
    /// The tracer asking (its folder name under `tracers/`).
    public let tracer: String
    /// The symbol, as in `.symtab`/`.dynsym` or Go's pclntab (`net/http.serverHandler.ServeHTTP`).
    public let symbol: String
    /// The tracer needs the function's returns: the inspector finds every RET (uprobes there
    /// replace a uretprobe, which Go's moving stacks make unsafe).
    public let needsReturnOffsets: Bool

    public init(tracer: String, symbol: String, needsReturnOffsets: Bool) {
        self.tracer = tracer
        self.symbol = symbol
        self.needsReturnOffsets = needsReturnOffsets
    }

    /// The Go net/http server and client functions a Go HTTP tracer hooks.
    public static let goNetHTTP: [ProbeTargetQuery] = [
        ProbeTargetQuery(tracer: "go-nethttp", symbol: "net/http.serverHandler.ServeHTTP", needsReturnOffsets: true),
        ProbeTargetQuery(tracer: "go-nethttp", symbol: "net/http.(*response).WriteHeader", needsReturnOffsets: false),
        ProbeTargetQuery(tracer: "go-nethttp", symbol: "net/http.(*Transport).roundTrip", needsReturnOffsets: true),
        ProbeTargetQuery(tracer: "go-nethttp", symbol: "net/http.(*persistConn).roundTrip", needsReturnOffsets: true),
        ProbeTargetQuery(tracer: "go-nethttp", symbol: "runtime.newproc1", needsReturnOffsets: true),
        ProbeTargetQuery(tracer: "go-nethttp", symbol: "runtime.goexit1", needsReturnOffsets: false),
    ]
}

/// Where a probe target's address came from.
public enum SymbolSource: String, Sendable, Codable {
    /// `.symtab` or `.dynsym`.
    case symbolTable = "symtab"
    /// Go's `.gopclntab` (stripped Go binaries).
    case goPCLNTab = "pclntab"
}

/// A resolved probe target: what the attacher passes to `perf_event_open`/uprobe_multi.
public struct ProbeTarget: Sendable, Codable, Equatable {
    public let tracer: String
    public let symbol: String
    public let address: UInt64
    /// File offset of the entry.
    public let fileOffset: UInt64
    /// File offset of the entry probe: `fileOffset`, or in a Go function its stack check's conditional jump,
    /// where the arguments are still the entry's and a uprobe costs one emulated trap
    /// (``ELFFile/goEntryProbeOffset(address:size:)``).
    public let entryProbeOffset: UInt64
    /// File offsets of every RET, when the query asked for them.
    public let returnOffsets: [UInt64]
    public let source: SymbolSource
}

/// The languages the agent tells apart (runtime-specific tracers key on this).
public enum Language: String, Sendable, Codable {
    case go, python, node, java, dotnet, ruby
    /// C, C++, Rust... compiled code without a managed runtime the inspector recognises.
    case native
}

/// What Go tracers need from a Go binary.
public struct GoDetails: Sendable, Codable, Equatable {
    /// Nil when the build info blob is missing (very old toolchains, or stripped by hand).
    public let buildInfo: GoBuildInfo?
    /// Struct field offsets and their source; nil when the binary is not instrumentable as Go.
    public let fieldOffsets: GoFieldOffsets?
    /// Why the Go tracers cannot instrument this binary (the generic tracer still can).
    public let notInstrumentableReason: String?
    /// Number of functions in `.gopclntab`.
    public let functionCount: Int
    /// ``ELFFile/goGSlotThreadPointerOffset``: the current `g` is at `fsbase + this` (nil: unknown).
    public let gSlotThreadPointerOffset: Int64?
}

/// Everything tracers need to know about one executable or library, and nothing more: no symbol
/// table is kept. This is the value ``InspectionCache`` stores per ``FileIdentity``.
public struct ExecutableInfo: Sendable, Codable, Equatable {
    public let path: String
    public let identity: FileIdentity?
    public let kind: ELFKind
    public let machine: String
    public let buildID: String?
    public let language: Language
    /// Entries in `.symtab` + `.dynsym`.
    public let symbolCount: Int
    public let neededLibraries: [String]
    public let go: GoDetails?
    public let probeTargets: [ProbeTarget]
    /// Queries whose symbol is not in this file.
    public let missingProbeTargets: [ProbeTargetQuery]
}

