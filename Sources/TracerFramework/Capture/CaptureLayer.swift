import BPFPrograms
import BPFRuntime
import CTracerABI
import ExecutableInspection
import Foundation
import Telemetry

/// How the shared capture layer reaches socket data on this kernel: one variant, chosen once at start
/// (cheapest first) and logged.
public enum CaptureHooks: String, Sendable, CaseIterable {
    /// `sock:sock_send_length` / `sock:sock_recv_length` (Linux 6.3) as BTF tracepoints: run on socket I/O only.
    case socketTracepoints = "socket-tracepoints"
    /// fexit on `tcp_sendmsg` / `tcp_recvmsg` (BTF trampolines; `bpf_get_func_ret`, Linux 5.17).
    case fexit = "fexit"
    /// kprobe + kretprobe on `tcp_sendmsg` / `tcp_recvmsg` (CONFIG_KPROBES).
    case kprobes = "kprobes"
    /// `syscalls:sys_enter_*`/`sys_exit_*` of the data syscalls: the last resort, since any program on them
    /// puts every task of the machine on the syscall slow path.
    case syscallTracepoints = "syscall-tracepoints"

    /// The cheapest variant this kernel has.
    public static func choose(_ features: KernelFeatures) -> CaptureHooks {
        if socketTracepointsExist() { return .socketTracepoints }
        if features.isAvailable(.fentry) && Self.kernel(features.kernelRelease, isAtLeast: (5, 17)) { return .fexit }
        if features.isAvailable(.kprobe) { return .kprobes }
        return .syscallTracepoints
    }

    /// Whether a release string (`6.1.0-27-amd64`) is at least `minimum` (major, minor).
    static func kernel(_ release: String, isAtLeast minimum: (Int, Int)) -> Bool {
        let numbers = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        guard numbers.count == 2 else { return false }
        return (numbers[0], numbers[1]) >= minimum
    }

    /// Whether tracefs lists `sock:sock_send_length` and `sock:sock_recv_length` (Linux 6.3).
    static func socketTracepointsExist() -> Bool {
        ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].contains { root in
            ["sock_send_length", "sock_recv_length"].allSatisfy { FileManager.default.fileExists(atPath: "\(root)/events/sock/\($0)") }
        }
    }

    /// For the start-up log: the hooks and what they cost.
    public var description: String {
        switch self {
        case .socketTracepoints: "socket tracepoints (sock:sock_send_length/sock_recv_length)"
        case .fexit: "fexit on tcp_sendmsg/tcp_recvmsg"
        case .kprobes: "kprobes on tcp_sendmsg/tcp_recvmsg"
        case .syscallTracepoints: "syscall tracepoints (every syscall of the machine pays while a process is traced)"
        }
    }

    typealias Program = BPFPrograms.Capture.Program

    /// The data hooks of this variant; `propagating`: the receive programs that decide server requests' ids
    /// for network propagation (they use bpf_loop, so they are loaded only then).
    func probes(propagating: Bool) -> [Probe] {
        switch self {
        case .socketTracepoints:
            return [.btf(target: "sock_recv_length", program: propagating ? Program.captureSockRecvPropagating : Program.captureSockRecv),
             .btf(target: "sock_send_length", program: Program.captureSockSend)]
        case .fexit:
            return [.btf(target: "tcp_sendmsg", program: Program.captureFexitSendmsg),
             .btf(target: "tcp_recvmsg", program: Program.captureFexitRecvmsg)]
        case .kprobes:
            return [.kprobe(function: "tcp_sendmsg", program: Program.captureKprobeSendmsg, returnProbe: false, fallback: nil),
             .kprobe(function: "tcp_sendmsg", program: Program.captureKretprobeSendmsg, returnProbe: true, fallback: nil),
             .kprobe(function: "tcp_recvmsg", program: Program.captureKprobeRecvmsg, returnProbe: false, fallback: nil),
             .kprobe(function: "tcp_recvmsg", program: Program.captureKretprobeRecvmsg, returnProbe: true, fallback: nil)]
        case .syscallTracepoints:
            // One program serves several syscalls whose arguments agree (read/recvfrom: fd, buffer, count).
            let exit = propagating ? Program.captureExitDataPropagating : Program.captureExitData
            return [("sys_enter_read", Program.captureEnterRead), ("sys_enter_recvfrom", Program.captureEnterRead),
                    ("sys_enter_write", Program.captureEnterWrite), ("sys_enter_sendto", Program.captureEnterWrite),
             ("sys_enter_readv", Program.captureEnterReadv), ("sys_enter_writev", Program.captureEnterWritev),
             ("sys_enter_recvmsg", Program.captureEnterRecvmsg), ("sys_enter_sendmsg", Program.captureEnterSendmsg),
             ("sys_enter_sendfile64", Program.captureEnterSendfile),
             ("sys_exit_read", exit), ("sys_exit_recvfrom", exit), ("sys_exit_write", exit), ("sys_exit_sendto", exit),
             ("sys_exit_readv", exit), ("sys_exit_writev", exit), ("sys_exit_recvmsg", exit), ("sys_exit_sendmsg", exit),
             ("sys_exit_sendfile64", exit)]
                .map { .tracepoint(TracepointProbe("syscalls", $0.0, program: $0.1)) }
        }
    }
}

