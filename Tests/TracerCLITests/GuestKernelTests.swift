import Foundation
import TestSupport
import XCTest

/// The guest-kernel harness (scripts/guest/run-in-guest.sh) with the built `tracer`: Debian's 6.1 kernel
/// under qemu has what this machine's kernel lacks (kprobes, `bpf_probe_write_user` without lockdown).
final class GuestKernelTests: XCTestCase {
    private struct Report: Decodable {
        struct Feature: Decodable {
            let id: String
            let available: Bool
            let detail: String
        }
        let kernelRelease: String
        let features: [Feature]
        let lockdown: String?
    }

    func testTracerFeaturesInTheGuestKernel() throws {
        let tracer = productsDirectory.appendingPathComponent("tracer")
        let started = Date()
        let run = try runInGuest(files: [tracer], script: """
            "$1" features --json >/tmp/features.json 2>/tmp/features.err || { status=$?; cat /tmp/features.err; exit $status; }
            cat /tmp/features.json
            """, arguments: [tracer.path])
        print("guest run: \(String(format: "%.1f", Date().timeIntervalSince(started))) s; \(run.timing)")
        XCTAssertEqual(run.status, 0, "\(run.output)\n\(run.log)")
        let report = try JSONDecoder().decode(Report.self, from: Data(run.output.utf8))
        XCTAssertTrue(report.kernelRelease.hasPrefix("6.1."), report.kernelRelease)
        XCTAssertEqual(report.lockdown, "none")
        let features = Dictionary(uniqueKeysWithValues: report.features.map { ($0.id, $0) })
        for id in ["kprobe", "bpf_probe_write_user", "btf", "ring_buffer", "uprobe", "tracepoint"] {
            XCTAssertEqual(features[id]?.available, true, "\(id): \(features[id]?.detail ?? "missing")")
        }
        // uprobe_multi came with Linux 6.6: the guest exercises the per-offset uprobe fallback.
        XCTAssertEqual(features["uprobe_multi"]?.available, false, features["uprobe_multi"]?.detail ?? "missing")
    }
}
