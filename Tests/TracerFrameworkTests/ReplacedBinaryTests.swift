import ExecutableInspection
import Foundation
import TestSupport
import TracerFramework
import XCTest

/// A traced binary replaced on disk while it runs (a deploy: new file renamed over the old path): a process
/// started from the new file is inspected and attached anew (files are keyed by device+inode, not path), and
/// the old file's probes go when its last process exits.
final class ReplacedBinaryTests: XCTestCase {
    func testANewBinaryAtTheSamePathIsReinspectedAndTheOldOnesProbesLeaveWithItsLastProcess() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let binary = try UprobeTargetProcess.build(in: directory, name: "svc")
        let old = try UprobeTargetProcess(binary: binary)
        let sink = CollectingSink()
        let agent = try Agent(.init(selection: Selection(rules: [SelectionRule(exePath: "*/svc")]), tracers: [SelftestTracer()],
                                    sinks: [sink], rescanInterval: .seconds(1), drainInterval: .milliseconds(10)))
        try agent.start()
        addTeardownBlock { agent.stop() }
        let oldIdentity = try FileIdentity(path: binary.path)
        XCTAssertEqual(agent.attachedFiles().map(\.file), [oldIdentity])

        // The deploy: a rebuilt file written next to it and renamed over the path while the old process runs.
        let staging = directory.appendingPathComponent("staging")
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        let rebuilt = try UprobeTargetProcess.build(in: staging, name: "svc")
        XCTAssertEqual(rename(rebuilt.path, binary.path), 0)
        let newIdentity = try FileIdentity(path: binary.path)
        XCTAssertNotEqual(newIdentity, oldIdentity)

        let new = try UprobeTargetProcess(binary: binary)
        XCTAssertTrue(waitUntil { Set(agent.selectedProcesses.map(\.pid)) == [old.pid, new.pid] }, "\(agent.selectedProcesses.map(\.pid))")
        XCTAssertTrue(waitUntil { Set(agent.attachedFiles().map(\.file)) == [oldIdentity, newIdentity] }, "\(agent.attachedFiles())")
        let byFile = Dictionary(uniqueKeysWithValues: agent.attachedFiles().map { ($0.file, $0.users) })
        XCTAssertEqual(byFile[oldIdentity], [old.pid])
        XCTAssertEqual(byFile[newIdentity], [new.pid])

        try old.call(3, times: 2)
        try new.call(3, times: 3)
        XCTAssertTrue(waitUntil { sink.spans(named: "uprobe", pid: new.pid).count == 3 && sink.spans(named: "uprobe", pid: old.pid).count == 2 },
                      "each file's probe fires for its own process")

        old.stop()
        XCTAssertTrue(waitUntil { agent.attachedFiles().map(\.file) == [newIdentity] }, "the old file's links go with its last process: \(agent.attachedFiles())")
        try new.call(3, times: 1)
        XCTAssertTrue(waitUntil { sink.spans(named: "uprobe", pid: new.pid).count == 4 }, "the new file's probe stays")
    }
}
