import BPFRuntime
import Foundation
import Telemetry
import TestSupport
import TracerFramework
import XCTest

/// The agent end to end: real processes selected by each criterion, probes attached once per file and
/// checked in the kernel's view (links, PID filter map), events turned into spans, exits detaching.
final class AgentTests: XCTestCase {
    private func startAgent(_ selection: Selection, tracer: SelftestTracer = SelftestTracer()) throws -> (Agent, CollectingSink) {
        let sink = CollectingSink()
        let agent = try Agent(.init(selection: selection, tracers: [tracer], sinks: [sink], rescanInterval: .seconds(1),
                                    drainInterval: .milliseconds(10)))
        try agent.start()
        addTeardownBlock { agent.stop() }
        return (agent, sink)
    }

    func testPIDSelectionAttachesOnceAndOnlyTheSelectedProcessEmits() throws {
        try requireBPF()
        let binary = try UprobeTargetProcess.build(in: try temporaryDirectory(self))
        let selectedTarget = try UprobeTargetProcess(binary: binary)
        let otherTarget = try UprobeTargetProcess(binary: binary)
        let (agent, sink) = try startAgent(Selection(rules: [SelectionRule(pids: [selectedTarget.pid], serviceName: "checkout")]))

        XCTAssertEqual(agent.selectedProcesses.map(\.pid), [selectedTarget.pid])
        let files = agent.attachedFiles()
        XCTAssertEqual(files.count, 1, "\(files)")
        XCTAssertEqual(files.first?.users, [selectedTarget.pid])
        XCTAssertEqual(files.first?.path, binary.path)
        let filter = try agent.pidFilterEntries()
        XCTAssertEqual(filter[selectedTarget.pid], true)
        XCTAssertNil(filter[otherTarget.pid])

        try selectedTarget.call(3, times: 4, argument: 9)
        try otherTarget.call(3, times: 6, argument: 9)
        XCTAssertTrue(waitUntil { sink.spans(named: "uprobe", pid: selectedTarget.pid).count == 4 })
        usleep(100_000)
        XCTAssertEqual(sink.spans(named: "uprobe", pid: selectedTarget.pid).count, 4, "exactly one span per call")
        XCTAssertEqual(sink.spans(named: "uprobe", pid: otherTarget.pid).count, 0, "an unselected process of the same binary")
        let span = try XCTUnwrap(sink.spans(named: "uprobe", pid: selectedTarget.pid).first)
        XCTAssertEqual(span.attributes["selftest.value"], .int(9))
        XCTAssertEqual(span.resource.serviceName, "checkout")
        XCTAssertEqual(span.resource.attributes[SemanticConventions.processPID], .int(Int64(selectedTarget.pid)))
        XCTAssertEqual(span.resource.attributes[SemanticConventions.processExecutableName], .string("uprobe-target"))
        XCTAssertGreaterThan(span.startTimeUnixNano, UInt64(Date().timeIntervalSince1970 - 60) * 1_000_000_000, "on the Unix clock")
    }

    func testTwoSelectedProcessesOfOneBinaryShareOneAttachment() throws {
        try requireBPF()
        let binary = try UprobeTargetProcess.build(in: try temporaryDirectory(self))
        let first = try UprobeTargetProcess(binary: binary), second = try UprobeTargetProcess(binary: binary)
        let (agent, sink) = try startAgent(Selection(rules: [SelectionRule(exePath: binary.path)]))
        let files = agent.attachedFiles()
        XCTAssertEqual(files.count, 1)
        XCTAssertEqual(files.first?.users, [first.pid, second.pid])

        try first.call(3, times: 5)
        try second.call(3, times: 2)
        XCTAssertTrue(waitUntil { sink.spans(named: "uprobe", pid: second.pid).count == 2 })
        usleep(100_000)
        XCTAssertEqual(sink.spans(named: "uprobe", pid: first.pid).count, 5, "no second consumer: one event per call")
        XCTAssertEqual(sink.spans(named: "uprobe", pid: second.pid).count, 2)

        first.stop()
        XCTAssertTrue(waitUntil { agent.attachedFiles().first?.users == [second.pid] }, "\(agent.attachedFiles())")
        XCTAssertNil(try agent.pidFilterEntries()[first.pid], "an exited PID leaves the filter")
        second.stop()
        XCTAssertTrue(waitUntil { agent.attachedFiles().isEmpty }, "the last process's exit detaches the file")
        XCTAssertTrue(agent.selectedProcesses.isEmpty)
    }

