import Logging

/// Turns a path into an ``ExecutableInfo``: opens the ELF, reads Go build info, pclntab and field
/// offsets, resolves each ``ProbeTargetQuery`` (symbol → file offset → RET offsets) and drops
/// everything else.
public struct ExecutableInspector: Sendable {
    public var logger: Logger
    /// Go struct fields resolved for Go binaries: those the tracers declare (the agent passes their union).
    public var goFields: [GoField]

    public init(goFields: [GoField], logger: Logger = Logger(label: "tracer.inspection")) {
        self.goFields = goFields
        self.logger = logger
    }

    /// Inspects the file at `path` (`/proc/PID/exe` works: it opens the running executable even if deleted
    /// or in another mount namespace). `languageHint` comes from a process's mapped libraries.
    public func inspect(path: String, queries: [ProbeTargetQuery], languageHint: Language? = nil) throws(InspectionError) -> ExecutableInfo {
        let elf = try ELFFile(path: path)
        let identity = try? FileIdentity(path: path)
        return try inspect(elf, identity: identity, queries: queries, languageHint: languageHint)
    }

    /// Inspects an opened file; `identity` is recorded as-is.
    public func inspect(_ elf: ELFFile, identity: FileIdentity?, queries: [ProbeTargetQuery],
                        languageHint: Language? = nil) throws(InspectionError) -> ExecutableInfo {
        let isGo = elf.isGo
        var go: GoDetails?
        var goTable: GoPCLNTab?
        if isGo {
            let buildInfo = try elf.goBuildInfo()
            goTable = try elf.goFunctionTable()
            var offsets: GoFieldOffsets?
            var reason: String?
            do {
                offsets = try elf.goFieldOffsets(goFields, buildInfo: buildInfo)
            } catch where error.reason == .notInstrumentableAsGo {
                reason = error.detail
                logger.notice("\(error.description)")
            }
            if goTable == nil && reason == nil { reason = "no .gopclntab function table" }
            go = GoDetails(buildInfo: buildInfo, fieldOffsets: offsets, notInstrumentableReason: reason,
                           functionCount: Int(goTable?.functionCount ?? 0), gSlotThreadPointerOffset: elf.goGSlotThreadPointerOffset)
        }

        let names = Set(queries.map(\.symbol))
        let fromSymbols = elf.symbols(named: names)
        let missingFromSymbols = names.subtracting(fromSymbols.keys)
        let fromGo = missingFromSymbols.isEmpty ? [:] : (goTable?.functions(named: missingFromSymbols) ?? [:])
        var targets: [ProbeTarget] = []
        var missing: [ProbeTargetQuery] = []
        for query in queries {
            let address, size: UInt64
            let source: SymbolSource
            if let symbol = fromSymbols[query.symbol] {
                (address, size, source) = (symbol.address, symbol.size, .symbolTable)
            } else if let function = fromGo[query.symbol] {
                (address, size, source) = (function.address, function.size, .goPCLNTab)
            } else {
                missing.append(query)
                continue
            }
            let offset = try elf.fileOffset(forVirtualAddress: address)
            let returns = query.needsReturnOffsets ? try elf.returnOffsets(address: address, size: size) : []
            let entryProbe = isGo ? (try? elf.goEntryProbeOffset(address: address, size: size)) ?? offset : offset
            targets.append(ProbeTarget(tracer: query.tracer, symbol: query.symbol, address: address, fileOffset: offset,
                                       entryProbeOffset: entryProbe, returnOffsets: returns, source: source))
        }
        let language: Language = isGo ? .go : languageHint ?? Language.detect(executable: elf.path, libraries: elf.neededLibraries)
        return ExecutableInfo(path: elf.path, identity: identity, kind: elf.kind, machine: elf.machineName, buildID: elf.buildID,
                              language: language, symbolCount: elf.symbolCount, neededLibraries: elf.neededLibraries,
                              go: go, probeTargets: targets, missingProbeTargets: missing)
    }
}

extension Language {
    /// Language from the executable's file name and the libraries it needs or has mapped
    /// (`libpython3.11.so`, `libnode.so`, `libjvm.so`, `libcoreclr.so`, `libruby.so`). Go is detected
    /// from the binary itself (``ELFFile/isGo``), not here.
    public static func detect(executable: String, libraries: [String]) -> Language {
        let name = executable.split(separator: "/").last.map(String.init) ?? executable
        let libraryNames = libraries.map { $0.split(separator: "/").last.map(String.init) ?? $0 }
        func has(_ prefix: String) -> Bool { libraryNames.contains { $0.hasPrefix(prefix) } }
        func named(_ prefix: String) -> Bool {
            name.hasPrefix(prefix) && name.dropFirst(prefix.count).allSatisfy { $0.isNumber || $0 == "." }
        }
        if named("python") || has("libpython") { return .python }
        if named("node") || named("nodejs") || has("libnode.so") { return .node }
        if named("java") || has("libjvm.so") { return .java }
        if named("dotnet") || has("libcoreclr.so") { return .dotnet }
        if named("ruby") || has("libruby") { return .ruby }
        return .native
    }
}
