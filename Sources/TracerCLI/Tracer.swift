import ArgumentParser
import BPFPrograms
import BPFRuntime
import TracerFramework

/// `tracer`: eBPF instrumentation agent. Each subcommand is its own `ParsableCommand` in this folder.
@main
struct Tracer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tracer",
        abstract: "eBPF instrumentation agent: traces and RED metrics for unmodified services.",
        discussion: """
            Run as root (or with CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE). With flags that
            select processes, tracer traces them until SIGINT/SIGTERM: spans on stdout,
            logs on stderr. With nothing selected it checks whether this machine can trace.
            Every selection, print and export flag: tracer run --help.

            Examples:
              tracer                                  is this machine ready to trace?
              tracer --pid 1234                       trace a process and its children
              tracer --exe '*/api' --print json       executables whose path ends in /api
              tracer --open-port 8000-8999            whatever listens on these ports
              tracer --language python --no-children  every Python process, no children
              tracer --config tracer.yaml             selection and export from a file
              tracer --exe '*/api' --otlp-endpoint http://localhost:4318
              tracer --exe '*/api' --context-propagation network   traceparent into its HTTP/1 requests
              tracer features [--json]                BPF features, capabilities, mounts
              tracer inspect ./server                 what the agent sees in an executable
              tracer inspect --pid 1234               ... or in a running process
              tracer inspect --pid 1234 --watch 10    ... and the protocols it speaks
              tracer object run exec.bpf.o -- --min-us 100   run a BPF object: events, histograms, stats
              tracer object run exec.bpf.o --help     ... the object's own options
              tracer object pack exec.bpf.o -o exec.json     package it with editable meta
              tracer flows [--json] [--interval S]    network flows: bytes and packets both ways
              tracer ps --exe '*/api'                 what the flags would select, and why
              tracer tool runqlat --interval 1 --count 5     run-queue delay histogram (libbpf-tools style)
              tracer tool oomkill --json              one line per OOM kill
              tracer --pid 1234 --kernel-tracers runqlat,oomkill   kernel tracers exported with the spans
            """,
        subcommands: [RunCommand.self, FeaturesCommand.self, InspectCommand.self, ObjectCommand.self, FlowsCommand.self, ToolCommand.self, PsCommand.self],
        defaultSubcommand: RunCommand.self)
}

/// `tracer [run] --pid 1234 ...`: the agent (the default subcommand, so `tracer --pid 1234` runs it).
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Trace the selected processes (the default command); with nothing selected, check readiness.")

    @OptionGroup var options: RunOptions

    func run() throws {
        if options.selectsProcesses {
            try AgentRunner(options: options).run()
            return
        }
        let features = KernelFeatures.detect()
        let report = ReadinessReport(features)
        print(report.text)
        if !report.isReady { throw ExitCode(2) }
    }
}

/// The short answer to "can this machine trace?", with the fix for each blocker.
struct ReadinessReport {
    let features: KernelFeatures

    init(_ features: KernelFeatures) { self.features = features }

    /// What stops tracing, each with how to fix it.
    var blockers: [String] {
        var blockers: [String] = []
        let capabilities = Dictionary(uniqueKeysWithValues: features.capabilities.map { ($0.name, $0.held) })
        if capabilities["CAP_BPF"] != true && capabilities["CAP_SYS_ADMIN"] != true {
            blockers.append("no CAP_BPF: run as root or grant CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE")
        }
        if !features.isAvailable(.ringBuffer) && !features.isAvailable(.perfEventArray) {
            blockers.append("neither ring buffers nor perf buffers can be created (kernel older than 4.3, or no privileges)")
        }
        if !features.isAvailable(.uprobe) { blockers.append("uprobes are unavailable (CONFIG_UPROBE_EVENTS)") }
        if !features.isAvailable(.tracepoint) {
            let tracefs = features.mounts.first { $0.filesystem == "tracefs" }
            blockers.append(tracefs?.mounted == true ? "tracepoints are unavailable"
                            : "tracefs is not mounted: mount -t tracefs tracefs /sys/kernel/tracing")
        }
        return blockers
    }

    var isReady: Bool { blockers.isEmpty }

    var text: String {
        let available = features.features.filter(\.available).map(\.id.rawValue)
        let missing = features.features.filter { !$0.available }.map(\.id.rawValue)
        var lines = ["tracer on Linux \(features.kernelRelease)",
                     "available: \(available.joined(separator: ", "))",
                     "unavailable: \(missing.isEmpty ? "none" : missing.joined(separator: ", "))"]
        lines.append("socket hooks: \(CaptureHooks.choose(features).description)")
        if isReady {
            lines.append("ready to trace. `tracer features` shows every probe; `tracer --help` lists the commands.")
        } else {
            lines.append("not ready to trace:")
            lines += blockers.map { "  - \($0)" }
        }
        return lines.joined(separator: "\n")
    }
}
