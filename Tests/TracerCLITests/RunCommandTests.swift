import Foundation
import Synchronization
import TestSupport
import XCTest
@testable import TracerCLI

/// `tracer` with selection flags, through the built binary: errors at start, the start-up lines, and a
/// clean stop on SIGTERM.
final class RunCommandTests: XCTestCase {
    /// A `sleep 60` to select, ended with the test.
    private func startSleeper() throws -> Process {
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["60"]
        try sleeper.run()
        addTeardownBlock { sleeper.terminate() }
        return sleeper
    }

    func testAMissingPIDIsAOneLineErrorAtStart() throws {
        let result = try runProduct("tracer", ["--pid", "2147483000"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.hasPrefix("Error: --pid 2147483000: no such process\n"), result.stderr)
    }

    func testTheAgentsOTELServiceNameNamesWhatTheFlagsSelect() throws {
        let environment = ["OTEL_SERVICE_NAME": "shop"]
        let flags = try RunOptions.parse(["--exe", "*/api", "--open-port", "80"]).selection(file: nil, environment: environment)
        XCTAssertEqual(flags.rules.map(\.serviceName), ["shop", "shop"])
        let explicit = try RunOptions.parse(["--exe", "*/api", "--service-name", "api"]).selection(file: nil, environment: environment)
        XCTAssertEqual(explicit.rules.map(\.serviceName), ["api"], "--service-name wins over the agent's OTEL_SERVICE_NAME")
        let unnamed = try RunOptions.parse(["--exe", "*/api"]).selection(file: nil, environment: [:])
        XCTAssertEqual(unnamed.rules.map(\.serviceName), [nil])
    }

    func testPIDsThatNameNoUserProcessAreOneLineErrors() throws {
        for (pid, expected) in [("0", "--pid 0: not a process ID"), ("-1", "--pid -1: not a process ID"),
                                ("2", "--pid 2: kthreadd is a kernel thread: it runs no user-space code to trace")] {
            let result = try runProduct("tracer", ["--pid=\(pid)"])
            XCTAssertEqual(result.status, 64, "\(pid): \(result.stderr)")
            XCTAssertTrue(result.stderr.hasPrefix("Error: \(expected)"), "one line, then the usage hint: \(result.stderr)")
        }
        let inspect = try runProduct("tracer", ["inspect", "--pid", "2"])
        XCTAssertEqual(inspect.status, 1)
        XCTAssertEqual(inspect.stderr, "tracer inspect: pid 2: kthreadd is a kernel thread: it runs no user-space code to trace (`tracer ps` lists user processes)\n")
        XCTAssertEqual(inspect.stdout, "")
    }

    func testANewProcessGetsOneAttachLine() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let name = "sl\(UInt32.random(in: 0..<1_000_000)).py"
        let script = directory.appendingPathComponent(name)
        // Maps another library (ctypes' extension module, libffi) after it was selected, as Python apps do.
        try "import time\ntime.sleep(0.5)\nimport ctypes\ntime.sleep(30)\n".write(to: script, atomically: true, encoding: .utf8)
        var child: Process?
        let (_, _, log) = try runAgent(["--exe", "*/\(name)", "--print", "none"]) { _ in
            // Exec'd after the agent started: selected from the exec event; its libraries are re-checked at
            // 250 ms and 2 s, and the new ones attached without a second attach line.
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            process.arguments = [script.path]
            try? process.run()
            child = process
            usleep(2_600_000)
        }
        let pid = try XCTUnwrap(child?.processIdentifier)
        child?.terminate()
        let attachLines = log.split(separator: "\n").filter { $0.contains("attached ") && $0.contains("for pid \(pid) ") }
        XCTAssertEqual(attachLines.count, 1, log)
    }

