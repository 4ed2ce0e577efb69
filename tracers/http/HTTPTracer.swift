import BPFRuntime
import CTracerABI
import Synchronization
import Foundation
import Telemetry
import TracerFramework

#if canImport(Glibc)
import Glibc
#endif

/// Language-agnostic HTTP/1.x tracer (tracers/http): server and client spans from socket syscall
/// tracepoints for any process, and from libssl's `SSL_read`/`SSL_write` (and `_ex`) for HTTPS.
/// The BPF side (http.bpf.c) emits one `http_event` per request/response exchange; `decode` parses the
/// captured bytes into a span with the OpenTelemetry HTTP semantic conventions.
public struct HTTPTracer: Tracer {
    public typealias Program = Tracers.Http.Program

    public let name = "http"
    public var object: EmbeddedBPFObject { Tracers.Http.object }
    public let eventTypes: Set<UInt32> = [UInt32(HTTP_EVENT_EXCHANGE)]
    /// Events that could not become spans (too short, unparsable request), for the agent's self-metrics.
    public let counters = HTTPTracerCounters()

    /// Which kernel hooks carry the socket data.
    public enum Hooks: String, Sendable {
        /// `sock:sock_send_length`, `sock:sock_recv_length`, `sock:inet_sock_set_state` (Linux 6.4).
        case socketTracepoints = "socket tracepoints"
        /// `syscalls:sys_enter_*`/`sys_exit_*` of the data syscalls, `accept`, `connect`, `close`.
        case syscallTracepoints = "syscall tracepoints"