/// What `--context-propagation` asks for.
public enum ContextPropagation: String, Sendable, CaseIterable {
    /// The Go tracer writes a traceparent into Go net/http requests (`bpf_probe_write_user`).
    case go
    /// The capture layer inserts a traceparent into the plaintext HTTP/1 requests of the other selected
    /// processes on their way out (sk_msg, ``NetworkPropagation``).
    case network
    /// Both.
    case all

    public var writesGoRequests: Bool { self != .network }
    public var insertsIntoNetworkRequests: Bool { self != .go }
}

/// Whether the capture layer inserts traceparents on the network (`--context-propagation network`), decided
/// once at start from what this kernel and machine allow.
public enum NetworkPropagation: Sendable, Equatable {
    case off
    /// `fionreadReportsZero`: this kernel answers FIONREAD on the sockets it follows from sockmap's own queue,
    /// which an sk_msg program alone leaves empty (`tcp_bpf_ioctl`, Linux 6.18.14, 6.12.75, 6.6.128 and later):
    /// 0 while a response waits. Said at start.
    case on(fionreadReportsZero: Bool)
    case unavailable(reason: String)

    /// `requested`: `--context-propagation network` or `all` was given.
    /// `networkAdmin`: the agent holds CAP_NET_ADMIN or CAP_SYS_ADMIN, which sock_ops and sk_msg programs need.
    public static func decide(requested: Bool, hooks: CaptureHooks, kernelRelease: String, ringBuffer: Bool, networkAdmin: Bool,
                              cgroup2: String? = Cgroup2.mountPoint(),
                              fionreadReportsZero: () -> Bool = kernelHasSockmapIoctl) -> NetworkPropagation {
        guard requested else { return .off }
        guard networkAdmin else { return .unavailable(reason: "needs CAP_NET_ADMIN (or CAP_SYS_ADMIN) for its sock_ops and sk_msg programs") }
        guard hooks == .socketTracepoints || hooks == .syscallTracepoints else {
            return .unavailable(reason: "the capture's \(hooks.rawValue) hooks on tcp_sendmsg do not see the sends sk_msg takes over (needs socket tracepoints, Linux 6.3)")
        }
        guard CaptureHooks.kernel(kernelRelease, isAtLeast: (5, 17)) else {
            return .unavailable(reason: "needs bpf_loop (Linux 5.17); this is \(kernelRelease)")
        }
        guard ringBuffer else { return .unavailable(reason: "needs the BPF ring buffer (the perf buffer transport is in use)") }
        guard cgroup2 != nil else { return .unavailable(reason: "no cgroup2 filesystem is mounted (its sock_ops program marks the sockets)") }
        return .on(fionreadReportsZero: fionreadReportsZero())
    }

    /// Whether the kernel has `tcp_bpf_ioctl` (/proc/kallsyms, read to its end: procfs reports no size).
    public static func kernelHasSockmapIoctl() -> Bool {
        guard let file = FileHandle(forReadingAtPath: "/proc/kallsyms") else { return false }
        defer { try? file.close() }
        let symbols = (try? file.readToEnd()) ?? Data()
        return symbols.range(of: Data(" tcp_bpf_ioctl\n".utf8)) != nil
    }

    /// Whether it is on.
    public var isOn: Bool { if case .on = self { true } else { false } }

