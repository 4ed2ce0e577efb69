import Foundation
import TestSupport
import XCTest

/// Transfers of known sizes for the flow tests: a Python helper run directly, or inside a network
/// namespace with `ip netns exec`. Each mode prints the local port it uses as its first line.
final class FlowTraffic {
    static let python = "/usr/bin/python3"
    static let ip = "/usr/sbin/ip"

    /// Modes: `tcp-serve HOST PORT` (prints the port, reads one connection to EOF, prints the bytes),
    /// `tcp-send HOST PORT BYTES` (prints its source port, sends, waits for the server to close),
    /// `udp-serve HOST PORT COUNT` (prints the port, receives COUNT datagrams or until 5 s of silence, prints the bytes),
    /// `udp-send HOST PORT SIZE COUNT SOCKETS` (prints the first socket's source port; each socket sends COUNT
    /// datagrams; then prints the bytes sent and how many distinct source ports, i.e. flows, the sockets had).
    static let script = """
        import socket, sys
        mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        if mode == 'tcp-serve':
            s = socket.socket(family)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port)); s.listen(1)
            print(s.getsockname()[1], flush=True)
            c, _ = s.accept(); total = 0
            while True:
                data = c.recv(1 << 16)
                if not data: break
                total += len(data)
            c.close(); print(total, flush=True)
        elif mode == 'tcp-send':
            size = int(sys.argv[4])
            c = socket.create_connection((host, port))
            print(c.getsockname()[1], flush=True)
            block = b'x' * 65536; left = size
            while left:
                left -= c.send(block[:min(left, len(block))])
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536): pass
            c.close(); print(size, flush=True)
        elif mode == 'udp-serve':
            count = int(sys.argv[4])
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE: no datagram dropped for a slow reader
            s.bind((host, port)); s.settimeout(5)
            print(s.getsockname()[1], flush=True); total = received = 0
            try:
                while received < count:
                    total += len(s.recv(65536)); received += 1
            except socket.timeout:
                pass
            print(total, flush=True)
        elif mode == 'udp-send':
            size, count, sockets = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
            ports = set()
            for index in range(sockets):
                s = socket.socket(family, socket.SOCK_DGRAM); s.connect((host, port))
                if index == 0: print(s.getsockname()[1], flush=True)
                ports.add(s.getsockname()[1])
                for _ in range(count): s.send(b'y' * size)
                s.close()
            print(size * count * sockets, flush=True)
            print(len(ports), flush=True)
        """

    let process = Process()
    private let stdout = Pipe()

    /// Starts the helper (in network namespace `netns` when given).
    init(_ arguments: [String], netns: String? = nil, in directory: URL) throws {
        let script = directory.appendingPathComponent("flow_traffic.py")
        if !FileManager.default.fileExists(atPath: script.path) {
            try Self.script.write(to: script, atomically: true, encoding: .utf8)
        }
        if let netns {
            process.executableURL = URL(fileURLWithPath: Self.ip)
            process.arguments = ["netns", "exec", netns, Self.python, script.path] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: Self.python)
            process.arguments = [script.path] + arguments
        }
        process.standardOutput = stdout
        try process.run()
    }

    /// The next line the helper prints, as a number.
    func number(timeout: TimeInterval = 20) throws -> Int {
        var line = [UInt8]()
        let handle = stdout.fileHandleForReading
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let byte = handle.readData(ofLength: 1).first else { break }
            if byte == UInt8(ascii: "\n") {
                guard let value = Int(String(decoding: line, as: UTF8.self)) else { break }
                return value
            }
            line.append(byte)
        }
        throw FlowTrafficError(description: "\(process.arguments ?? []) printed \(String(decoding: line, as: UTF8.self)) instead of a number")
    }

    deinit {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}

struct FlowTrafficError: Error, CustomStringConvertible {
    let description: String
}

/// Two network namespaces joined by a veth pair (10.231.0.1 in `a`, 10.231.0.2 in `b`), removed when
/// the test case ends.
struct VethPair {
    let a: String
    let b: String
    static let addressA = "10.231.0.1"
    static let addressB = "10.231.0.2"
    static let macA = "02:00:0a:e7:00:01"
    static let macB = "02:00:0a:e7:00:02"

    init(_ testCase: XCTestCase) throws {
        let suffix = String(getpid())
        a = "trflowA\(suffix)"
        b = "trflowB\(suffix)"
        let (a, b) = (a, b)
        testCase.addTeardownBlock {
            _ = try? run(FlowTraffic.ip, ["netns", "del", a])
            _ = try? run(FlowTraffic.ip, ["netns", "del", b])
        }
        try run(FlowTraffic.ip, ["netns", "add", a])
        try run(FlowTraffic.ip, ["netns", "add", b])
        try run(FlowTraffic.ip, ["link", "add", "vflowA", "address", Self.macA, "netns", a, "type", "veth",
                                 "peer", "name", "vflowB", "address", Self.macB, "netns", b])
        try run(FlowTraffic.ip, ["-n", a, "addr", "add", "\(Self.addressA)/24", "dev", "vflowA"])
        try run(FlowTraffic.ip, ["-n", b, "addr", "add", "\(Self.addressB)/24", "dev", "vflowB"])
        for (namespace, device) in [(a, "vflowA"), (b, "vflowB")] {
            try run(FlowTraffic.ip, ["-n", namespace, "link", "set", device, "up"])
            try run(FlowTraffic.ip, ["-n", namespace, "link", "set", "lo", "up"])
        }
        // Static neighbours: no ARP exchange, and no datagram dropped from the queue of an unresolved neighbour.
        try run(FlowTraffic.ip, ["-n", a, "neigh", "add", Self.addressB, "lladdr", Self.macB, "dev", "vflowA", "nud", "permanent"])
        try run(FlowTraffic.ip, ["-n", b, "neigh", "add", Self.addressA, "lladdr", Self.macA, "dev", "vflowB", "nud", "permanent"])
    }

    /// The namespace's inode number (as `/proc/PID/ns/net` shows it).
    static func inode(of namespace: String) throws -> UInt32 {
        let attributes = try FileManager.default.attributesOfItem(atPath: "/run/netns/\(namespace)")
        return UInt32((attributes[.systemFileNumber] as? NSNumber)?.uint64Value ?? 0)
    }
}
