import Foundation

/// The names a process goes by besides its resolved executable (`/proc/PID/exe`): the path it was invoked
/// as (`argv[0]` as given, and resolved against its working directory or `PATH` without following the last
/// symlink: Debian's `/usr/bin/redis-server` is a symlink to `redis-check-rdb`), and for interpreters the
/// script or module they run (`python3 /usr/local/bin/gunicorn app:app`, `python3 -m uvicorn`, `node server.js`).
public struct ProcessNames: Sendable, Equatable {
    /// `argv[0]` exactly as the process was started.
    public var argv0: String?
    /// `argv[0]` as an absolute path: joined to the working directory when it holds a `/`, else found in the
    /// process's `PATH`; the symlink itself, not its target.
    public var invokedPath: String?
    /// The script an interpreter runs, as an absolute path when the working directory is known.
    public var script: String?
    /// The module a `python -m module` runs.
    public var module: String?

    public init(argv0: String? = nil, invokedPath: String? = nil, script: String? = nil, module: String? = nil) {
        self.argv0 = argv0
        self.invokedPath = invokedPath
        self.script = script
        self.module = module
    }

    /// What `--exe` globs are tried against after the resolved executable, in this order: `argv[0]` as
    /// given, `argv[0]` resolved, the script, the module (as `/module`, so `*/uvicorn` matches `-m uvicorn`).
    public var exeCandidates: [(kind: String, value: String)] {
        var candidates: [(String, String)] = []
        if let argv0, !argv0.isEmpty { candidates.append(("argv[0]", argv0)) }
        if let invokedPath, invokedPath != argv0 { candidates.append(("the invoked path", invokedPath)) }
        if let script { candidates.append(("the script", script)) }
        if let module { candidates.append(("the module", "/" + module)) }
        return candidates
    }

    /// The name a person would call the process by, when it differs from the executable's file name: the
    /// script's file name without its extension (`manage.py` → `manage`), the module's last component
    /// (`-m app.server` → `app.server`), else the invoked name when it is another file name (a symlink) and
    /// not an interpreter's (`python3` → `python3.11` names no app).
    public func serviceName(executablePath: String) -> String? {
        if let module { return module }
        if let script {
            let file = Self.fileName(script)
            let stem = Self.scriptExtensions.first { file.hasSuffix($0) && file.count > $0.count }.map { String(file.dropLast($0.count)) }
            return stem ?? file
        }
        let executableName = Self.fileName(executablePath)
        if let invoked = invokedPath ?? argv0, !invoked.isEmpty {
            let name = Self.fileName(invoked)
            if !name.isEmpty, name != executableName, !name.hasPrefix("-"), Interpreter(executable: name) == nil { return name }
        }
        return nil
    }

    static let scriptExtensions = [".py", ".pyc", ".js", ".mjs", ".cjs", ".ts", ".rb", ".pl", ".php"]

