import Foundation
import TestSupport
import XCTest

/// Transfers of known sizes for the flow tests: a small C program (so it also runs in the busybox guest),
/// run directly or inside a network namespace with `ip netns exec`. Each mode prints the local port it
/// uses as its first line.
final class FlowTraffic {
    static let ip = "/usr/sbin/ip"

    /// Modes: `tcp-serve HOST PORT` (prints the port, reads one connection to EOF, prints the bytes),
    /// `tcp-send HOST PORT BYTES` (prints its source port, sends, waits for the server to close, prints the bytes
    /// and the payload bytes TCP retransmitted, `tcp_info.tcpi_bytes_retrans`),
    /// `udp-serve HOST PORT COUNT` (prints the port, receives COUNT datagrams or until 5 s of silence, prints the bytes),
    /// `udp-send HOST PORT SIZE COUNT SOCKETS` (prints the first socket's source port; each socket sends COUNT
    /// datagrams; then prints the bytes sent and how many distinct source ports, i.e. flows, the sockets had).
    /// HOST is an IPv4 or IPv6 address.
    static let source = """
        #include <arpa/inet.h>
        #include <linux/tcp.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <sys/socket.h>
        #include <sys/time.h>
        #include <unistd.h>

        static int family;
        static socklen_t length;

        static struct sockaddr_storage endpoint(const char *host, const char *port) {
            struct sockaddr_storage storage = {0};
            struct sockaddr_in *v4 = (struct sockaddr_in *)&storage;
            struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&storage;
            if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
                family = v4->sin_family = AF_INET;
                v4->sin_port = htons(atoi(port));
                length = sizeof(*v4);
            } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
                family = v6->sin6_family = AF_INET6;
                v6->sin6_port = htons(atoi(port));
                length = sizeof(*v6);
            } else {
                fprintf(stderr, "bad address %s\\n", host);
                exit(2);
            }
            return storage;
        }

        static int local_port(int fd) {
            struct sockaddr_storage address;
            socklen_t size = sizeof(address);
            getsockname(fd, (struct sockaddr *)&address, &size);
            return ntohs(address.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&address)->sin6_port
                                                       : ((struct sockaddr_in *)&address)->sin_port);
        }

        static void fail(const char *what) { perror(what); exit(1); }

        int main(int argc, char **argv) {
            static char buffer[1 << 16];
            if (argc < 4) { fprintf(stderr, "usage: flow_traffic MODE HOST PORT ...\\n"); return 2; }
            const char *mode = argv[1];
            struct sockaddr_storage address = endpoint(argv[2], argv[3]);
            setvbuf(stdout, NULL, _IOLBF, 0);
            if (!strcmp(mode, "tcp-serve")) {
                int s = socket(family, SOCK_STREAM, 0), one = 1;
                setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(s, (struct sockaddr *)&address, length) || listen(s, 1)) fail("listen");
                printf("%d\\n", local_port(s));
                int c = accept(s, NULL, NULL);
                long total = 0;
                ssize_t n;
                while ((n = recv(c, buffer, sizeof(buffer), 0)) > 0) total += n;
                close(c);
                printf("%ld\\n", total);
            } else if (!strcmp(mode, "tcp-send") && argc > 4) {
                long size = atol(argv[4]), left = size;
                int c = socket(family, SOCK_STREAM, 0);
                if (connect(c, (struct sockaddr *)&address, length)) fail("connect");
                printf("%d\\n", local_port(c));
                memset(buffer, 'x', sizeof(buffer));
                while (left > 0) {
                    ssize_t n = send(c, buffer, left < (long)sizeof(buffer) ? left : (long)sizeof(buffer), 0);
                    if (n <= 0) fail("send");
                    left -= n;
                }
                shutdown(c, SHUT_WR);
                while (recv(c, buffer, sizeof(buffer), 0) > 0) {}
                struct tcp_info info = {0};
                socklen_t info_length = sizeof(info);
                if (getsockopt(c, IPPROTO_TCP, TCP_INFO, &info, &info_length)) fail("TCP_INFO");
                close(c);
                printf("%ld\\n%llu\\n", size, (unsigned long long)info.tcpi_bytes_retrans);
            } else if (!strcmp(mode, "udp-serve") && argc > 4) {
                int count = atoi(argv[4]), received = 0, size = 4 << 20;
                int s = socket(family, SOCK_DGRAM, 0);
                setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)); /* no datagram dropped for a slow reader */
                struct timeval timeout = {5, 0};
                setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
                if (bind(s, (struct sockaddr *)&address, length)) fail("bind");
                printf("%d\\n", local_port(s));
                long total = 0;
                ssize_t n;
                while (received < count && (n = recv(s, buffer, sizeof(buffer), 0)) >= 0) { total += n; received++; }
                printf("%ld\\n", total);
            } else if (!strcmp(mode, "udp-send") && argc > 6) {
                int size = atoi(argv[4]), count = atoi(argv[5]), sockets = atoi(argv[6]), distinct = 0;
                static int seen[65536];
                memset(buffer, 'y', sizeof(buffer));
                for (int index = 0; index < sockets; index++) {
                    int s = socket(family, SOCK_DGRAM, 0);
                    if (connect(s, (struct sockaddr *)&address, length)) fail("connect");
                    int port = local_port(s);
                    if (index == 0) printf("%d\\n", port);
                    if (!seen[port]++) distinct++;
                    for (int i = 0; i < count; i++) send(s, buffer, size, 0);
                    close(s);
                }
                printf("%ld\\n%d\\n", (long)size * count * sockets, distinct);
            } else {
                fprintf(stderr, "unknown mode %s or missing arguments\\n", mode);
                return 2;
            }
            return 0;
        }
        """

    /// Compiles the helper into `directory` (once per directory).
    static func binary(in directory: URL) throws -> URL {
        let binary = directory.appendingPathComponent("flow_traffic")
        if FileManager.default.isExecutableFile(atPath: binary.path) { return binary }
        return try compileC(source, name: "flow_traffic", in: directory)
    }

    let process = Process()
    private let stdout = Pipe()

    /// Starts the helper (in network namespace `netns` when given).
    init(_ arguments: [String], netns: String? = nil, in directory: URL) throws {
        let binary = try Self.binary(in: directory)
        if let netns {
            process.executableURL = URL(fileURLWithPath: Self.ip)
            process.arguments = ["netns", "exec", netns, binary.path] + arguments
        } else {
            process.executableURL = binary
            process.arguments = arguments
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
