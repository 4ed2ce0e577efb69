import ArgumentParser
import BPFRuntime
import Foundation
import Logging
import TracerFramework
import Tracers

/// What to trace and where spans go: the agent's own flags (`tracer --pid 1234`).
struct RunOptions: ParsableArguments {
    @Option(name: .customLong("pid"), help: ArgumentHelp("Trace this process (repeatable).", valueName: "pid"))
    var pids: [Int32] = []

    @Option(name: .customLong("exe"), help: ArgumentHelp("Trace processes whose executable path matches this glob (repeatable), e.g. '*/api'.", valueName: "glob"))
    var executables: [String] = []

    @Option(name: .customLong("open-port"), help: ArgumentHelp("Trace processes listening on these ports, e.g. 80,443,8000-8999.", valueName: "ports"))
    var openPorts: String?

    @Option(name: .customLong("name"), help: ArgumentHelp("Trace processes whose name (comm) matches this glob (repeatable).", valueName: "comm"))
    var names: [String] = []

    @Option(name: .customLong("language"), help: ArgumentHelp("Trace processes of this language: \(LanguageName.all).", valueName: "lang"))
    var language: String?

    @Option(name: .customLong("cgroup"), help: ArgumentHelp("Trace processes whose cgroup path contains this text (e.g. a container id).", valueName: "path"))
    var cgroup: String?

    @Option(name: .customLong("exclude-exe"), help: ArgumentHelp("Never trace executables matching this glob (repeatable).", valueName: "glob"))
    var excludedExecutables: [String] = []

    @Option(name: .customLong("exclude-name"), help: ArgumentHelp("Never trace processes whose name matches this glob (repeatable).", valueName: "comm"))
    var excludedNames: [String] = []

    @Flag(name: .customLong("no-children"), help: "Do not trace the children of selected processes.")
    var noChildren = false

    @Option(name: .customLong("service-name"), help: ArgumentHelp("service.name of what the flags select (default: the agent's own OTEL_SERVICE_NAME; the process's own OTEL_SERVICE_NAME wins).", valueName: "name"))
    var serviceName: String?

    @Option(name: .customLong("config"), help: ArgumentHelp("YAML configuration file (see README).", valueName: "file"))
    var config: String?

    @Option(name: .customLong("print"), help: ArgumentHelp("Print spans to stdout: text, json or none (default: text, none when exporting).", valueName: "format"))
    var print: String?

    @Option(name: .customLong("otlp-endpoint"), help: ArgumentHelp("Export over OTLP/HTTP to this base URL (+/v1/traces, /v1/metrics); overrides OTEL_EXPORTER_OTLP_ENDPOINT.", valueName: "url"))
    var otlpEndpoint: String?

    @Option(name: .customLong("otlp-protocol"), help: ArgumentHelp("http/protobuf (default) or http/json; overrides OTEL_EXPORTER_OTLP_PROTOCOL.", valueName: "protocol"))
    var otlpProtocol: String?

    @Option(name: .customLong("prometheus-port"), help: ArgumentHelp("Serve RED and self-metrics at http://HOST:PORT/metrics.", valueName: "port"))
    var prometheusPort: Int?

    @Option(name: .customLong("prometheus-host"), help: ArgumentHelp("Address the Prometheus endpoint binds (default 127.0.0.1; 0.0.0.0 in a DaemonSet).", valueName: "address"))
    var prometheusHost: String?

    @Option(name: .customLong("context-propagation"), help: ArgumentHelp("Carry the trace in outgoing requests, so traced services form one trace: go (write a traceparent into Go net/http HTTP/1.x requests; needs bpf_probe_write_user, which kernel lockdown forbids), network (insert one into the plaintext HTTP/1 requests of other processes on their way out, with sk_msg; needs cgroup2 and Linux 6.3+ socket tracepoints), or all. What is unavailable here is said in one line at start; tracing carries on.", valueName: "mode"))
    var contextPropagation: String?

    @Option(name: .customLong("db-query-text"), help: ArgumentHelp("Whether database spans carry db.query.text: off (default), sanitized (literals and Redis/Memcached arguments as ?) or full (as sent; may hold personal data).", valueName: "mode"))
    var databaseQueryText: String?

    @Flag(name: .customLong("network-flows"), help: "Also account every network flow of the machine (tracer flows) and export bytes and packets by source, destination, port and transport with the other metrics (OTLP, /metrics). When the kernel offers no hooks for it, one line says why and tracing carries on.")
    var networkFlows = false

