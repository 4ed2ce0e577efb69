import ArgumentParser
import BPFRuntime
import ExecutableInspection
import Foundation
import Logging
import TracerFramework
import Tracers

/// `tracer inspect PATH | --pid N [--json]`: what the agent would see before attaching.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show what the agent sees in an executable or a running process.",
        discussion: """
            Kind, language, Go version and modules of interest, symbol count, the probe targets of every
            tracer (found or missing, with file offsets and RET offsets) and where Go struct offsets come from.
            With --watch SECONDS (and --pid), it then traces the process for that long, as the agent would,
            and reports which protocols its connections spoke (per side) and how many connections no protocol
            parser understood; nothing is printed or exported meanwhile.
            Exits 1 with one error line when the file or process cannot be inspected.

            Examples:
              tracer inspect /usr/bin/caddy            probe targets, Go version, crypto/tls capture
              tracer inspect --pid 1234 --json
              tracer inspect --pid 1234 --watch 10     ...and what its connections speak over 10 s
            """)

    @Argument(help: "An ELF executable or shared library.")
    var path: String?

    @Option(help: "Inspect a running process (its executable, mapped libraries, NSpid, libssl).")
    var pid: Int32?

    @Option(help: ArgumentHelp("With --pid: also trace the process for this many seconds (1-3600) and report the protocols its connections speak.", valueName: "seconds"))
    var watch: Int?

    @Flag(help: "Print JSON instead of the summary.")
    var json = false

    func validate() throws {
        guard (path == nil) != (pid == nil) else { throw ValidationError("give either PATH or --pid N") }
        if let watch {
            guard pid != nil else { throw ValidationError("--watch needs --pid: it traces a running process") }
            guard (1...3600).contains(watch) else { throw ValidationError("--watch \(watch): give 1 to 3600 seconds") }
        }
    }

    /// Traces `pid` for `seconds` with every registered tracer, as the agent does, and returns what its
    /// connections spoke. Exits 1 with one line when tracing cannot start or the process exits meanwhile.
    static func protocolsSeen(pid: Int32, seconds: Int) throws -> ConnectionTracker.ProcessProtocols {
        func fail(_ message: String) -> ExitCode {
            FileHandle.standardError.write(Data("tracer inspect: pid \(pid): \(message)\n".utf8))
            return ExitCode(1)
        }
        try CapabilityCheck.run(enforce: true)
        var logger = Logger(label: "tracer")
        logger.logLevel = .error
        let features = KernelFeatures.detect()
        let agent: Agent
        do {
            agent = try Agent(.init(selection: Selection(rules: [SelectionRule(pids: [pid])], includeChildren: false),
                                    tracers: TracerRegistry.tracers(features: features), logger: logger, features: features))
            try agent.start()
        } catch {
            throw fail("cannot trace it: \(error)")
        }
        defer { agent.stop(flushTimeout: .zero) }
        guard agent.selectedProcesses.contains(where: { $0.pid == pid }) else { throw fail("it exited before it could be traced") }
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            // Read before the exit is handled, which forgets the process.
            let seen = agent.protocolsSeen(pid: pid)
            guard kill(pid, 0) == 0 || errno != ESRCH else {
                FileHandle.standardError.write(Data("tracer inspect: pid \(pid) exited while watched; protocols are those seen until then\n".utf8))
                return seen
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return agent.protocolsSeen(pid: pid)
    }

    /// The probe targets of every registered tracer.
    static func registeredProbeTargets() -> [ProbeTargetQuery] { TracerRegistry.all.flatMap(\.probeTargetQueries) + captureProbeTargetQueries }

    func run() throws {
        // What the tracers read, and the offsets table's columns (scripts/generate-go-offsets.sh reads them here).
        var inspector = ExecutableInspector(goFields: Array(Set(goFieldsToInspect(for: TracerRegistry.all) + GoField.netHTTP)).sorted { $0.description < $1.description })
        inspector.logger.logLevel = .warning
        let report: InspectReport
        do {
            let queries = Self.registeredProbeTargets()
            if let pid {
                if let problem = PIDCheck.problem(pid) {
                    FileHandle.standardError.write(Data("tracer inspect: pid \(pid): \(problem)\n".utf8))
                    throw ExitCode(1)
                }
                let process = try ProcessInspection.snapshot(pid: pid)
                let info = try inspector.inspect(path: process.executableOpenPath, queries: queries, languageHint: process.languageHint)
                // Re-check: the process may have exited after the snapshot while the file was read.
                _ = try ProcessInspection.snapshot(pid: pid)
                report = InspectReport(process: process, executable: info,
                                       protocols: try watch.map { ($0, try Self.protocolsSeen(pid: pid, seconds: $0)) })
            } else if let path {
                report = InspectReport(process: nil, executable: try inspector.inspect(path: path, queries: queries))
            } else {
                throw ValidationError("give either PATH or --pid N")
            }
        } catch let error as InspectionError {
            FileHandle.standardError.write(Data("tracer inspect: \(error)\n".utf8))
            throw ExitCode(1)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.summary, terminator: "")
        }
    }
}

