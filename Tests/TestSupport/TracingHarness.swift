import Foundation
import Logging
import Telemetry
import TracerFramework
import Tracers

/// The one way tests (and benchmarks' end-to-end checks) trace a process: the real `Agent`, with the
/// registry's tracers (or the given ones), selecting processes by PID exactly as `tracer --pid` does, and
/// collecting the spans. Nothing here attaches anything itself.
public final class TracingHarness {
    public let agent: Agent
    public let collector = SpanCollector()

    /// Starts an agent that traces `pids` (and their children). `captureHooks` forces a capture variant;
    /// `contextPropagation` as `tracer --context-propagation` does.
    public init(pids: [Int32], tracers: [any Tracer]? = nil, captureHooks: CaptureHooks? = nil, contextPropagation: ContextPropagation? = nil,
                logLevel: Logger.Level = .warning) throws {
        var logger = Logger(label: "tracer.tests")
        logger.logLevel = logLevel
        let tracers = tracers ?? TracerRegistry.tracers(contextPropagation: contextPropagation?.writesGoRequests ?? false)
        agent = try Agent(.init(selection: Selection(rules: [SelectionRule(pids: pids)]), tracers: tracers, sinks: [collector],
                                rescanInterval: .seconds(1), drainInterval: .milliseconds(10), logger: logger,
                                captureHooks: captureHooks, networkPropagation: contextPropagation?.insertsIntoNetworkRequests ?? false))
        try agent.start()
        agent.settle()
    }

    deinit { agent.stop(flushTimeout: .seconds(1)) }

    /// Spans of process `pid`, in start order (exchanges on different connections may end, and be emitted,
    /// in another order).
    public func spans(of pid: Int32, kind: SpanKind? = nil) -> [Span] {
        collector.spans.filter { span in
            span.resource.attributes[SemanticConventions.processPID]?.intValue == Int64(pid) && (kind == nil || span.kind == kind)
        }.sorted { $0.startTimeUnixNano < $1.startTimeUnixNano }
    }

    /// Waits until the probes `pid`'s tracers attach once it makes calls (``Tracer/attachedOnceCalling``, e.g. the
    /// Go tracer's HTTP/2 and gRPC handler probes) are attached: after its first call.
    public func waitForCallProbes(of pid: Int32, timeout: TimeInterval = 10) -> Bool {
        waitUntil(timeout: timeout) { self.agent.attachedFiles().contains { $0.forCalls && $0.users.contains(pid) } }
    }

    /// Waits until `pid` has `count` spans of `kind`, then a little longer to catch any extra ones.
    @discardableResult
    public func waitForSpans(of pid: Int32, kind: SpanKind? = nil, count: Int, timeout: TimeInterval = 10) -> [Span] {
        _ = waitUntil(timeout: timeout) { self.spans(of: pid, kind: kind).count >= count }
        usleep(200_000)
        return spans(of: pid, kind: kind)
    }
}
