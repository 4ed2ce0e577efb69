import BPFRuntime
import CTracerABI
import ExecutableInspection
import Telemetry
import TracerFramework

/// Client spans for Go's `net/http` (HTTP/1.x), see tracers/go-nethttp/README.md: uprobes at the entry and
/// every RET of `net/http.(*Transport).roundTrip`, parented to the server request the calling goroutine
/// serves. Server requests are the HTTP/1 parser's exchanges on the shared capture layer (whose chunks name
/// their goroutine), so they cost the traced process no uprobe. With context propagation, a `sys_exit` raw
/// tracepoint decides server ids from the request head and one more uprobe per client request
/// (`writeHeader`) writes its `traceparent` (HTTP/2 and gRPC: into the HEADERS frame). Go HTTP/2 and gRPC
/// handlers and grpc-go callers are named per stream, from a process's first call on.
public struct GoNetHTTPTracer: Tracer {
    public typealias Program = Tracers.GoNethttp.Program

    /// The Go client function probed: it sees the request, the response and the calling goroutine.
    public static let roundTrip = "net/http.(*Transport).roundTrip"

    /// Fields read from process memory: the goroutine id always; the client's fields when the binary
    /// has the client (`roundTrip`).
    static let goidField = GoField("runtime.g", "goid")
    /// The creator of a goroutine (go1.21+): a client call from a goroutine the handler started is still
    /// the handler's request's child. Older binaries lack it (those calls start their own trace).
    static let parentGoidField = GoField("runtime.g", "parentGoid")
    static let clientFields = [
        GoField("net/http.Request", "Method"), GoField("net/http.Request", "URL"), GoField("net/url.URL", "Scheme"),
        GoField("net/url.URL", "Host"), GoField("net/url.URL", "Path"), GoField("net/url.URL", "RawQuery"),
        GoField("net/http.Response", "StatusCode"),
    ]

    /// The function whose entry writes `traceparent` into an outgoing request (context propagation):
    /// net/http.(*Request).write calls it after the request line, Host and User-Agent.
    public static let writeHeader = "net/http.(*transferWriter).writeHeader"
    /// Fields context propagation reads: the request's Header map (it names the request to the goroutine
    /// that writes it), and the bufio.Writer the request is written into.
    static let propagationFields = [
        GoField("net/http.Request", "Header"), GoField("net/http.transferWriter", "Header"),
        GoField("bufio.Writer", "buf"), GoField("bufio.Writer", "n"),
    ]

    /// HTTP/2 context propagation (tracers/go-nethttp/README.md): where a client encodes a request's header
    /// block (its goroutine writes the HEADERS frame next), net/http's bundled HTTP/2 and golang.org/x/net/http2's.
    public static let http2EncodeHeaders = "net/http.(*http2ClientConn).encodeHeaders"
    public static let xHTTP2EncodeHeaders = "golang.org/x/net/http2.(*ClientConn).encodeHeaders"
    /// grpc-go: the caller's goroutine builds a call's header fields (its ids are decided at the return), the
    /// loopyWriter goroutine encodes them.
    public static let grpcHeaderFields = "google.golang.org/grpc/internal/transport.(*http2Client).createHeaderFields"
    public static let grpcWriteHeader = "google.golang.org/grpc/internal/transport.(*loopyWriter).writeHeader"
    /// Where a HEADERS frame has been copied into the buffered writer: the traceparent field is appended there.
    public static let http2WriteHeaders = "net/http.(*http2Framer).WriteHeaders"
    public static let xHTTP2WriteHeaders = "golang.org/x/net/http2.(*Framer).WriteHeaders"
    /// Fields of each HTTP/2 propagation path: the client connection's framer and buffered writer (or grpc-go's
    /// framer and its writer), and the framer's frame buffer.
    static let http2Fields = [
        GoField("net/http.http2ClientConn", "fr"), GoField("net/http.http2ClientConn", "bw"), GoField("net/http.http2Framer", "wbuf"),
    ]
    static let xHTTP2Fields = [
        GoField("golang.org/x/net/http2.ClientConn", "fr"), GoField("golang.org/x/net/http2.ClientConn", "bw"),
        GoField("golang.org/x/net/http2.Framer", "wbuf"),
    ]
    static let grpcFields = [
        GoField("google.golang.org/grpc/internal/transport.loopyWriter", "framer"),
        GoField("google.golang.org/grpc/internal/transport.framer", "writer"),
        GoField("google.golang.org/grpc/internal/transport.framer", "fr"),
        GoField("google.golang.org/grpc/internal/transport.bufWriter", "buf"),
        GoField("google.golang.org/grpc/internal/transport.bufWriter", "offset"),
        GoField("golang.org/x/net/http2.Framer", "wbuf"),
    ]

