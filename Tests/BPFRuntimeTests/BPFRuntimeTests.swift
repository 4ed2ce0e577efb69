import BPFPrograms
import BPFRuntime
import CTracerABI
import Foundation
import Synchronization
import TestSupport
import XCTest

typealias Selftest = BPFPrograms.Selftest

/// Decoded self-test events, collected from the reader thread.
final class CollectedEvents: Sendable {
    private let events = Mutex<[selftest_event]>([])

    /// A reader handler that decodes every event (after a length check) into this collection.
    var handler: @Sendable (EventBatch) -> Void {
        { [self] batch in
            let decoded = batch.compactMap { bytes -> selftest_event? in
                bytes.count >= MemoryLayout<selftest_event>.size ? bytes.loadUnaligned(as: selftest_event.self) : nil
            }
            events.withLock { $0.append(contentsOf: decoded) }
        }
    }

    var all: [selftest_event] { events.withLock { $0 } }

    func matching(type: Int32, pid: Int32) -> [selftest_event] {
        all.filter { $0.header.type == UInt32(type) && $0.header.pid == UInt32(pid) }
    }
}

/// CPUs the kernel may bring online, from /sys/devices/system/cpu/possible (e.g. `0-1`).
func possibleCPUs() throws -> Int {
    let text = try String(contentsOfFile: "/sys/devices/system/cpu/possible", encoding: .utf8)
    return text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ",").reduce(0) { total, range in
        let bounds = range.split(separator: "-").compactMap { Int($0) }
        return total + (bounds.count == 2 ? bounds[1] - bounds[0] + 1 : 1)
    }
}

final class BPFRuntimeTests: XCTestCase {
    private func loadSelftest(_ programs: Set<BPFProgramName>, channel: EventChannel, uprobeMulti: Set<BPFProgramName> = [],
                              configure: (inout BPFObjectSpec) -> Void = { _ in }) throws -> BPFObject {
        var spec = BPFObjectSpec(Selftest.object, programs: programs)
        spec.uprobeMultiPrograms = uprobeMulti
        channel.use(in: &spec)
        configure(&spec)
        return try spec.load()
    }

    func testTracepointEventsArriveThroughTheReaderWithoutWakeups() throws {
        try requireBPF()
        let channel = try EventChannel()
        try channel.allow(pid: getpid())
        let object = try loadSelftest([Selftest.Program.selftestTracepoint], channel: channel)
        let link = try object.program(Selftest.Program.selftestTracepoint).attachTracepoint(category: "syscalls", event: "sys_enter_getppid")
        let collected = CollectedEvents()
        let reader = try channel.startReader(drainInterval: .milliseconds(10), handler: collected.handler)
        defer { reader.stop() }

        for _ in 0..<25 { _ = getppid() }
        // 25 events of 64 bytes stay far below the wakeup threshold: only the reader's timer delivers them.
        XCTAssertTrue(waitUntil { collected.matching(type: SELFTEST_EVENT_TRACEPOINT, pid: getpid()).count == 25 },
                      "got \(collected.matching(type: SELFTEST_EVENT_TRACEPOINT, pid: getpid()).count) of 25 events")
        let event = try XCTUnwrap(collected.matching(type: SELFTEST_EVENT_TRACEPOINT, pid: getpid()).first)
        XCTAssertGreaterThan(event.header.timestamp_ns, 0)
        let comm = withUnsafeBytes(of: event.comm) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        XCTAssertFalse(comm.isEmpty)

        link.close()
        XCTAssertFalse(link.isAttached)
        let before = collected.all.count
        for _ in 0..<10 { _ = getppid() }
        usleep(50_000)
        XCTAssertEqual(collected.all.count, before, "events after the link was closed")
        XCTAssertGreaterThanOrEqual(reader.statistics.events, 25)
        XCTAssertEqual(try channel.kernelDrops(), 0)
    }

