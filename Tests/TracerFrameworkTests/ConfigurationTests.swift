import ExecutableInspection
import TracerFramework
import XCTest

final class ConfigurationTests: XCTestCase {
    func testAFullFileParses() throws {
        let file = try ConfigurationFile(yaml: """
            discovery:
              instrument:
                - exe_path: "*/checkout"
                  open_ports: "8080,9000-9100"
                  service_name: checkout
                  service_namespace: shop
                - pid: [12, 34]
                - name: nginx
                - language: python
              exclude:
                - cgroup: "/system.slice/"
              include_children: false
            print: json
            log_level: debug
            """)
        XCTAssertEqual(file.selection.rules.count, 4)
        XCTAssertEqual(file.selection.rules[0].exePath, "*/checkout")
        XCTAssertEqual(file.selection.rules[0].openPorts?.description, "8080,9000-9100")
        XCTAssertEqual(file.selection.rules[0].serviceName, "checkout")
        XCTAssertEqual(file.selection.rules[1].pids, [12, 34])
        XCTAssertEqual(file.selection.rules[3].language, .python)
        XCTAssertEqual(file.selection.exclusions.first?.cgroup, "/system.slice/")
        XCTAssertFalse(file.selection.includeChildren)
        XCTAssertEqual(file.print, "json")
        XCTAssertEqual(file.logLevel, "debug")
    }

    func testEveryProblemIsOneLineNamingTheFileAndPlace() {
        let cases: [(String, String)] = [
            ("discovery: [1, 2]", "discovery must be a mapping"),
            ("discovry: {}", "unknown key 'discovry' at top level"),
            ("discovery:\n  instrument:\n    - exe: x", "unknown key 'exe' at discovery.instrument[0]"),
            ("discovery:\n  instrument:\n    - open_ports: 70000", "discovery.instrument[0].open_ports"),
            ("discovery:\n  instrument:\n    - pid: -3", "is not a process id"),
            ("discovery:\n  instrument:\n    - language: cobol", "unknown language 'cobol'"),
            ("discovery:\n  instrument:\n    - service_name: lonely", "has no criterion"),
            ("print: xml", "print must be text, json or none"),
            ("key: [unclosed", "not valid YAML"),
            ("- just\n- a list", "the top level must be a mapping"),
        ]
        for (yaml, expected) in cases {
            XCTAssertThrowsError(try ConfigurationFile(yaml: yaml, file: "/etc/tracer.yaml"), yaml) { error in
                let text = "\(error)"
                XCTAssertTrue(text.hasPrefix("/etc/tracer.yaml: "), text)
                XCTAssertTrue(text.contains(expected), "\(yaml) → \(text)")
                XCTAssertFalse(text.contains("\n"), "one line: \(text)")
            }
        }
    }

    func testMissingFileAndDirectory() {
        XCTAssertThrowsError(try ConfigurationFile(path: "/nonexistent/tracer.yaml")) { XCTAssertEqual("\($0)", "/nonexistent/tracer.yaml: no such file") }
        XCTAssertThrowsError(try ConfigurationFile(path: "/tmp")) { XCTAssertEqual("\($0)", "/tmp: is a directory") }
    }

    func testPortRanges() throws {
        let ports = try PortRanges("80, 443,8000-8999")
        XCTAssertTrue(ports.contains(80) && ports.contains(8500) && ports.contains(443))
        XCTAssertFalse(ports.contains(81) || ports.contains(9000))
        for bad in ["", "0", "9-1", "http", "80-", "65536"] {
            XCTAssertThrowsError(try PortRanges(bad), bad)
        }
    }
}