    func testSelectionByNameLanguageAndOpenPort() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = ["-m", "http.server", "0", "--bind", "127.0.0.1"]
        server.currentDirectoryURL = directory
        let output = Pipe()
        server.standardOutput = output
        server.standardError = FileHandle.nullDevice
        try server.run()
        addTeardownBlock { server.terminate(); server.waitUntilExit() }
        // "Serving HTTP on 127.0.0.1 port 41234 ..."
        var banner = ""
        XCTAssertTrue(waitUntil(timeout: 10) {
            banner += String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
            return banner.contains(" port ")
        })
        let port = try XCTUnwrap(banner.split(separator: " ").drop { $0 != "port" }.dropFirst().first.flatMap { UInt16($0) })
        let name = "ut-\(UInt32.random(in: 0..<1_000_000))"
        let target = try UprobeTargetProcess(binary: try UprobeTargetProcess.build(in: directory, name: name))

        let (byPort, _) = try startAgent(Selection(rules: [SelectionRule(openPorts: try PortRanges("\(port)"))]))
        XCTAssertEqual(byPort.selectedProcesses.map(\.pid), [server.processIdentifier])
        byPort.stop()

        let (byLanguage, _) = try startAgent(Selection(rules: [SelectionRule(language: .python)]))
        XCTAssertTrue(byLanguage.selectedProcesses.map(\.pid).contains(server.processIdentifier))
        XCTAssertFalse(byLanguage.selectedProcesses.map(\.pid).contains(target.pid))
        byLanguage.stop()

        let (byName, _) = try startAgent(Selection(rules: [SelectionRule(name: name)],
                                                    exclusions: [SelectionRule(pids: [server.processIdentifier])]))
        XCTAssertEqual(byName.selectedProcesses.map(\.pid), [target.pid])
        byName.stop()

        let (excluded, _) = try startAgent(Selection(rules: [SelectionRule(name: name)], exclusions: [SelectionRule(exePath: "*/\(name)")]))
        XCTAssertTrue(excluded.selectedProcesses.isEmpty, "an exclusion wins over a rule")
        excluded.stop()