        /// Socket tracepoints when tracefs lists them, else syscall tracepoints.
        public static func detect() -> Hooks {
            let available = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].contains { root in
                ["sock_send_length", "sock_recv_length", "inet_sock_set_state"].allSatisfy {
                    FileManager.default.fileExists(atPath: "\(root)/events/sock/\($0)")
                }
            }
            return available ? .socketTracepoints : .syscallTracepoints
        }
    }

    public let hooks: Hooks

    public init(hooks: Hooks = .detect()) { self.hooks = hooks }

    public var hookDescription: String? { hooks.rawValue }

    /// Socket tracepoints where the kernel has them (`sock:sock_send_length`/`sock_recv_length`, Linux 6.4:
    /// only socket I/O pays, no task is put on the syscall tracing slow path), else syscall tracepoints
    /// (`syscalls:sys_enter_*`/`sys_exit_*`, every kernel since 2.6.37, with or without kprobes); plus the
    /// libssl uprobes.
    public var probes: [Probe] {
        (hooks == .socketTracepoints ? Self.socketTracepoints : Self.syscallTracepoints)
            .map { .tracepoint(TracepointProbe($0.category, $0.event, program: $0.program)) }
            + Self.libsslSymbols.map {
                .library(prefix: "libssl.so", symbol: $0.symbol, entry: $0.entry, returns: Program.httpSslReturn,
                         returnsWithUretprobe: true)
            }
    }

    /// sock_sendmsg/sock_recvmsg and TCP state changes (the end of a connection).
    static let socketTracepoints: [(category: String, event: String, program: BPFProgramName)] = [
        ("sock", "sock_recv_length", Program.httpSockRecv), ("sock", "sock_send_length", Program.httpSockSend),
        ("sock", "inet_sock_set_state", Program.httpSockState),
    ]

    /// One program serves several syscalls where their arguments agree (`read`/`recvfrom`: fd, buffer, count).
    static let syscallTracepoints: [(category: String, event: String, program: BPFProgramName)] = [
        ("syscalls", "sys_enter_read", Program.httpEnterRead), ("syscalls", "sys_enter_recvfrom", Program.httpEnterRead),
        ("syscalls", "sys_enter_write", Program.httpEnterWrite), ("syscalls", "sys_enter_sendto", Program.httpEnterWrite),
        ("syscalls", "sys_enter_readv", Program.httpEnterReadv), ("syscalls", "sys_enter_writev", Program.httpEnterWritev),
        ("syscalls", "sys_enter_recvmsg", Program.httpEnterRecvmsg), ("syscalls", "sys_enter_sendmsg", Program.httpEnterSendmsg),
        ("syscalls", "sys_enter_connect", Program.httpEnterConnect), ("syscalls", "sys_enter_close", Program.httpEnterClose),
        ("syscalls", "sys_exit_read", Program.httpExitData), ("syscalls", "sys_exit_recvfrom", Program.httpExitData),
        ("syscalls", "sys_exit_write", Program.httpExitData), ("syscalls", "sys_exit_sendto", Program.httpExitData),
        ("syscalls", "sys_exit_readv", Program.httpExitData), ("syscalls", "sys_exit_writev", Program.httpExitData),
        ("syscalls", "sys_exit_recvmsg", Program.httpExitData), ("syscalls", "sys_exit_sendmsg", Program.httpExitData),
        ("syscalls", "sys_exit_connect", Program.httpExitData),
        ("syscalls", "sys_exit_accept", Program.httpExitAccept), ("syscalls", "sys_exit_accept4", Program.httpExitAccept),
    ]

    /// OpenSSL 1.1/3 entry points; the `_ex` variants report the byte count through their last argument.
    static let libsslSymbols: [(symbol: String, entry: BPFProgramName)] = [
        ("SSL_read", Program.httpSslRead), ("SSL_write", Program.httpSslWrite),
        ("SSL_read_ex", Program.httpSslReadEx), ("SSL_write_ex", Program.httpSslWriteEx),
    ]

    /// Every selected process, except Go programs the Go net/http tracer instruments (they would otherwise
    /// get a second span per request); the Go programs it refuses are traced here.
    public func applicability(to process: TracedProcess) -> Applicability {
        if case .success = GoNetHTTPTracer.offsets(for: process.executable) {
            return .notApplicable(reason: "a Go program: the go-nethttp tracer instruments it")
        }
        return .applies
    }

    public func decode(_ event: UnsafeRawBufferPointer, context: DecodeContext) -> Span? {
        guard event.count >= MemoryLayout<http_event>.size else {
            counters.malformed.add(1, ordering: .relaxed)
            return nil
        }
        let pid = event.loadUnaligned(fromByteOffset: 0, as: tracer_event_header.self).pid
        guard let resource = context.resource(Int32(bitPattern: pid)) else { return nil }
        return withUnsafeTemporaryAllocation(of: http_event.self, capacity: 1) { storage in
            // Copy into aligned storage: ring-buffer records are only 8-byte aligned by contract.
            UnsafeMutableRawBufferPointer(storage).copyMemory(from: UnsafeRawBufferPointer(rebasing: event[0..<MemoryLayout<http_event>.size]))
            let span = Self.span(from: storage.baseAddress!.pointee, context: context, resource: resource)
            if span == nil { counters.unparsed.add(1, ordering: .relaxed) }
            return span
        }
    }

    /// Builds the span of one exchange; nil when the captured request does not parse.
    static func span(from event: http_event, context: DecodeContext, resource: Resource) -> Span? {
        var event = event
        let requestLength = min(Int(event.request_len), Int(HTTP_REQUEST_CAPTURE))
        let responseLength = min(Int(event.response_len), Int(HTTP_RESPONSE_CAPTURE))
        let index = Int(event.pipeline_index)
        guard let request = withUnsafeBytes(of: &event.request, {
            HTTPMessageParser.parseRequest(UnsafeRawBufferPointer(rebasing: $0[0..<requestLength]), index: index)
        })
        else { return nil }
        let response = withUnsafeBytes(of: &event.response) { HTTPMessageParser.parseResponse(UnsafeRawBufferPointer(rebasing: $0[0..<responseLength])) }

        let isServer = event.role == UInt8(HTTP_ROLE_SERVER)
        let tls = event.flags & UInt8(HTTP_FLAG_TLS) != 0
        let local = SocketAddress(family: event.family, bytes: event.local_addr, port: event.local_port)
        let peer = SocketAddress(family: event.family, bytes: event.peer_addr, port: event.peer_port)
        let method = HTTPMethod(request.method)

        var attributes = Attributes(capacity: 14)
        attributes.appendUnchecked(SemanticConventions.httpRequestMethod, .string(method.semanticValue))
        if method.semanticValue == HTTPMethod.other {
            attributes.appendUnchecked(SemanticConventions.httpRequestMethodOriginal, .string(request.method))
        }
        let scheme = tls ? "https" : "http"
        if isServer {
            attributes.appendUnchecked(SemanticConventions.urlPath, .string(request.path))
            if let query = request.query { attributes.appendUnchecked(SemanticConventions.urlQuery, .string(query)) }
            attributes.appendUnchecked(SemanticConventions.urlScheme, .string(scheme))
        } else {
            let authority = peer.map { $0.authority } ?? "unknown"
            attributes.appendUnchecked(SemanticConventions.urlFull, .string("\(scheme)://\(authority)\(request.target)"))
        }
        if let response {
            attributes.appendUnchecked(SemanticConventions.httpResponseStatusCode, .int(Int64(response.statusCode)))
        }
        attributes.appendUnchecked(SemanticConventions.networkProtocolName, "http")
        if let version = response?.version ?? request.version {
            attributes.appendUnchecked(SemanticConventions.networkProtocolVersion, .string(version))
        }
        attributes.appendUnchecked(SemanticConventions.networkTransport, "tcp")
        let serverSide = isServer ? local : peer
        if let serverSide {
            attributes.appendUnchecked(SemanticConventions.serverAddress, .string(serverSide.address))
            attributes.appendUnchecked(SemanticConventions.serverPort, .int(Int64(serverSide.port)))
        }
        if isServer, let peer {
            attributes.appendUnchecked(SemanticConventions.clientAddress, .string(peer.address))
            attributes.appendUnchecked(SemanticConventions.clientPort, .int(Int64(peer.port)))
        }
        if let length = request.contentLength {
            attributes.appendUnchecked(SemanticConventions.httpRequestBodySize, .int(Int64(length)))
        } else if index == 0, !request.isChunked, let headLength = request.headLength, event.request_bytes >= UInt64(headLength) {
            attributes.appendUnchecked(SemanticConventions.httpRequestBodySize, .int(Int64(clamping: event.request_bytes - UInt64(headLength))))
        }

        var status = SpanStatus.unset
        if let code = response?.statusCode, code >= 500 || (!isServer && code >= 400) {
            status = .error(message: "")
            attributes.appendUnchecked(SemanticConventions.errorType, .string(String(code)))
        } else if response == nil {
            status = .error(message: "no HTTP response seen before the exchange ended")
            attributes.appendUnchecked(SemanticConventions.errorType, "_OTHER")
        }

        // An incoming traceparent makes a server span the caller's child. On a client request it names the
        // span the caller's own instrumentation made for this call: this span takes its place, so the
        // server's span (traced or instrumented) parents to it.
        var traceID = TraceID.random()
        var spanID = SpanID.random()
        var parent = SpanID.invalid
        var flags: UInt32 = 1
        if let incoming = request.traceContext {
            traceID = incoming.traceID
            flags = UInt32(incoming.flags)
            if isServer { parent = incoming.parentSpanID } else { spanID = incoming.parentSpanID }
        }
        let start = context.unixNanoseconds(monotonic: event.start_ns)
        let end = max(context.unixNanoseconds(monotonic: event.end_ns), start)
        return Span(
            name: method.semanticValue == HTTPMethod.other ? "HTTP" : method.semanticValue,
            kind: isServer ? .server : .client, traceID: traceID, spanID: spanID, parentSpanID: parent, flags: flags,
            startTimeUnixNano: start, endTimeUnixNano: end, status: status, attributes: attributes,
            resource: resource, scope: context.scope)
    }
}

