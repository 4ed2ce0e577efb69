internal import CLibBPF
internal import CTracerShim
#if canImport(Glibc)
import Glibc
#endif

/// A loaded BPF program (`struct bpf_program`) and the ways to attach it. Every attach returns a
/// `BPFLink` that detaches on `close()` or deinit.
public final class BPFProgram: @unchecked Sendable {
    let handle: OpaquePointer
    /// Keeps the object (and so the program fd) alive while the program is in use.
    private let object: BPFObject
    public let name: BPFProgramName

    init(handle: OpaquePointer, object: BPFObject) {
        self.handle = handle
        self.object = object
        name = BPFProgramName(String(cString: bpf_program__name(handle)))
    }

    public var fd: Int32 { bpf_program__fd(handle) }

    /// Uprobe (or uretprobe) at `offset` in the file at `path` (a perf-event link, Linux 4.17;
    /// the cookie needs Linux 5.15). `pid` nil traces every process that maps the file.
    public func attachUprobe(path: String, offset: UInt64, pid: Int32? = nil, returnProbe: Bool = false, cookie: UInt64 = 0) throws -> BPFLink {
        try UprobeTarget.validate(path: path, offsets: [offset])
        var options = bpf_uprobe_opts()
        options.sz = MemoryLayout<bpf_uprobe_opts>.size
        options.retprobe = returnProbe
        options.bpf_cookie = cookie
        let link = bpf_program__attach_uprobe_opts(handle, pid ?? -1, path, Int(offset), &options)
        let kind = returnProbe ? "uretprobe" : "uprobe"
        return try BPFLink(libbpfLink: link, errno: errno,
                           description: "\(kind) \(name) at \(path)+0x\(String(offset, radix: 16))\(pid.map { " pid \($0)" } ?? "")")
    }

    /// One `BPF_TRACE_UPROBE_MULTI` link (Linux 6.6) for many offsets of one file: attaching and detaching
    /// cost one operation instead of one per offset. The program must be listed in the spec's
    /// `uprobeMultiPrograms`. `cookies`, when given, has one entry per offset.
    public func attachUprobeMulti(path: String, offsets: [UInt64], cookies: [UInt64]? = nil, pid: Int32? = nil, returnProbe: Bool = false) throws -> BPFLink {
        try UprobeTarget.validate(path: path, offsets: offsets)
        return try attachUprobeMultiUnchecked(path: path, offsets: offsets, cookies: cookies, pid: pid, returnProbe: returnProbe)
    }

    /// `attachUprobeMulti` without checking the target first (the feature probe's deliberate bad target).
    func attachUprobeMultiUnchecked(path: String, offsets: [UInt64], cookies: [UInt64]?, pid: Int32?, returnProbe: Bool) throws -> BPFLink {
        let description = "uprobe_multi \(name) at \(offsets.count) offsets of \(path)"
        guard !offsets.isEmpty, cookies == nil || cookies!.count == offsets.count else {
            throw BPFError("attach \(description): offsets empty or cookies not one per offset", errno: EINVAL)
        }
        let fd = offsets.withUnsafeBufferPointer { offsetBuffer in
            withOptionalBuffer(cookies) { cookieBuffer in
                tracer_uprobe_multi_link_create(self.fd, path, offsetBuffer.baseAddress, cookieBuffer, UInt32(offsets.count),
                                                returnProbe ? 1 : 0, UInt32(pid ?? 0))
            }
        }
        guard fd >= 0 else { throw BPFError("attach \(description)", errno: fd) }
        return BPFLink(fd: fd, description: description)
    }

    /// Kprobe or kretprobe on a kernel function (needs CONFIG_KPROBES; fails with ENOENT without it).
    public func attachKprobe(function: String, returnProbe: Bool = false, cookie: UInt64 = 0) throws -> BPFLink {
        var options = bpf_kprobe_opts()
        options.sz = MemoryLayout<bpf_kprobe_opts>.size
        options.retprobe = returnProbe
        options.bpf_cookie = cookie
        let link = bpf_program__attach_kprobe_opts(handle, function, &options)
        return try BPFLink(libbpfLink: link, errno: errno, description: "\(returnProbe ? "kretprobe" : "kprobe") \(name) on \(function)")
    }

    /// Tracepoint `category:event` (e.g. `sched`, `sched_process_exec`), Linux 4.7.
    public func attachTracepoint(category: String, event: String) throws -> BPFLink {
        let link = bpf_program__attach_tracepoint(handle, category, event)
        return try BPFLink(libbpfLink: link, errno: errno, description: "tracepoint \(name) on \(category):\(event)")
    }