    /// HTTP/2 streams whose handler (server) or caller (grpc-go client) is not the goroutine that moves their
    /// frames (tracers/go-nethttp/README.md, "HTTP/2 and gRPC handlers"): where a server connection's reader
    /// goroutine starts, where a stream's handler starts, and where grpc-go's loopyWriter opens a call's stream.
    ///
    /// Go's HTTP/2 servers (`go_nethttp_offsets.http2_servers`, in that order): net/http's bundled one (go1.26 and
    /// older), golang.org/x/net/http2's, net/http/internal/http2's (go1.27+). Each has a reader goroutine per
    /// connection (`readFrames`) and starts a goroutine per request (`runHandler`).
    static let http2Servers: [(readFrames: String, runHandler: String, fields: [GoField])] = [
        ("net/http.(*http2serverConn).readFrames", "net/http.(*http2serverConn).runHandler",
         http2ServerFields("net/http.http2responseWriter", "net/http.http2responseWriterState", "net/http.http2stream")),
        ("golang.org/x/net/http2.(*serverConn).readFrames", "golang.org/x/net/http2.(*serverConn).runHandler",
         http2ServerFields("golang.org/x/net/http2.responseWriter", "golang.org/x/net/http2.responseWriterState", "golang.org/x/net/http2.stream")),
        ("net/http/internal/http2.(*serverConn).readFrames", "net/http/internal/http2.(*serverConn).runHandler",
         http2ServerFields("net/http/internal/http2.responseWriter", "net/http/internal/http2.responseWriterState",
                           "net/http/internal/http2.stream")),
    ]
    /// From a handler's response writer to its stream's id: `responseWriter.rws`, `responseWriterState.stream`, `stream.id`.
    private static func http2ServerFields(_ writer: String, _ state: String, _ stream: String) -> [GoField] {
        [GoField(writer, "rws"), GoField(state, "stream"), GoField(stream, "id")]
    }
    /// grpc-go: a server connection's reader goroutine, a stream's handler goroutine, a call's stream opened by
    /// the loopyWriter goroutine.
    public static let grpcHandleStreams = "google.golang.org/grpc/internal/transport.(*http2Server).HandleStreams"
    public static let grpcHandleStream = "google.golang.org/grpc.(*Server).handleStream"
    public static let grpcOriginateStream = "google.golang.org/grpc/internal/transport.(*loopyWriter).originateStream"
    /// Fields of the gRPC stream paths: a server stream's id, and from a loopyWriter's stream to the header
    /// fields its caller built.
    static let grpcServerStreamFields = [GoField("google.golang.org/grpc/internal/transport.Stream", "id")]
    static let grpcClientStreamFields = [
        GoField("google.golang.org/grpc/internal/transport.outStream", "id"), GoField("google.golang.org/grpc/internal/transport.outStream", "itl"),
        GoField("google.golang.org/grpc/internal/transport.itemList", "head"), GoField("google.golang.org/grpc/internal/transport.itemNode", "it"),
        GoField("google.golang.org/grpc/internal/transport.headerFrame", "hf"),
    ]

    /// What `--context-propagation` does in this agent.
    public enum ContextPropagation: Sendable, Equatable {
        /// Not asked for.
        case off
        /// Asked for, but this kernel cannot do it (logged once at start; tracing carries on).
        case unavailable(reason: String)
        /// Span ids are decided in BPF and outgoing HTTP/1.x requests carry a `traceparent`.
        case on
    }

    public let contextPropagation: ContextPropagation

    let exchanges = GoNetHTTPExchanges()