    /// The line logged at start; nil when it was not asked for.
    public var notice: String? {
        switch self {
        case .off: nil
        case .on(let fionreadReportsZero):
            "context propagation network on: a traceparent is inserted into the plaintext HTTP/1 requests of selected non-Go processes (sock_ops on the cgroup2 root, sk_msg)"
                + (fionreadReportsZero ? "; on this kernel their client sockets answer FIONREAD with 0 while a response waits (tcp_bpf_ioctl), which programs that size reads by FIONREAD may trip on" : "")
        case .unavailable(let reason): "context propagation network off: \(reason); tracing carries on without it"
        }
    }
}

/// The functions the capture layer probes in executables (Go's crypto/tls), for `tracer inspect`.
public let captureProbeTargetQueries = CaptureTracer.goTLSProbes.compactMap { probe -> ProbeTargetQuery? in
    guard case .function(let symbol, _, let returns) = probe else { return nil }
    return ProbeTargetQuery(tracer: CaptureTracer.name, symbol: symbol, needsReturnOffsets: returns != nil)
}

/// Whether the capture layer reads the TLS plaintext of Go program `executable` (crypto/tls): "captured", or
/// "not captured: REASON"; nil for other programs.
public func goTLSPlaintextStatus(of executable: ExecutableInfo) -> String? {
    guard executable.go != nil else { return nil }
    return CaptureTracer.goTLSUnavailableReason(executable).map { "not captured: \($0)" } ?? "captured"
}

/// The Go struct fields to resolve in executables for `tracers`: what they declare, and what the capture
/// layer reads (the goroutine id, crypto/tls's read state) when one of them is a protocol parser. (Inspection resolves nothing else.)
public func goFieldsToInspect(for tracers: [any Tracer]) -> [GoField] {
    let capture = tracers.contains { $0.parser != nil } ? CaptureTracer.goFieldsRead : []
    return Set(tracers.flatMap(\.goFields) + capture).sorted { $0.description < $1.description }
}

/// The shared capture layer's BPF side (bpf/capture.bpf.c) as the framework attaches it: the data hooks
/// of the chosen variant and the end of connections (attached while a process that a protocol parser
/// applies to is selected), libssl's SSL_read/SSL_write for TLS plaintext (per library file,
/// reference-counted), and Go's crypto/tls `(*Conn).Read`/`Write`/`Close` at their entry (Read's RET offsets
/// too once the process makes calls) and the handshakes at their entry and RET offsets (per executable). The agent loads it when a tracer has a protocol parser; it is no tracer plugin.
struct CaptureTracer: Tracer {
    typealias Program = BPFPrograms.Capture.Program

    let hooks: CaptureHooks
    /// Children of selected processes are selected too: the kernel prepares them at fork.
    let followForks: Bool
    let networkPropagation: NetworkPropagation

    var name: String { Self.name }
    var object: EmbeddedBPFObject? { BPFPrograms.Capture.object }
    var eventTypes: ClosedRange<UInt32>? { UInt32(CAPTURE_EVENT_CHUNK)...UInt32(CAPTURE_EVENT_CONTEXT) }
    var hookDescription: String? { hooks.description }
    var goFields: [GoField] { Self.goFieldsRead }
    static let goidField = GoField("runtime.g", "goid")
    static let goFieldsRead = [goidField] + GoField.cryptoTLSReads

    var probes: [Probe] {
        let propagating = networkPropagation.isOn
        let sslReturn = propagating ? Program.captureSslReturnPropagating : Program.captureSslReturn
        return hooks.probes(propagating: propagating) + [.btf(target: "inet_sock_set_state", program: Program.captureSockState),
                        .btf(target: "sched_process_fork", program: Program.captureProcessFork),
                        .btf(target: "sched_process_exec", program: Program.captureProcessExec),
                        .btf(target: "sched_process_exit", program: Program.captureProcessExit)]
            + [("SSL_read", Program.captureSslRead), ("SSL_write", Program.captureSslWrite),
               ("SSL_read_ex", Program.captureSslReadEx), ("SSL_write_ex", Program.captureSslWriteEx)].map {
                .library(prefix: "libssl.so", symbol: $0.0, entry: $0.1, returns: sslReturn, returnsWithUretprobe: true)
            }
            + Self.goTLSProbes
            + (propagating
                ? [.messageVerdict(map: BPFPrograms.Capture.Map.capturePropagationSockets, program: Program.capturePropagationMsg),
                   .cgroup(program: Program.capturePropagationSockops)]
                : [])
    }

    static let name = "capture"

