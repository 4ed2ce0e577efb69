import Foundation
import TestSupport
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
        // go-nethttp's client uprobe target (server requests come from the capture layer's socket hooks),
        // found through .gopclntab in a stripped binary.
        XCTAssertTrue(text.stdout.contains("found   net/http.(*Transport).roundTrip"), text.stdout)
        // Its entry probe on the stack check's jump, past `lea r12, [rsp-N]; cmp r12, [r14+16]`.
        let roundTrip = text.stdout.split(separator: "\n").first { $0.contains("found   net/http.(*Transport).roundTrip") } ?? ""
        XCTAssertTrue(roundTrip.contains(", entry probe at +9,") || roundTrip.contains(", entry probe at +12,"), String(roundTrip))
        let json = try tracer([path, "--json"])
        XCTAssertEqual(json.status, 0, json.stderr)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let executable = try XCTUnwrap(object["executable"] as? [String: Any])
        XCTAssertEqual(executable["language"] as? String, "go")
        let tracers = try XCTUnwrap(object["tracers"] as? [[String: Any]])
        XCTAssertEqual(tracers.map { $0["tracer"] as? String }, ["go-nethttp", "capture"], "the HTTP/1 parser has no probe of its own")
        // Besides roundTrip, net/http links its HTTP/2 server in: the functions that name a stream's handler
        // goroutine (attached only where their struct fields are known: not in this stripped binary).
        XCTAssertEqual(Set(((tracers.first?["found"] as? [[String: Any]]) ?? []).compactMap { $0["symbol"] as? String }),
                       ["net/http.(*Transport).roundTrip", "net/http.(*http2serverConn).readFrames", "net/http.(*http2serverConn).runHandler"])
        XCTAssertEqual(tracers.first?["paths"] as? [String], [
            "HTTP/2 server handlers (net/http): in-process parents: off, net/http.http2responseWriter.rws, "
                + "net/http.http2responseWriterState.stream, net/http.http2stream.id not in offsets table (go1.19)",
        ])
        XCTAssertTrue(text.stdout.contains("    path    HTTP/2 server handlers (net/http): in-process parents: off,"), text.stdout)
        // The capture layer's Go TLS functions, with RET offsets (no uretprobe on Go code) for the handshake and
        // Read (its RETs are attached once the process makes calls); this program makes HTTPS calls but serves
        // none, so the linker dropped the server handshake.
        let capture = try XCTUnwrap(tracers.last?["found"] as? [[String: Any]])
        XCTAssertEqual(Set(capture.compactMap { $0["symbol"] as? String }),
                       ["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Close", "crypto/tls.(*Conn).clientHandshake"])
        XCTAssertEqual(tracers.last?["missing"] as? [String], ["crypto/tls.(*Conn).serverHandshake"])
        let withReturns = Set(capture.filter { !(($0["returnOffsets"] as? [Any]) ?? []).isEmpty }.compactMap { $0["symbol"] as? String })
        XCTAssertEqual(withReturns, ["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).clientHandshake"],
                       "no RET offsets for Write and Close, whose work is done at their entry")
        // crypto/tls.Conn's read state, which Read's plaintext is taken from, located by the offsets table.
        let offsets = try XCTUnwrap((executable["go"] as? [String: Any])?["fieldOffsets"] as? [String: Any])
        XCTAssertEqual((offsets["offsets"] as? [String: Int])?["crypto/tls.halfConn.seq"], 64)
        XCTAssertEqual(object["goTLSPlaintext"] as? String, "captured")
        XCTAssertTrue(text.stdout.contains("go tls plaintext (crypto/tls): captured"), text.stdout)
    }

    /// A Go program without crypto/tls: inspect says why its TLS plaintext is not captured.
    func testGoBinaryWithoutCryptoTLSSaysWhy() throws {
        let path = try Fixtures.goBinary("go-no-tls", source: "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi\") }\n")
        let text = try tracer([path])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("go tls plaintext (crypto/tls): not captured: crypto/tls.(*Conn).Read/Write not found"), text.stdout)
        XCTAssertTrue(text.stdout.contains("missing crypto/tls.(*Conn).Read"), text.stdout)
    }

    func testProcessByPID() throws {
        let result = try tracer(["--pid", String(getpid()), "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let process = try XCTUnwrap(object["process"] as? [String: Any])
        XCTAssertEqual(process["pid"] as? Int, Int(getpid()))
    }

    /// `--watch`: the process is traced for a while, as the agent does, and the report says what its connections
    /// spoke: HTTP/1 requests, bytes no parser understands, and TLS whose plaintext nothing reads (a TLS record on
    /// a process that maps no libssl).
    func testWatchReportsTheProtocolsAProcessSpeaks() throws {
        try requireBPF()
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = ["-u", "-c", """
            import socketserver, http.server
            class Handler(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
                def log_message(self, *args): pass
            class Server(socketserver.ThreadingMixIn, http.server.HTTPServer): pass
            s = Server(("127.0.0.1", 0), Handler)
            print(s.server_port, flush=True)
            s.serve_forever()
            """]
        let output = Pipe()
        server.standardOutput = output
        server.standardError = FileHandle.nullDevice
        try server.run()
        addTeardownBlock { server.terminate(); server.waitUntilExit() }
        let port = try XCTUnwrap(Int(String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        // Clients all through the watch (the agent starts first, then watches for 4 s): one of each per round.
        let clients = Process()
        clients.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        clients.arguments = ["-c", """
            import socket, sys, time
            def send(data):
                with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as s:
                    s.sendall(data); s.shutdown(socket.SHUT_WR); s.recv(4096)
            while True:
                send(b"GET /watched HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
                send(b"\\x00\\x01not a protocol anyone speaks\\r\\n")
                send(b"\\x16\\x03\\x01\\x00\\x05hello")
                time.sleep(0.2)
            """, String(port)]
        try clients.run()
        addTeardownBlock { clients.terminate(); clients.waitUntilExit() }

        let result = try tracer(["--pid", String(server.processIdentifier), "--watch", "4", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], result.stdout)
        let protocols = try XCTUnwrap(object["protocols"] as? [String: Any], result.stdout)
        XCTAssertEqual(protocols["seconds"] as? Int, 4)
        let connections = try XCTUnwrap(protocols["connections"] as? [[String: Any]])
        XCTAssertEqual(connections.map { "\($0["protocol"] ?? "") \($0["role"] ?? "")" }, ["http/1 server"], result.stdout)
        // About 20 rounds in 4 s: each kind of connection was seen many times, and counted apart.
        XCTAssertGreaterThanOrEqual(connections.first?["connections"] as? Int ?? 0, 5, result.stdout)
        XCTAssertGreaterThanOrEqual(protocols["notUnderstood"] as? Int ?? 0, 5, result.stdout)
        XCTAssertGreaterThanOrEqual(protocols["tlsWithoutPlaintext"] as? Int ?? 0, 5, result.stdout)
        let text = try tracer(["--pid", String(server.processIdentifier), "--watch", "2"])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertNotNil(text.stdout.range(of: #"connections in 2 s: http/1 server \d+; \d+ connections not understood; \d+ TLS connections without readable plaintext"#,
                                          options: .regularExpression), text.stdout)
    }

    /// `--watch` without a process, or out of range: a one-line error first.
    func testWatchNeedsAPIDAndASaneDuration() throws {
        for (arguments, expected) in [(["/usr/bin/true", "--watch", "3"], "--watch needs --pid"),
                                      (["--pid", String(getpid()), "--watch", "0"], "--watch 0: give 1 to 3600 seconds")] {
            let result = try tracer(arguments)
            XCTAssertNotEqual(result.status, 0, "\(arguments)")
            XCTAssertTrue(result.stderr.split(separator: "\n").first?.contains(expected) ?? false, "\(arguments): \(result.stderr)")
        }
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