    /// `contextPropagation`: whether `--context-propagation` was given; it is turned on only where
    /// `features` shows that the kernel lets BPF write user memory (no lockdown).
    public init(contextPropagation requested: Bool = false, features: KernelFeatures? = nil) {
        if !requested {
            contextPropagation = .off
        } else if let features, features.isAvailable(.probeWriteUser) {
            contextPropagation = .on
        } else if let features {
            let lockdown = features.lockdown.map { " (kernel lockdown: \($0))" } ?? ""
            contextPropagation = .unavailable(reason: "this kernel forbids bpf_probe_write_user\(lockdown)")
        } else {
            contextPropagation = .unavailable(reason: "the kernel's features were not detected")
        }
    }

    public var name: String { "go-nethttp" }
    public var hookDescription: String? {
        contextPropagation == .on ? "the raw tracepoint sys_exit (context propagation only)" : "uprobes only"
    }
    public var object: EmbeddedBPFObject? { Tracers.GoNethttp.object }
    public var eventTypes: ClosedRange<UInt32>? { 200...299 }
    /// Go's HTTP client calls are this tracer's: the capture layer's HTTP/1 parser leaves them alone.
    public var ownedExchanges: Set<ExchangeKind> { [ExchangeKind(.http, .client)] }
    public var goFields: [GoField] {
        [Self.goidField, Self.parentGoidField] + Self.clientFields + Self.propagationFields + Self.http2Fields + Self.xHTTP2Fields
            + Self.grpcFields.dropLast() + Self.http2Servers.flatMap(\.fields) + Self.grpcServerStreamFields + Self.grpcClientStreamFields
    }

    public var probes: [Probe] {
        var probes: [Probe] = [
            .function(symbol: Self.roundTrip, entry: Program.goNethttpRoundTrip, returns: Program.goNethttpRoundTripReturn),
            .function(symbol: Self.grpcHandleStreams, entry: Program.goNethttpStreamReader, returns: nil),
            .function(symbol: Self.grpcHandleStream, entry: Program.goNethttpGrpcHandleStream, returns: nil),
            .function(symbol: Self.grpcHeaderFields, entry: nil, returns: Program.goNethttpGrpcHeaderFields),
            .function(symbol: Self.grpcOriginateStream, entry: Program.goNethttpGrpcOriginateStream, returns: nil),
        ]
        let runHandlers = [Program.goNethttpHttp2RunHandler, Program.goNethttpXHttp2RunHandler, Program.goNethttpInternalHttp2RunHandler]
        for (server, runHandler) in zip(Self.http2Servers, runHandlers) {
            probes.append(.function(symbol: server.readFrames, entry: Program.goNethttpStreamReader, returns: nil))
            probes.append(.function(symbol: server.runHandler, entry: runHandler, returns: nil))
        }
        if contextPropagation == .on {
            // The only syscall hook, and only when asked for: server ids must be decided before the
            // handler's client calls write their traceparent.
            probes.append(.rawTracepoint(event: "sys_exit", program: Program.goNethttpSysExit))
            probes.append(.function(symbol: Self.writeHeader, entry: Program.goNethttpInjectTraceparent, returns: nil))
            probes += [
                .function(symbol: Self.http2EncodeHeaders, entry: Program.goNethttpHttp2EncodeHeaders, returns: nil),
                .function(symbol: Self.xHTTP2EncodeHeaders, entry: Program.goNethttpXHttp2EncodeHeaders, returns: nil),
                .function(symbol: Self.grpcWriteHeader, entry: Program.goNethttpGrpcWriteHeader, returns: nil),
                .function(symbol: Self.http2WriteHeaders, entry: nil, returns: Program.goNethttpHttp2HeadersWritten),
                .function(symbol: Self.xHTTP2WriteHeaders, entry: nil, returns: Program.goNethttpHttp2HeadersWritten),
            ]
        }
        return probes
    }

    public func counters(object: BPFObject?) -> [TracerCounter] {
        let exchanges = exchanges
        let propagation = try? object?.map(Tracers.GoNethttp.Map.goNethttpPropagationCounts)
        /// A slot of go_nethttp_propagation_counts, summed over the CPUs.
        let count = { @Sendable (slot: Int32) -> UInt64 in
            ((try? propagation?.lookupPerCPU(UInt32(slot), as: UInt64.self)) ?? []).reduce(0, &+)
        }
        return [
            TracerCounter("malformed_events", help: "Events too short for their type.") { exchanges.counters.malformed },
            TracerCounter("abandoned_calls", help: "Client calls dropped unfinished (the table overflowed).") { exchanges.counters.abandoned },
            TracerCounter("propagation_injected", help: "traceparent lines written into outgoing requests (context propagation).") {
                count(GO_NETHTTP_PROPAGATION_INJECTED)
            },
            TracerCounter("propagation_skipped", help: "Outgoing requests left without traceparent: no room, or no request line in the buffer.") {
                count(GO_NETHTTP_PROPAGATION_SKIPPED)
            },
        ]
    }

