import ExecutableInspection
import Foundation
import Yams

/// The YAML configuration file (`tracer --config FILE`), in the shape Beyla users know:
///
/// ```yaml
/// discovery:
///   instrument:                 # any number of entries; every criterion of an entry must match
///     - exe_path: "*/checkout"
///       open_ports: "8080,9000-9100"
///       service_name: checkout
///       service_namespace: shop
///     - pid: [1234]
///     - name: nginx             # process name glob
///     - language: python
///     - cgroup: "/kubepods/"
///   exclude:
///     - exe_path: "/usr/sbin/*"
///   include_children: true
/// print: json                   # text | json | none
/// log_level: info
/// db_query_text: sanitized       # off (default) | sanitized | full: db.query.text of database spans
/// kernel_tracers: [runqlat, oomkill] # kernel utility tracers run by the agent too
/// file_path_prefixes: [/etc/]       # the files kernel tracer: only events under these prefixes
/// routes: ["/users/{id}"]        # route patterns for http.route and low-cardinality metrics
/// export:                        # OTLP export; the OTEL_EXPORTER_OTLP_* variables and flags win
///   endpoint: http://collector:4318
///   prometheus_port: 9400
/// ```
/// Unknown keys are errors: a typo must not silently select nothing.
public struct ConfigurationFile: Sendable, Equatable {
    public var selection = Selection()
    public var print: String?
    public var logLevel: String?
    /// Route patterns (`/users/{id}`) that name `http.route` and keep metric paths low-cardinality.
    public var routes: [String] = []
    /// The `export:` section (scalar values), left to the exporter's settings parser.
    public var export: [String: String] = [:]
    /// BPF objects or packages to run next to the tracers (`tracer object run` files).
    public var objects: [String] = []
    /// `db_query_text`: off, sanitized or full (see `DatabaseQueryText`).
    public var databaseQueryText: String?
    /// `kernel_tracers`: kernel utility tracers the agent runs too (`--kernel-tracers`).
    public var kernelTracers: [String] = []
    /// `file_path_prefixes`: the `files` kernel tracer's path prefixes in the agent (`--path-prefix`).
    public var filePathPrefixes: [String] = []

    public init() {}

