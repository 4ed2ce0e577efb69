import Synchronization

/// Inspection results keyed by ``FileIdentity`` (device + inode), so a binary shared by many processes
/// (or containers from one image layer) is inspected once. It holds only ``ExecutableInfo`` values —
/// no ELF file, mapping or symbol table stays alive after inspection.
public final class InspectionCache: Sendable {
    private struct Key: Hashable {
        let identity: FileIdentity
        let queries: [ProbeTargetQuery]
    }

    private let entries = Mutex<[Key: ExecutableInfo]>([:])
    private let inspector: ExecutableInspector

    public init(inspector: ExecutableInspector) {
        self.inspector = inspector
    }

    /// The cached info for the file at `path`, inspecting it on a miss. Entries are per query list, so
    /// a tracer registered later gets its own targets resolved.
    public func info(path: String, queries: [ProbeTargetQuery], languageHint: Language? = nil) throws(InspectionError) -> ExecutableInfo {
        let identity = try FileIdentity(attachmentTargetOf: path)
        let key = Key(identity: identity, queries: queries)
        if let hit = entries.withLock({ $0[key] }) { return hit }
        let info = try inspector.inspect(ELFFile(path: path), identity: identity, queries: queries, languageHint: languageHint)
        entries.withLock { $0[key] = info }
        return info
    }

    /// The cached info for `identity`, if any (any query list).
    public func cached(_ identity: FileIdentity) -> ExecutableInfo? {
        entries.withLock { $0.first { $0.key.identity == identity }?.value }
    }

    /// Drops `identity` (the file was replaced or the last process using it exited).
    public func remove(_ identity: FileIdentity) {
        entries.withLock { entries in entries = entries.filter { $0.key.identity != identity } }
    }

    public var count: Int { entries.withLock { $0.count } }
}