    public func configure(_ spec: inout BPFObjectSpec, features: KernelFeatures) {
        spec.set(Tracers.GoNethttp.Global.goNethttpPropagate, to: UInt8(contextPropagation == .on ? 1 : 0))
    }

    public func applicability(to process: TracedProcess) -> Applicability {
        switch Self.offsets(for: process.executable) {
        case .success: .applies
        case .failure(let reason): .notApplicable(reason: reason.description)
        }
    }

    /// What `--context-propagation` does on this kernel, logged once at start; nil when it was not asked for.
    public var notice: String? {
        switch contextPropagation {
        case .off: nil
        case .unavailable(let reason):
            "context propagation disabled: \(reason); Go client requests are traced but carry no traceparent"
        case .on:
            "context propagation on: outgoing Go net/http (HTTP/1.x and HTTP/2) and grpc-go client requests carry a traceparent naming their client span"
        }
    }

    /// A stream or propagation function is attached only where its path is on for the binary (its fields known):
    /// elsewhere its uprobe would fire for nothing.
    public func attaches(_ symbol: String, in executable: ExecutableInfo) -> Bool {
        guard symbol != Self.roundTrip, let offsets = try? Self.offsets(for: executable, propagation: contextPropagation == .on).get() else {
            return true
        }
        let (streams, propagate) = Self.pathBits(of: symbol)
        return offsets.streams & streams != 0 || offsets.propagate & propagate != 0
    }

    /// The `GO_NETHTTP_STREAMS_*` and `GO_NETHTTP_PROPAGATE_*` paths function `symbol` serves.
    static func pathBits(of symbol: String) -> (streams: UInt64, propagate: UInt64) {
        let streams = streamPaths.enumerated().reduce(UInt64(0)) { $0 | ($1.element.symbols.contains(symbol) ? 1 << UInt64($1.offset) : 0) }
        let propagate = propagationPaths.reduce(UInt64(0)) { $0 | ($1.symbols.contains(symbol) ? $1.bit : 0) }
        return (streams, propagate)
    }

    /// The functions each `GO_NETHTTP_PROPAGATE_*` path probes (the HTTP paths also need `roundTrip`).
    static let propagationPaths: [(bit: UInt64, symbols: [String])] = [
        (UInt64(GO_NETHTTP_PROPAGATE_HTTP1), [writeHeader]),
        (UInt64(GO_NETHTTP_PROPAGATE_HTTP2), [http2EncodeHeaders, http2WriteHeaders]),
        (UInt64(GO_NETHTTP_PROPAGATE_X_HTTP2), [xHTTP2EncodeHeaders, xHTTP2WriteHeaders]),
        (UInt64(GO_NETHTTP_PROPAGATE_GRPC), [grpcHeaderFields, grpcWriteHeader, xHTTP2WriteHeaders]),
    ]

    public func prepare(_ process: TracedProcess, object: BPFObject) throws {
        let offsets = try Self.offsets(for: process.executable, propagation: contextPropagation == .on).get()
        try object.map(Tracers.GoNethttp.Map.goNethttpOffsets).update(UInt32(bitPattern: process.pid), offsets)
    }

    public func forget(pid: Int32, object: BPFObject) {
        _ = try? object.map(Tracers.GoNethttp.Map.goNethttpOffsets).delete(UInt32(bitPattern: pid))
        exchanges.forget(pid: pid)
    }

    public func decode(_ event: UnsafeRawBufferPointer, context: DecodeContext) -> Span? {
        exchanges.decode(event, context: context)
    }


