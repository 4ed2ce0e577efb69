import BPFRuntime
import CTracerABI
import Glibc
import TracerFramework

/// TCP connections (tcp.bpf.c, tracepoints sock:inet_sock_set_state and tcp:tcp_retransmit_skb): connect
/// latency as a log2 histogram of microseconds per remote endpoint (`server.address`, `server.port`), and
/// events: `connect` (latency), `connect_failed` (`error.type`: ECONNREFUSED, ETIMEDOUT, ...), `accept`,
/// `close` (`tcp.bytes_acked`/`tcp.bytes_received`: the kernel's counts of sequence space, in which an
/// acknowledged SYN and FIN count one byte each, as tcplife prints them; lifetime) and `retransmit`.
public struct TCPTracer: KernelTracer {
    public init() {}

    public var name: String { "tcp" }
    public var summary: String { "TCP connects (latency histogram per remote endpoint, failures), accepts, closes with bytes and lifetime, retransmits" }
    public var object: EmbeddedBPFObject { Tracers.Tcp.object }
    public var emitsEvents: Bool { true }

    typealias Program = Tracers.Tcp.Program

    public var hookSets: [KernelHookSet] {
        [
            KernelHookSet("tp_btf inet_sock_set_state, tcp_retransmit_skb", [.btf(program: Program.tcpStateBtf), .btf(program: Program.tcpRetransmitBtf)]),
            KernelHookSet("raw_tp inet_sock_set_state, tcp_retransmit_skb", [
                .rawTracepoint(event: "inet_sock_set_state", program: Program.tcpStateRaw),
                .rawTracepoint(event: "tcp_retransmit_skb", program: Program.tcpRetransmitRaw),
            ]),
        ]
    }

    public var histograms: [KernelHistogramMap] {
        [KernelHistogramMap(map: Tracers.Tcp.Map.tcpConnectHists, metric: "tracer.tcp.connect.duration",
                            description: "Time from SYN sent to connection established, per remote endpoint.", unit: "us", unitWord: "usecs"),
         KernelHistogramMap(map: Tracers.Tcp.Map.tcpRttHists, metric: "tracer.tcp.rtt",
                            description: "Smoothed round-trip time of connections when they closed, per remote address.", unit: "us", unitWord: "usecs")]
    }

    /// In the agent, connect latency per calling process (labelled with its service) and endpoint.
    public var keysByProcessInAgent: Bool { true }

    public func configure(_ spec: inout BPFObjectSpec, options: KernelTracerOptions) {
        spec.set(BPFGlobalName("tcp_per_process"), to: UInt8(options.perProcess ? 1 : 0))
        spec.set(BPFGlobalName("tcp_report_states"), to: UInt8(options.stateChanges ? 1 : 0))
    }

    public func labels(ofKey key: UnsafeRawBufferPointer, map: BPFMapName, options: KernelTracerOptions) -> [KernelLabel] {
        guard key.count >= MemoryLayout<tcp_endpoint_key>.size else { return [] }
        let endpoint = key.loadUnaligned(as: tcp_endpoint_key.self)
        guard let remote = SocketAddress(family: endpoint.family, bytes: endpoint.address, port: endpoint.port) else { return [] }
        if map == Tracers.Tcp.Map.tcpRttHists { return [KernelLabel("network.peer.address", .string(remote.address))] }
        let process = endpoint.tgid == 0 ? [] : [KernelLabel("process.pid", .int(Int64(endpoint.tgid)))]
        return process + [KernelLabel("server.address", .string(remote.address)), KernelLabel("server.port", .int(Int64(remote.port)))]
    }

    public func decode(event: UnsafeRawBufferPointer, header: KernelEventHeader) -> KernelEvent? {
        guard event.count >= MemoryLayout<tcp_event>.size else { return nil }
        let tcp = event.loadUnaligned(as: tcp_event.self)
        guard let local = SocketAddress(family: tcp.family, bytes: tcp.local_address, port: tcp.local_port),
              let remote = SocketAddress(family: tcp.family, bytes: tcp.remote_address, port: tcp.remote_port) else { return nil }
        var fields = [
            KernelLabel("network.type", .string(local.isIPv6 ? "ipv6" : "ipv4")),
            KernelLabel("network.local.address", .string(local.address)), KernelLabel("network.local.port", .int(Int64(local.port))),
            KernelLabel("network.peer.address", .string(remote.address)), KernelLabel("network.peer.port", .int(Int64(remote.port))),
        ]
        let name: String
        switch Int32(header.type) {
        case TCP_EVENT_CONNECT:
            name = "connect"
            fields.append(KernelLabel("duration_us", .int(Int64(tcp.duration_ns / 1000))))
        case TCP_EVENT_CONNECT_FAILED:
            name = "connect_failed"
            fields.append(KernelLabel("error.type", .string(Self.errnoName(Int32(tcp.error)))))
            fields.append(KernelLabel("duration_us", .int(Int64(tcp.duration_ns / 1000))))
        case TCP_EVENT_ACCEPT:
            name = "accept"
        case TCP_EVENT_CLOSE:
            name = "close"
            fields += [
                KernelLabel("tcp.bytes_acked", .int(Int64(clamping: tcp.bytes_acked))),
                KernelLabel("tcp.bytes_received", .int(Int64(clamping: tcp.bytes_received))),
                KernelLabel("tcp.rtt_us", .int(Int64(tcp.srtt_us))),
                KernelLabel("duration_us", .int(Int64(tcp.duration_ns / 1000))),
            ]
        case TCP_EVENT_STATE:
            name = "state_change"
            fields.append(KernelLabel("tcp.state.old", .string(Self.stateName(UInt32(tcp.error)))))
            fields.append(KernelLabel("tcp.state", .string(Self.stateName(tcp.state))))
        case TCP_EVENT_RETRANSMIT:
            name = "retransmit"
            fields.append(KernelLabel("tcp.state", .string(Self.stateName(tcp.state))))
        default:
            return nil
        }
        return KernelEvent(tracer: self.name, name: name, timeUnixNano: 0, pid: header.pid, comm: header.comm, fields: fields)
    }

    /// The errno of a failed connect by its C name (`error.type`), else its number.
    static func errnoName(_ number: Int32) -> String {
        switch number {
        case ECONNREFUSED: "ECONNREFUSED"
        case ETIMEDOUT: "ETIMEDOUT"
        case ECONNRESET: "ECONNRESET"
        case EHOSTUNREACH: "EHOSTUNREACH"
        case ENETUNREACH: "ENETUNREACH"
        case ECONNABORTED: "ECONNABORTED"
        case 0: "none"
        default: "errno \(number)"
        }
    }

    /// Linux's TCP state names (include/net/tcp_states.h), as tcpstates prints them.
    static func stateName(_ state: UInt32) -> String {
        let names = ["", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT",
                     "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"]
        return state > 0 && Int(state) < names.count ? names[Int(state)] : "state \(state)"
    }
}