    @Option(name: .customLong("kernel-tracers"), help: ArgumentHelp("Also run these kernel utility tracers (comma-separated: \(TracerRegistry.kernelTracers.map(\.name).joined(separator: ", "))): histograms exported as metrics (OTLP, /metrics), events printed with the spans and exported as log records. One that cannot attach here is left out with one line saying why.", valueName: "names"))
    var kernelTracers: String?

    @Option(name: .customLong("path-prefix"), help: ArgumentHelp("With --kernel-tracers files: only file events under this absolute path prefix (repeatable, up to 8).", valueName: "path"))
    var pathPrefixes: [String] = []

    @Option(name: .customLong("ring-buffer-size"), help: ArgumentHelp("Size of the kernel-to-agent event ring in MiB, a power of two. Raise it when the stop line reports events dropped in the kernel.", valueName: "MiB"))
    var ringBufferMiB = 2

    @Option(name: .customLong("socket-hooks"), help: ArgumentHelp("How the capture layer sees socket data: auto (default: the cheapest this kernel has), socket-tracepoints, fexit, kprobes or syscall-tracepoints (every syscall of the machine pays while a process is traced).", valueName: "hooks"))
    var socketHooks = "auto"
    @Option(name: .customLong("event-transport"), help: ArgumentHelp("ring-buffer or perf-buffer (default: a ring buffer where the kernel has them, 5.8+, else perf buffers of the same total size).", valueName: "kind"))
    var eventTransport: String?

    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, notice, warning, error or critical (default info). Logs go to stderr.", valueName: "level"))
    var logLevel: String?

    @Option(name: .customLong("object"), help: ArgumentHelp("Run this BPF object or package next to the tracers (repeatable; see tracer object run): its records are printed with the spans, its histograms and tables exported as metrics.", valueName: "file"))
    var objects: [String] = []

    @OptionGroup var capabilities: CapabilityOptions

    /// Whether anything says what to trace.
    var selectsProcesses: Bool {
        !pids.isEmpty || !executables.isEmpty || openPorts != nil || !names.isEmpty || language != nil || cgroup != nil || config != nil
            || !objects.isEmpty || kernelTracers != nil
    }