/// Counters of events that did not become spans.
public final class HTTPTracerCounters: Sendable {
    /// Events shorter than `http_event`.
    public let malformed = Atomic<UInt64>(0)
    /// Events whose captured request is not an HTTP/1.x request line.
    public let unparsed = Atomic<UInt64>(0)
}

/// A request method as the HTTP semantic conventions want it: the nine RFC 9110/5789 methods as they
/// are, everything else `_OTHER` (the original then goes to `http.request.method_original`).
struct HTTPMethod {
    static let other = "_OTHER"
    let semanticValue: String

    /// A switch over the known methods: string compares of small strings, no hashing (once per span).
    init(_ method: String) {
        switch method {
        case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH": semanticValue = method
        default: semanticValue = Self.other
        }
    }
}

/// One end of a connection, from `http_event`'s address fields.
struct SocketAddress {
    let address: String
    let port: UInt16
    let isIPv6: Bool

    /// nil when the family is unknown (a TLS connection whose socket was never seen).
    init?<Bytes>(family: UInt8, bytes: Bytes, port: UInt16) {
        var bytes = bytes
        let raw = withUnsafeBytes(of: &bytes) { Array($0.prefix(16)) }
        switch Int32(family) {
        case AF_INET:
            address = raw[0..<4].map(String.init).joined(separator: ".")
            isIPv6 = false
        case AF_INET6 where raw[0..<10].allSatisfy({ $0 == 0 }) && raw[10] == 0xFF && raw[11] == 0xFF:
            address = raw[12..<16].map(String.init).joined(separator: ".") // IPv4-mapped
            isIPv6 = false
        case AF_INET6:
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            guard raw.withUnsafeBytes({ inet_ntop(AF_INET6, $0.baseAddress, &text, socklen_t(text.count)) }) != nil else { return nil }
            address = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            isIPv6 = true
        default:
            return nil
        }
        self.port = port
    }

    /// `host:port` for a URL (`[v6]:port`).
    var authority: String { isIPv6 ? "[\(address)]:\(port)" : "\(address):\(port)" }
}