    /// cgroup program (cgroup_skb, sock_ops, ...) on the cgroup v2 directory at `path`, as a BPF link
    /// (`BPF_LINK_CREATE`, Linux 5.7): the program runs for every socket of that cgroup and its descendants,
    /// next to other programs attached there.
    public func attachCgroup(path: String) throws -> BPFLink {
        let description = "cgroup program \(name) on \(path)"
        let cgroup = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard cgroup >= 0 else { throw BPFError("open cgroup directory \(path) to attach \(name)", errno: errno) }
        defer { _ = Glibc.close(cgroup) }
        let link = bpf_program__attach_cgroup(handle, cgroup)
        return try BPFLink(libbpfLink: link, errno: errno, description: description)
    }

    /// sk_msg verdict program on a SOCKHASH or SOCKMAP (`BPF_SK_MSG_VERDICT`, Linux 4.17): it runs for every
    /// sendmsg/sendfile of the sockets in `map`, in the sending task. Detached when the link closes.
    public func attachMessageVerdict(to map: BPFMap) throws -> BPFLink {
        try BPFLink(attaching: fd, to: map.fd, type: BPF_SK_MSG_VERDICT, description: "sk_msg program \(name) on map \(map.name)")
    }

    /// Raw tracepoint (Linux 4.17).
    public func attachRawTracepoint(_ event: String) throws -> BPFLink {
        let link = bpf_program__attach_raw_tracepoint(handle, event)
        return try BPFLink(libbpfLink: link, errno: errno, description: "raw tracepoint \(name) on \(event)")
    }

    /// BTF-typed attach (tp_btf, fentry/fexit; Linux 5.5) at the target named in the program's section.
    public func attachTracing() throws -> BPFLink {
        let link = bpf_program__attach_trace(handle)
        return try BPFLink(libbpfLink: link, errno: errno, description: "BTF tracing program \(name)")
    }

    /// The ELF section the program came from (`tracepoint/sched/sched_switch`, `uprobe//bin/sh:main`).
    public var section: String { String(cString: bpf_program__section_name(handle)) }

    /// Attaches the program the way its section says (`bpf_program__attach`, libbpf 0.8): tracepoint,
    /// raw_tp, tp_btf, kprobe, fentry, and uprobe with `binary:function` sections.
    public func attachBySection() throws -> BPFLink {
        let link = bpf_program__attach(handle)
        return try BPFLink(libbpfLink: link, errno: errno, description: "program \(name) (SEC(\"\(section)\"))")
    }

    /// Runs the program once with `BPF_PROG_TEST_RUN` (for `syscall` and similar program types);
    /// returns its return value.
    @discardableResult
    public func testRun() throws -> UInt32 {
        var options = bpf_test_run_opts()
        options.sz = MemoryLayout<bpf_test_run_opts>.size
        try check(bpf_prog_test_run_opts(fd, &options), "test run of program \(name)")
        return options.retval
    }

    /// How often the program ran and for how long, from `bpf_prog_info` (Linux 5.1). The kernel counts
    /// runs only while statistics are enabled (`BPFStatistics.enable()` or sysctl `kernel.bpf_stats_enabled`);
    /// recursion misses always (Linux 5.12).
    public func runtimeStatistics() throws -> ProgramStatistics {
        var info = bpf_prog_info()
        var length = UInt32(MemoryLayout<bpf_prog_info>.size)
        try check(bpf_obj_get_info_by_fd(fd, &info, &length), "read info of program \(name)")
        return ProgramStatistics(program: name, runCount: info.run_cnt, runTimeNanoseconds: info.run_time_ns,
                                 recursionMisses: info.recursion_misses)
    }
}

private func withOptionalBuffer<R>(_ values: [UInt64]?, _ body: (UnsafePointer<UInt64>?) -> R) -> R {
    guard let values else { return body(nil) }
    return values.withUnsafeBufferPointer { body($0.baseAddress) }
}

/// Run count and run time of one program, as the kernel accounts them.
public struct ProgramStatistics: Sendable, Equatable {
    public let program: BPFProgramName
    public let runCount: UInt64
    public let runTimeNanoseconds: UInt64
    /// Times the kernel skipped the program because it was already running on that CPU
    /// (`bpf_prog_info.recursion_misses`; e.g. a completion in an interrupt on top of the same hook).
    public var recursionMisses: UInt64 = 0

    /// Mean time per run, in nanoseconds (0 before the first run).
    public var averageNanoseconds: Double { runCount == 0 ? 0 : Double(runTimeNanoseconds) / Double(runCount) }
}

/// Kernel-wide BPF run-time statistics (`BPF_ENABLE_STATS` with `BPF_STATS_RUN_TIME`, Linux 5.8): enabled
/// while the returned token lives.
public final class BPFStatistics: Sendable {
    private let fd: Int32

    private init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }

    public static func enable() throws -> BPFStatistics {
        let fd = bpf_enable_stats(BPF_STATS_RUN_TIME)
        guard fd >= 0 else { throw BPFError("enable BPF run-time statistics", errno: fd) }
        return BPFStatistics(fd: fd)
    }
}