/// The content of `tracer inspect`, shared by the text and JSON forms.
struct InspectReport: Encodable {
    struct TracerTargets: Encodable {
        let tracer: String
        let found: [ProbeTarget]
        let missing: [String]
        /// What the tracer does in this executable, path by path (``Tracer/coverage(in:)``).
        let paths: [String]
    }

    let process: ProcessSnapshot?
    let executable: ExecutableInfo
    let tracers: [TracerTargets]
    /// Go programs: whether the capture layer reads their crypto/tls plaintext, or why not.
    let goTLSPlaintext: String?
    /// With --watch: what the process's connections spoke while it was traced.
    let protocols: ProtocolsSeen?

    /// `tracer inspect --watch`'s findings.
    struct ProtocolsSeen: Encodable {
        struct Connections: Encodable {
            let `protocol`: String
            let role: String
            let connections: UInt64
        }

        let seconds: Int
        let connections: [Connections]
        let notUnderstood: UInt64
        let tlsWithoutPlaintext: UInt64
        let summary: String
    }

    init(process: ProcessSnapshot?, executable: ExecutableInfo, protocols: (seconds: Int, seen: ConnectionTracker.ProcessProtocols)? = nil) {
        self.process = process
        self.executable = executable
        self.protocols = protocols.map { seconds, seen in
            ProtocolsSeen(seconds: seconds,
                          connections: seen.connections.keys.sorted().map {
                              .init(protocol: $0.name, role: $0.role == .server ? "server" : "client", connections: seen.connections[$0]!)
                          },
                          notUnderstood: seen.unclaimed, tlsWithoutPlaintext: seen.unreadTLS, summary: seen.summary)
        }
        goTLSPlaintext = goTLSPlaintextStatus(of: executable)
        let names = (executable.probeTargets.map(\.tracer) + executable.missingProbeTargets.map(\.tracer))
        var seen = Set<String>()
        tracers = names.filter { seen.insert($0).inserted }.map { tracer in
            TracerTargets(tracer: tracer, found: executable.probeTargets.filter { $0.tracer == tracer },
                          missing: executable.missingProbeTargets.filter { $0.tracer == tracer }.map(\.symbol),
                          paths: TracerRegistry.all.first { $0.name == tracer }?.coverage(in: executable).map(\.description) ?? [])
        }
    }

    var summary: String {
        var out = ""
        func line(_ text: String) { out += text + "\n" }
        func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
        if let process {
            line("pid \(process.pid) (NSpid \(process.namespacePIDs.map(String.init).joined(separator: " ")))")
            line("  executable: \(process.executablePath) [\(process.executableIdentity)]")
            line("  mapped files: \(process.libraries.count)")
            if let ssl = process.libssl {
                line("  libssl: \(ssl.path) (soname \(ssl.sonameVersion)\(ssl.version.map { ", \($0)" } ?? ""))")
            } else {
                line("  libssl: not mapped")
            }
        } else {
            line(executable.path + (executable.identity.map { " [\($0)]" } ?? ""))
        }
        line("  kind: \(executable.kind.rawValue), \(executable.machine)")
        line("  build-id: \(executable.buildID ?? "none")")
        line("  language: \(executable.language.rawValue)")
        line("  symbols: \(executable.symbolCount) (.symtab + .dynsym)")
        if let go = executable.go {
            if let info = go.buildInfo {
                line("  go: \(info.goVersion), main module \(info.mainModule.map { "\($0.path) \($0.version)" } ?? info.mainPackage ?? "unknown")")
                let interesting = info.modulesOfInterest
                line("  go modules of interest: " + (interesting.isEmpty ? "none" : interesting.map { "\($0.path) \($0.version)" }.joined(separator: ", ")))
            } else {
                line("  go: no build info")
            }
            line("  go functions (.gopclntab): \(go.functionCount)")
            line("  go g slot: " + (go.gSlotThreadPointerOffset.map { "fsbase\($0)" } ?? "unknown"))
            if let offsets = go.fieldOffsets {
                line("  struct offsets: from \(offsets.source) (\(offsets.offsets.count) found"
                     + (offsets.missing.isEmpty ? ")" : ", missing: \(offsets.missing.joined(separator: ", ")))"))
            }
            if let reason = go.notInstrumentableReason { line("  go tracers: \(reason)") }
            if let status = goTLSPlaintext { line("  go tls plaintext (crypto/tls): \(status)") }
        }
        for tracer in tracers {
            line("  tracer \(tracer.tracer): \(tracer.found.count) found, \(tracer.missing.count) missing")
            for target in tracer.found {
                let returns = target.returnOffsets.isEmpty ? "" : ", returns at \(target.returnOffsets.map(hex).joined(separator: " "))"
                let entry = target.entryProbeOffset == target.fileOffset ? "" : ", entry probe at +\(target.entryProbeOffset - target.fileOffset)"
                line("    found   \(target.symbol) offset \(hex(target.fileOffset)) (\(target.source.rawValue))\(entry)\(returns)")
            }
            for symbol in tracer.missing { line("    missing \(symbol)") }
            for path in tracer.paths { line("    path    \(path)") }
        }
        if let protocols { line("  connections in \(protocols.seconds) s: \(protocols.summary)") }
        return out
    }
}
