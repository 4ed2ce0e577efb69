import Foundation
import XCTest

/// `tracer inspect` as a user runs it: the built `tracer` next to the test bundle.
final class InspectCommandTests: XCTestCase {
    override func tearDown() { Fixtures.removeInputFiles() }

    private func tracer(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("tracer")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw Fixtures.FixtureError(message: "\(binary.path) is not built; run `swift build` before `swift test`")
        }
        let process = Process()
        process.executableURL = binary
        process.arguments = ["inspect"] + arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, stdout, stderr)
    }

    func testSummaryAndJSONOfAGoBinary() throws {
        let path = try Fixtures.goBinary("go-plain-stripped", flags: ["-ldflags=-s -w"])
        let text = try tracer([path])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("language: go"))
        XCTAssertTrue(text.stdout.contains("struct offsets: from offsets table (go1.19)"))
        // go-nethttp's only uprobe target (server requests come from the capture layer's socket hooks),
        // found through .gopclntab in a stripped binary.
        XCTAssertTrue(text.stdout.contains("found   net/http.(*Transport).roundTrip"), text.stdout)
        let json = try tracer([path, "--json"])
        XCTAssertEqual(json.status, 0, json.stderr)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let executable = try XCTUnwrap(object["executable"] as? [String: Any])
        XCTAssertEqual(executable["language"] as? String, "go")
        let tracers = try XCTUnwrap(object["tracers"] as? [[String: Any]])
        XCTAssertEqual(tracers.map { $0["tracer"] as? String }, ["go-nethttp", "capture"], "the HTTP/1 parser has no probe of its own")
        XCTAssertEqual((tracers.first?["found"] as? [Any])?.count, 1)
        // The capture layer's Go TLS functions, each with its RET offsets (no uretprobe on Go code); this
        // program makes HTTPS calls but serves none, so the linker dropped the server handshake.
        let capture = try XCTUnwrap(tracers.last?["found"] as? [[String: Any]])
        XCTAssertEqual(Set(capture.compactMap { $0["symbol"] as? String }),
                       ["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).clientHandshake"])
        XCTAssertEqual(tracers.last?["missing"] as? [String], ["crypto/tls.(*Conn).serverHandshake"])
        XCTAssertTrue(capture.allSatisfy { !(($0["returnOffsets"] as? [Any]) ?? []).isEmpty })
        XCTAssertEqual(object["goTLSPlaintext"] as? String, "captured")
        XCTAssertTrue(text.stdout.contains("go tls plaintext (crypto/tls): captured"), text.stdout)
    }

    /// A Go program without crypto/tls: inspect says why its TLS plaintext is not captured.
    func testGoBinaryWithoutCryptoTLSSaysWhy() throws {
        let path = try Fixtures.goBinary("go-no-tls", source: "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi\") }\n")
        let text = try tracer([path])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("go tls plaintext (crypto/tls): not captured: crypto/tls.(*Conn).Read/Write or their RET offsets not found"), text.stdout)
        XCTAssertTrue(text.stdout.contains("missing crypto/tls.(*Conn).Read"), text.stdout)
    }

    func testProcessByPID() throws {
        let result = try tracer(["--pid", String(getpid()), "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let process = try XCTUnwrap(object["process"] as? [String: Any])
        XCTAssertEqual(process["pid"] as? Int, Int(getpid()))
    }

    /// Every bad input: exit status 1 and exactly one line on stderr naming the file or PID.
    func testBadInputsExitOneWithOneLine() throws {
        let cases: [([String], String)] = [
            (["/no/such/file"], "/no/such/file"),
            ([Fixtures.directory.path], Fixtures.directory.path),
            ([try Fixtures.file("cli-empty", [])], "cli-empty"),
            ([try Fixtures.file("cli-text", Array("hello\n".utf8))], "cli-text"),
            (["--pid", "999999999"], "pid 999999999"),
        ]
        for (arguments, subject) in cases {
            let result = try tracer(arguments)
            XCTAssertEqual(result.status, 1, "\(arguments): \(result.stderr)")
            XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
            XCTAssertTrue(result.stderr.contains(subject), result.stderr)
            XCTAssertEqual(result.stdout, "")
        }
    }
}
