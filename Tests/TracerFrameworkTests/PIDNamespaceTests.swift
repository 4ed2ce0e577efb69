import Foundation
import Telemetry
import TestSupport
import TracerFramework
import XCTest

/// A process in its own PID and mount namespace (`unshare --pid --fork --mount-proc`), as a container's
/// process looks to a node agent: selected and filtered by its host PID, reported with its namespaced PID.
final class PIDNamespaceTests: XCTestCase {
    func testAProcessInItsOwnPIDNamespaceIsTracedAndReportedWithItsNamespacedPID() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let binary = try UprobeTargetProcess.build(in: directory)
        let launcher = directory.appendingPathComponent("in-pid-namespace")
        try "#!/bin/sh\nexec /usr/bin/unshare --pid --fork --mount-proc --kill-child \(binary.path)\n"
            .write(to: launcher, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: launcher.path)
        let unshare = try UprobeTargetProcess(binary: launcher)
        let children = try String(contentsOfFile: "/proc/\(unshare.pid)/task/\(unshare.pid)/children", encoding: .utf8)
        let hostPID = try XCTUnwrap(children.split(separator: " ").first.flatMap { Int32($0) }, children)
        // unshare ignores SIGTERM while it waits, and a namespace's PID 1 ignores it too: SIGKILL the target.
        addTeardownBlock {
            kill(hostPID, SIGKILL)
            unshare.stop()
        }
        let status = try String(contentsOfFile: "/proc/\(hostPID)/status", encoding: .utf8)
        XCTAssertTrue(status.contains("NSpid:\t\(hostPID)\t1\n"), "the target is PID 1 of its namespace: \(status)")

        let sink = CollectingSink()
        let agent = try Agent(.init(selection: Selection(rules: [SelectionRule(exePath: "*/uprobe-target")]), tracers: [SelftestTracer()],
                                    sinks: [sink], rescanInterval: .seconds(1), drainInterval: .milliseconds(10)))
        try agent.start()
        addTeardownBlock { agent.stop() }
        XCTAssertEqual(agent.selectedProcesses.map(\.pid), [hostPID], "selected by host PID")
        XCTAssertEqual(agent.attachedFiles().first?.users, [hostPID])
        XCTAssertEqual(try agent.pidFilterEntries()[hostPID], true, "the BPF PID filter holds the host PID")
        XCTAssertNil(try agent.pidFilterEntries()[1])

        try unshare.call(3, times: 3, argument: 5)
        XCTAssertTrue(waitUntil { sink.spans(named: "uprobe", pid: hostPID).count == 3 }, "\(sink.spans.count) spans")
        let span = try XCTUnwrap(sink.spans(named: "uprobe", pid: hostPID).first)
        XCTAssertEqual(span.attributes["selftest.value"], .int(5))
        XCTAssertEqual(span.resource.attributes[SemanticConventions.processPID], .int(1), "process.pid is the namespaced PID")
        XCTAssertEqual(span.resource.attributes[SemanticConventions.processExecutablePath], .string(binary.path))
        XCTAssertEqual(span.resource.attributes[SemanticConventions.serviceInstanceID], .string("\(ProcessInfo.processInfo.hostName):\(hostPID)"))
    }
}
