/// Keeps the `http.route` metric attribute low-cardinality: configured route templates first
/// (`/users/{id}`, `/static/*`), else a heuristic that replaces ID-like path segments with `{id}`
/// (semantic conventions: `http.route` must be low-cardinality).
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

    /// The route for a request path (query and fragment ignored).
    public func route(for target: String) -> String {
        let path = target.prefix { $0 != "?" && $0 != "#" }
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
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

    /// Numbers, UUIDs, hex strings of 8+ characters with a digit, and long tokens mixing letters and digits.
    static func isIDLike(_ segment: Substring) -> Bool {
        let utf8 = segment.utf8
        var digits = 0
        var hexLetters = 0
        var otherLetters = 0
        var dashes = 0
        var others = 0
        for c in utf8 {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digits += 1
            case UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"): hexLetters += 1
            case UInt8(ascii: "g")...UInt8(ascii: "z"), UInt8(ascii: "G")...UInt8(ascii: "Z"): otherLetters += 1
            case UInt8(ascii: "-"), UInt8(ascii: "_"): dashes += 1
            default: others += 1
            }
        }
        let n = utf8.count
        if digits == n { return true }
        if others > 0 { return false }
        if otherLetters == 0 && digits > 0 && digits + hexLetters + dashes == n && digits + hexLetters >= 8 { return true }
        return n >= 16 && digits >= 2 && (hexLetters + otherLetters) > 0
    }
}