    /// Go's TLS plaintext: a connection's reads and writes (a Read's bytes are taken at the connection's next
    /// Read, Write or Close), and its handshake (whose socket I/O names the connection's socket before a Read
    /// may be served from what the handshake buffered). The server and client handshakes run once per
    /// connection (handshakeContext runs at every Read and Write: no probe there).
    static let goTLSRead = "crypto/tls.(*Conn).Read"
    static let goTLSWrite = "crypto/tls.(*Conn).Write"
    static let goTLSClose = "crypto/tls.(*Conn).Close"
    static let goTLSServerHandshake = "crypto/tls.(*Conn).serverHandshake"
    static let goTLSClientHandshake = "crypto/tls.(*Conn).clientHandshake"
    static let goTLSProbes: [Probe] = [
        .function(symbol: goTLSRead, entry: Program.captureGoTlsRead, returns: Program.captureGoTlsReadReturn),
        .function(symbol: goTLSWrite, entry: Program.captureGoTlsWrite, returns: nil),
        .function(symbol: goTLSClose, entry: Program.captureGoTlsClose, returns: nil),
        .function(symbol: goTLSServerHandshake, entry: Program.captureGoTlsHandshake, returns: Program.captureGoTlsHandshakeReturn),
        .function(symbol: goTLSClientHandshake, entry: Program.captureGoTlsHandshake, returns: Program.captureGoTlsHandshakeReturn),
    ]

    /// Read's RETs take its plaintext at once, so a handler's call finds the request it serves; they cost a
    /// single-stepped trap per Read, so only a process that makes calls gets them.
    var returnsAttachedOnceCalling: Set<String> { [Self.goTLSRead] }

    /// Why Go TLS plaintext is not captured in `executable`, or nil when it is: it needs Go's register ABI
    /// (Go 1.17+ on x86-64: arguments and results in registers), the goroutine id, Read and Write, and where a
    /// `crypto/tls.Conn` keeps what Reads hand out (``GoField/cryptoTLSReads``). Nothing is guessed.
    static func goTLSUnavailableReason(_ executable: ExecutableInfo) -> String? {
        guard let go = executable.go else { return "not a Go executable" }
        let targets = executable.probeTargets.filter { $0.tracer == name }
        guard targets.contains(where: { $0.symbol == goTLSRead }), targets.contains(where: { $0.symbol == goTLSWrite }) else {
            return "crypto/tls.(*Conn).Read/Write not found (not linked, or inlined)"
        }
        guard executable.machine == "x86-64", let version = go.buildInfo?.languageVersion, version >= (1, 17) else {
            return "Go TLS plaintext needs Go 1.17+ on x86-64 (register ABI); this is \(go.buildInfo?.goVersion ?? "an unknown Go version") on \(executable.machine)"
        }
        guard go.gSlotThreadPointerOffset != nil, go.fieldOffsets?.offset(goidField) != nil else {
            return "the goroutine id is not readable (runtime.g offsets unknown)"
        }
        guard GoTLSReadOffsets(go.fieldOffsets) != nil else {
            let missing = GoField.cryptoTLSReads.filter { go.fieldOffsets?.offset($0) == nil }.map(\.description)
            return "crypto/tls.Conn's read state is not located (\(missing.joined(separator: ", ")) unknown: not in DWARF or the offsets table for \(go.buildInfo?.goVersion ?? "this Go version"))"
        }
        return nil
    }

    /// The framework decides: the capture applies to a process when a protocol parser does.
    func applicability(to process: TracedProcess) -> Applicability { .applies }

    func configure(_ spec: inout BPFObjectSpec, features: KernelFeatures) {
        spec.set(BPFPrograms.Capture.Global.captureFollowForks, to: UInt8(followForks ? 1 : 0))
        spec.set(BPFPrograms.Capture.Global.captureNetworkPropagation, to: UInt8(networkPropagation.isOn ? 1 : 0))
        if !networkPropagation.isOn {
            // Only the sock_ops and sk_msg programs, loaded with it, use the SOCKHASH (whose creation needs
            // CAP_NET_ADMIN); the data hooks' other maps are referenced by code the verifier drops: a few entries.
            spec.skippedMaps.insert(BPFPrograms.Capture.Map.capturePropagationSockets)
            for map in [BPFPrograms.Capture.Map.captureServingThreads, BPFPrograms.Capture.Map.captureInjections] {
                spec.mapMaxEntries[map] = 64
            }
        }
    }

