/// Keeps the `http.route` metric attribute low-cardinality: configured route templates first
/// (`/users/{id}`, `/static/*`), else a heuristic that replaces ID-like path segments with `{id}` — any
/// segment holding a digit except an API version (`v1`, `v2`), so `/exp1` … `/exp20` are one route —
/// (semantic conventions: `http.route` must be low-cardinality). ``REDMetrics`` also caps the routes per
/// service (``overflowRoute``).
public struct RouteGrouper: Sendable {
    struct Template: Sendable {
        let pattern: String
        let segments: [Substring]
        let trailingWildcard: Bool
    }

    private let templates: [Template]
    /// Paths deeper than this are cut, the rest replaced by `/*`.
    public var maxSegments = 8

    /// `patterns`: templates from the config file. `{name}` matches one segment, a final `*` the rest.
    public init(patterns: [String] = []) {
        templates = patterns.map { pattern in
            var segments = pattern.split(separator: "/", omittingEmptySubsequences: true)
            let wildcard = segments.last == "*"
            if wildcard { segments.removeLast() }
            return Template(pattern: pattern, segments: segments, trailingWildcard: wildcard)
        }
    }

    /// The route routes of one service fold into once ``REDMetrics/maxRoutesPerService`` are in use.
    public static let overflowRoute = "{overflow}"

    public var hasPatterns: Bool { !templates.isEmpty }

    /// The configured template matching a request path, nil when none does.
    public func configuredRoute(for target: String) -> String? {
        guard !templates.isEmpty else { return nil }
        let segments = Self.segments(of: target)
        return templates.first { Self.matches($0, segments) }?.pattern
    }

    /// Whether `route` is one of the configured templates.
    public func isConfigured(_ route: String) -> Bool { templates.contains { $0.pattern == route } }

    private static func segments(of target: String) -> [Substring] {
        target.prefix { $0 != "?" && $0 != "#" }.split(separator: "/", omittingEmptySubsequences: true)
    }

    /// The route for a request path (query and fragment ignored).
    public func route(for target: String) -> String {
        let path = target.prefix { $0 != "?" && $0 != "#" }
        let segments = Self.segments(of: target)
        for template in templates where Self.matches(template, segments) { return template.pattern }
        if segments.isEmpty { return "/" }
        var out = ""
        for (i, segment) in segments.enumerated() {
            if i == maxSegments {
                out += "/*"
                break
            }
            out += "/" + (Self.isIDLike(segment) ? "{id}" : String(segment))
        }
        if path.hasSuffix("/") && segments.count <= maxSegments { out += "/" }
        return out
    }

    static func matches(_ template: Template, _ segments: [Substring]) -> Bool {
        if template.trailingWildcard ? segments.count < template.segments.count : segments.count != template.segments.count {
            return false
        }
        for (t, s) in zip(template.segments, segments) where !(t.hasPrefix("{") && t.hasSuffix("}")) && t != s {
            return false
        }
        return true
    }

    /// Any segment with a digit but an API version (`v1`, `v12`): numbers, UUIDs, hashes, `exp1`, `a1b2c3`;
    /// and segments of 32+ characters (tokens, slugs of generated text).
    static func isIDLike(_ segment: Substring) -> Bool {
        if segment.utf8.count >= 32 { return true }
        guard segment.utf8.contains(where: { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return false }
        let rest = segment.utf8.dropFirst()
        let isVersion = segment.utf8.count <= 4 && (segment.first == "v" || segment.first == "V")
            && rest.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        return !isVersion
    }
}
