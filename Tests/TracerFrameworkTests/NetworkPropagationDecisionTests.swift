import TracerFramework
import XCTest

/// `--context-propagation network` is turned on only where every piece it needs is there, and otherwise says
/// which one is missing (the agent logs it once at start and traces on).
final class NetworkPropagationDecisionTests: XCTestCase {
    func testOnWithSocketTracepointsOrSyscallTracepointsARingBufferAndCgroup2() {
        for hooks in [CaptureHooks.socketTracepoints, .syscallTracepoints] {
            XCTAssertEqual(NetworkPropagation.decide(requested: true, hooks: hooks, kernelRelease: "6.18.0-1-cloud-amd64", ringBuffer: true,
                                                     networkAdmin: true, cgroup2: "/sys/fs/cgroup/unified", fionreadReportsZero: { false }),
                           .on(fionreadReportsZero: false))
        }
        XCTAssertEqual(NetworkPropagation.decide(requested: false, hooks: .socketTracepoints, kernelRelease: "6.18.0", ringBuffer: true,
                                                 networkAdmin: true, cgroup2: "/sys/fs/cgroup"), .off)
        XCTAssertNil(NetworkPropagation.off.notice)
        let notice = NetworkPropagation.on(fionreadReportsZero: false).notice
        XCTAssertEqual(notice?.hasPrefix("context propagation network on:"), true)
        XCTAssertFalse(notice?.contains("FIONREAD") ?? true)
        // Kernels with tcp_bpf_ioctl (6.18.14, 6.12.75, 6.6.128 on) say what that costs.
        XCTAssertEqual(NetworkPropagation.decide(requested: true, hooks: .socketTracepoints, kernelRelease: "6.18.44", ringBuffer: true,
                                                 networkAdmin: true, cgroup2: "/sys/fs/cgroup", fionreadReportsZero: { true }),
                       .on(fionreadReportsZero: true))
        XCTAssertEqual(NetworkPropagation.on(fionreadReportsZero: true).notice?.contains("answer FIONREAD with 0 while a response waits"), true)
    }

    func testEachMissingPieceIsNamed() {
        func reason(hooks: CaptureHooks = .socketTracepoints, release: String = "6.18.0", ringBuffer: Bool = true, networkAdmin: Bool = true,
                    cgroup2: String? = "/sys/fs/cgroup") -> String {
            guard case .unavailable(let reason) = NetworkPropagation.decide(requested: true, hooks: hooks, kernelRelease: release, ringBuffer: ringBuffer,
                                                                             networkAdmin: networkAdmin, cgroup2: cgroup2) else { return "on" }
            return reason
        }
        // sk_msg takes over tcp_sendmsg for the sockets it runs on: the fexit and kprobe hooks would miss their sends.
        XCTAssertTrue(reason(hooks: .fexit).contains("fexit hooks on tcp_sendmsg"), reason(hooks: .fexit))
        XCTAssertTrue(reason(hooks: .kprobes).contains("kprobes hooks on tcp_sendmsg"), reason(hooks: .kprobes))
        XCTAssertEqual(reason(hooks: .syscallTracepoints, release: "5.15.0-91-generic"), "needs bpf_loop (Linux 5.17); this is 5.15.0-91-generic")
        XCTAssertTrue(reason(ringBuffer: false).contains("ring buffer"))
        XCTAssertTrue(reason(cgroup2: nil).contains("no cgroup2 filesystem is mounted"))
        XCTAssertEqual(reason(networkAdmin: false), "needs CAP_NET_ADMIN (or CAP_SYS_ADMIN) for its sock_ops and sk_msg programs")
        XCTAssertEqual(NetworkPropagation.unavailable(reason: "x").notice, "context propagation network off: x; tracing carries on without it")
    }
}
