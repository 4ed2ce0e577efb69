import Foundation
import TestSupport
import XCTest

/// `tracer ps`: which processes the flags select and why, through the built binary.
final class PsCommandTests: XCTestCase {
    private func launch(_ executable: String, _ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        addTeardownBlock { process.terminate(); process.waitUntilExit() }
        return process
    }

    /// The block `tracer ps` printed for `pid` (its lines up to the next process).
    private func block(of pid: Int32, in output: String) -> String {
        var block: [String] = []
        for line in output.split(separator: "\n").map(String.init) {
            if block.isEmpty {
                if line.hasPrefix("pid \(pid) ") { block.append(line) }
            } else if line.hasPrefix("  ") {
                block.append(line)
            } else {
                break
            }
        }
        return block.joined(separator: "\n")
    }

    func testRedisIsListedWithItsPortTheRuleThatSelectsItAndItsTracers() throws {
        try requireExecutable("/usr/bin/redis-server", package: "redis-server")
        let port = unusedTCPPort()
        // Started through PATH, as a shell would: argv[0] is `redis-server`, and redis rewrites its title.
        let redis = try launch("/usr/bin/env", ["PATH=/usr/local/bin:/usr/bin:/bin", "redis-server", "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        XCTAssertTrue(waitUntil(timeout: 10) {
            ((try? String(contentsOfFile: "/proc/\(redis.processIdentifier)/net/tcp", encoding: .utf8)) ?? "")
                .contains(String(format: ":%04X 00000000:0000 0A", port))
        })

        let selected = try runProduct("tracer", ["ps", "--exe", "*/redis-server"])
        XCTAssertEqual(selected.status, 0, selected.stderr)
        let entry = block(of: redis.processIdentifier, in: selected.stdout)
        XCTAssertTrue(entry.hasPrefix("pid \(redis.processIdentifier) redis-server: /usr/bin/redis-check-rdb (invoked as /usr/bin/redis-server)"), entry)
        XCTAssertTrue(entry.contains("\n  language native, ports \(port)\n"), entry)
        XCTAssertTrue(entry.contains("\n  selected by rule 1: exe_path '*/redis-server' matched the invoked path /usr/bin/redis-server\n"), entry)
        XCTAssertTrue(entry.contains("\n  service redis-server, language native\n"), entry)
        XCTAssertTrue(entry.contains("\n  tracers: http2, http, redis, postgres, mysql, memcached, nats; not: go-nethttp (not a Go executable)"), entry)
        XCTAssertTrue(selected.stdout.hasSuffix("1 process selected, 1 with a tracer that applies\n"), selected.stdout)

        let unselected = try runProduct("tracer", ["ps", "--exe", "*/no-such-server"])
        let other = block(of: redis.processIdentifier, in: unselected.stdout)
        XCTAssertTrue(other.hasSuffix("\n  not selected: no rule matches"), "listed because it listens, tracers not evaluated: \(other)")

        let excluded = try runProduct("tracer", ["ps", "--open-port", "\(port)", "--exclude-exe", "*/redis-server"])
        XCTAssertTrue(block(of: redis.processIdentifier, in: excluded.stdout)
            .contains("not selected: exclusion: exe_path '*/redis-server' matched the invoked path /usr/bin/redis-server"), excluded.stdout)
    }

    func testChildrenOfASelectedProcessAreListedAsSuch() throws {
        let shell = try launch("/bin/sh", ["-c", "/bin/sleep 60; true"])
        var child: Int32 = 0
        XCTAssertTrue(waitUntil {
            let children = (try? String(contentsOfFile: "/proc/\(shell.processIdentifier)/task/\(shell.processIdentifier)/children", encoding: .utf8)) ?? ""
            child = children.split(separator: " ").first.flatMap { Int32($0) } ?? 0
            return child != 0
        })
        addTeardownBlock { [child] in kill(child, SIGKILL) }
        let result = try runProduct("tracer", ["ps", "--pid", "\(shell.processIdentifier)"])
        XCTAssertTrue(block(of: shell.processIdentifier, in: result.stdout).contains("\n  selected by rule 1: pid \(shell.processIdentifier)\n"), result.stdout)
        XCTAssertTrue(block(of: child, in: result.stdout).contains("\n  selected as a child of pid \(shell.processIdentifier)\n"), result.stdout)
        XCTAssertTrue(result.stdout.hasSuffix("2 processes selected, 2 with a tracer that applies\n"), result.stdout)
        let alone = try runProduct("tracer", ["ps", "--pid", "\(shell.processIdentifier)", "--no-children"])
        XCTAssertEqual(block(of: child, in: alone.stdout), "", "--no-children: the child is neither selected nor listening")
    }
}
