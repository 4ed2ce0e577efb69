import BPFPrograms
import BPFRuntime
import CBenchTargets
import CTracerABI
import Foundation
import Synchronization

/// Benchmarks of the BPF runtime (issue 2), each printed side by side with its baseline from the same run.
/// Run as root: `swift run -c release TracerBenchmarks [reader|submit|detach]...`.
typealias Selftest = BPFPrograms.Selftest

func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1e3 + Double(duration.components.attoseconds) / 1e15
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): the uprobe's handling is charged to the traced
/// thread, and time the thread spends preempted by other work on this shared machine is not.
func threadCPUNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted[sorted.count / 2]
}

func format(_ value: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", value) }

/// The file offset of a function of this binary, as a uprobe takes it: address − mapping start + mapping offset.
func fileOffset(of address: UnsafeRawPointer) throws -> (path: String, offset: UInt64) {
    let maps = try String(contentsOfFile: "/proc/self/maps", encoding: .utf8)
    let value = UInt64(UInt(bitPattern: address))
    for line in maps.split(separator: "\n") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 6 else { continue }
        let range = fields[0].split(separator: "-").compactMap { UInt64($0, radix: 16) }
        guard range.count == 2, value >= range[0], value < range[1], let offset = UInt64(fields[2], radix: 16) else { continue }
        return (String(fields[5]), value - range[0] + offset)
    }
    throw BPFError("find \(address) in /proc/self/maps", errno: ENOENT)
}

func load(_ programs: Set<BPFProgramName>, channel: EventChannel, uprobeMulti: Set<BPFProgramName> = [],
          floodCount: UInt32? = nil) throws -> BPFObject {
    var spec = BPFObjectSpec(Selftest.object, programs: programs)
    spec.uprobeMultiPrograms = uprobeMulti
    channel.use(in: &spec)
    if let floodCount { spec.set(Selftest.Global.floodCount, to: floodCount) }
    return try spec.load()
}

/// Ring-buffer reader throughput: a 64 MiB ring is filled with 64-byte events by a BPF program, then one
/// reader thread drains it into a batch consumer that reads every event. Baseline: the kernel-side producer.
func benchmarkReader() throws {
    print("== ring-buffer reader: 64-byte events delivered to a batch consumer (one reader thread) ==")
    let ringBytes: UInt32 = 64 << 20
    let channel = try EventChannel(.init(transport: .ringBuffer(bytes: ringBytes), wakeupBytes: UInt64(ringBytes), filterPIDs: false))
    let object = try load([Selftest.Program.selftestFlood], channel: channel, floodCount: 1024)
    let flood = try object.program(Selftest.Program.selftestFlood)
    let runs = Int(ringBytes) / (72 * 1024) - 10
    let expected = runs * 1024
    var rates: [Double] = [], producerRates: [Double] = []
    for round in 1...5 {
        let produceStart = ContinuousClock.now
        for _ in 0..<runs { try flood.testRun() }
        let produced = ContinuousClock.now - produceStart
        let delivered = Atomic<Int>(0)
        let checksum = Atomic<UInt64>(0)
        let done = DispatchSemaphore(value: 0)
        let start = ContinuousClock.now
        let reader = try channel.startReader(drainInterval: .milliseconds(5)) { batch in
            var sum: UInt64 = 0
            for event in batch where event.count >= MemoryLayout<selftest_event>.size {
                sum &+= event.loadUnaligned(fromByteOffset: MemoryLayout<tracer_event_header>.size + 16, as: UInt64.self)
            }
            checksum.add(sum, ordering: .relaxed)
            if delivered.add(batch.count, ordering: .relaxed).newValue >= expected { done.signal() }
        }
        done.wait()
        let elapsed = ContinuousClock.now - start
        reader.stop()
        let rate = Double(expected) / (milliseconds(elapsed) / 1e3)
        let producerRate = Double(expected) / (milliseconds(produced) / 1e3)
        rates.append(rate)
        producerRates.append(producerRate)
        print("round \(round): \(expected) events drained in \(format(milliseconds(elapsed))) ms = \(format(rate / 1e6)) M events/s (BPF producer: \(format(producerRate / 1e6)) M events/s), drops \(try channel.kernelDrops())")
    }
    print("median: reader \(format(median(rates) / 1e6)) M events/s; producer baseline \(format(median(producerRates) / 1e6)) M events/s; target >= 5 M events/s")
}