        // Criteria of one rule must all match: its own cgroup selects it, another cgroup does not.
        let cgroup = try XCTUnwrap(String(contentsOfFile: "/proc/\(target.pid)/cgroup", encoding: .utf8).split(separator: ":").last)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let (byCgroup, _) = try startAgent(Selection(rules: [SelectionRule(name: name, cgroup: cgroup)]))
        XCTAssertEqual(byCgroup.selectedProcesses.map(\.pid), [target.pid], "cgroup \(cgroup)")
        byCgroup.stop()
        let (otherCgroup, _) = try startAgent(Selection(rules: [SelectionRule(name: name, cgroup: "/no/such/cgroup")]))
        XCTAssertTrue(otherCgroup.selectedProcesses.isEmpty)
    }

    func testNewProcessesAreSelectedFromExecEventsAndChildrenFollowTheirParent() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let binary = try UprobeTargetProcess.build(in: directory)
        let (agent, sink) = try startAgent(Selection(rules: [SelectionRule(exePath: binary.path)]))
        XCTAssertTrue(agent.selectedProcesses.isEmpty)

        let started = Date()
        let target = try UprobeTargetProcess(binary: binary, environment: ["OTEL_SERVICE_NAME": "from-env", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test"])
        XCTAssertTrue(waitUntil { agent.selectedProcesses.map(\.pid) == [target.pid] }, "selected from its exec event")
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        try target.call(3)
        XCTAssertTrue(waitUntil { sink.spans(named: "uprobe", pid: target.pid).count == 1 })
        let resource = try XCTUnwrap(sink.spans(named: "uprobe", pid: target.pid).first?.resource)
        XCTAssertEqual(resource.serviceName, "from-env", "the process's own OTEL_SERVICE_NAME wins")
        XCTAssertEqual(resource.attributes["deployment.environment"], .string("test"))

        // A child of a selected process is selected even though its executable does not match.
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/bin/sh")
        shell.arguments = ["-c", "sleep 30 & wait"]
        let (parentAgent, _) = try startAgent(Selection(rules: [SelectionRule(exePath: "/bin/sh"), SelectionRule(exePath: "/usr/bin/dash")]))
        try shell.run()
        addTeardownBlock { shell.terminate() }
        XCTAssertTrue(waitUntil {
            parentAgent.selectedProcesses.contains { $0.executable.hasSuffix("sleep") && parent(of: $0.pid) == shell.processIdentifier }
        }, "child selected: \(parentAgent.selectedProcesses.map(\.executable))")
    }

    func testSharedLibraryProbesAreReferenceCountedAcrossProcesses() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        try TestSupport.run("/usr/bin/cc", ["-shared", "-fPIC", "-O1", "-o", directory.appendingPathComponent("libtracertarget.so").path, "-x", "c", "-"],
                input: "#include <stdint.h>\n__attribute__((noinline)) uint64_t lib_target(uint64_t x) { __asm__ volatile(\"\" ::: \"memory\"); return x + 1; }\n")
        let user = try compileC(Self.libraryUser, name: "lib-user", in: directory,
                                flags: ["-L", directory.path, "-ltracertarget", "-Wl,-rpath,\(directory.path)"])
        let first = try UprobeTargetProcess(binary: user), second = try UprobeTargetProcess(binary: user)
        let tracer = SelftestTracer(libraryPrefix: "libtracertarget", functionSymbol: "main")
        let (agent, sink) = try startAgent(Selection(rules: [SelectionRule(exePath: user.path)]), tracer: tracer)
        let library = { agent.attachedFiles().first { $0.path.hasSuffix("libtracertarget.so") } }
        XCTAssertEqual(library()?.users, [first.pid, second.pid])

        try first.call(0, times: 3, argument: 41)
        XCTAssertTrue(waitUntil { sink.spans(named: "uretprobe", pid: first.pid).count == 3 })
        XCTAssertEqual(Set(sink.spans(named: "uretprobe", pid: first.pid).compactMap { $0.attributes["selftest.value"] }), [.int(42)])

        first.stop()
        XCTAssertTrue(waitUntil { library()?.users == [second.pid] }, "the library stays attached for the second process")
        try second.call(0, times: 2, argument: 1)
        XCTAssertTrue(waitUntil { sink.spans(named: "uretprobe", pid: second.pid).count == 2 })
        second.stop()
        XCTAssertTrue(waitUntil { library() == nil }, "detached after its last user exited")
    }

    func testRETOffsetsAreOnlyAskedForReturnsThatRunAtThem() {
        let needs = { (tracer: SelftestTracer) in
            Dictionary(uniqueKeysWithValues: tracer.probeTargetQueries.map { ($0.symbol, $0.needsReturnOffsets) })
        }
        // A uretprobe attaches at the function's entry: no disassembly (capstone) for it.
        XCTAssertEqual(needs(SelftestTracer(libraryPrefix: "libtracertarget")), ["target_3": false, "lib_target": false])
        XCTAssertEqual(needs(SelftestTracer(libraryPrefix: "libtracertarget", libraryReturnsWithUretprobe: false)),
                       ["target_3": false, "lib_target": true])
    }

    func testExecStormLeavesNoLinksDescriptorsOrMapEntriesBehind() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let binary = try UprobeTargetProcess.build(in: directory)
        let descriptorsBefore = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
        // Objects of earlier tests in this process may still be open: this agent's own must all be gone.
        let bpfDescriptors = { openBPFDescriptors("bpf_link") + openBPFDescriptors("bpf-prog") + openBPFDescriptors("bpf-map") }
        let bpfBefore = bpfDescriptors()
        try {
            let agent = try Agent(.init(selection: Selection(rules: [SelectionRule(exePath: binary.path), SelectionRule(name: "true")]),
                                        tracers: [SelftestTracer()], drainInterval: .milliseconds(10)))
            try agent.start()
            // 2 000 short-lived processes: each a fork and an exec of /bin/true, through one shell.
            try TestSupport.run("/bin/sh", ["-c", "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done"])
            // And a few that live long enough to be attached to, and exit.
            for _ in 0..<5 {
                let target = try UprobeTargetProcess(binary: binary)
                try target.call(3)
                target.stop()
            }
            XCTAssertTrue(waitUntil(timeout: 10) { agent.selectedProcesses.isEmpty && agent.attachedFiles().isEmpty },
                          "\(agent.selectedProcesses.map(\.pid)) \(agent.attachedFiles())")
            XCTAssertTrue(waitUntil { (try? agent.pidFilterEntries().isEmpty) ?? false }, "PID filter back to empty")
            XCTAssertGreaterThan(agent.metricsSnapshot.events, 2000, "the exec events were read")
            agent.stop()
        }()
        let descriptorsAfter = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
        XCTAssertEqual(descriptorsAfter, descriptorsBefore, "descriptors back to baseline once the agent is gone")
        XCTAssertEqual(bpfDescriptors(), bpfBefore, "no link, program or map of the agent left open")
    }

    /// The parent PID from /proc/PID/stat (the field after the parenthesised command).
    private func parent(of pid: Int32) -> Int32? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ").dropFirst().first.flatMap { Int32($0) }
    }

    static let libraryUser = """
    #include <stdint.h>
    #include <stdio.h>
    uint64_t lib_target(uint64_t x);
    int main(void) {
        setvbuf(stdout, NULL, _IONBF, 0);
        printf("ready\\n");
        char command[128];
        int index;
        unsigned long times, argument;
        while (fgets(command, sizeof command, stdin)) {
            if (sscanf(command, "call %d %lu %lu", &index, &times, &argument) == 3) {
                uint64_t sum = 0;
                for (unsigned long i = 0; i < times; i++) sum += lib_target(argument);
                printf("done %lu\\n", (unsigned long)sum);
            }
        }
        return 0;
    }
    """
}
