import BPFRuntime
import Dispatch
import Foundation
import Logging
import Synchronization
import Telemetry

/// How `tracer object run` prints and samples.
struct ObjectRunSettings {
    var json = false
    /// Sampling interval for every sampled map, overriding the meta's (seconds).
    var interval: Double?
    /// Stop after this many seconds (nil: run until SIGINT/SIGTERM).
    var duration: Double?
    /// Print program statistics every this many seconds too (they are printed at exit and on SIGUSR1).
    var statsInterval: Double?
    /// nil: the meta's `print_header` (default true).
    var printHeader: Bool?
    var printKernelDebug = false
}

/// Serialises what the reader threads and the main loop print.
final class ObjectOutput: Sendable {
    private let lock = Mutex(())

    func out(_ text: String) {
        lock.withLock { _ in FileHandle.standardOutput.write(Data(text.utf8)) }
    }

    func err(_ text: String) {
        lock.withLock { _ in FileHandle.standardError.write(Data(text.utf8)) }
    }
}

/// A loaded, attached object (`tracer object run`): loads it with the settings written into `.rodata`,
/// attaches every program by its section, and reads its event maps, sampled maps and program statistics
/// until stopped. Construction either succeeds with at least one program attached or releases everything.
final class ObjectRunner {
    let input: ObjectInput
    let object: BPFObject
    private(set) var links: [BPFLink] = []
    /// One line per program that could not be loaded or attached (the others run).
    private(set) var notices: [String] = []

    /// Section prefixes of programs whose kernel support may be missing (kprobes, fentry/fexit, LSM): when
    /// the kernel refuses to load one, it is left out and the others run.
    static let optionalKinds: Set<String> = ["kprobe", "kretprobe", "ksyscall", "kretsyscall", "fentry", "fexit", "fmod_ret", "lsm",
                                             "kprobe.multi", "kretprobe.multi"]

    static func kind(ofSection section: String) -> String {
        String(section.split(separator: "/", maxSplits: 1).first ?? Substring(section))
    }

    init(input: ObjectInput, values: [String: [UInt8]]) throws(ObjectCommandError) {
        self.input = input
        var enabled = input.object.programs.map(\.name)
        var notices: [String] = []
        let base64 = Data(input.object.bytes).base64EncodedString()
        var loaded: BPFObject?
        if input.meta.debugVerbose == true {
            // The package asks for libbpf's own account of the load.
            var logger = Logger(label: "libbpf") { StreamLogHandler.standardError(label: $0) }
            logger.logLevel = .debug
            forwardLibbpfMessages(to: logger)
        }
        while loaded == nil {
            var spec = BPFObjectSpec(EmbeddedBPFObject(name: input.object.name, base64: base64), programs: Set(enabled.map(BPFProgramName.init)))
            for (name, bytes) in values { spec.set(BPFGlobalName(name), bytes: bytes) }
            do {
                loaded = try spec.load()
            } catch let error as BPFError {
                let refused = input.object.programs.first { error.operation.hasPrefix("load program \($0.name) of object") }
                if let refused, enabled.count > 1, Self.optionalKinds.contains(Self.kind(ofSection: refused.section)),
                   [EPERM, ENOENT, EOPNOTSUPP, 524, ESRCH].contains(error.errno) {
                    enabled.removeAll { $0 == refused.name }
                    notices.append("cannot load program \(refused.name) (SEC(\"\(refused.section)\")): \(Self.firstLine(error)); this kernel lacks \(Self.kind(ofSection: refused.section)) programs, running the others")
                    continue
                }
                let isProgram = error.operation.hasPrefix("load program")
                let tail = isProgram ? (error.verifierLog ?? "").split(separator: "\n").suffix(6).map { "  verifier: \($0)" } : []
                throw ObjectCommandError("\(input.path): \(Self.firstLine(error))\(tail.isEmpty ? "" : "; the verifier log ends:")", detail: tail)
            } catch {
                throw ObjectCommandError("\(input.path): \(error)")
            }
        }
        object = loaded!
        for program in object.loadedPrograms {
            do {
                links.append(try program.attachBySection())
            } catch let error as BPFError {
                notices.append("cannot \(Self.firstLine(error))\(Self.hint(section: program.section, errno: error.errno))")
            } catch {
                notices.append("cannot attach program \(program.name): \(error)")
            }
        }
        self.notices = notices
        guard !links.isEmpty else {
            throw ObjectCommandError("\(input.path): no program could be attached: \(notices.joined(separator: "; "))")
        }
    }

