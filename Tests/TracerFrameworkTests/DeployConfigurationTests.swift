import Foundation
import TracerFramework
import XCTest

/// The configuration files shipped in deploy/ parse with the agent's own parser (unknown keys are errors).
final class DeployConfigurationTests: XCTestCase {
    private let deploy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("deploy")

    /// The lines after `header` indented deeper than it, with that indentation removed.
    private func block(after header: String, in file: String) throws -> String {
        let lines = try String(contentsOf: deploy.appendingPathComponent(file), encoding: .utf8).components(separatedBy: "\n")
        let start = try XCTUnwrap(lines.firstIndex { $0.trimmingCharacters(in: .whitespaces) == header }, "\(header) in \(file)")
        let indent = lines[start].prefix { $0 == " " }.count + 2
        let body = lines[(start + 1)...].prefix { $0.isEmpty || $0.prefix { $0 == " " }.count >= indent }
        return body.map { String($0.dropFirst(min(indent, $0.count))) }.joined(separator: "\n")
    }

    func testShippedConfigurationsParseAndSelectSomething() throws {
        let files: [(String, String)] = [
            ("kubernetes/configmap.yaml", try block(after: "tracer.yaml: |", in: "kubernetes/configmap.yaml")),
            ("helm/tracer/values.yaml", try block(after: "config:", in: "helm/tracer/values.yaml")),
            ("systemd/tracer.yaml", try String(contentsOf: deploy.appendingPathComponent("systemd/tracer.yaml"), encoding: .utf8)),
        ]
        for (name, text) in files {
            let configuration = try ConfigurationFile(yaml: text, file: name)
            XCTAssertFalse(configuration.selection.rules.isEmpty, name)
            XCTAssertEqual(configuration.print, "none", name)
            XCTAssertTrue(configuration.selection.rules.allSatisfy { $0.openPorts != nil }, name)
        }
    }
}