    /// Go TLS Reads whose plaintext was lost (bpf/capture.h CAPTURE_GO_TLS_*), and network propagation's
    /// counts (CAPTURE_PROPAGATION_*) while it is on: per-CPU slots, summed.
    func counters(object: BPFObject?) -> [TracerCounter] {
        guard let object, let losses = try? object.map(BPFPrograms.Capture.Map.captureGoTlsLosses) else { return [] }
        @Sendable func sum(_ map: BPFMap, _ index: Int32) -> UInt64 { ((try? map.lookupPerCPU(UInt32(index), as: UInt64.self)) ?? []).reduce(0, &+) }
        var counters = [
            TracerCounter("go_tls_reads_overwritten",
                          help: "Go crypto/tls Reads not emitted: a later record was decrypted over their bytes before they were taken",
                          value: { sum(losses, CAPTURE_GO_TLS_OVERWRITTEN) }),
            TracerCounter("go_tls_reads_untied", help: "Go crypto/tls Reads not emitted: their connection's socket was never seen",
                          value: { sum(losses, CAPTURE_GO_TLS_UNTIED) }),
        ]
        guard networkPropagation.isOn, let counts = try? object.map(BPFPrograms.Capture.Map.capturePropagationCounts) else { return counters }
        counters += [TracerCounter("propagation_injected", help: "HTTP/1 requests a traceparent was inserted into (--context-propagation network)",
                                   value: { sum(counts, CAPTURE_PROPAGATION_INJECTED) }),
                     TracerCounter("propagation_skipped", help: "HTTP/1 requests left alone: they carried a traceparent, or their connection could not be framed",
                                   value: { sum(counts, CAPTURE_PROPAGATION_SKIPPED) }),
                     TracerCounter("propagation_failed", help: "HTTP/1 requests a traceparent could not be inserted into (sent unchanged)",
                                   value: { sum(counts, CAPTURE_PROPAGATION_FAILED) })]
        return counters
    }

    /// Tells the capture where a Go process keeps its goroutine id, so chunks name their goroutine, and where
    /// its crypto/tls connections keep what their Reads hand out.
    func prepare(_ process: TracedProcess, object: BPFObject) throws {
        var facts = capture_process()
        if let go = process.executable.go, let tls = go.gSlotThreadPointerOffset, let goid = go.fieldOffsets?.offset(Self.goidField) {
            facts.go_g_tls_offset = tls
            facts.go_goid_offset = goid
            if Self.goTLSUnavailableReason(process.executable) == nil, let reads = GoTLSReadOffsets(go.fieldOffsets) {
                facts.go_tls = 1
                facts.go_tls_input = reads.input
                facts.go_tls_consumed = reads.consumed
                facts.go_tls_sequence = reads.sequence
                facts.go_tls_failure = reads.failure
            }
        }
        try object.map(BPFPrograms.Capture.Map.captureProcesses).update(UInt32(bitPattern: process.pid), facts)
    }

    func forget(pid: Int32, object: BPFObject) {
        _ = try? object.map(BPFPrograms.Capture.Map.captureProcesses).delete(UInt32(bitPattern: pid))
    }
}

/// Where a `crypto/tls.Conn` keeps what its Reads hand out, from the Conn's start (bpf/capture.h
/// `capture_process.go_tls_*`): `input` (a `bytes.Reader`: the decrypted record `s` and the read index `i`),
/// `in.seq` (the number of the last record read) and `in.err` (what ends the connection's reads).
struct GoTLSReadOffsets {
    let input: UInt32
    let consumed: UInt32
    let sequence: UInt32
    let failure: UInt32

    init?(_ offsets: GoFieldOffsets?) {
        guard let offsets, let conn = offsets.offset(GoField("crypto/tls.Conn", "input")), let record = offsets.offset(GoField("bytes.Reader", "s")),
              let index = offsets.offset(GoField("bytes.Reader", "i")), let halfConn = offsets.offset(GoField("crypto/tls.Conn", "in")),
              let sequence = offsets.offset(GoField("crypto/tls.halfConn", "seq")),
              let failure = offsets.offset(GoField("crypto/tls.halfConn", "err")) else { return nil }
        input = UInt32(conn + record)
        consumed = UInt32(conn + index)
        self.sequence = UInt32(halfConn + sequence)
        self.failure = UInt32(halfConn + failure)
    }
}
