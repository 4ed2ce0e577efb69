import ArgumentParser
import Foundation
import Synchronization
import Tracers

/// `tracer flows`: network flow accounting (tracers/flows) printed as update and destroy events.
struct FlowsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flows",
        abstract: "Print network flows (per-flow packets and bytes both ways) as update and destroy events.",
        discussion: """
            Every IP flow of this machine's sockets, in every network namespace, is counted in the kernel;
            a live flow is reported on an age curve (by default every 20 s in its first minute, every
            minute until 5 minutes, then every 5 minutes) and once more when it ends, with its totals.
            Runs until SIGINT/SIGTERM (or --duration). The hooks used are logged on stderr.
            Examples:
              tracer flows
              tracer flows --json --interval 0.5 | jq 'select(.event == "destroy")'
              tracer flows --curve 0:5,30:10,120:60
            """)

    @Flag(help: "One JSON object per line (keys event, flow_id, start, timestamp, src, dst, sport, dport, proto, netns, connmark, packets_orig, bytes_orig, packets_ret, bytes_ret, evicted).")
    var json = false

    @Option(help: ArgumentHelp("Seconds between reads of the kernel flow table.", valueName: "S"))
    var interval: Double = 1

    @Option(help: ArgumentHelp("Update curve: three AGE:INTERVAL points in seconds.", valueName: "curve"))
    var curve: String = FlowUpdateCurve.standard.description

    @Option(name: .customLong("table-size"), help: ArgumentHelp("Flows the kernel table holds; beyond, the least recently used is evicted (counted).", valueName: "n"))
    var tableSize: UInt32 = 65536

    @Option(name: .customLong("idle-timeout"), help: ArgumentHelp("Seconds without packets after which a UDP or other non-TCP flow ends.", valueName: "S"))
    var idleTimeout: Double = 30

    @Option(help: ArgumentHelp("Kernel hooks: auto (conntrack's kprobes where the kernel has them and nf_conntrack tracks traffic, else cgroup_skb), conntrack or cgroup-skb.", valueName: "hooks"))
    var hooks: String = "auto"

    @Option(help: ArgumentHelp("Stop after this many seconds.", valueName: "S"))
    var duration: Double?

    func validate() throws {
        guard interval > 0, interval.isFinite else { throw ValidationError("--interval must be a positive number of seconds, not \(interval)") }
        guard idleTimeout > 0 else { throw ValidationError("--idle-timeout must be a positive number of seconds") }
        guard tableSize > 0 else { throw ValidationError("--table-size must be at least 1") }
        guard ["auto", "conntrack", "cgroup-skb"].contains(hooks) else { throw ValidationError("--hooks must be auto, conntrack or cgroup-skb, not \(hooks)") }
        do { _ = try FlowUpdateCurve(parsing: curve) } catch { throw ValidationError("--curve \(curve): \(error)") }
    }

    func run() throws {
        var settings = FlowAccounting.Settings()
        settings.curve = try FlowUpdateCurve(parsing: curve)
        settings.readInterval = interval
        settings.tableSize = tableSize
        settings.idleTimeout = idleTimeout
        let flows: FlowAccounting
        do {
            switch hooks {
            case "conntrack": settings.hooks = .conntrackKprobes
            case "cgroup-skb": settings.hooks = try FlowHooks.cgroupSKB(mounts: FlowHooks.Machine.current().mounts)
            default: break
            }
            flows = try FlowAccounting(settings: settings)
        } catch {
            FileHandle.standardError.write(Data("tracer flows: \(error)\n".utf8))
            throw ExitCode(1)
        }
        FileHandle.standardError.write(Data("tracer flows: hooks: \(flows.hooks) (\(flows.hookReason)); curve \(settings.curve); reading every \(interval) s\n".utf8))
        let printer = flows.addConsumer(name: "print", mode: .both, capacity: 1 << 16)

        let finished = Mutex(false)
        let signals = SignalHandlers { _ in finished.withLock { $0 = true } }
        let deadline = duration.map { Date(timeIntervalSinceNow: $0) }
        flows.start()
        while !finished.withLock({ $0 }) && deadline.map({ Date() < $0 }) != false {
            print(events: printer.take(timeout: 0.2))
        }
        flows.stop()
        print(events: printer.take())
        let statistics = flows.statistics
        FileHandle.standardError.write(Data(("tracer flows: read \(statistics.eventsRead) entries (\(statistics.bytesRead) B), "
            + "\(statistics.flowsCreated) flows created, \(statistics.updatesLost) updates and \(statistics.destroysLost) destroys lost, "
            + "\(printer.statistics.lost) events dropped by the printer\n").utf8))
        signals.cancel()
    }

    private func print(events: [FlowEvent]) {
        guard !events.isEmpty else { return }
        var text = ""
        for event in events { text += (json ? event.json : event.text) + "\n" }
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}