    func testBadFlagValuesAreOneLineErrors() throws {
        for (arguments, expected) in [
            (["--open-port", "http"], "--open-port: invalid port or port range 'http'"),
            (["--language", "cobol"], "--language: unknown language 'cobol'"),
            (["--exe", "*/x", "--print", "xml"], "--print: expected text, json or none"),
            (["--exe", "*/x", "--log-level", "loud"], "--log-level: expected trace"),
            (["--exe", "*/x", "--ring-buffer-size", "3"], "--ring-buffer-size: expected a power of two from 1 to 1024 (MiB), not 3"),
            (["--exe", "*/x", "--ring-buffer-size", "2048"], "--ring-buffer-size: expected a power of two"),
            (["--kernel-tracers", "runqlat,biosnoop"], "--kernel-tracers: unknown kernel tracer 'biosnoop' (known: runqlat, oomkill"),
            (["--kernel-tracers", "files", "--path-prefix", "etc/"], "--path-prefix: files: path prefix 'etc/' is not absolute"),
            (["--kernel-tracers", "runqlat", "--path-prefix", "/etc/"], "--path-prefix needs the files kernel tracer (--kernel-tracers files)"),
        ] {
            let result = try runProduct("tracer", arguments)
            XCTAssertNotEqual(result.status, 0, "\(arguments)")
            XCTAssertTrue(result.stderr.split(separator: "\n").first?.contains(expected) ?? false, "\(arguments): \(result.stderr)")
        }
    }

    func testAnInvalidConfigFileNamesTheFileAndTheProblem() throws {
        let directory = try temporaryDirectory(self)
        let config = directory.appendingPathComponent("tracer.yaml")
        try "discovery:\n  instrument:\n    - exe_pth: '*/api'\n".write(to: config, atomically: true, encoding: .utf8)
        let result = try runProduct("tracer", ["--config", config.path])
        XCTAssertNotEqual(result.status, 0)
        let firstLine = String(result.stderr.split(separator: "\n").first ?? "")
        XCTAssertTrue(firstLine.contains("\(config.path): unknown key 'exe_pth' at discovery.instrument[0]"), result.stderr)

        try "kernel_tracers: [files]\nfile_path_prefixes: [var/]\n".write(to: config, atomically: true, encoding: .utf8)
        let relative = try runProduct("tracer", ["--config", config.path])
        XCTAssertTrue(relative.stderr.split(separator: "\n").first?.contains("\(config.path): file_path_prefixes: files: path prefix 'var/' is not absolute") ?? false,
                      relative.stderr)

        try "kernel_tracers: runqlat\n".write(to: config, atomically: true, encoding: .utf8)
        let notAList = try runProduct("tracer", ["--config", config.path])
        XCTAssertTrue(notAList.stderr.contains("\(config.path): kernel_tracers must be a list of kernel tracer names"), notAList.stderr)
        try "kernel_tracers: [runqlat, nope]\n".write(to: config, atomically: true, encoding: .utf8)
        let unknown = try runProduct("tracer", ["--config", config.path])
        XCTAssertTrue(unknown.stderr.split(separator: "\n").first?.contains("\(config.path): kernel_tracers: unknown kernel tracer 'nope'") ?? false, unknown.stderr)

        let missing = try runProduct("tracer", ["--config", directory.appendingPathComponent("nope.yaml").path])
        XCTAssertTrue(missing.stderr.contains("nope.yaml: no such file"), missing.stderr)
    }

    func testUnknownExportKeysAndBadExportSettingsAreRejected() throws {
        let directory = try temporaryDirectory(self)
        let config = directory.appendingPathComponent("tracer.yaml")
        try "discovery:\n  instrument:\n    - name: x\nexport:\n  endpont: http://x\n".write(to: config, atomically: true, encoding: .utf8)
        let typo = try runProduct("tracer", ["--config", config.path])
        XCTAssertNotEqual(typo.status, 0)
        XCTAssertTrue(typo.stderr.contains("\(config.path): unknown key 'export.endpont'"), typo.stderr)

        let grpc = try runProduct("tracer", ["--name", "x", "--otlp-endpoint", "http://127.0.0.1:4318", "--otlp-protocol", "grpc"])
        XCTAssertNotEqual(grpc.status, 0)
        XCTAssertTrue(grpc.stderr.contains("'grpc' is not supported"), grpc.stderr)
    }

