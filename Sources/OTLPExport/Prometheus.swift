#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import Telemetry

/// Renders metrics in the Prometheus text exposition format 0.0.4, with the OpenTelemetry→Prometheus name
/// mapping (OTel spec "Prometheus and OpenMetrics Compatibility"): dots become underscores, the unit becomes a
/// suffix (`s` → `_seconds`, `By` → `_bytes`), counters get `_total`, and the resource's `service.name` becomes
/// the `service_name` label.
public enum PrometheusExposition {
    public static func metricName(_ name: String, unit: String, counter: Bool) -> String {
        var base = sanitize(name)
        let suffix: String
        switch unit {
        case "s": suffix = "_seconds"
        case "By": suffix = "_bytes"
        default: suffix = ""
        }
        if !suffix.isEmpty && !base.hasSuffix(suffix) { base += suffix }
        return counter ? base + "_total" : base
    }

    static func sanitize(_ s: String) -> String {
        var out = ""
        for (i, c) in s.unicodeScalars.enumerated() {
            let ok = c.isASCII && (c.properties.isAlphabetic || c == "_" || c == ":" || (i > 0 && ("0"..."9").contains(c)))
            out.unicodeScalars.append(ok ? c : "_")
        }
        return out
    }

    static func escape(_ value: String) -> String {
        var out = ""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    static func number(_ d: Double) -> String {
        if d.isInfinite { return d > 0 ? "+Inf" : "-Inf" }
        if d.isNaN { return "NaN" }
        if d == d.rounded() && abs(d) < 1e15 { return String(Int64(d)) }
        return String(d)
    }

    static func labels(_ resource: Resource, _ attributes: Attributes, extra: (String, String)? = nil) -> String {
        var parts: [String] = []
        if let service = resource.serviceName { parts.append("service_name=\"\(escape(service))\"") }
        for a in attributes { parts.append("\(sanitize(a.key))=\"\(escape(a.value.description))\"") }
        if let extra { parts.append("\(extra.0)=\"\(escape(extra.1))\"") }
        return parts.isEmpty ? "" : "{" + parts.joined(separator: ",") + "}"
    }

    /// The exposition text for all groups; metrics of one name across resources share one HELP/TYPE block.
    public static func render(_ groups: [ResourceMetricsData]) -> String {
        var order: [String] = []
        var blocks: [String: (help: String, type: String, lines: [String])] = [:]
        for group in groups {
            for metric in group.metrics {
                let isCounter: Bool
                let type: String
                switch metric.points {
                case .counter: (isCounter, type) = (true, "counter")
                case .gauge: (isCounter, type) = (false, "gauge")
                case .histogram: (isCounter, type) = (false, "histogram")
                }
                let name = metricName(metric.name, unit: metric.unit, counter: isCounter)
                if blocks[name] == nil {
                    order.append(name)
                    blocks[name] = (metric.description, type, [])
                }
                var lines: [String] = []
                switch metric.points {
                case .counter(let points), .gauge(let points):
                    for p in points { lines.append("\(name)\(labels(group.resource, p.attributes)) \(number(p.value))") }
                case .histogram(let bounds, let points):
                    for p in points {
                        var cumulative: UInt64 = 0
                        for (i, count) in p.bucketCounts.enumerated() {
                            cumulative += count
                            let le = i < bounds.count ? number(bounds[i]) : "+Inf"
                            lines.append("\(name)_bucket\(labels(group.resource, p.attributes, extra: ("le", le))) \(cumulative)")
                        }
                        lines.append("\(name)_sum\(labels(group.resource, p.attributes)) \(number(p.sum))")
                        lines.append("\(name)_count\(labels(group.resource, p.attributes)) \(p.count)")
                    }
                }
                blocks[name]!.lines += lines
            }
        }
        var text = ""
        for name in order {
            let block = blocks[name]!
            let family = block.type == "counter" ? String(name.dropLast("_total".count)) : name
            text += "# HELP \(family) \(block.help.replacingOccurrences(of: "\n", with: " "))\n"
            text += "# TYPE \(family) \(block.type)\n"
            for line in block.lines { text += line + "\n" }
        }
        return text
    }
}

/// A minimal HTTP/1.0 server for `GET /metrics` on a plain socket, one request per connection, on its own
/// thread (what Prometheus scrapes, `--prometheus-port`). Anything else gets 404. Requests are served one at a
/// time; 2-second socket timeouts bound what a slow or silent client can hold up.
public final class PrometheusServer: @unchecked Sendable {
    /// The bound port (the real one when 0 was asked for).
    public let port: Int
    private let fd: Int32
    private let running = Atomic<Bool>(true)
    private let done = DispatchSemaphore(value: 0)
    private let render: @Sendable () -> String

    public struct StartError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Listens on `host:port` (IPv4 literal; default loopback). `render` produces the page on each scrape.
    public init(host: String = "127.0.0.1", port: Int, render: @escaping @Sendable () -> String) throws {
        self.render = render
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw StartError(description: "prometheus endpoint: socket() failed: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(fd)
            throw StartError(description: "prometheus endpoint: '\(host)' is not an IPv4 address")
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw StartError(description: "prometheus endpoint: cannot listen on \(host):\(port): \(message)")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in self.serve() }
        thread.name = "prometheus"
        thread.start()
    }

    /// Stops accepting, waits for the server thread and closes the socket.
    public func stop() {
        guard running.exchange(false, ordering: .relaxed) else { return }
        done.wait()
        close(fd)
    }

    deinit { stop() }

    private func serve() {
        defer { done.signal() }
        while running.load(ordering: .relaxed) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, 200)
            if ready <= 0 { continue }
            let client = accept(fd, nil, nil)
            if client < 0 { continue }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            handle(client)
            close(client)
        }
    }

    private func handle(_ client: Int32) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var request: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while request.count < 16384 {
            let n = chunk.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            request += chunk[0..<n]
            if String(decoding: request, as: UTF8.self).contains("\r\n\r\n") { break }
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = line.split(separator: " ")
        let (status, type, body): (String, String, String)
        if parts.count >= 2, parts[0] == "GET", parts[1] == "/metrics" || parts[1].hasPrefix("/metrics?") {
            (status, type, body) = ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render())
        } else {
            (status, type, body) = ("404 Not Found", "text/plain", "only GET /metrics is served\n")
        }
        let bodyBytes = Array(body.utf8)
        let response = Array("HTTP/1.0 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(bodyBytes.count)\r\nConnection: close\r\n\r\n".utf8) + bodyBytes
        var sent = 0
        while sent < response.count {
            let n = response.withUnsafeBytes { send(client, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            sent += n
        }
    }
}
