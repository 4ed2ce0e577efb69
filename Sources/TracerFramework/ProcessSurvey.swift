import ExecutableInspection
import Foundation

/// A running process as selection sees it, and what selection decides about it (`tracer ps`). Read-only:
/// nothing is loaded or attached.
public struct ProcessCandidate: Sendable {
    public enum Verdict: Sendable, Equatable {
        /// Selected by the rule at this index of ``Selection/rules``; `reason` says which criteria matched.
        case selected(rule: Int, reason: String)
        /// Selected because an ancestor is (children follow their parent unless `--no-children`).
        case childOf(Int32)
        /// Never traced: an exclusion, the agent itself or a telemetry agent.
        case excluded(String)
        case notSelected
    }

    public let pid: Int32
    public let parent: Int32?
    public let comm: String
    public let executablePath: String
    public let names: ProcessNames
    /// From the executable's name and mapped libraries (`go` is only known after an inspection).
    public let language: Language?
    public let listeningPorts: [UInt16]
    public let verdict: Verdict

    /// The rule that selects it (its own or its selected ancestor's), nil when not selected.
    public func rule(in selection: Selection, candidates: [Int32: ProcessCandidate]) -> SelectionRule? {
        var current = self
        for _ in 0..<64 {
            switch current.verdict {
            case .selected(let index, _): return selection.rules[index]
            case .childOf(let parent):
                guard let next = candidates[parent] else { return nil }
                current = next
            case .excluded, .notSelected: return nil
            }
        }
        return nil
    }
}

extension Selection {
    /// Every user process (kernel threads left out) with what this selection decides about it, by PID.
    public func survey() -> [ProcessCandidate] {
        var candidates: [Int32: ProcessCandidate] = [:]
        for pid in ProcFS.pids() {
            guard let executablePath = ProcFS.executablePath(pid), let comm = ProcFS.comm(pid) else { continue }
            let snapshot = try? ProcessInspection.snapshot(pid: pid)
            let facts = ProcessFacts(pid: pid, executablePath: executablePath, comm: comm, cgroup: ProcFS.cgroup(pid),
                                     language: snapshot?.languageHint, listeningPorts: ProcFS.listeningPorts(pid),
                                     names: ProcessNames.read(pid: pid))
            candidates[pid] = ProcessCandidate(pid: pid, parent: ProcFS.parent(pid), comm: comm, executablePath: executablePath,
                                               names: facts.names ?? ProcessNames(), language: facts.language,
                                               listeningPorts: facts.listeningPorts, verdict: verdict(for: facts))
        }
        if includeChildren {
            // A process no rule selects follows its nearest selected ancestor, as the agent does at fork/exec.
            for (pid, candidate) in candidates where candidate.verdict == .notSelected {
                var ancestor = candidate.parent
                var depth = 0
                while let current = ancestor, current > 1, depth < 64, let entry = candidates[current] {
                    if case .selected = entry.verdict {
                        candidates[pid] = ProcessCandidate(pid: pid, parent: candidate.parent, comm: candidate.comm,
                                                           executablePath: candidate.executablePath, names: candidate.names,
                                                           language: candidate.language, listeningPorts: candidate.listeningPorts,
                                                           verdict: .childOf(current))
                        break
                    }
                    if case .excluded = entry.verdict { break }
                    ancestor = entry.parent
                    depth += 1
                }
            }
        }
        return candidates.values.sorted { $0.pid < $1.pid }
    }

    /// The same decision as ``rule(for:selectedParent:)``, with the reason.
    func verdict(for facts: ProcessFacts) -> ProcessCandidate.Verdict {
        if facts.pid == getpid() { return .excluded("the agent itself") }
        if let name = Self.defaultExcludedNames.first(where: { glob($0, matches: facts.comm) }) {
            return .excluded("telemetry agents are never traced ('\(name)')")
        }
        if let reason = exclusions.lazy.compactMap({ $0.match(facts) }).first { return .excluded("exclusion: \(reason)") }
        for (index, rule) in rules.enumerated() {
            if let reason = rule.match(facts) { return .selected(rule: index, reason: reason) }
        }
        return .notSelected
    }
}

extension TracedProcess {
    /// Inspects a running process as the agent would before attaching: its snapshot, its executable
    /// (with `queries`, through `cache`) and its resource for `rule`. Throws when it exited or is unreadable.
    public static func inspect(pid: Int32, rule: SelectionRule?, queries: [ProbeTargetQuery], cache: InspectionCache) throws -> TracedProcess {
        let snapshot = try ProcessInspection.snapshot(pid: pid)
        let executable = try cache.info(path: snapshot.executableOpenPath, queries: queries, languageHint: snapshot.languageHint)
        let resource = ServiceIdentity.resource(for: snapshot, executable: executable, rule: rule,
                                                environment: ProcFS.environment(pid), cgroup: ProcFS.cgroup(pid))
        return TracedProcess(pid: pid, snapshot: snapshot, executable: executable, resource: resource)
    }

    /// Whether `pid` is a kernel thread (`PF_KTHREAD`): it has no executable or user memory to trace.
    public static func isKernelThread(pid: Int32) -> Bool { ProcFS.isKernelThread(pid) }
}