    func testPrometheusEndpointServesSelfMetrics() throws {
        try requireBPF()
        let sleeper = try startSleeper()
        let port = unusedTCPPort()
        let agent = Process()
        agent.executableURL = productsDirectory.appendingPathComponent("tracer")
        agent.arguments = ["--pid", "\(sleeper.processIdentifier)", "--prometheus-port", "\(port)", "--log-level", "warning"]
        agent.standardOutput = FileHandle.nullDevice
        try agent.run()
        addTeardownBlock { agent.terminate(); agent.waitUntilExit() }
        var page = ""
        XCTAssertTrue(waitUntil(timeout: 20) {
            page = (try? TestSupport.run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/metrics"])) ?? ""
            return page.contains("tracer_processes_selected{service_name=\"tracer\"} 1")
        }, page)
        XCTAssertTrue(page.contains("tracer_events_dropped_kernel_total"), page)
        agent.terminate()
        agent.waitUntilExit()
        XCTAssertEqual(agent.terminationStatus, 0)
    }

    /// Runs `tracer` with `arguments` until its start-up line, calls `whileRunning` with its PID, then stops
    /// it with SIGTERM and checks a clean exit. Returns stderr up to the start-up line and stdout.
    /// `without`: capabilities removed from its bounding set first (`setpriv`, which execs it in place).
    private func runAgentUntilStarted(_ arguments: [String], without dropped: [String] = [],
                                      whileRunning: (Int32) -> Void = { _ in }) throws -> (started: String, stdout: String) {
        let (started, stdout, _) = try runAgent(arguments, without: dropped, whileRunning: whileRunning)
        return (started, stdout)
    }

    /// `runAgentUntilStarted`, also returning the whole log.
    private func runAgent(_ arguments: [String], without dropped: [String] = [],
                          whileRunning: (Int32) -> Void) throws -> (started: String, stdout: String, log: String) {
        let agent = Process()
        let tracer = productsDirectory.appendingPathComponent("tracer")
        if dropped.isEmpty {
            agent.executableURL = tracer
            agent.arguments = arguments
        } else {
            agent.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            agent.arguments = ["--inh-caps=-all", "--bounding-set=" + dropped.map { "-\($0)" }.joined(separator: ","), "--", tracer.path] + arguments
        }
        let stderr = Pipe(), stdout = Pipe()
        agent.standardError = stderr
        agent.standardOutput = stdout
        let log = Mutex("")
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            log.withLock { $0 += text }
        }
        try agent.run()
        XCTAssertTrue(waitUntil(timeout: 20) { log.withLock { $0.contains("SIGTERM stops") } }, log.withLock { $0 })
        let started = log.withLock { $0 }
        whileRunning(agent.processIdentifier)

        agent.terminate() // SIGTERM
        agent.waitUntilExit()
        stderr.fileHandleForReading.readabilityHandler = nil
        XCTAssertEqual(agent.terminationStatus, 0, log.withLock { $0 })
        XCTAssertEqual(agent.terminationReason, .exit)
        XCTAssertTrue(log.withLock { $0.contains("stopped:") }, log.withLock { $0 })
        return (started, String(decoding: stdout.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self), log.withLock { $0 })
    }

    /// A Python HTTP server on a free loopback port, ended with the test; returns it and the port.
    private func startHTTPServer() throws -> (Process, Int) {
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = ["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"]
        server.currentDirectoryURL = try temporaryDirectory(self)
        let output = Pipe()
        server.standardOutput = output
        server.standardError = FileHandle.nullDevice
        try server.run()
        addTeardownBlock { server.terminate(); server.waitUntilExit() }
        var banner = ""
        XCTAssertTrue(waitUntil(timeout: 10) {
            banner += String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
            return banner.contains(" port ")
        })
        let port = try XCTUnwrap(banner.split(separator: " ").drop { $0 != "port" }.dropFirst().first.flatMap { Int($0) }, banner)
        return (server, port)
    }