    /// Detaches every program (the object's maps and programs go with the runner).
    func detach() {
        links.forEach { $0.close() }
    }

    private static func firstLine(_ error: BPFError) -> String {
        String(error.description.split(separator: "\n").first ?? "")
    }

    private static func hint(section: String, errno: Int32) -> String {
        let kind = kind(ofSection: section)
        if ["kprobe", "kretprobe", "ksyscall", "kretsyscall"].contains(kind) && errno == ENOENT {
            return "; this kernel has no kprobes (CONFIG_KPROBES), use a tracepoint"
        }
        if ["uprobe", "uretprobe"].contains(kind) && !section.contains(":") {
            return "; name the target in the section: SEC(\"\(kind)/PATH:FUNCTION\")"
        }
        if ["tracepoint", "tp"].contains(kind) && errno == ENOENT { return "; no such tracepoint in /sys/kernel/tracing/events" }
        return ""
    }
}

extension ObjectRunner {
    /// Reads events, samples maps and prints statistics until SIGINT/SIGTERM or `settings.duration`.
    func run(_ settings: ObjectRunSettings, output: ObjectOutput) throws(ObjectCommandError) {
        let meta = input.meta
        let statistics = try? BPFStatistics.enable()
        let start = ContinuousClock.now
        let baseline = object.loadedPrograms.map { (try? $0.runtimeStatistics()) }
        let printer = RecordPrinter(types: exportTypes, json: settings.json, header: settings.printHeader ?? meta.printHeader ?? true,
                                    output: output)
        let readers = try startReaders(printer)
        var samplers = makeSamplers(settings, start: start)
        let debug = settings.printKernelDebug ? KernelDebugReader(output: output) : nil

        let wake = DispatchSemaphore(value: 0)
        let requests = RunRequests()
        let signals = SignalHandlers([SIGINT, SIGTERM, SIGUSR1]) { signalNumber in
            if signalNumber == SIGUSR1 { requests.statistics.store(true, ordering: .releasing) } else { requests.stop.store(true, ordering: .releasing) }
            wake.signal()
        }
        defer { signals.cancel() }

        for notice in notices { output.err("tracer object: \(notice)\n") }
        let outputs = input.object.maps.filter { $0.isEventOutput && !$0.isInternal }.map(\.name)
        var summary = "tracer object: \(input.object.name): \(links.count) of \(input.object.programs.count) programs attached"
        if !outputs.isEmpty { summary += ", events from \(outputs.joined(separator: ", "))" }
        if !samplers.isEmpty { summary += ", sampling \(samplers.map(\.name).joined(separator: ", "))" }
        if statistics == nil { summary += " (program statistics unavailable: BPF_ENABLE_STATS refused)" }
        output.err(summary + "; SIGINT or SIGTERM stops, SIGUSR1 prints program statistics\n")

        let end = settings.duration.map { start + .milliseconds(Int64($0 * 1000)) }
        let statsEvery = settings.statsInterval.map { Duration.milliseconds(Int64(max(0.1, $0) * 1000)) }
        var nextStats = statsEvery.map { start + $0 }
        var failure: ObjectCommandError?
        loop: while true {
            let deadlines = samplers.map(\.next) + [end, nextStats].compactMap { $0 }
            if let next = deadlines.min() {
                let wait = max(.zero, next - .now)
                _ = wake.wait(timeout: .now() + .nanoseconds(Int(min(wait, .seconds(3600)).wholeMilliseconds * 1_000_000)))
            } else {
                wake.wait()
            }
            if requests.stop.load(ordering: .acquiring) { break }
            if let end, ContinuousClock.now >= end { break }
            if requests.statistics.exchange(false, ordering: .acquiringAndReleasing) {
                output.err(statisticsText(baseline: baseline, since: start, events: printer.events.load(ordering: .relaxed)))
            }
            if let due = nextStats, ContinuousClock.now >= due, let statsEvery {
                output.err(statisticsText(baseline: baseline, since: start, events: printer.events.load(ordering: .relaxed)))
                nextStats = due + statsEvery
            }
            for index in samplers.indices where ContinuousClock.now >= samplers[index].next {
                do { try samplers[index].sample(output: output, json: settings.json) } catch {
                    failure = ObjectCommandError("\(input.path): sampling map \(samplers[index].name): \(error)")
                    break loop
                }
                samplers[index].next += samplers[index].interval
            }
        }
        detach()
        readers.forEach { $0.stop() }
        debug?.stop()
        if failure == nil {
            for index in samplers.indices where samplers[index].sampledSince(ContinuousClock.now) {
                do { try samplers[index].sample(output: output, json: settings.json) } catch {
                    failure = ObjectCommandError("\(input.path): sampling map \(samplers[index].name): \(error)")
                }
            }
        }
        let lost = readers.reduce(0) { $0 + $1.statistics.lostSamples }
        output.err(statisticsText(baseline: baseline, since: start, events: printer.events.load(ordering: .relaxed), lost: lost))
        withExtendedLifetime(statistics) {}
        if let failure { throw failure }
    }