    /// The kernel tracers to run: the flag's list, else the file's `kernel_tracers`; an unknown name is an error.
    func kernelTracerList(file: ConfigurationFile?) throws -> [any KernelTracer] {
        let names = kernelTracers.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } } ?? file?.kernelTracers ?? []
        let source = kernelTracers != nil ? "--kernel-tracers" : "\(config ?? "config"): kernel_tracers"
        do { return try KernelTracersBesideAgent.tracers(named: names) } catch { throw ValidationError("\(source): \(error)") }
    }

    /// The path prefixes of the agent's `files` tracer: the flags', else the file's `file_path_prefixes`; checked
    /// now, so a bad one stops the agent with one line.
    func filePathPrefixes(file: ConfigurationFile?, tracers: [any KernelTracer]) throws -> [String] {
        let prefixes = pathPrefixes.isEmpty ? file?.filePathPrefixes ?? [] : pathPrefixes
        let source = pathPrefixes.isEmpty ? "\(config ?? "config"): file_path_prefixes" : "--path-prefix"
        guard !prefixes.isEmpty else { return [] }
        guard let files = tracers.first(where: { $0.name == "files" }) else {
            throw ValidationError("\(source) needs the files kernel tracer (--kernel-tracers files)")
        }
        do { try files.validate(KernelTracerOptions(pathPrefixes: prefixes)) } catch { throw ValidationError("\(source): \(error)") }
        return prefixes
    }

    /// The selection from the flags, with the file's entries after them (flags first: their service name wins).
    /// What the flags select is named by `--service-name`, else by the agent's own `OTEL_SERVICE_NAME` (as
    /// Beyla does), for processes without an `OTEL_SERVICE_NAME` of their own.
    func selection(file: ConfigurationFile?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Selection {
        var rules: [SelectionRule] = []
        let name = serviceName ?? environment["OTEL_SERVICE_NAME"].flatMap { $0.isEmpty ? nil : $0 }
        func rule(_ configure: (inout SelectionRule) -> Void) {
            var rule = SelectionRule(serviceName: name)
            configure(&rule)
            rules.append(rule)
        }
        if !pids.isEmpty {
            for pid in pids {
                if let problem = PIDCheck.problem(pid) { throw ValidationError("--pid \(pid): \(problem)") }
            }
            rule { $0.pids = pids }
        }
        for executable in executables { rule { $0.exePath = executable } }
        if let openPorts {
            do {
                let ports = try PortRanges(openPorts)
                rule { $0.openPorts = ports }
            } catch {
                throw ValidationError("--open-port: \(error)")
            }
        }
        for name in names { rule { $0.name = name } }
        if let language {
            guard let parsed = LanguageName(language) else { throw ValidationError("--language: unknown language '\(language)' (\(LanguageName.all))") }
            rule { $0.language = parsed.language }
        }
        if let cgroup { rule { $0.cgroup = cgroup } }
        var selection = file?.selection ?? Selection()
        selection.rules = rules + selection.rules
        selection.exclusions += excludedExecutables.map { SelectionRule(exePath: $0) } + excludedNames.map { SelectionRule(name: $0) }
        if noChildren { selection.includeChildren = false }
        return selection
    }

    /// What to print on stdout: `text` by default, `none` by default when spans are exported.
    func printFormat(file: ConfigurationFile?, exporting: Bool) throws -> String {
        let format = print ?? file?.print ?? (exporting ? "none" : "text")
        guard ["text", "json", "none"].contains(format) else { throw ValidationError("--print: expected text, json or none, not '\(format)'") }
        return format
    }

    /// `db.query.text` of database spans: the flag, else the file's `db_query_text`, else off.
    func databaseQueryText(file: ConfigurationFile?) throws -> DatabaseQueryText {
        let text = databaseQueryText ?? file?.databaseQueryText ?? "off"
        guard let mode = DatabaseQueryText(rawValue: text) else {
            throw ValidationError("--db-query-text \(text): not one of \(DatabaseQueryText.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return mode
    }

    /// `--context-propagation`: nil when not given.
    func contextPropagationMode() throws -> ContextPropagation? {
        guard let contextPropagation else { return nil }
        guard let mode = ContextPropagation(rawValue: contextPropagation) else {
            throw ValidationError("--context-propagation \(contextPropagation): not one of \(ContextPropagation.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return mode
    }

    /// The capture layer's hooks: nil for the cheapest this kernel has.
    func captureHooks() throws -> CaptureHooks? {
        if socketHooks == "auto" { return nil }
        guard let hooks = CaptureHooks(rawValue: socketHooks) else {
            throw ValidationError("--socket-hooks \(socketHooks): not one of auto, \(CaptureHooks.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return hooks
    }

    /// The event channel: a ring of `--ring-buffer-size` MiB, or on kernels without ring buffers (and with
    /// `--event-transport perf-buffer`) a perf event array whose per-CPU buffers add up to the same size.
    func channel(features: KernelFeatures, cpus: Int = ProcessInfo.processInfo.activeProcessorCount) throws -> EventChannel.Settings {
        guard (1...1024).contains(ringBufferMiB), ringBufferMiB & (ringBufferMiB - 1) == 0 else {
            throw ValidationError("--ring-buffer-size: expected a power of two from 1 to 1024 (MiB), not \(ringBufferMiB)")
        }
        let perfBuffer: Bool
        switch eventTransport {
        case nil: perfBuffer = !features.isAvailable(.ringBuffer)
        case "ring-buffer": perfBuffer = false
        case "perf-buffer": perfBuffer = true
        case let other?: throw ValidationError("--event-transport: expected ring-buffer or perf-buffer, not '\(other)'")
        }
        guard perfBuffer else { return EventChannel.Settings(transport: .ringBuffer(bytes: UInt32(ringBufferMiB) << 20)) }
        // Pages per CPU: a power of two, at least 8 (32 KiB), the total near the ring's size.
        let pages = (ringBufferMiB << 20) / 4096 / max(cpus, 1)
        var perCPU = 8
        while perCPU * 2 <= pages { perCPU *= 2 }
        return EventChannel.Settings(transport: .perfBuffer(pagesPerCPU: perCPU))
    }

    func level(file: ConfigurationFile?) throws -> Logger.Level {
        let text = logLevel ?? file?.logLevel ?? "info"
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            throw ValidationError("--log-level: expected trace, debug, info, notice, warning, error or critical, not '\(text)'")
        }
        return level
    }
}

/// Why a PID given on the command line cannot be traced or inspected, nil when it names a user process.
enum PIDCheck {
    static func problem(_ pid: Int32) -> String? {
        // kill(0, 0) and kill(-1, 0) address process groups, so they would "find" a process.
        guard pid > 0 else { return "not a process ID (PIDs start at 1; `tracer ps` lists processes)" }
        if kill(pid, 0) != 0 && errno == ESRCH { return "no such process" }
        if TracedProcess.isKernelThread(pid: pid) {
            let name = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .newlines) ?? "?"
            return "\(name) is a kernel thread: it runs no user-space code to trace (`tracer ps` lists user processes)"
        }
        return nil
    }
}