    func testTracesASelectedProcessAndStopsCleanlyOnSIGTERM() throws {
        try requireBPF()
        let (server, port) = try startHTTPServer()
        let (started, output) = try runAgentUntilStarted(["--pid", "\(server.processIdentifier)", "--print", "json"]) { _ in
            for path in ["/a", "/b", "/c"] { _ = try? TestSupport.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "http://127.0.0.1:\(port)\(path)"]) }
            usleep(300_000) // the reader drains every 20 ms
        }
        XCTAssertTrue(started.contains("for pid \(server.processIdentifier)"), started)
        XCTAssertTrue(started.contains("python3"), started)
        XCTAssertTrue(started.contains("1 processes selected now"), started)
        XCTAssertFalse(started.contains("context propagation"), started)
        let lines = output.split(separator: "\n")
        XCTAssertEqual(lines.count, 3, "one span per request, and nothing else on stdout: \(output)")
        let spans = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        XCTAssertEqual(spans.count, lines.count, "every line is a JSON span: \(output)")
        XCTAssertEqual(spans.compactMap { ($0["attributes"] as? [String: Any])?["url.path"] as? String }, ["/a", "/b", "/c"])
        XCTAssertEqual(spans.compactMap { $0["name"] as? String }, ["GET", "GET", "GET"])
    }

    /// The log says once what each selected process speaks, once that a connection was not understood or was
    /// TLS nothing can read, and sums it up when the process exits.
    func testTheLogSaysWhatAProcessSpeaksAndWhatIsNotUnderstood() throws {
        try requireBPF()
        let (server, port) = try startHTTPServer()
        let pid = server.processIdentifier
        let (_, _, log) = try runAgent(["--pid", "\(pid)", "--print", "none"]) { _ in
            for _ in 0..<2 { _ = try? TestSupport.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "http://127.0.0.1:\(port)/"]) }
            for bytes in ["\\x00\\x01not a protocol\\r\\n", "\\x16\\x03\\x01\\x00\\x05hello"] {
                _ = try? TestSupport.run("/usr/bin/python3", ["-c", """
                    import socket
                    with socket.create_connection(("127.0.0.1", \(port))) as s:
                        s.sendall(b"\(bytes)"); s.shutdown(socket.SHUT_WR); s.recv(4096)
                    """])
            }
            usleep(300_000)
            server.terminate()
            server.waitUntilExit()
            usleep(1_000_000) // the exit is handled once the ring is drained (300 ms)
        }
        let lines = log.split(separator: "\n")
        XCTAssertEqual(lines.filter { $0.contains("pid \(pid) (service ") && $0.hasSuffix(": http/1 seen, as server") }.count, 1, log)
        XCTAssertEqual(lines.filter { $0.contains("pid \(pid) (service ") && $0.contains("a connection with 127.0.0.1:") && $0.contains("that no protocol parser understands") }.count, 1, log)
        XCTAssertEqual(lines.filter { $0.contains("pid \(pid) (service ") && $0.contains("a TLS connection whose plaintext no hook reads") }.count, 1, log)
        XCTAssertTrue(log.contains("pid \(pid) exited: ") && log.contains("connections: http/1 server 2; 1 connection not understood; 1 TLS connection without readable plaintext"), log)
    }

    /// The perf-buffer fallback (what kernels without BPF ring buffers get), forced: spans still arrive, and the
    /// agent's event map is a perf event array, not a ring buffer.
    func testPerfBufferTransportCarriesSpans() throws {
        try requireBPF()
        let (server, port) = try startHTTPServer()
        var mapTypes: [String] = []
        let (started, output) = try runAgentUntilStarted(["--pid", "\(server.processIdentifier)", "--print", "json", "--event-transport", "perf-buffer"]) { pid in
            let directory = "/proc/\(pid)/fdinfo"
            for fd in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                guard let info = try? String(contentsOfFile: "\(directory)/\(fd)", encoding: .utf8) else { continue }
                mapTypes += info.split(separator: "\n").filter { $0.hasPrefix("map_type:") }.map { String($0.dropFirst(9)).trimmingCharacters(in: .whitespaces) }
            }
            for path in ["/one", "/two"] { _ = try? TestSupport.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "http://127.0.0.1:\(port)\(path)"]) }
            usleep(300_000)
        }
        XCTAssertTrue(started.contains("events through perf buffers ("), started)
        XCTAssertTrue(mapTypes.contains("4"), "BPF_MAP_TYPE_PERF_EVENT_ARRAY: \(mapTypes)")
        XCTAssertFalse(mapTypes.contains("27"), "no BPF_MAP_TYPE_RINGBUF: \(mapTypes)")
        let paths = output.split(separator: "\n").compactMap { line in
            ((try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]).flatMap { ($0["attributes"] as? [String: Any])?["url.path"] as? String }
        }
        XCTAssertEqual(paths, ["/one", "/two"], output)
        let bad = try runProduct("tracer", ["--exe", "*/x", "--event-transport", "pigeon"])
        XCTAssertTrue(bad.stderr.hasPrefix("Error: --event-transport: expected ring-buffer or perf-buffer, not 'pigeon'"), bad.stderr)
    }

    /// `--context-propagation all` on a kernel that forbids `bpf_probe_write_user` (lockdown, as here) says once
    /// that the Go path is off and once that network propagation is on, and carries on; `--ring-buffer-size`
    /// sizes the event ring.
    func testContextPropagationNoticeAndRingBufferSize() throws {
        try requireBPF()
        let sleeper = try startSleeper()
        var ringSizes: [String] = []
        let (started, _) = try runAgentUntilStarted([
            "--pid", "\(sleeper.processIdentifier)", "--context-propagation", "all", "--ring-buffer-size", "8", "--print", "none",
        ]) { pid in
            // The agent's BPF_MAP_TYPE_RINGBUF (27) maps, from its descriptors' fdinfo.
            let directory = "/proc/\(pid)/fdinfo"
            for fd in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                guard let info = try? String(contentsOfFile: "\(directory)/\(fd)", encoding: .utf8),
                      info.contains("map_type:\t27\n") else { continue }
                ringSizes += info.split(separator: "\n").filter { $0.hasPrefix("max_entries:") }.map { String($0.dropFirst(12)).trimmingCharacters(in: .whitespaces) }
            }
        }
        XCTAssertEqual(Set(ringSizes), ["262144", "8388608"], "the event ring is 8 MiB; process events have their own 256 KiB ring")
        let notices = started.split(separator: "\n").filter { $0.contains("context propagation") }
        XCTAssertEqual(notices.count, 2, started)
        let lockdown = (try? String(contentsOfFile: "/sys/kernel/security/lockdown", encoding: .utf8)) ?? ""
        if lockdown.contains("[integrity]") || lockdown.contains("[confidentiality]") {
            XCTAssertTrue(notices.contains { $0.contains("forbids bpf_probe_write_user (kernel lockdown:") }, started)
        }
        XCTAssertTrue(notices.contains { $0.contains("context propagation network on") }, started)
        // Without CAP_NET_ADMIN (a DaemonSet's default set) network propagation is off, said once, and the
        // capture layer still loads (its SOCKHASH, which needs the capability, is not created).
        let (unprivileged, _) = try runAgentUntilStarted(["--pid", "\(sleeper.processIdentifier)", "--context-propagation", "network", "--print", "none"],
                                                         without: ["net_admin", "sys_admin"])
        XCTAssertTrue(unprivileged.contains("context propagation network off: needs CAP_NET_ADMIN (or CAP_SYS_ADMIN)"), unprivileged)
        XCTAssertTrue(unprivileged.contains("1 processes selected now"), unprivileged)
        let bad = try runProduct("tracer", ["--pid", "1", "--context-propagation", "pigeon"])
        XCTAssertTrue(bad.stderr.hasPrefix("Error: --context-propagation pigeon: not one of go, network, all"), bad.stderr)
        XCTAssertTrue(started.contains("1 processes selected now"), started)
    }
}