/// Cost a traced thread pays per event: a uprobe on a function of this binary, with (a) no probe, (b) an
/// empty program, (c) a 64-byte event with the project's submit policy (no wakeup per event, a forced one past
/// the threshold), (d) the same event never waking the reader, to isolate the policy's own share, (e) the
/// same event with a wakeup per event. A reader drains on its timer throughout. Variants interleave per round;
/// each is timed in the calling thread's CPU time.
func benchmarkSubmit() throws {
    print("== cost per traced call: uprobe + event submit policy ==")
    let (path, offset) = try fileOffset(of: tracer_bench_target_address(0))
    let channel = try EventChannel(.init(transport: .ringBuffer(bytes: 16 << 20), wakeupBytes: 256 << 10, filterPIDs: false))
    let variants: [(String, BPFProgramName?)] = [
        ("no probe", nil),
        ("empty uprobe program", Selftest.Program.selftestEmptyUprobe),
        ("event, project policy (NO_WAKEUP + threshold)", Selftest.Program.selftestUprobePolicy),
        ("event, never waking the reader", Selftest.Program.selftestUprobeNeverWake),
        ("event, wakeup per event", Selftest.Program.selftestUprobeWakeupEach),
    ]
    let object = try load(Set(variants.compactMap(\.1)), channel: channel)
    let statistics = try BPFStatistics.enable()
    defer { _ = statistics }
    let events = Atomic<Int>(0)
    let reader = try channel.startReader { batch in events.add(batch.count, ordering: .relaxed) }
    defer { reader.stop() }
    let calls: UInt64 = 20_000
    var perCall = [[Double]](repeating: [], count: variants.count)
    for _ in 1...15 {
        for (index, variant) in variants.enumerated() {
            let link = try variant.1.map { try object.program($0).attachUprobe(path: path, offset: offset) }
            _ = tracer_bench_call(0, 200) // warm up
            let start = threadCPUNanoseconds()
            _ = tracer_bench_call(0, calls)
            perCall[index].append(Double(threadCPUNanoseconds() - start) / Double(calls))
            link?.close()
        }
    }
    let medians = perCall.map(median)
    let probeCost = medians.map { $0 - medians[0] }
    for (index, variant) in variants.enumerated() {
        var line = "\(variant.0): \(format(medians[index])) ns CPU per call"
        if index > 0 { line += ", probe cost \(format(probeCost[index])) ns" }
        if index > 1 { line += ", +\(format((probeCost[index] / probeCost[1] - 1) * 100, 1)) % vs empty program" }
        if let program = variant.1, let stats = try? object.program(program).runtimeStatistics() {
            line += " (BPF run time \(format(stats.averageNanoseconds, 0)) ns/run)"
        }
        print(line)
    }
    print("the wakeup policy's own share (policy − never waking): \(format((probeCost[2] - probeCost[3]) / probeCost[1] * 100, 1)) % of the empty program")
    print("events read: \(events.load(ordering: .relaxed)), kernel drops: \(try channel.kernelDrops()); target: project policy <= +15 % vs empty program")
}

/// Attaching and detaching 50 uprobes on one file: one perf-event link per offset (baseline) against one
/// uprobe_multi link for all 50 offsets.
func benchmarkDetach() throws {
    print("== 50 uprobes on one file: perf-event links vs one uprobe_multi link ==")
    let targets = try (0..<Int(TRACER_BENCH_TARGET_COUNT)).map { try fileOffset(of: tracer_bench_target_address(Int32($0))) }
    let path = targets[0].path
    let channel = try EventChannel(.init(filterPIDs: false))
    let object = try load([Selftest.Program.selftestEmptyUprobe, Selftest.Program.selftestUprobeMulti], channel: channel,
                          uprobeMulti: [Selftest.Program.selftestUprobeMulti])
    let single = try object.program(Selftest.Program.selftestEmptyUprobe)
    let multi = try object.program(Selftest.Program.selftestUprobeMulti)
    for round in 1...3 {
        var start = ContinuousClock.now
        let links = try targets.map { try single.attachUprobe(path: path, offset: $0.offset) }
        let perfAttach = ContinuousClock.now - start
        start = ContinuousClock.now
        links.forEach { $0.close() }
        let perfDetach = ContinuousClock.now - start

        start = ContinuousClock.now
        let link = try multi.attachUprobeMulti(path: path, offsets: targets.map(\.offset))
        let multiAttach = ContinuousClock.now - start
        start = ContinuousClock.now
        link.close()
        let multiDetach = ContinuousClock.now - start
        print("round \(round): perf-event links attach \(format(milliseconds(perfAttach))) ms, detach \(format(milliseconds(perfDetach))) ms | uprobe_multi attach \(format(milliseconds(multiAttach))) ms, detach \(format(milliseconds(multiDetach))) ms (target: detach <= 150 ms)")
    }
}

let selected = CommandLine.arguments.dropFirst()
let all: [(String, () throws -> Void)] = [
    ("reader", benchmarkReader), ("submit", benchmarkSubmit), ("detach", benchmarkDetach), ("discovery", benchmarkDiscovery),
]
for (name, benchmark) in all where selected.isEmpty || selected.contains(name) {
    do {
        try benchmark()
    } catch {
        print("benchmark \(name) failed: \(error)")
        exit(1)
    }
    print("")
}