    func testPIDFilterLetsOnlyAllowedProcessesEmit() throws {
        try requireBPF()
        let channel = try EventChannel()
        var spec = BPFObjectSpec(Selftest.object, programs: [Selftest.Program.selftestRawTracepoint])
        channel.use(in: &spec, pidMask: 0b10) // this object is tracer #1
        let object = try spec.load()
        let link = try object.program(Selftest.Program.selftestRawTracepoint).attachRawTracepoint("sys_enter")
        defer { link.close() }
        let collected = CollectedEvents()
        let reader = try channel.startReader(drainInterval: .milliseconds(10), handler: collected.handler)
        defer { reader.stop() }

        for _ in 0..<5 { _ = getppid() }
        try channel.allow(pid: getpid(), tracers: 0b01) // allowed for another tracer only
        for _ in 0..<5 { _ = getppid() }
        try channel.allow(pid: getpid(), tracers: 0b11)
        for _ in 0..<7 { _ = getppid() }
        try channel.block(pid: getpid())
        for _ in 0..<5 { _ = getppid() }
        XCTAssertTrue(waitUntil { collected.matching(type: SELFTEST_EVENT_TRACEPOINT, pid: getpid()).count >= 7 })
        usleep(50_000)
        XCTAssertEqual(collected.matching(type: SELFTEST_EVENT_TRACEPOINT, pid: getpid()).count, 7)
        XCTAssertEqual(Set(collected.all.map(\.header.pid)), [UInt32(getpid())], "only the allowed process emits")
        try channel.forget(pid: getpid())
        XCTAssertNil(try channel.pids.lookup(UInt32(getpid()), as: UInt32.self))
    }

    func testUprobeAndUretprobeOnAHelperBinary() throws {
        try requireBPF()
        let target = try UprobeTargetProcess(directory: try temporaryDirectory(self))
        let channel = try EventChannel()
        try channel.allow(pid: target.pid)
        let object = try loadSelftest([Selftest.Program.selftestUprobe, Selftest.Program.selftestUretprobe], channel: channel)
        let entry = try object.program(Selftest.Program.selftestUprobe)
            .attachUprobe(path: target.binary.path, offset: target.offsets[3], pid: target.pid, cookie: 42)
        let exit = try object.program(Selftest.Program.selftestUretprobe)
            .attachUprobe(path: target.binary.path, offset: target.offsets[3], pid: target.pid, returnProbe: true)
        defer { entry.close(); exit.close() }
        let collected = CollectedEvents()
        let reader = try channel.startReader(drainInterval: .milliseconds(10), handler: collected.handler)
        defer { reader.stop() }

        try target.call(3, times: 3, argument: 7)
        try target.call(4, times: 2, argument: 7) // not probed
        XCTAssertTrue(waitUntil { collected.matching(type: SELFTEST_EVENT_URETPROBE, pid: target.pid).count == 3 })
        let entries = collected.matching(type: SELFTEST_EVENT_UPROBE, pid: target.pid)
        XCTAssertEqual(entries.count, 3)
        XCTAssertEqual(Set(entries.map(\.value)), [7], "first argument")
        XCTAssertEqual(Set(entries.map(\.cookie)), [42], "attach cookie")
        XCTAssertEqual(Set(collected.matching(type: SELFTEST_EVENT_URETPROBE, pid: target.pid).map(\.value)), [17], "return value 2*7+3")
    }

    func testUprobeMultiAttachesFiftyOffsetsInOneLinkAndDetaches() throws {
        try requireBPF()
        let target = try UprobeTargetProcess(directory: try temporaryDirectory(self))
        let channel = try EventChannel()
        try channel.allow(pid: target.pid)
        let program = Selftest.Program.selftestUprobeMulti
        let object = try loadSelftest([program], channel: channel, uprobeMulti: [program])
        let cookies = (0..<UInt64(UprobeTargetProcess.functionCount)).map { $0 + 1000 }
        let linksBefore = openBPFDescriptors("bpf_link")
        let link = try object.program(program).attachUprobeMulti(path: target.binary.path, offsets: target.offsets, cookies: cookies)
        XCTAssertEqual(openBPFDescriptors("bpf_link"), linksBefore + 1, "one link for all offsets")
        XCTAssertNotNil(link.kernelID)
        let collected = CollectedEvents()
        let reader = try channel.startReader(drainInterval: .milliseconds(10), handler: collected.handler)
        defer { reader.stop() }

        for index in 0..<UprobeTargetProcess.functionCount { try target.call(index, argument: UInt64(index)) }
        XCTAssertTrue(waitUntil { collected.matching(type: SELFTEST_EVENT_UPROBE_MULTI, pid: target.pid).count == cookies.count })
        let events = collected.matching(type: SELFTEST_EVENT_UPROBE_MULTI, pid: target.pid)
        XCTAssertEqual(Set(events.map(\.cookie)), Set(cookies))
        XCTAssertTrue(events.allSatisfy { $0.cookie == $0.value + 1000 }, "each cookie names the function that fired")

        link.close()
        XCTAssertEqual(openBPFDescriptors("bpf_link"), linksBefore)
        try target.call(0, times: 5)
        usleep(50_000)
        XCTAssertEqual(collected.matching(type: SELFTEST_EVENT_UPROBE_MULTI, pid: target.pid).count, cookies.count, "no events after detach")
    }