    static func fileName(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    /// Reads `/proc/PID/cmdline`, `cwd` and (only when `argv[0]` has no `/`) the `PATH` of `environ`.
    /// Paths are checked inside the process's root (`/proc/PID/root`), so containers resolve correctly.
    public static func read(pid: Int32) -> ProcessNames {
        let arguments = ProcFS.commandLine(pid)
        let cwd = ProcFS.workingDirectory(pid)
        let root = "/proc/\(pid)/root"
        return derive(executablePath: ProcFS.executablePath(pid) ?? "", arguments: arguments, workingDirectory: cwd,
                      path: { ProcFS.environment(pid)["PATH"] }, isExecutable: { access(root + $0, X_OK) == 0 })
    }

    /// The names from a command line. `path` is asked for only when needed; `isExecutable` checks a
    /// candidate of a `PATH` search.
    public static func derive(executablePath: String, arguments: [String], workingDirectory: String?,
                              path: () -> String?, isExecutable: (String) -> Bool) -> ProcessNames {
        var arguments = arguments
        // A process that rewrote its title (setproctitle: redis, gunicorn, nginx, postgres) leaves one string
        // of words: "redis-server 127.0.0.1:6379", "gunicorn: master [app:app]".
        if arguments.count == 1, arguments[0].contains(" ") {
            arguments = arguments[0].split(separator: " ").map(String.init)
            if arguments[0].hasSuffix(":") { arguments[0].removeLast() }
        }
        guard let argv0 = arguments.first, !argv0.isEmpty else { return ProcessNames() }
        var names = ProcessNames(argv0: argv0)
        if argv0.contains("/") {
            names.invokedPath = absolute(argv0, in: workingDirectory)
        } else {
            // A rewritten title clobbers the environment too: then the usual default PATH.
            let search = path().flatMap { $0.isEmpty ? nil : $0 } ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            for directory in search.split(separator: ":") where directory.hasPrefix("/") {
                let candidate = directory.hasSuffix("/") ? "\(directory)\(argv0)" : "\(directory)/\(argv0)"
                if isExecutable(candidate) {
                    names.invokedPath = candidate
                    break
                }
            }
        }
        guard let interpreter = Interpreter(executable: fileName(executablePath)) ?? Interpreter(executable: fileName(argv0)) else {
            return names
        }
        switch interpreter.target(of: Array(arguments.dropFirst())) {
        case .script(let script): names.script = absolute(script, in: workingDirectory)
        case .module(let module): names.module = module
        case nil: break
        }
        return names
    }

    /// `path` made absolute against `directory` and normalised (`.` and `..` removed), symlinks kept.
    static func absolute(_ path: String, in directory: String?) -> String {
        let joined = path.hasPrefix("/") ? path : (directory.map { "\($0)/\(path)" } ?? path)
        guard joined.hasPrefix("/") else { return path }
        var parts: [Substring] = []
        for part in joined.split(separator: "/") {
            if part == "." { continue }
            if part == ".." { _ = parts.popLast(); continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// Interpreters whose first operand is the program they run.
    enum Interpreter {
        case python, node, ruby, perl, php

        init?(executable name: String) {
            func versioned(_ base: String) -> Bool {
                name == base || (name.hasPrefix(base) && name.dropFirst(base.count).allSatisfy { $0.isNumber || $0 == "." })
            }
            if versioned("python") || versioned("pypy") { self = .python }
            else if name == "node" || name == "nodejs" || versioned("node") { self = .node }
            else if versioned("ruby") { self = .ruby }
            else if versioned("perl") { self = .perl }
            else if versioned("php") { self = .php }
            else { return nil }
        }

        enum Target: Equatable {
            case script(String)
            case module(String)
        }

        /// Options that take the next argument as their value (so that argument is no script).
        var optionsWithValue: Set<String> {
            switch self {
            case .python: ["-W", "-X", "-Q"]
            case .node: ["-r", "--require", "--import", "--loader", "--experimental-loader", "--env-file", "--inspect-port", "--title"]
            case .ruby: ["-I", "-r", "-E", "-C"]
            case .perl: ["-I", "-M", "-m"]
            case .php: ["-c", "-d", "-z"]
            }
        }

        /// Options whose value is code to run instead of a script.
        var inlineCodeOptions: Set<String> {
            switch self {
            case .python: ["-c"]
            case .node: ["-e", "--eval", "-p", "--print"]
            case .ruby: ["-e"]
            case .perl: ["-e", "-E"]
            case .php: ["-r"]
            }
        }

        /// The script or module the arguments (after `argv[0]`) run; nil for `-c`/`-e` code or a REPL.
        func target(of arguments: [String]) -> Target? {
            var index = 0
            while index < arguments.count {
                let argument = arguments[index]
                if argument == "--" { return index + 1 < arguments.count ? .script(arguments[index + 1]) : nil }
                guard argument.hasPrefix("-"), argument != "-" else { return .script(argument) }
                if self == .python {
                    // Short options may be grouped (`-um app`): `-m`/`-c` end the group, the rest is their value.
                    if !argument.hasPrefix("--"), let flag = argument.dropFirst().firstIndex(where: { $0 == "m" || $0 == "c" }) {
                        let value = argument[argument.index(after: flag)...]
                        if argument[flag] == "c" { return nil }
                        if !value.isEmpty { return .module(String(value)) }
                        return index + 1 < arguments.count ? .module(arguments[index + 1]) : nil
                    }
                } else if inlineCodeOptions.contains(argument) {
                    return nil
                }
                if optionsWithValue.contains(argument) { index += 1 }
                index += 1
            }
            return nil
        }
    }
}
