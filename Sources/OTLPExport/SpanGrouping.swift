import Telemetry

/// Spans of one batch grouped the way OTLP nests them: `ResourceSpans` → `ScopeSpans` → `Span`.
/// Order of first appearance is kept at every level.
struct SpanGroups {
    struct ScopeGroup {
        var scope: InstrumentationScope
        var indices: [Int]
    }

    struct ResourceGroup {
        var resource: Resource
        var scopes: [ScopeGroup]
    }

    var resources: [ResourceGroup] = []

    /// Groups by object identity first (spans of one process share one `Resource`), then by equal attributes;
    /// a batch holds few distinct resources, so the linear search stays short.
    /// Indices are positions in `spans` counted from 0.
    init(_ spans: ArraySlice<Span>) {
        var lastResource = -1
        var lastScope = -1
        spans.withUnsafeBufferPointer { spans in
        for i in spans.indices {
            let span = spans.baseAddress! + i
            if lastResource < 0 || resources[lastResource].resource !== span.pointee.resource {
                lastResource = resources.firstIndex { $0.resource === span.pointee.resource }
                    ?? resources.firstIndex { $0.resource == span.pointee.resource } ?? -1
                if lastResource < 0 {
                    resources.append(ResourceGroup(resource: span.pointee.resource, scopes: []))
                    lastResource = resources.count - 1
                }
                lastScope = -1
            }
            let scopes = resources[lastResource].scopes
            if lastScope < 0 || scopes[lastScope].scope !== span.pointee.scope {
                lastScope = scopes.firstIndex { $0.scope === span.pointee.scope } ?? scopes.firstIndex { $0.scope == span.pointee.scope } ?? -1
                if lastScope < 0 {
                    resources[lastResource].scopes.append(ScopeGroup(scope: span.pointee.scope, indices: []))
                    lastScope = resources[lastResource].scopes.count - 1
                }
            }
            resources[lastResource].scopes[lastScope].indices.append(i)
        }
        }
    }
}