    /// One reader per ring buffer and perf event array of the object, each handing its records to `printer`
    /// (ring buffers drained at the poll timeout, perf buffers at perf_buffer_time_ms with perf_buffer_pages).
    func startReaders(_ printer: RecordPrinter) throws(ObjectCommandError) -> [any EventReader] {
        let meta = input.meta
        var readers: [any EventReader] = []
        let drain = Duration.milliseconds(max(1, min(1000, meta.pollTimeoutMs ?? 100)))
        for map in input.object.maps where map.isEventOutput && !map.isInternal {
            do {
                let live = try object.map(BPFMapName(map.name))
                let handler: @Sendable (EventBatch) -> Void = { batch in printer.print(batch) }
                readers.append(map.type == 27 ? try RingBufferReader(map: live, drainInterval: drain, handler: handler)
                               : try PerfBufferReader(map: live, pagesPerCPU: max(1, meta.perfBufferPages ?? 64),
                                                      drainInterval: .milliseconds(max(1, min(1000, meta.perfBufferTimeMs ?? meta.pollTimeoutMs ?? 100))),
                                                      handler: handler))
            } catch {
                readers.forEach { $0.stop() }
                detach()
                throw ObjectCommandError("\(input.path): \(error)")
            }
        }
        return readers
    }

    /// The event structs, from the meta's export types or the object's pointer globals.
    var exportTypes: [BTFType] {
        let named = (input.meta.exportTypes ?? []).compactMap { input.object.structType(named: $0.name) }
        return named.isEmpty ? input.object.exportTypes.map(\.type) : named
    }

    private func makeSamplers(_ settings: ObjectRunSettings, start: ContinuousClock.Instant) -> [MapSampler] {
        (input.meta.bpfSkel.maps ?? []).compactMap { entry -> MapSampler? in
            guard let sample = entry.sample, let info = input.object.maps.first(where: { $0.name == entry.name }),
                  let live = try? object.map(BPFMapName(entry.name)) else { return nil }
            let milliseconds = settings.interval.map { Int64(max(0.01, $0) * 1000) } ?? Int64(sample.interval ?? 1000)
            return MapSampler(map: live, info: info, kind: sample.type ?? "default_kv", unit: sample.unit, clear: sample.clearMap ?? false,
                              interval: .milliseconds(milliseconds), next: start + .milliseconds(milliseconds))
        }
    }

