import Foundation
import Synchronization
import TestSupport
import XCTest

/// The agent killed with SIGKILL mid-traffic leaves nothing behind (every program, map and link it held is
/// gone from the kernel, no pin, no tracefs probe), and a restarted agent picks up the processes still running.
final class AgentKillTests: XCTestCase {
    /// The BPF objects a process holds, by kind (`prog_id`, `map_id`, `link_id`), from its descriptors' fdinfo.
    private func bpfObjectIDs(of pid: Int32) -> [String: Set<Int>] {
        var ids: [String: Set<Int>] = [:]
        let directory = "/proc/\(pid)/fdinfo"
        for fd in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            guard let info = try? String(contentsOfFile: "\(directory)/\(fd)", encoding: .utf8) else { continue }
            for line in info.split(separator: "\n") {
                for kind in ["prog_id", "map_id", "link_id"] where line.hasPrefix("\(kind):") {
                    if let id = Int(line.dropFirst(kind.count + 1).trimmingCharacters(in: .whitespaces)) { ids[kind, default: []].insert(id) }
                }
            }
        }
        return ids
    }

    final class Log: Sendable {
        private let text = Mutex("")
        func append(_ more: String) { text.withLock { $0 += more } }
        var value: String { text.withLock { $0 } }
    }

    private func startAgent(_ arguments: [String]) throws -> (Process, Log, Pipe) {
        let agent = Process()
        agent.executableURL = productsDirectory.appendingPathComponent("tracer")
        agent.arguments = arguments
        let stderr = Pipe(), stdout = Pipe()
        agent.standardError = stderr
        agent.standardOutput = stdout
        let log = Log()
        stderr.fileHandleForReading.readabilityHandler = { handle in log.append(String(decoding: handle.availableData, as: UTF8.self)) }
        try agent.run()
        addTeardownBlock { if agent.isRunning { agent.terminate(); agent.waitUntilExit() } }
        XCTAssertTrue(waitUntil(timeout: 20) { log.value.contains("SIGTERM stops") }, log.value)
        return (agent, log, stdout)
    }

    func testSIGKILLLeavesNoProgramMapLinkOrPinAndARestartPicksUpRunningProcesses() throws {
        try requireBPF()
        try requireExecutable("/usr/sbin/bpftool", package: "bpftool")
        // A Python HTTPS-capable server: it maps libssl, so the agent attaches uprobes there too.
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = ["-u", "-c", """
            import ssl, http.server
            s = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
            print(s.server_port, flush=True)
            s.serve_forever()
            """]
        server.currentDirectoryURL = try temporaryDirectory(self)
        let portPipe = Pipe()
        server.standardOutput = portPipe
        server.standardError = FileHandle.nullDevice
        try server.run()
        addTeardownBlock { server.terminate(); server.waitUntilExit() }
        let portLine = String(decoding: portPipe.fileHandleForReading.availableData, as: UTF8.self)
        let port = try XCTUnwrap(Int(portLine.trimmingCharacters(in: .whitespacesAndNewlines)), portLine)
        let uprobeEventsBefore = (try? String(contentsOfFile: "/sys/kernel/tracing/uprobe_events", encoding: .utf8)) ?? ""
        let pinsBefore = Set((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/bpf")) ?? [])

        let (agent, log, _) = try startAgent(["--pid", "\(server.processIdentifier)", "--print", "json"])
        XCTAssertTrue(log.value.contains("for pid \(server.processIdentifier) [service "), log.value)
        let held = bpfObjectIDs(of: agent.processIdentifier)
        XCTAssertFalse(held["prog_id", default: []].isEmpty, "\(held)")
        XCTAssertFalse(held["link_id", default: []].isEmpty, "uprobe_multi links on libssl and tracepoint links: \(held)")
        // Traffic while it dies.
        let traffic = Process()
        traffic.executableURL = URL(fileURLWithPath: "/bin/sh")
        traffic.arguments = ["-c", "while :; do curl -s -o /dev/null http://127.0.0.1:\(port)/; done"]
        try traffic.run()
        defer { traffic.terminate(); traffic.waitUntilExit() }
        usleep(300_000)
        kill(agent.processIdentifier, SIGKILL)
        agent.waitUntilExit()
        XCTAssertEqual(agent.terminationReason, .uncaughtSignal)

        // The kernel frees what only the agent's descriptors held (program release after an RCU grace period).
        for (kind, command) in [("prog_id", "prog"), ("map_id", "map"), ("link_id", "link")] {
            for id in held[kind, default: []] {
                XCTAssertTrue(waitUntil(timeout: 5) { (try? TestSupport.run("/usr/sbin/bpftool", [command, "show", "id", "\(id)"])) == nil },
                              "\(command) \(id) outlived the agent")
            }
        }
        XCTAssertEqual((try? String(contentsOfFile: "/sys/kernel/tracing/uprobe_events", encoding: .utf8)) ?? "", uprobeEventsBefore)
        XCTAssertEqual(Set((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/bpf")) ?? []), pinsBefore, "nothing pinned")

        // A restarted agent finds the server still running and traces it again.
        let (restarted, restartedLog, stdout) = try startAgent(["--pid", "\(server.processIdentifier)", "--print", "json"])
        XCTAssertTrue(restartedLog.value.contains("for pid \(server.processIdentifier) [service ") && restartedLog.value.contains("tracers: http"),
                      restartedLog.value)
        traffic.terminate()
        traffic.waitUntilExit()
        try TestSupport.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "http://127.0.0.1:\(port)/after-restart"])
        usleep(300_000)
        restarted.terminate()
        restarted.waitUntilExit()
        XCTAssertEqual(restarted.terminationStatus, 0)
        let spans = String(decoding: stdout.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(spans.contains("\"url.path\":\"/after-restart\""), spans)
    }
}
