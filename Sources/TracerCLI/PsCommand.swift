import ArgumentParser
import ExecutableInspection
import Foundation
import TracerFramework
import Tracers

/// `tracer ps [selection flags]`: which processes the flags would select, why, and which tracers would
/// instrument them, without loading or attaching anything.
struct PsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps",
        abstract: "List candidate processes: language, listening ports, the rule that selects them and the tracers that would apply.",
        discussion: """
            Takes the same selection flags as `tracer run` (--pid, --exe, --open-port, --name, --language,
            --cgroup, --config, --exclude-*, --no-children) and changes nothing: it reads /proc and the
            executables only. Lists the processes the flags select and those listening on TCP ports
            (--all: every process); the tracers are evaluated for the selected ones, or for every listed
            one when no flag selects anything.

            Examples:
              tracer ps                          what listens, and what would trace it
              tracer ps --exe '*/redis-server'   would this select my redis? why (not)?
              tracer ps --language python --all
            """)

    @OptionGroup var options: RunOptions

    @Flag(help: "List every process, not only the selected ones and those listening on TCP ports.")
    var all = false

    func run() throws {
        let file = try options.config.map { path in
            do { return try ConfigurationFile(path: path) } catch { throw ValidationError("\(error)") }
        }
        let selection = try options.selection(file: file)
        print(Self.report(selection: selection, all: all, tracers: TracerRegistry.all), terminator: "")
    }

    /// The listing as text (one block per process).
    static func report(selection: Selection, all: Bool, tracers: [any TracerFramework.Tracer]) -> String {
        let candidates = selection.survey()
        let byPID = Dictionary(uniqueKeysWithValues: candidates.map { ($0.pid, $0) })
        let selecting = !selection.rules.isEmpty
        let cache = InspectionCache(inspector: { var inspector = ExecutableInspector(goFields: goFieldsToInspect(for: tracers)); inspector.logger.logLevel = .critical; return inspector }())
        let queries = tracers.flatMap(\.probeTargetQueries)
        var out = ""
        var selectedCount = 0, instrumentedCount = 0
        for candidate in candidates {
            let rule = candidate.rule(in: selection, candidates: byPID)
            let isSelected: Bool
            switch candidate.verdict {
            case .selected, .childOf: isSelected = true
            case .excluded, .notSelected: isSelected = false
            }
            guard all || isSelected || !candidate.listeningPorts.isEmpty else { continue }
            if isSelected { selectedCount += 1 }
            let verdict: String
            switch candidate.verdict {
            case .selected(let index, let reason): verdict = "selected by rule \(index + 1): \(reason)"
            case .childOf(let parent): verdict = "selected as a child of pid \(parent)"
            case .excluded(let reason): verdict = "not selected: \(reason)"
            case .notSelected: verdict = selecting ? "not selected: no rule matches" : "not selected: no selection flags"
            }
            let ports = candidate.listeningPorts.isEmpty ? "no listening port" : "ports \(candidate.listeningPorts.map(String.init).joined(separator: ","))"
            var invoked: [String] = []
            if let path = candidate.names.invokedPath ?? candidate.names.argv0, path != candidate.executablePath { invoked.append("invoked as \(path)") }
            if let script = candidate.names.script { invoked.append("script \(script)") }
            if let module = candidate.names.module { invoked.append("module \(module)") }
            out += "pid \(candidate.pid) \(candidate.comm): \(candidate.executablePath)\(invoked.isEmpty ? "" : " (\(invoked.joined(separator: ", ")))")\n"
            out += "  language \(candidate.language?.rawValue ?? "unknown"), \(ports)\n"
            out += "  \(verdict)\n"
            guard isSelected || !selecting else { continue }
            do {
                let process = try TracedProcess.inspect(pid: candidate.pid, rule: rule, queries: queries, cache: cache)
                var applying: [String] = [], notApplying: [String] = []
                for tracer in tracers {
                    switch tracer.applicability(to: process) {
                    case .applies: applying.append(tracer.name)
                    case .notApplicable(let reason): notApplying.append("\(tracer.name) (\(reason))")
                    }
                }
                if isSelected && !applying.isEmpty { instrumentedCount += 1 }
                out += "  service \(process.resource.serviceName ?? "?"), language \(process.executable.language.rawValue)\n"
                out += "  tracers: " + (applying.isEmpty ? "none applies" : applying.joined(separator: ", "))
                    + (notApplying.isEmpty ? "" : "; not: " + notApplying.joined(separator: "; ")) + "\n"
            } catch {
                out += "  cannot inspect: \(error)\n"
            }
        }
        if selecting {
            out += "\(selectedCount) process\(selectedCount == 1 ? "" : "es") selected, \(instrumentedCount) with a tracer that applies\n"
        } else {
            out += "no selection flags: listed the processes listening on TCP ports; add --exe, --pid, --open-port, --name or --language to see what they select\n"
        }
        return out
    }
}
