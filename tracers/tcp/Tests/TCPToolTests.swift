import Foundation
import TestSupport
import XCTest

/// `tracer tool tcp` as a user runs it (the built binary) while Debian's libbpf-tools `tcplife` (0.26, on the
/// same sock:inet_sock_set_state tracepoint: it runs on this kernel) watches the same connections: a Python
/// process the test starts makes five connections to its own server with known payloads and three to a
/// port nothing listens on.
final class TCPToolTests: XCTestCase {
    /// Waits for a line on stdin, then: connection i sends 3000 + 1000·i bytes and half-closes, the server
    /// answers 5000 + 100·i bytes and closes; then three connects to argv[1] (refused). Prints the server port
    /// first and `done` at the end.
    static let workload = """
        import socket, sys, threading
        closed_port = int(sys.argv[1])
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        print(port, flush=True)
        sys.stdin.readline()

        def read_all(sock):
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return data
                data += chunk

        def serve():
            for i in range(5):
                conn, _ = listener.accept()
                read_all(conn)
                conn.sendall(b"s" * (5000 + 100 * i))
                conn.close()

        server = threading.Thread(target=serve)
        server.start()
        for i in range(5):
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(b"c" * (3000 + 1000 * i))
            client.shutdown(socket.SHUT_WR)
            read_all(client)
            client.close()
        server.join()
        for _ in range(3):
            try:
                socket.create_connection(("127.0.0.1", closed_port)).close()
            except ConnectionRefusedError:
                pass
        print("done", flush=True)
        """

    var tracerPath: String { productsDirectory.appendingPathComponent("tracer").path }

