import ExecutableInspection
import Foundation

/// One way to pick processes (Beyla's `discovery.services` entry). Every criterion given must match;
/// an entry may also name the service.
public struct SelectionRule: Sendable, Equatable, Codable {
    public var pids: [Int32]?
    /// Glob (fnmatch) on the full executable path, e.g. `/srv/*/api`.
    public var exePath: String?
    /// Ports the process listens on, e.g. `80,443,8000-8999`.
    public var openPorts: PortRanges?
    /// Glob on the process name (`/proc/PID/comm`).
    public var name: String?
    public var language: Language?
    /// Substring of the process's cgroup path (`/proc/PID/cgroup`), e.g. a container id.
    public var cgroup: String?
    /// `service.name` for what this rule selects (the process's own OTEL_SERVICE_NAME wins).
    public var serviceName: String?
    public var serviceNamespace: String?

    public init(pids: [Int32]? = nil, exePath: String? = nil, openPorts: PortRanges? = nil, name: String? = nil,
                language: Language? = nil, cgroup: String? = nil, serviceName: String? = nil, serviceNamespace: String? = nil) {
        self.pids = pids
        self.exePath = exePath
        self.openPorts = openPorts
        self.name = name
        self.language = language
        self.cgroup = cgroup
        self.serviceName = serviceName
        self.serviceNamespace = serviceNamespace
    }

    enum CodingKeys: String, CodingKey {
        case pids = "pid", exePath = "exe_path", openPorts = "open_ports", name, language, cgroup
        case serviceName = "service_name", serviceNamespace = "service_namespace"
    }

    /// Whether the rule names at least one criterion (a rule without one would select everything).
    public var hasCriteria: Bool {
        pids != nil || exePath != nil || openPorts != nil || name != nil || language != nil || cgroup != nil
    }

    func matches(_ facts: ProcessFacts) -> Bool { match(facts) != nil }

    /// Why the rule matches (`exe_path '*/redis-server' matched the invoked path /usr/bin/redis-server`), nil
    /// when it does not. `exe_path` is tried against the resolved executable first, then the names the process
    /// was invoked by (``ProcessNames/exeCandidates``, read from /proc last, only when the cheaper criteria hold).
    func match(_ facts: ProcessFacts) -> String? {
        var reasons: [String] = []
        if let pids {
            guard pids.contains(facts.pid) else { return nil }
            reasons.append("pid \(facts.pid)")
        }
        if let name {
            guard glob(name, matches: facts.comm) else { return nil }
            reasons.append("name '\(name)' matched \(facts.comm)")
        }
        if let cgroup {
            guard facts.cgroup.contains(cgroup) else { return nil }
            reasons.append("cgroup contains '\(cgroup)'")
        }
        if let language {
            guard facts.language == language else { return nil }
            reasons.append("language \(language.rawValue)")
        }
        if let openPorts {
            guard let port = facts.listeningPorts.first(where: openPorts.contains) else { return nil }
            reasons.append("listens on port \(port) (\(openPorts))")
        }
        if let exePath {
            if glob(exePath, matches: facts.executablePath) {
                reasons.append("exe_path '\(exePath)' matched the executable \(facts.executablePath)")
            } else {
                let names = facts.names ?? ProcessNames.read(pid: facts.pid)
                guard let hit = names.exeCandidates.first(where: { glob(exePath, matches: $0.value) }) else { return nil }
                reasons.append("exe_path '\(exePath)' matched \(hit.kind) \(hit.kind == "the module" ? String(hit.value.dropFirst()) : hit.value)")
            }
        }
        return reasons.joined(separator: ", ")
    }
}

/// Port numbers and ranges: `80,443,8000-8999`.
public struct PortRanges: Sendable, Equatable, Codable, CustomStringConvertible {
    public let ranges: [ClosedRange<UInt16>]

    public init(_ text: String) throws {
        var ranges: [ClosedRange<UInt16>] = []
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            let bounds = part.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map { UInt16($0) }
            guard !bounds.isEmpty, bounds.allSatisfy({ $0 != nil }), let low = bounds[0], let high = bounds.last!, low <= high, low > 0 else {
                throw SelectionError("invalid port or port range '\(part)' in '\(text)' (expected e.g. 80,443,8000-8999)")
            }
            ranges.append(low...high)
        }
        guard !ranges.isEmpty else { throw SelectionError("empty port list") }
        self.ranges = ranges
    }

    public func contains(_ port: UInt16) -> Bool { ranges.contains { $0.contains(port) } }

    public var description: String {
        ranges.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ",")
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(UInt16.self) {
            try self.init(String(number))
        } else {
            try self.init(container.decode(String.self))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

public struct SelectionError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Which processes the agent traces: any rule selects, any exclusion wins; children of selected
/// processes are selected too unless turned off; the agent and common collectors are never selected.
public struct Selection: Sendable, Equatable {
    public var rules: [SelectionRule]
    public var exclusions: [SelectionRule]
    public var includeChildren: Bool

    /// Process names never traced: telemetry agents whose own traffic would loop back into traces.
    public static let defaultExcludedNames = ["otelcol*", "beyla", "obi", "alloy", "grafana-agent", "tracer", "fluent-bit", "vector"]

    public init(rules: [SelectionRule] = [], exclusions: [SelectionRule] = [], includeChildren: Bool = true) {
        self.rules = rules
        self.exclusions = exclusions
        self.includeChildren = includeChildren
    }

    /// The rule selecting the process, nil when none does (or an exclusion wins).
    func rule(for facts: ProcessFacts, selectedParent: SelectionRule?) -> SelectionRule? {
        if facts.pid == getpid() || Self.defaultExcludedNames.contains(where: { glob($0, matches: facts.comm) }) { return nil }
        if exclusions.contains(where: { $0.matches(facts) }) { return nil }
        if let rule = rules.first(where: { $0.matches(facts) }) { return rule }
        return includeChildren ? selectedParent : nil
    }

    /// Whether any rule needs the listening ports (reading /proc/net/tcp costs: skip it otherwise).
    var needsPorts: Bool { (rules + exclusions).contains { $0.openPorts != nil } }
    /// Whether any rule needs the language (needs an inspection of the executable).
    var needsLanguage: Bool { (rules + exclusions).contains { $0.language != nil } }
}

/// What selection looks at, read from /proc.
struct ProcessFacts {
    let pid: Int32
    let executablePath: String
    let comm: String
    let cgroup: String
    let language: Language?
    let listeningPorts: [UInt16]
    /// The names the process was invoked by; read from /proc when a rule first needs them.
    var names: ProcessNames? = nil
}

/// fnmatch(3) without flags: `*`, `?` and `[...]` match across `/` too, so `*/api` matches any path
/// ending in `/api`.
func glob(_ pattern: String, matches text: String) -> Bool {
    fnmatch(pattern, text, 0) == 0
}
