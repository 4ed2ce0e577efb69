import Foundation
import TestSupport
import XCTest

/// The offline checks of deploy/ (deploy/tests/test_deploy.py: Kubernetes schemas, the rendered Helm chart,
/// yamllint, the Dockerfile's runtime libraries against the built `tracer`, the systemd unit).
final class DeployTests: XCTestCase {
    func testDeployManifestsChartImageAndUnit() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-m", "unittest", "discover", "-v", "-s", root.appendingPathComponent("deploy/tests").path]
        process.environment = ProcessInfo.processInfo.environment.merging(
            ["TRACER_BINARY": productsDirectory.appendingPathComponent("tracer").path]) { $1 }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        print(text)
        XCTAssertEqual(process.terminationStatus, 0, text)
        XCTAssertTrue(text.contains("\nOK"), text)
        XCTAssertFalse(text.contains("skipped"), "every deploy check ran: \(text)")
    }
}
