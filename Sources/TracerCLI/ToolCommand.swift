import ArgumentParser
import Foundation
import Synchronization
import TracerFramework
import Tracers

/// `tracer tool NAME`: one kernel utility tracer run on its own, like the libbpf-tools program of that name.
struct ToolCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tool",
        abstract: "Run one kernel utility tracer (runqlat, oomkill, tcp, biolatency, files, fds, syscalls) and print its histograms or events.",
        discussion: """
            Histogram tools print the histogram of each interval (the maps are emptied after each read, as
            libbpf-tools do) and once more at the end; event tools print each event as it is read. Runs
            until SIGINT/SIGTERM, or --count intervals (histograms) or events. The hooks used, and why
            preferred ones were not, are said on stderr; so are the tracer's counters at exit.
            Tools: \(TracerRegistry.kernelTracers.map { "\($0.name) — \($0.summary)" }.joined(separator: "; ")).
            Examples:
              tracer tool runqlat --interval 1 --count 5
              tracer tool runqlat --per-process --pid 1234 --json
              tracer tool runqlat --per-cgroup --interval 5
              tracer tool oomkill --json
              tracer tool tcp --pid 1234
              tracer tool biolatency --per-disk --queued --interval 1 --count 5
              tracer tool biolatency --disk vda --json
              tracer tool files --path-prefix /etc/ --path-prefix /var/lib/app/
              tracer tool fds --pid 1234 --interval 10 --leak-intervals 6
              tracer tool syscalls --pid 1234 --interval 5 --count 3
            """)

    @Argument(help: ArgumentHelp("The tool: \(TracerRegistry.kernelTracers.map(\.name).joined(separator: ", ")).", valueName: "name"))
    var name: String

    @Option(help: ArgumentHelp("Seconds between histogram prints (default: only at the end).", valueName: "S"))
    var interval: Double?

    @Option(help: ArgumentHelp("Stop after this many intervals (histograms) or events.", valueName: "N"))
    var count: Int?

    @Option(help: ArgumentHelp("Only this process (host PID).", valueName: "P"))
    var pid: Int32?

    @Flag(help: "One JSON object per line: histograms {tool,name,unit,labels,buckets:[{le,count}],count,sum}, events {tool,time,event,pid,comm,...}.")
    var json = false

    @Flag(name: .customLong("per-process"), help: "One histogram per process instead of one for the machine (runqlat -P; syscalls: per process and syscall; tcp: connect latency per process and endpoint).")
    var perProcess = false

    @Flag(name: .customLong("per-cgroup"), help: "One histogram per cgroup, labelled with its path (runqlat).")
    var perCgroup = false

    @Flag(name: .customLong("states"), help: "An event for every state change of a connection (tcp, as tcpstates).")
    var stateChanges = false

    @Flag(name: .customLong("per-disk"), help: "One histogram per disk instead of one for all disks (biolatency -D).")
    var perDisk = false

    @Flag(help: "Include the time requests wait in the OS queue (biolatency -Q).")
    var queued = false

    @Option(help: ArgumentHelp("Only this disk, by name (biolatency -d).", valueName: "NAME"))
    var disk: String?

    @Option(name: .customLong("path-prefix"), help: ArgumentHelp("Only paths under this prefix (files; repeatable, absolute, up to 8).", valueName: "PATH"))
    var pathPrefixes: [String] = []

    @Option(name: .customLong("leak-intervals"), help: ArgumentHelp("Intervals in a row an open-FD count must grow to be a leak suspect (fds; default 5).", valueName: "N"))
    var leakIntervals = 5

    @Option(name: .customLong("max-keys"), help: ArgumentHelp("Histograms kept per map; samples of further keys are counted in one overflow histogram.", valueName: "N"))
    var maxKeys: UInt32 = 1024

    @Option(help: ArgumentHelp("Stop after this many seconds.", valueName: "S"))
    var duration: Double?

    func validate() throws {
        guard TracerRegistry.kernelTracers.contains(where: { $0.name == name }) else {
            throw ValidationError("unknown tool \(name): one of \(TracerRegistry.kernelTracers.map(\.name).joined(separator: ", "))")
        }
        if let interval { guard interval > 0, interval.isFinite else { throw ValidationError("--interval must be a positive number of seconds, not \(interval)") } }
        if let count { guard count > 0 else { throw ValidationError("--count must be at least 1") } }
        if let pid { guard pid > 0 else { throw ValidationError("--pid must be a process ID, not \(pid)") } }
        guard maxKeys > 0 else { throw ValidationError("--max-keys must be at least 1") }
    }

    func run() throws {
        let tracer = TracerRegistry.kernelTracers.first { $0.name == name }!
        let events = Mutex(0)
        let finished = DispatchSemaphore(value: 0)
        let (json, limit) = (json, count)
        let session: KernelTracerSession
        do {
            session = try KernelTracerSession(tracer, options: KernelTracerOptions(pid: pid, perProcess: perProcess, perCgroup: perCgroup,
                                                                                   stateChanges: stateChanges, maxKeys: maxKeys,
                                                                                   perDisk: perDisk, queued: queued, disk: disk,
                                                                                   pathPrefixes: pathPrefixes, interval: interval,
                                                                                   leakIntervals: leakIntervals)) { event in
                let seen = events.withLock { count in
                    count += 1
                    return count
                }
                if let limit, seen > limit { return }
                FileHandle.standardOutput.write(Data(((json ? KernelToolOutput.json(event) : KernelToolOutput.text(event)) + "\n").utf8))
                if let limit, seen == limit { finished.signal() }
            }
        } catch {
            FileHandle.standardError.write(Data("tracer tool: \(error)\n".utf8))
            throw ExitCode(1)
        }
        var notice = "tracer tool \(name): hooks: \(session.hooks.description)"
        if !session.fallbackReasons.isEmpty { notice += " (not: \(session.fallbackReasons.joined(separator: "; ")))" }
        if let cost = tracer.costNotice { notice += "; \(cost)" }
        notice += tracer.histograms.isEmpty ? "; tracing, Ctrl-C to end" : "; tracing\(interval.map { ", a histogram every \($0) s" } ?? ""), Ctrl-C to end"
        FileHandle.standardError.write(Data((notice + "\n").utf8))

        let signals = SignalHandlers { _ in finished.signal() }
        let deadline = duration.map { DispatchTime.now() + $0 } ?? .distantFuture
        var printed = 0
        while true {
            let wake = interval.map { min(DispatchTime.now() + $0, deadline) } ?? deadline
            if finished.wait(timeout: wake) == .success || DispatchTime.now() >= deadline { break }
            guard !tracer.histograms.isEmpty else { continue }
            try printHistograms(session)
            printed += 1
            if let count, printed >= count { break }
        }
        session.stop()
        if !tracer.histograms.isEmpty && (interval == nil || count.map { printed < $0 } ?? true) { try printHistograms(session) }
        let counters = session.counters().map { "\($0.name) \($0.value())" }.joined(separator: ", ")
        FileHandle.standardError.write(Data("tracer tool \(name): \(counters)\n".utf8))
        signals.cancel()
    }

    private func printHistograms(_ session: KernelTracerSession) throws {
        let histograms = try session.histograms(clear: true)
        var text = ""
        if json {
            for histogram in histograms { text += KernelToolOutput.json(histogram) + "\n" }
        } else {
            text = "\n" + (histograms.isEmpty ? "     (no values)\n" : histograms.map(KernelToolOutput.text).joined())
        }
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}