    /// `GO_NETHTTP_PROPAGATE_*` bits for what `executable` can carry a traceparent in, with the offsets that
    /// needs filled in: HTTP/1.x and HTTP/2 requests of the net/http client (its bundled HTTP/2, or
    /// golang.org/x/net/http2's under a net/http.Transport), and grpc-go calls. Each needs its functions in the
    /// binary and its fields known; nothing is guessed.
    static func propagationTargets(in executable: ExecutableInfo, fields: GoFieldOffsets, offsets: inout go_nethttp_offsets) -> UInt64 {
        let symbols = Set(executable.probeTargets.map(\.symbol))
        let probed = { (bit: Int32) in symbols.isSuperset(of: propagationPaths.first { $0.bit == UInt64(bit) }!.symbols) }
        var targets: UInt64 = 0
        if symbols.contains(roundTrip), let request = known(propagationFields, in: fields) {
            (offsets.request_header, offsets.bufio_writer_buf, offsets.bufio_writer_n) = (request[0], request[2], request[3])
            if probed(GO_NETHTTP_PROPAGATE_HTTP1) {
                offsets.transfer_writer_header = request[1]
                targets |= UInt64(GO_NETHTTP_PROPAGATE_HTTP1)
            }
            if probed(GO_NETHTTP_PROPAGATE_HTTP2), let http2 = known(http2Fields, in: fields) {
                (offsets.http2_client_conn_fr, offsets.http2_client_conn_bw, offsets.http2_framer_wbuf) = (http2[0], http2[1], http2[2])
                targets |= UInt64(GO_NETHTTP_PROPAGATE_HTTP2)
            }
            if probed(GO_NETHTTP_PROPAGATE_X_HTTP2), let http2 = known(xHTTP2Fields, in: fields) {
                (offsets.x_http2_client_conn_fr, offsets.x_http2_client_conn_bw, offsets.x_http2_framer_wbuf) = (http2[0], http2[1], http2[2])
                targets |= UInt64(GO_NETHTTP_PROPAGATE_X_HTTP2)
            }
        }
        if probed(GO_NETHTTP_PROPAGATE_GRPC), let grpc = known(grpcFields, in: fields) {
            (offsets.grpc_loopy_framer, offsets.grpc_framer_writer, offsets.grpc_framer_fr) = (grpc[0], grpc[1], grpc[2])
            (offsets.grpc_buf_writer_buf, offsets.grpc_buf_writer_offset, offsets.x_http2_framer_wbuf) = (grpc[3], grpc[4], grpc[5])
            targets |= UInt64(GO_NETHTTP_PROPAGATE_GRPC)
        }
        return targets
    }

    /// The stream paths, bit `1 << index` of `go_nethttp_offsets.streams` (`GO_NETHTTP_STREAMS_*`): Go's HTTP/2
    /// servers' handlers, grpc-go's server handlers and client calls.
    static let streamPaths: [(name: String, symbols: [String], fields: [GoField])] =
        zip(["net/http", "golang.org/x/net/http2", "net/http/internal/http2"], http2Servers).map {
            ("HTTP/2 server handlers (\($0))", [$1.readFrames, $1.runHandler], $1.fields)
        } + [
            ("grpc-go server handlers", [grpcHandleStreams, grpcHandleStream], grpcServerStreamFields),
            ("grpc-go client calls", [grpcHeaderFields, grpcOriginateStream], grpcClientStreamFields),
        ]

    /// A server's handler probes fire once per HTTP/2 or gRPC request (a uprobe trap: costly on a busy server),
    /// and matter only when the handler makes calls: they come with the process's first call.
    public var attachedOnceCalling: Set<String> {
        Set(Self.streamPaths.prefix(Self.http2Servers.count + 1).flatMap(\.symbols))
    }

    /// Each stream path whose functions `executable` has: on (its calls get in-process parents), or off because
    /// a field is unknown.
    public func coverage(in executable: ExecutableInfo) -> [PathCoverage] {
        guard let fields = executable.go?.fieldOffsets else { return [] }
        let symbols = Set(executable.probeTargets.map(\.symbol))
        return Self.streamPaths.filter { symbols.isSuperset(of: $0.symbols) }.map { path in
            let missing = path.fields.filter { fields.offset($0) == nil }
            return missing.isEmpty ? PathCoverage("\(path.name): in-process parents")
                : PathCoverage("\(path.name): in-process parents",
                               offBecause: "\(missing.map(\.description).joined(separator: ", ")) not in \(fields.source)")
        }
    }

