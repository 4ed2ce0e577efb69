import ExecutableInspection
import Foundation
import TestSupport
import TracerFramework
import XCTest

/// A file seen through an overlay and through its lower directory is one probe target: the kernel attaches
/// uprobes to the inode behind the overlay, so attaching once per overlay device would fire twice per call.
final class OverlayIdentityTests: XCTestCase {
    func testAnOverlayFileAndItsLowerFileAreOneAttachmentAndEachCallOneEvent() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let lower = directory.appendingPathComponent("lower"), upper = directory.appendingPathComponent("upper")
        let work = directory.appendingPathComponent("work"), merged = directory.appendingPathComponent("merged")
        for dir in [lower, upper, work, merged] { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) }
        let lowerBinary = try UprobeTargetProcess.build(in: lower, name: "ovl-svc")
        do {
            try TestSupport.run("/bin/mount", ["-t", "overlay", "overlay", "-o", "lowerdir=\(lower.path),upperdir=\(upper.path),workdir=\(work.path)", merged.path])
        } catch {
            try prerequisiteMissing("overlayfs", "cannot mount an overlay here: \(error)", requiredBy: "TRACER_REQUIRE_BPF")
        }
        addTeardownBlock { _ = try? TestSupport.run("/bin/umount", ["-l", merged.path]) }
        let mergedBinary = merged.appendingPathComponent("ovl-svc")
        let lowerIdentity = try FileIdentity(path: lowerBinary.path), mergedIdentity = try FileIdentity(path: mergedBinary.path)
        XCTAssertNotEqual(lowerIdentity, mergedIdentity, "the overlay has its own device")
        XCTAssertEqual(try FileIdentity(attachmentTargetOf: mergedBinary.path), lowerIdentity, "the layer file behind the overlay")

        let viaLower = try UprobeTargetProcess(binary: lowerBinary)
        let viaOverlay = try UprobeTargetProcess(binary: mergedBinary)
        let sink = CollectingSink()
        let agent = try Agent(.init(selection: Selection(rules: [SelectionRule(exePath: "*/ovl-svc")]), tracers: [SelftestTracer()],
                                    sinks: [sink], rescanInterval: .seconds(1), drainInterval: .milliseconds(10)))
        try agent.start()
        addTeardownBlock { agent.stop() }
        XCTAssertEqual(Set(agent.selectedProcesses.map(\.pid)), [viaLower.pid, viaOverlay.pid])
        let files = agent.attachedFiles()
        XCTAssertEqual(files.map(\.file), [lowerIdentity], "one attachment for the one kernel probe target: \(files)")
        XCTAssertEqual(files.first?.users, [viaLower.pid, viaOverlay.pid], "\(files)")

        try viaLower.call(3, times: 2)
        try viaOverlay.call(3, times: 3)
        XCTAssertTrue(waitUntil { sink.spans(named: "uprobe", pid: viaOverlay.pid).count == 3 && sink.spans(named: "uprobe", pid: viaLower.pid).count == 2 },
                      "lower \(sink.spans(named: "uprobe", pid: viaLower.pid).count), overlay \(sink.spans(named: "uprobe", pid: viaOverlay.pid).count)")
        usleep(100_000)
        XCTAssertEqual(sink.spans(named: "uprobe", pid: viaLower.pid).count, 2, "no double events from two attachments")
        XCTAssertEqual(sink.spans(named: "uprobe", pid: viaOverlay.pid).count, 3)
        viaOverlay.stop()
        XCTAssertTrue(waitUntil { agent.attachedFiles().map(\.users) == [[viaLower.pid]] }, "\(agent.attachedFiles())")
        try viaLower.call(3, times: 1)
        XCTAssertTrue(waitUntil { sink.spans(named: "uprobe", pid: viaLower.pid).count == 3 }, "the probe stays for the other user")
    }

    /// Two different files with the same inode number on two filesystems (two fresh ext4 images, where the
    /// first file gets inode 12 in each) never share an attachment: each process's probe fires for it alone.
    func testTheSameInodeNumberOnTwoFilesystemsIsTwoAttachments() throws {
        try requireBPF()
        try requireExecutable("/sbin/mkfs.ext4", package: "e2fsprogs")
        let directory = try temporaryDirectory(self)
        let source = try UprobeTargetProcess.build(in: directory, name: "ino-svc")
        var binaries: [URL] = []
        for name in ["a", "b"] {
            let image = directory.appendingPathComponent("\(name).img"), mountPoint = directory.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: mountPoint, withIntermediateDirectories: true)
            try TestSupport.run("/usr/bin/truncate", ["-s", "16M", image.path])
            try TestSupport.run("/sbin/mkfs.ext4", ["-q", "-F", image.path])
            do {
                try TestSupport.run("/bin/mount", ["-o", "loop", image.path, mountPoint.path])
            } catch {
                try prerequisiteMissing("loop devices", "cannot loop-mount an ext4 image here: \(error)", requiredBy: "TRACER_REQUIRE_BPF")
            }
            addTeardownBlock { _ = try? TestSupport.run("/bin/umount", ["-l", mountPoint.path]) }
            let binary = mountPoint.appendingPathComponent("ino-svc")
            try FileManager.default.copyItem(at: source, to: binary)
            binaries.append(binary)
        }
        let identities = try binaries.map { try FileIdentity(path: $0.path) }
        XCTAssertEqual(identities[0].inode, identities[1].inode, "the case under test: one inode number on two devices")
        XCTAssertNotEqual(identities[0].device, identities[1].device)

        let first = try UprobeTargetProcess(binary: binaries[0]), second = try UprobeTargetProcess(binary: binaries[1])
        let sink = CollectingSink()
        let agent = try Agent(.init(selection: Selection(rules: [SelectionRule(exePath: "*/ino-svc")]), tracers: [SelftestTracer()],
                                    sinks: [sink], rescanInterval: .seconds(1), drainInterval: .milliseconds(10)))
        try agent.start()
        addTeardownBlock { agent.stop() }
        XCTAssertEqual(Set(agent.attachedFiles().map(\.file)), Set(identities), "\(agent.attachedFiles())")
        try first.call(3, times: 2)
        try second.call(3, times: 5)
        XCTAssertTrue(waitUntil { sink.spans(named: "uprobe", pid: second.pid).count == 5 })
        usleep(100_000)
        XCTAssertEqual(sink.spans(named: "uprobe", pid: first.pid).count, 2)
        XCTAssertEqual(sink.spans(named: "uprobe", pid: second.pid).count, 5)
        first.stop()
        XCTAssertTrue(waitUntil { agent.attachedFiles().map(\.file) == [identities[1]] }, "\(agent.attachedFiles())")
        second.stop()
    }
}
