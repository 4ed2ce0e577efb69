import ArgumentParser
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
            Exits 1 with one error line when the file or process cannot be inspected.
            """)

    @Argument(help: "An ELF executable or shared library.")
    var path: String?

    @Option(help: "Inspect a running process (its executable, mapped libraries, NSpid, libssl).")
    var pid: Int32?

    @Flag(help: "Print JSON instead of the summary.")
    var json = false

    func validate() throws {
        guard (path == nil) != (pid == nil) else { throw ValidationError("give either PATH or --pid N") }
    }

    /// The probe targets of every registered tracer.
    static func registeredProbeTargets() -> [ProbeTargetQuery] { TracerRegistry.all.flatMap(\.probeTargetQueries) + captureProbeTargetQueries }

    func run() throws {
        var inspector = ExecutableInspector(goFields: goFieldsToInspect(for: TracerRegistry.all))
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
                report = InspectReport(process: process, executable: info)
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
    }

    let process: ProcessSnapshot?
    let executable: ExecutableInfo
    let tracers: [TracerTargets]
    /// Go programs: whether the capture layer reads their crypto/tls plaintext, or why not.
    let goTLSPlaintext: String?

    init(process: ProcessSnapshot?, executable: ExecutableInfo) {
        self.process = process
        self.executable = executable
        goTLSPlaintext = goTLSPlaintextStatus(of: executable)
        let names = (executable.probeTargets.map(\.tracer) + executable.missingProbeTargets.map(\.tracer))
        var seen = Set<String>()
        tracers = names.filter { seen.insert($0).inserted }.map { tracer in
            TracerTargets(tracer: tracer, found: executable.probeTargets.filter { $0.tracer == tracer },
                          missing: executable.missingProbeTargets.filter { $0.tracer == tracer }.map(\.symbol))
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
                line("    found   \(target.symbol) offset \(hex(target.fileOffset)) (\(target.source.rawValue))\(returns)")
            }
            for symbol in tracer.missing { line("    missing \(symbol)") }
        }
        return out
    }
}