    /// Run count, average run time, CPU share and runs per second of each program since `since`, and the
    /// events read (`bpf_prog_info.run_cnt`/`run_time_ns`, counted while `BPF_ENABLE_STATS` is on, Linux 5.8).
    func statisticsText(baseline: [ProgramStatistics?], since start: ContinuousClock.Instant, events: UInt64, lost: UInt64 = 0) -> String {
        let elapsed = max(1e-9, Double((ContinuousClock.now - start).wholeMilliseconds) / 1000)
        let pad = ObjectPrinters.pad
        var text = "program statistics after \(String(format: "%.1f", elapsed)) s:\n"
        text += "  " + pad("PROGRAM", 24, false) + pad("RUNS", 12, true) + pad("AVG NS", 12, true) + pad("CPU %", 9, true) + pad("RUNS/S", 12, true) + "\n"
        for (index, program) in object.loadedPrograms.enumerated() {
            guard let now = try? program.runtimeStatistics() else { continue }
            let before = index < baseline.count ? baseline[index] : nil
            let runs = now.runCount &- (before?.runCount ?? 0)
            let nanoseconds = now.runTimeNanoseconds &- (before?.runTimeNanoseconds ?? 0)
            let average = runs == 0 ? 0 : Double(nanoseconds) / Double(runs)
            text += "  " + pad(program.name.rawValue, 24, false) + pad(String(runs), 12, true) + pad(String(format: "%.0f", average), 12, true)
                + pad(String(format: "%.3f", Double(nanoseconds) / (elapsed * 1e9) * 100), 9, true)
                + pad(String(format: "%.1f", Double(runs) / elapsed), 12, true) + "\n"
        }
        text += "  events: \(events) (\(String(format: "%.1f", Double(events) / elapsed))/s)\(lost > 0 ? ", \(lost) lost" : "")\n"
        return text
    }
}

/// What the signal handlers ask of the main loop.
private final class RunRequests: Sendable {
    let stop = Atomic<Bool>(false)
    let statistics = Atomic<Bool>(false)
}

/// Prints event records through the export type that fits them.
final class RecordPrinter: Sendable {
    private let types: [BTFType]
    private let json: Bool
    private let output: ObjectOutput
    /// Records printed so far.
    let events = Atomic<UInt64>(0)
    private let headerPending: Atomic<Bool>

    /// Set beside the agent: each record is labelled with its object (`{"object":NAME,"record":{...}}`).
    private let objectName: String?

    /// Only counts records (the agent with `--print none`), and hands them to `logs`.
    private let silent: Bool

    /// Beside the agent with OTLP export: each record also becomes a log record.
    private let logs: ObjectLogs?

    init(types: [BTFType], json: Bool, header: Bool, output: ObjectOutput, objectName: String? = nil, silent: Bool = false,
         logs: ObjectLogs? = nil) {
        self.silent = silent
        self.logs = logs
        self.types = types
        self.json = json
        self.output = output
        self.objectName = objectName
        headerPending = Atomic(header && !json && objectName == nil)
    }

    /// The export type for a record of `size` bytes: the one of that size, else the largest that fits.
    func type(forSize size: Int) -> BTFType? {
        types.first { $0.size == size } ?? types.filter { $0.size <= size }.max { $0.size < $1.size } ?? types.first
    }

    func print(_ batch: EventBatch) {
        if silent && logs == nil {
            events.add(UInt64(batch.count), ordering: .relaxed)
            return
        }
        var text = ""
        var logRecords: [LogRecord] = []
        let now = Date()
        let time = ObjectPrinters.clockTime(now)
        for record in batch {
            guard let type = type(forSize: record.count) else {
                if let logs { logRecords.append(logs.record(.bytes(Array(record)), type: nil, observed: now)) }
                if silent { continue }
                text += json ? "{\"bytes\":\(BTFValue.bytes(Array(record)).json)}\n" : "\(time) \(BTFValue.bytes(Array(record)).text)\n"
                continue
            }
            let value = BTFValue(type, in: record)
            if let logs { logRecords.append(logs.record(value, type: type, observed: now)) }
            if silent { continue }
            if headerPending.exchange(false, ordering: .relaxed) { text += ObjectPrinters.header(for: type) + "\n" }
            if let objectName {
                text += json ? "{\"object\":\(jsonString(objectName)),\"record\":\(value.json)}\n" : "\(time) \(objectName) \(value.text)\n"
            } else {
                text += json ? value.json + "\n" : ObjectPrinters.textRecord(value, type: type, time: time) + "\n"
            }
        }
        events.add(UInt64(batch.count), ordering: .relaxed)
        if let logs, !logRecords.isEmpty { logs.sink.consume(logRecords) }
        if !text.isEmpty { output.out(text) }
    }
}