    func testMapCRUDIterationAndBatch() throws {
        try requireBPF()
        let map = try BPFMap(create: .hash, name: "test_hash", keySize: 4, valueSize: 8, maxEntries: 1024)
        for key in UInt32(0)..<600 { try map.update(key, UInt64(key) * 10) }
        XCTAssertEqual(try map.lookup(UInt32(42), as: UInt64.self), 420)
        XCTAssertNil(try map.lookup(UInt32(9999), as: UInt64.self))
        try map.update(UInt32(42), UInt64(7))
        XCTAssertEqual(try map.lookup(UInt32(42), as: UInt64.self), 7)
        XCTAssertTrue(try map.delete(UInt32(42)))
        XCTAssertFalse(try map.delete(UInt32(42)))
        XCTAssertEqual(Set(try map.keys(as: UInt32.self)), Set(UInt32(0)..<600).subtracting([42]))
        let entries = try map.entries(as: (UInt32, UInt64).self) // several 256-entry batches
        XCTAssertEqual(entries.count, 599)
        XCTAssertTrue(entries.allSatisfy { UInt64($0.0) * 10 == $0.1 })
        XCTAssertThrowsError(try map.update(UInt64(1), UInt64(1))) { error in
            XCTAssertTrue("\(error)".contains("test_hash"), "\(error)")
        }

        let perCPU = try BPFMap(create: .percpuArray, name: "test_percpu", keySize: 4, valueSize: 8, maxEntries: 1)
        let values = try XCTUnwrap(perCPU.lookupPerCPU(UInt32(0), as: UInt64.self))
        XCTAssertEqual(values.count, try possibleCPUs())
        XCTAssertTrue(values.allSatisfy { $0 == 0 })
    }