    public init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
            throw ConfigurationError(file: path, problem: !exists ? "no such file" : isDirectory.boolValue ? "is a directory" : "cannot be read")
        }
        try self.init(yaml: String(decoding: data, as: UTF8.self), file: path)
    }

    public init(yaml: String, file: String = "<config>") throws {
        let root: Any?
        do {
            root = try Yams.load(yaml: yaml)
        } catch let error as YamlError {
            throw ConfigurationError(file: file, problem: "not valid YAML: \(Self.describe(error))")
        }
        guard let root else { return } // an empty file configures nothing
        guard let top = root as? [String: Any] else { throw ConfigurationError(file: file, problem: "the top level must be a mapping") }
        try Self.checkKeys(top, allowed: ["discovery", "print", "log_level", "routes", "export", "objects", "db_query_text", "kernel_tracers", "file_path_prefixes"], at: "top level", file: file)
        if let discovery = top["discovery"] {
            guard let discovery = discovery as? [String: Any] else { throw ConfigurationError(file: file, problem: "discovery must be a mapping") }
            try Self.checkKeys(discovery, allowed: ["instrument", "services", "exclude", "include_children"], at: "discovery", file: file)
            selection.rules = try Self.rules(discovery["instrument"] ?? discovery["services"], at: "discovery.instrument", file: file)
            selection.exclusions = try Self.rules(discovery["exclude"], at: "discovery.exclude", file: file)
            if let children = discovery["include_children"] {
                guard let value = children as? Bool else { throw ConfigurationError(file: file, problem: "discovery.include_children must be true or false") }
                selection.includeChildren = value
            }
        }
        if let value = top["print"] {
            guard let text = value as? String, ["text", "json", "none"].contains(text) else {
                throw ConfigurationError(file: file, problem: "print must be text, json or none")
            }
            print = text
        }
        if let value = top["log_level"] { logLevel = "\(value)" }
        if let value = top["db_query_text"] {
            // YAML 1.1 reads a bare `off` as false.
            guard let text = (value as? Bool) == false ? "off" : value as? String, DatabaseQueryText(rawValue: text) != nil else {
                throw ConfigurationError(file: file, problem: "db_query_text must be off, sanitized or full")
            }
            databaseQueryText = text
        }
        if let value = top["objects"] {
            guard let list = value as? [Any], list.allSatisfy({ $0 is String }) else {
                throw ConfigurationError(file: file, problem: "objects must be a list of BPF object or package paths")
            }
            objects = list.compactMap { $0 as? String }
        }
        if let value = top["kernel_tracers"] {
            guard let list = value as? [Any], list.allSatisfy({ $0 is String }) else {
                throw ConfigurationError(file: file, problem: "kernel_tracers must be a list of kernel tracer names, e.g. [runqlat, oomkill]")
            }
            kernelTracers = list.compactMap { $0 as? String }
        }
        if let value = top["file_path_prefixes"] {
            guard let list = value as? [Any], list.allSatisfy({ $0 is String }) else {
                throw ConfigurationError(file: file, problem: "file_path_prefixes must be a list of absolute path prefixes, e.g. [/etc/]")
            }
            filePathPrefixes = list.compactMap { $0 as? String }
        }
        if let value = top["routes"] {
            guard let list = value as? [Any], list.allSatisfy({ ($0 as? String)?.hasPrefix("/") == true }) else {
                throw ConfigurationError(file: file, problem: "routes must be a list of paths starting with /, e.g. [\"/users/{id}\"]")
            }
            routes = list.compactMap { $0 as? String }
        }
        if let value = top["export"] {
            guard let section = value as? [String: Any] else { throw ConfigurationError(file: file, problem: "export must be a mapping") }
            for (key, value) in section {
                guard value is String || value is Int || value is Bool || value is Double else {
                    throw ConfigurationError(file: file, problem: "export.\(key) must be a single value (headers as \"k=v,k2=v2\")")
                }
                export[key] = "\(value)"
            }
        }
    }

    private static let ruleKeys: Set<String> = ["pid", "exe_path", "open_ports", "name", "language", "cgroup", "service_name", "service_namespace"]

    private static func rules(_ value: Any?, at path: String, file: String) throws -> [SelectionRule] {
        guard let value else { return [] }
        guard let entries = value as? [Any] else { throw ConfigurationError(file: file, problem: "\(path) must be a list of entries") }
        return try entries.enumerated().map { index, entry in
            let location = "\(path)[\(index)]"
            guard let fields = entry as? [String: Any] else { throw ConfigurationError(file: file, problem: "\(location) must be a mapping") }
            try checkKeys(fields, allowed: ruleKeys, at: location, file: file)
            var rule = SelectionRule()
            if let pids = fields["pid"] {
                let list = (pids as? [Any]) ?? [pids]
                rule.pids = try list.map { value in
                    guard let pid = value as? Int, pid > 0, pid <= Int(Int32.max) else {
                        throw ConfigurationError(file: file, problem: "\(location).pid: '\(value)' is not a process id")
                    }
                    return Int32(pid)
                }
            }
            rule.exePath = try string(fields["exe_path"], "\(location).exe_path", file)
            if let ports = fields["open_ports"] {
                do { rule.openPorts = try PortRanges("\(ports)") } catch { throw ConfigurationError(file: file, problem: "\(location).open_ports: \(error)") }
            }
            rule.name = try string(fields["name"], "\(location).name", file)
            if let language = try string(fields["language"], "\(location).language", file) {
                guard let parsed = LanguageName(language) else {
                    throw ConfigurationError(file: file, problem: "\(location).language: unknown language '\(language)' (\(LanguageName.all))")
                }
                rule.language = parsed.language
            }
            rule.cgroup = try string(fields["cgroup"], "\(location).cgroup", file)
            rule.serviceName = try string(fields["service_name"], "\(location).service_name", file)
            rule.serviceNamespace = try string(fields["service_namespace"], "\(location).service_namespace", file)
            guard rule.hasCriteria else {
                throw ConfigurationError(file: file, problem: "\(location) has no criterion (pid, exe_path, open_ports, name, language or cgroup)")
            }
            return rule
        }
    }

    private static func string(_ value: Any?, _ path: String, _ file: String) throws -> String? {
        guard let value else { return nil }
        guard let text = value as? String, !text.isEmpty else { throw ConfigurationError(file: file, problem: "\(path) must be a non-empty string") }
        return text
    }

    private static func checkKeys(_ mapping: [String: Any], allowed: Set<String>, at path: String, file: String) throws {
        if let unknown = mapping.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw ConfigurationError(file: file, problem: "unknown key '\(unknown)' at \(path) (known: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    private static func describe(_ error: YamlError) -> String {
        "\(error)".split(separator: "\n").first.map(String.init) ?? "parse error"
    }
}

/// A configuration problem, said in one line naming the file.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let file: String
    public let problem: String

    public init(file: String, problem: String) {
        self.file = file
        self.problem = problem
    }

    public var description: String { "\(file): \(problem)" }
}

/// Language names accepted on the command line and in the configuration file.
public struct LanguageName: Sendable {
    public let language: Language

    public init?(_ name: String) {
        switch name.lowercased() {
        case "go", "golang": language = .go
        case "python", "py": language = .python
        case "node", "nodejs", "javascript", "js": language = .node
        case "java", "jvm": language = .java
        case "dotnet", ".net", "csharp": language = .dotnet
        case "ruby": language = .ruby
        case "native", "c", "cpp", "rust": language = .native
        default: return nil
        }
    }

    public static let all = "go, python, node, java, dotnet, ruby, native"
}
