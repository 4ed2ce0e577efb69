import Telemetry

/// Spans of one batch grouped the way OTLP nests them: `ResourceSpans` → `ScopeSpans` → `Span`.
/// Order of first appearance is kept at every level.
struct SpanGroups {
    struct ScopeGroup {
        var scope: InstrumentationScope
        /// Positions in the batch (counted from 0) as runs of consecutive spans: a batch from one tracer is
        /// a single run.
        var runs: [Range<Int>]
    }

    struct ResourceGroup {
        var resource: Resource
        var scopes: [ScopeGroup]
    }

    var resources: [ResourceGroup] = []

    /// Groups by object identity first (spans of one process share one `Resource`), then by equal attributes;
    /// a batch holds few distinct resources, so the linear search stays short. Spans with the same resource
    /// and scope objects as the span before them only extend the current run.
    init(_ spans: ArraySlice<Span>) {
        spans.withUnsafeBufferPointer { spans in
            var runStart = 0
            while runStart < spans.count {
                let first = spans.baseAddress! + runStart
                var runEnd = runStart + 1
                while runEnd < spans.count && spans[runEnd].resource === first.pointee.resource
                    && spans[runEnd].scope === first.pointee.scope
                {
                    runEnd += 1
                }
                add(runStart..<runEnd, resource: first.pointee.resource, scope: first.pointee.scope)
                runStart = runEnd
            }
        }
    }

    private mutating func add(_ run: Range<Int>, resource: Resource, scope: InstrumentationScope) {
        var r = resources.firstIndex { $0.resource === resource } ?? resources.firstIndex { $0.resource == resource } ?? -1
        if r < 0 {
            resources.append(ResourceGroup(resource: resource, scopes: []))
            r = resources.count - 1
        }
        if let s = resources[r].scopes.firstIndex(where: { $0.scope === scope }) ?? resources[r].scopes.firstIndex(where: { $0.scope == scope }) {
            resources[r].scopes[s].runs.append(run)
        } else {
            resources[r].scopes.append(ScopeGroup(scope: scope, runs: [run]))
        }
    }
}