    /// A pinned map is the same kernel object (bpftool finds it by the pin, with its name and size), and the
    /// pin leaves with `unpin`.
    func testMapPinAndUnpin() throws {
        try requireBPF()
        let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        guard mounts.split(separator: "\n").contains(where: { $0.split(separator: " ").dropFirst().prefix(2) == ["/sys/fs/bpf", "bpf"] }) else {
            try prerequisiteMissing("bpffs", "bpffs is not mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)", requiredBy: "TRACER_REQUIRE_BPF")
        }
        try requireExecutable("/usr/sbin/bpftool", package: "bpftool")
        let map = try BPFMap(create: .hash, name: "test_pin", keySize: 4, valueSize: 8, maxEntries: 77)
        let pin = "/sys/fs/bpf/tracer-test-\(getpid())"
        try map.pin(at: pin)
        addTeardownBlock { unlink(pin) }
        let shown = try TestSupport.run("/usr/sbin/bpftool", ["-j", "map", "show", "pinned", pin])
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(shown.utf8)) as? [String: Any], shown)
        XCTAssertEqual(object["name"] as? String, "test_pin")
        XCTAssertEqual(object["max_entries"] as? Int, 77)
        XCTAssertEqual(object["type"] as? String, "hash")
        try map.unpin(at: pin)
        XCTAssertFalse(FileManager.default.fileExists(atPath: pin))
        XCTAssertThrowsError(try TestSupport.run("/usr/sbin/bpftool", ["map", "show", "pinned", pin]), "the pin is gone")
    }

    func testSettingsGlobalsAndKernelDropsWhenATinyRingIsFlooded() throws {
        try requireBPF()
        let channel = try EventChannel(.init(transport: .ringBuffer(bytes: 4096), wakeupBytes: 1 << 20, filterPIDs: false))
        let object = try loadSelftest([Selftest.Program.selftestFlood], channel: channel) { spec in
            spec.set(Selftest.Global.floodCount, to: UInt32(200))
        }
        let flood = try object.program(Selftest.Program.selftestFlood)
        try flood.testRun()
        // 4096 bytes hold 56 records of 64 + 8 bytes; the rest of the 200 must be counted as drops.
        let drops = try channel.kernelDrops()
        XCTAssertGreaterThan(drops, 0)
        let collected = CollectedEvents()
        let reader = try channel.startReader(drainInterval: .milliseconds(10), handler: collected.handler)
        XCTAssertTrue(waitUntil { UInt64(collected.all.count) + drops == 200 }, "\(collected.all.count) read + \(drops) dropped")
        reader.stop()
        XCTAssertEqual(collected.all.map(\.value).first, 200, "flood_count global reached the program")
        XCTAssertEqual(collected.all.map(\.sequence), (0..<UInt64(collected.all.count)).map { $0 }, "in order")
    }

    func testPerfBufferFallbackDeliversEvents() throws {
        try requireBPF()
        let channel = try EventChannel(.init(transport: .perfBuffer(pagesPerCPU: 8)))
        try channel.allow(pid: getpid())
        let object = try loadSelftest([Selftest.Program.selftestTracepoint], channel: channel)
        let link = try object.program(Selftest.Program.selftestTracepoint).attachTracepoint(category: "syscalls", event: "sys_enter_getppid")
        defer { link.close() }
        let collected = CollectedEvents()
        let reader = try channel.startReader(drainInterval: .milliseconds(10), handler: collected.handler)
        defer { reader.stop() }
        for _ in 0..<20 { _ = getppid() }
        XCTAssertTrue(waitUntil { collected.matching(type: SELFTEST_EVENT_TRACEPOINT, pid: getpid()).count == 20 }, "got \(collected.all.count) events, \(try! channel.kernelDrops()) drops, \(reader.statistics)")
        XCTAssertEqual(reader.statistics.lostSamples, 0)
        XCTAssertTrue(reader is PerfBufferReader)
    }

    func testRejectedProgramNamesItselfWithTheVerifierLogAndLeavesNothingLoaded() throws {
        try requireBPF()
        let programsBefore = openBPFDescriptors("bpf-prog")
        let channel = try EventChannel()
        let mapsWithChannel = openBPFDescriptors("bpf-map")
        XCTAssertThrowsError(try loadSelftest([Selftest.Program.selftestTracepoint, Selftest.Program.selftestRejected], channel: channel)) { error in
            let error = error as! BPFError
            XCTAssertTrue(error.operation.contains("selftest_rejected"), error.operation)
            XCTAssertTrue(error.operation.contains("selftest"), error.operation)
            XCTAssertEqual(error.errno, EACCES)
            let log = error.verifierLog ?? ""
            XCTAssertTrue(log.contains("invalid mem access") || log.contains("map_value_or_null"), log)
            XCTAssertTrue("\(error)".contains("verifier log"))
        }
        XCTAssertEqual(openBPFDescriptors("bpf-prog"), programsBefore, "no program left loaded")
        XCTAssertEqual(openBPFDescriptors("bpf-map"), mapsWithChannel, "no map of the object left behind")
    }

    func testAGroupWithOneFailingAttachLeavesNothingAttached() throws {
        try requireBPF()
        let target = try UprobeTargetProcess(directory: try temporaryDirectory(self))
        let channel = try EventChannel()
        let object = try loadSelftest([Selftest.Program.selftestTracepoint, Selftest.Program.selftestUprobe], channel: channel)
        let tracepoint = try object.program(Selftest.Program.selftestTracepoint)
        let uprobe = try object.program(Selftest.Program.selftestUprobe)
        let linksBefore = openBPFDescriptors("bpf_link") + openBPFDescriptors("perf_event")
        XCTAssertThrowsError(try BPFLinkGroup(attaching: [
            { try tracepoint.attachTracepoint(category: "syscalls", event: "sys_enter_getppid") },
            { try uprobe.attachUprobe(path: target.binary.path, offset: target.offsets[0]) },
            { try uprobe.attachUprobe(path: "/nonexistent/binary", offset: 0x1000) },
        ])) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/binary"), "\(error)")
            XCTAssertTrue("\(error)".contains("ENOENT"), "\(error)")
        }
        XCTAssertEqual(openBPFDescriptors("bpf_link") + openBPFDescriptors("perf_event"), linksBefore, "everything detached")
    }

    func testBadUprobeTargetsFailBeforeAttaching() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let target = try UprobeTargetProcess(directory: directory)
        let channel = try EventChannel()
        let object = try loadSelftest([Selftest.Program.selftestUprobe], channel: channel)
        let uprobe = try object.program(Selftest.Program.selftestUprobe)
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: target.binary.path)[.size] as? UInt64)
        XCTAssertThrowsError(try uprobe.attachUprobe(path: target.binary.path, offset: size + 4096)) { error in
            XCTAssertTrue("\(error)".contains("outside every executable segment"), "\(error)")
        }
        XCTAssertThrowsError(try uprobe.attachUprobe(path: target.binary.path, offset: 0)) { error in
            XCTAssertTrue("\(error)".contains("outside every executable segment"), "ELF header is not code: \(error)")
        }
        let text = directory.appendingPathComponent("not-elf.txt")
        try "hello".write(to: text, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try uprobe.attachUprobe(path: text.path, offset: 0)) { error in
            XCTAssertTrue("\(error)".contains("not an ELF file"), "\(error)")
        }
        XCTAssertThrowsError(try uprobe.attachUprobe(path: directory.appendingPathComponent("missing").path, offset: 0)) { error in
            XCTAssertEqual((error as? BPFError)?.errno, ENOENT)
        }
    }

    func testKprobesFailWithAClearErrorWhereTheKernelHasNone() throws {
        try requireBPF()
        guard !KernelFeatures.detect().isAvailable(.kprobe) else {
            try skipOrFail(kind: "no-kprobes", reason: "this kernel has kprobes", requiredBy: "TRACER_EXPECT_NO_KPROBES", file: #filePath, line: #line)
        }
        var spec = BPFObjectSpec(BPFPrograms.Features.object, programs: [BPFPrograms.Features.Program.probeKprobe])
        spec.skippedMaps = [BPFPrograms.Features.Map.probeRingbuf]
        let program = try spec.load().program(BPFPrograms.Features.Program.probeKprobe)
        XCTAssertThrowsError(try program.attachKprobe(function: "tcp_sendmsg")) { error in
            XCTAssertEqual((error as? BPFError)?.errno, ENOENT)
            XCTAssertTrue("\(error)".contains("kprobe probe_kprobe on tcp_sendmsg"), "\(error)")
        }
    }

    func testRunTimeStatisticsCountRuns() throws {
        try requireBPF()
        let statistics = try BPFStatistics.enable()
        defer { _ = statistics }
        let channel = try EventChannel(.init(filterPIDs: false))
        let object = try loadSelftest([Selftest.Program.selftestFlood], channel: channel)
        let flood = try object.program(Selftest.Program.selftestFlood)
        for _ in 0..<5 { try flood.testRun() }
        let stats = try flood.runtimeStatistics()
        XCTAssertEqual(stats.program, Selftest.Program.selftestFlood)
        XCTAssertGreaterThanOrEqual(stats.runCount, 5)
        XCTAssertGreaterThan(stats.runTimeNanoseconds, 0)
    }

    func testKernelFeatureProbeMatchesThisKernel() throws {
        try requireBPF()
        let features = KernelFeatures.detect()
        for id in [FeatureID.btf, .ringBuffer, .uprobe, .uprobeMulti, .tracepoint, .rawTracepoint] {
            XCTAssertTrue(features.isAvailable(id), "\(id) should be available here: \(features.features.first { $0.id == id }!.detail)")
        }
        // The machines this project runs on (PLATFORM.md) have no kprobes or fentry; elsewhere they may.
        if ProcessInfo.processInfo.environment["TRACER_EXPECT_NO_KPROBES"] == "1" {
            XCTAssertFalse(features.isAvailable(.kprobe))
            XCTAssertFalse(features.isAvailable(.fentry))
        }
        if features.lockdown == "integrity" || features.lockdown == "confidentiality" {
            XCTAssertFalse(features.isAvailable(.probeWriteUser), "lockdown forbids bpf_probe_write_user")
        }
        XCTAssertEqual(KernelFeatures.detect(), features, "cached")
    }
}