    /// `GO_NETHTTP_STREAMS_*` bits for the HTTP/2 streams of `executable` whose handler or caller goroutine it can
    /// report (``streamPaths``), with the offsets that needs filled in. Each path needs its functions in the
    /// binary and its fields known; nothing is guessed.
    static func streamOwners(in executable: ExecutableInfo, fields: GoFieldOffsets, offsets: inout go_nethttp_offsets) -> UInt64 {
        let symbols = Set(executable.probeTargets.map(\.symbol))
        var owners: UInt64 = 0
        for (index, path) in streamPaths.enumerated() {
            guard symbols.isSuperset(of: path.symbols), let found = known(path.fields, in: fields) else { continue }
            switch index {
            case 0..<http2Servers.count:
                let located = go_nethttp_http2_server_fields(response_writer_rws: found[0], response_writer_state_stream: found[1], stream_id: found[2])
                withUnsafeMutableBytes(of: &offsets.http2_servers) { servers in
                    servers.storeBytes(of: located, toByteOffset: index * MemoryLayout<go_nethttp_http2_server_fields>.stride,
                                       as: go_nethttp_http2_server_fields.self)
                }
            case http2Servers.count:
                offsets.grpc_stream_id = found[0]
            default:
                (offsets.grpc_out_stream_id, offsets.grpc_out_stream_itl, offsets.grpc_item_list_head) = (found[0], found[1], found[2])
                (offsets.grpc_item_node_it, offsets.grpc_header_frame_hf) = (found[3], found[4])
            }
            owners |= 1 << UInt64(index)
        }
        return owners
    }

    /// The offsets of all of `wanted`, in order; nil when one is unknown.
    private static func known(_ wanted: [GoField], in fields: GoFieldOffsets) -> [UInt64]? {
        let found = wanted.compactMap { fields.offset($0) }
        return found.count == wanted.count ? found : nil
    }

    /// Why a Go binary cannot be traced.
    public struct NotTraceable: Error, CustomStringConvertible {
        public let description: String
    }

    /// The per-process layout facts of `executable`, or why it is not traceable: never guessed. With
    /// `propagation`, the requests it has the functions and known fields for are marked for traceparent
    /// injection (``propagationTargets(in:fields:offsets:)``).
    public static func offsets(for executable: ExecutableInfo, propagation: Bool = false) -> Result<go_nethttp_offsets, NotTraceable> {
        guard executable.language == .go, let go = executable.go else {
            return .failure(NotTraceable(description: "not a Go executable"))
        }
        guard let fields = go.fieldOffsets else {
            return .failure(NotTraceable(description: go.notInstrumentableReason ?? "not instrumentable as Go; use the generic tracer"))
        }
        guard let goid = fields.offset(goidField) else {
            return .failure(NotTraceable(description: "runtime.g.goid offset unknown (\(fields.source)); not instrumentable as Go; use the generic tracer"))
        }
        guard let tls = go.gSlotThreadPointerOffset else {
            return .failure(NotTraceable(description: "the TLS slot of runtime.g is unknown (externally linked and stripped?); not instrumentable as Go; use the generic tracer"))
        }
        var offsets = go_nethttp_offsets()
        offsets.g_tls_offset = tls
        offsets.g_goid = goid
        offsets.g_parent_goid = fields.offset(parentGoidField) ?? 0
        if executable.probeTargets.contains(where: { $0.symbol == roundTrip }) {
            let missing = clientFields.filter { fields.offset($0) == nil }
            guard missing.isEmpty else {
                return .failure(NotTraceable(description: "offsets of \(missing.map(\.description).joined(separator: ", ")) unknown (\(fields.source)); not instrumentable as Go; use the generic tracer"))
            }
            let value = { (field: GoField) in fields.offset(field)! }
            offsets.request_method = value(clientFields[0])
            offsets.request_url = value(clientFields[1])
            offsets.url_scheme = value(clientFields[2])
            offsets.url_host = value(clientFields[3])
            offsets.url_path = value(clientFields[4])
            offsets.url_raw_query = value(clientFields[5])
            offsets.response_status_code = value(clientFields[6])
        }
        offsets.streams = streamOwners(in: executable, fields: fields, offsets: &offsets)
        if propagation { offsets.propagate = propagationTargets(in: executable, fields: fields, offsets: &offsets) }
        return .success(offsets)
    }
}