    private func jsonLines(_ text: String) -> [[String: Any]] {
        text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    func testConnectsAcceptsFailuresAndClosesWithBytesMatchTcplife() throws {
        try requireBPF()
        try requireExecutable("/usr/sbin/tcplife", package: "libbpf-tools")
        let directory = try temporaryDirectory(self)
        let script = directory.appendingPathComponent("workload.py")
        try Self.workload.write(to: script, atomically: true, encoding: .utf8)
        let closedPort = unusedTCPPort()
        let workload = try BackgroundCommand("/usr/bin/python3", [script.path, String(closedPort)])
        XCTAssertTrue(workload.waitFor("\n"), workload.stderr)
        let serverPort = try XCTUnwrap(Int(workload.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), workload.stdout)

        let ours = try BackgroundCommand(tracerPath, ["tool", "tcp", "--json", "--per-process"])
        let filtered = try BackgroundCommand(tracerPath, ["tool", "tcp", "--json", "--pid", "1"])
        let theirs = try BackgroundCommand("/usr/bin/stdbuf", ["-oL", "/usr/sbin/tcplife", "-p", String(workload.pid)])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        XCTAssertTrue(filtered.waitFor("Ctrl-C to end"), filtered.stderr)
        XCTAssertTrue(theirs.waitFor("PID"), theirs.stdout + theirs.stderr)
        XCTAssertTrue(ours.stderr.contains("hooks: tp_btf inet_sock_set_state, tcp_retransmit_skb"), ours.stderr)
        workload.input.fileHandleForWriting.write(Data("go\n".utf8))
        XCTAssertTrue(workload.waitFor("done", timeout: 30), workload.stdout + workload.stderr)
        XCTAssertEqual(workload.waitForExit(), 0, workload.stderr)
        usleep(300_000)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        XCTAssertEqual(filtered.stop(), 0, filtered.stderr)
        XCTAssertEqual(theirs.stop(), 0, theirs.stderr)

        let events = jsonLines(ours.stdout).filter { $0["tool"] as? String == "tcp" && $0["event"] != nil }
        func port(_ event: [String: Any], _ side: String) -> Int { event["network.\(side).port"] as? Int ?? -1 }
        let mine = events.filter { [serverPort, closedPort].contains(port($0, "peer")) || port($0, "local") == serverPort }
        func named(_ name: String) -> [[String: Any]] { mine.filter { $0["event"] as? String == name } }

        let connects = named("connect")
        XCTAssertEqual(connects.count, 5, "\(mine)")
        for connect in connects {
            XCTAssertEqual(connect["pid"] as? Int, Int(workload.pid), "\(connect)")
            XCTAssertEqual(connect["comm"] as? String, "python3", "\(connect)")
            XCTAssertEqual(port(connect, "peer"), serverPort)
            XCTAssertEqual(connect["network.peer.address"] as? String, "127.0.0.1")
        }
        let failures = named("connect_failed")
        XCTAssertEqual(failures.count, 3, "\(mine)")
        XCTAssertTrue(failures.allSatisfy { $0["error.type"] as? String == "ECONNREFUSED" && port($0, "peer") == closedPort && $0["pid"] as? Int == Int(workload.pid) }, "\(failures)")
        let accepts = named("accept")
        XCTAssertEqual(accepts.count, 5, "\(mine)")
        XCTAssertTrue(accepts.allSatisfy { port($0, "local") == serverPort }, "\(accepts)")

        // Every connection closes on both ends with the sequence space the workload moved: its bytes, plus
        // one for each SYN and FIN (the client's SYN and FIN are acknowledged; each side receives one FIN).
        let closes = named("close")
        XCTAssertEqual(closes.count, 10, "\(mine)")
        var expected: Set<String> = []
        for i in 0..<5 {
            expected.insert("client \(3000 + 1000 * i + 2) \(5000 + 100 * i + 1)")
            expected.insert("server \(5000 + 100 * i + 1) \(3000 + 1000 * i + 1)")
        }
        let seen = Set(closes.map { close in
            "\(port(close, "local") == serverPort ? "server" : "client") \(close["tcp.bytes_acked"] as? Int ?? -1) \(close["tcp.bytes_received"] as? Int ?? -1)"
        })
        XCTAssertEqual(seen, expected, "\(closes)")
        XCTAssertTrue(closes.allSatisfy { $0["pid"] as? Int == Int(workload.pid) }, "the closing process is named: \(closes)")

        // tcplife's line for each closed connection (PID COMM LADDR LPORT RADDR RPORT TX_KB RX_KB MS) has
        // the same ports and the same kilobytes.
        let rows = theirs.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
            .filter { $0.count == 9 && Int($0[0]) == Int(workload.pid) }
        for close in closes {
            let row = rows.first { Int($0[3]) == port(close, "local") && Int($0[5]) == port(close, "peer") }
            XCTAssertNotNil(row, "tcplife has no line for \(close):\n\(theirs.stdout)")
            guard let row else { continue }
            XCTAssertEqual(row[6], String(format: "%.2f", Double(close["tcp.bytes_acked"] as? Int ?? 0) / 1024), "\(row) vs \(close)")
            XCTAssertEqual(row[7], String(format: "%.2f", Double(close["tcp.bytes_received"] as? Int ?? 0) / 1024), "\(row) vs \(close)")
        }

        // The connect-latency histogram of the server's endpoint counts the five connects.
        let histograms = jsonLines(ours.stdout).filter { $0["name"] as? String == "tracer.tcp.connect.duration" }
        let endpoint = histograms.first { ($0["labels"] as? [String: Any])?["server.port"] as? Int == serverPort }
        XCTAssertEqual(endpoint?["count"] as? Int, 5, "\(histograms)")
        XCTAssertEqual((endpoint?["labels"] as? [String: Any])?["server.address"] as? String, "127.0.0.1")
        XCTAssertEqual((endpoint?["labels"] as? [String: Any])?["process.pid"] as? Int, Int(workload.pid), "--per-process: the connecting process")
        // Every close carries the connection's smoothed RTT (loopback: above 0, far below a second), and the
        // RTT histogram of the peer address counts the ten closes.
        XCTAssertTrue(closes.allSatisfy { ($0["tcp.rtt_us"] as? Int ?? 0) > 0 && ($0["tcp.rtt_us"] as? Int ?? 0) < 1_000_000 }, "\(closes)")
        let rtt = jsonLines(ours.stdout).filter { $0["name"] as? String == "tracer.tcp.rtt" }
            .first { ($0["labels"] as? [String: Any])?["network.peer.address"] as? String == "127.0.0.1" }
        XCTAssertEqual(rtt?["count"] as? Int, 10, "\(rtt as Any)")

        XCTAssertFalse(filtered.stdout.contains("\"network.peer.port\":\(serverPort)"), "--pid 1 let the workload's events through: \(filtered.stdout)")
        XCTAssertTrue(ours.stderr.contains("events.dropped 0"), ours.stderr)
    }

    /// `--states`: every state change of the workload's connections, as libbpf-tools' `tcpstates` prints them
    /// (the same transitions, counted per old → new pair; the listener's own CLOSE ↔ LISTEN aside).
    func testStateChangesMatchTcpstates() throws {
        try requireBPF()
        try requireExecutable("/usr/sbin/tcpstates", package: "libbpf-tools")
        let directory = try temporaryDirectory(self)
        let script = directory.appendingPathComponent("workload.py")
        try Self.workload.write(to: script, atomically: true, encoding: .utf8)
        let workload = try BackgroundCommand("/usr/bin/python3", [script.path, String(unusedTCPPort())])
        XCTAssertTrue(workload.waitFor("\n"), workload.stderr)
        let serverPort = try XCTUnwrap(Int(workload.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), workload.stdout)
        let ours = try BackgroundCommand(tracerPath, ["tool", "tcp", "--json", "--states"])
        let theirs = try BackgroundCommand("/usr/bin/stdbuf", ["-oL", "/usr/sbin/tcpstates"])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        XCTAssertTrue(theirs.waitFor("NEWSTATE"), theirs.stdout + theirs.stderr)
        workload.input.fileHandleForWriting.write(Data("go\n".utf8))
        XCTAssertTrue(workload.waitFor("done", timeout: 30), workload.stdout + workload.stderr)
        XCTAssertEqual(workload.waitForExit(), 0, workload.stderr)
        usleep(300_000)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        XCTAssertEqual(theirs.stop(), 0, theirs.stderr)

        func counted(_ pairs: [String]) -> [String: Int] { pairs.reduce(into: [:]) { $0[$1, default: 0] += 1 } }
        let mine = jsonLines(ours.stdout).filter { $0["event"] as? String == "state_change" }
            .filter { $0["network.local.port"] as? Int == serverPort || $0["network.peer.port"] as? Int == serverPort }
            .map { "\($0["tcp.state.old"] as? String ?? "?")->\($0["tcp.state"] as? String ?? "?")" }
        // SKADDR PID COMM LADDR LPORT RADDR RPORT OLDSTATE -> NEWSTATE MS
        let rows = theirs.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        let reference = rows.filter { row in
            guard row.count == 11, Int(row[4]) == serverPort || Int(row[6]) == serverPort else { return false }
            let listenerOnly = row[9] == "LISTEN" || (row[7] == "LISTEN" && row[9] == "CLOSE")
            return !listenerOnly
        }.map { "\($0[7])->\($0[9])" }
        XCTAssertGreaterThanOrEqual(mine.count, 5 * 8, "about ten transitions per connection (both ends): \(counted(mine))")
        XCTAssertEqual(counted(mine), counted(reference), "tcpstates:\n\(theirs.stdout)")
    }

    /// `--kernel-tracers tcp` in the agent: connect latency per calling process and endpoint, and a selected
    /// process's histogram names its service, as its spans do.
    func testTheAgentLabelsConnectLatencyWithTheSelectedProcessService() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let script = directory.appendingPathComponent("workload.py")
        try Self.workload.write(to: script, atomically: true, encoding: .utf8)
        let workload = try BackgroundCommand("/usr/bin/python3", [script.path, String(unusedTCPPort())])
        XCTAssertTrue(workload.waitFor("\n"), workload.stderr)
        let serverPort = try XCTUnwrap(Int(workload.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), workload.stdout)
        let prometheusPort = unusedTCPPort()
        let agent = try BackgroundCommand(tracerPath, ["--pid", String(workload.pid), "--service-name", "tcp-workload", "--kernel-tracers", "tcp",
                                                       "--print", "none", "--prometheus-port", String(prometheusPort)])
        XCTAssertTrue(agent.waitFor("tracing: "), agent.stderr)
        workload.input.fileHandleForWriting.write(Data("go\n".utf8))
        XCTAssertTrue(workload.waitFor("done", timeout: 30), workload.stdout + workload.stderr)
        var line = ""
        XCTAssertTrue(waitUntil(timeout: 10) {
            let page = (try? TestSupport.run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(prometheusPort)/metrics"])) ?? ""
            line = page.split(separator: "\n").first {
                $0.hasPrefix("tracer_tcp_connect_duration_count{") && $0.contains("server_port=\"\(serverPort)\"")
            }.map(String.init) ?? ""
            return line.hasSuffix(" 5")
        }, line)
        XCTAssertTrue(line.contains("process_pid=\"\(workload.pid)\""), line)
        XCTAssertTrue(line.contains("service_name=\"tcp-workload\""), line)
        XCTAssertEqual(agent.stop(signal: SIGTERM), 0, agent.stderr)
        XCTAssertEqual(workload.waitForExit(), 0, workload.stderr)
    }

    /// Retransmits: in a network namespace of its own whose input hook drops every fourth TCP packet
    /// (nftables `numgen inc`), a connection moving 40 KB in small writes has to retransmit; every
    /// `retransmit` event names that connection and its process, and there are at most as many as the
    /// namespace's own RetransSegs counter (/proc/net/snmp) — at least one.
    func testRetransmitsOfALossyConnectionAreReported() throws {
        try requireBPF()
        try requireExecutable("/usr/sbin/nft", package: "nftables")
        try requireExecutable("/usr/sbin/ip", package: "iproute2")
        let directory = try temporaryDirectory(self)
        let namespace = "tracer-tcp-\(getpid())"
        _ = try TestSupport.run("/usr/sbin/ip", ["netns", "add", namespace])
        addTeardownBlock { _ = try? TestSupport.run("/usr/sbin/ip", ["netns", "delete", namespace]) }
        _ = try TestSupport.run("/usr/sbin/ip", ["netns", "exec", namespace, "ip", "link", "set", "lo", "up"])
        _ = try TestSupport.run("/usr/sbin/ip", ["netns", "exec", namespace, "nft", "-f", "-"], input: """
            table inet lossy {
              chain in {
                type filter hook input priority 0;
                meta l4proto tcp numgen inc mod 4 == 3 drop
              }
            }
            """)
        let script = directory.appendingPathComponent("lossy.py")
        try """
            import socket, sys, threading, time
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            print(listener.getsockname()[1], flush=True)
            sys.stdin.readline()
            def serve():
                conn, _ = listener.accept()
                while conn.recv(65536):
                    pass
                conn.close()
            server = threading.Thread(target=serve)
            server.start()
            client = socket.create_connection(("127.0.0.1", listener.getsockname()[1]))
            for _ in range(40):
                client.sendall(b"x" * 1000)
                time.sleep(0.005)
            client.close()
            server.join()
            print("done", flush=True)
            """.write(to: script, atomically: true, encoding: .utf8)
        func retransmittedSegments() throws -> Int {
            let snmp = try TestSupport.run("/usr/sbin/ip", ["netns", "exec", namespace, "cat", "/proc/net/snmp"])
            let rows = snmp.split(separator: "\n").filter { $0.hasPrefix("Tcp:") }.map { $0.split(separator: " ") }
            guard rows.count == 2, let column = rows[0].firstIndex(of: "RetransSegs"), let value = Int(rows[1][column]) else { return -1 }
            return value
        }
        let workload = try BackgroundCommand("/usr/sbin/ip", ["netns", "exec", namespace, "python3", script.path])
        XCTAssertTrue(workload.waitFor("\n"), workload.stderr)
        let serverPort = try XCTUnwrap(Int(workload.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), workload.stdout)
        let ours = try BackgroundCommand(tracerPath, ["tool", "tcp", "--json", "--pid", String(workload.pid)])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        workload.input.fileHandleForWriting.write(Data("go\n".utf8))
        XCTAssertTrue(workload.waitFor("done", timeout: 60), workload.stdout + workload.stderr)
        XCTAssertEqual(workload.waitForExit(), 0, workload.stderr)
        usleep(300_000)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        let kernelCount = try retransmittedSegments()

        let retransmits = jsonLines(ours.stdout).filter { $0["event"] as? String == "retransmit" }
        XCTAssertGreaterThanOrEqual(retransmits.count, 1, ours.stdout)
        XCTAssertLessThanOrEqual(retransmits.count, kernelCount, "the namespace retransmitted \(kernelCount) segments: \(retransmits)")
        for event in retransmits {
            let ports = [event["network.local.port"] as? Int, event["network.peer.port"] as? Int]
            XCTAssertTrue(ports.contains(serverPort), "\(event)")
            XCTAssertEqual(event["pid"] as? Int, Int(workload.pid), "\(event)")
            XCTAssertNotNil(event["tcp.state"] as? String, "\(event)")
        }
    }
}
