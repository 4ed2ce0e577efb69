import BPFPrograms
import BPFRuntime
import CTracerABI
import Synchronization
import Telemetry
import TracerFramework

/// A tracer made of the self-test programs, for testing the framework without a real protocol tracer:
/// a uprobe on `target_3` of the uprobe-target helper (and, for library tests, on `lib_target` of a
/// shared library), plus the getppid tracepoint. Each event becomes a span named after its type.
struct SelftestTracer: Tracer {
    var name: String { "selftest" }
    var object: EmbeddedBPFObject? { BPFPrograms.Selftest.object }
    var libraryPrefix: String? = nil
    var functionSymbol = "target_3"
    /// Whether the library probe's return runs as a uretprobe (else as uprobes at RET offsets).
    var libraryReturnsWithUretprobe = true

    var probes: [Probe] {
        var probes: [Probe] = [
            .function(symbol: functionSymbol, entry: BPFPrograms.Selftest.Program.selftestUprobe, returns: nil),
            .tracepoint(TracepointProbe("syscalls", "sys_enter_getppid", program: BPFPrograms.Selftest.Program.selftestTracepoint)),
        ]
        if let libraryPrefix {
            probes.append(.library(prefix: libraryPrefix, symbol: "lib_target", entry: BPFPrograms.Selftest.Program.selftestUprobe,
                                   returns: BPFPrograms.Selftest.Program.selftestUretprobe, returnsWithUretprobe: libraryReturnsWithUretprobe))
        }
        return probes
    }

    var eventTypes: ClosedRange<UInt32>? { UInt32(SELFTEST_EVENT_TRACEPOINT)...UInt32(SELFTEST_EVENT_FLOOD) }

    func applicability(to process: TracedProcess) -> Applicability { .applies }

    func decode(_ event: UnsafeRawBufferPointer, context: DecodeContext) -> Span? {
        guard event.count >= MemoryLayout<selftest_event>.size else { return nil }
        let decoded = event.loadUnaligned(as: selftest_event.self)
        guard let resource = context.resource(Int32(bitPattern: decoded.header.pid)) else { return nil }
        let time = context.unixNanoseconds(monotonic: decoded.header.timestamp_ns)
        let name = switch Int32(decoded.header.type) {
        case SELFTEST_EVENT_UPROBE: "uprobe"
        case SELFTEST_EVENT_URETPROBE: "uretprobe"
        default: "tracepoint"
        }
        return Span(name: name, kind: .internal_, traceID: .random(), spanID: .random(), startTimeUnixNano: time, endTimeUnixNano: time + 1,
                    attributes: ["selftest.value": .int(Int64(bitPattern: decoded.value)), "selftest.cookie": .int(Int64(bitPattern: decoded.cookie)),
                                 "selftest.pid": .int(Int64(decoded.header.pid))],
                    resource: resource, scope: context.scope)
    }
}

/// Spans handed to the agent's sinks.
final class CollectingSink: SpanSink {
    private let collected = Mutex<[Span]>([])

    func consume(_ spans: [Span]) { collected.withLock { $0 += spans } }
    func flush(timeout: Duration) -> Bool { true }
    func shutdown(timeout: Duration) {}

    var spans: [Span] { collected.withLock { $0 } }

    func spans(named name: String, pid: Int32) -> [Span] {
        spans.filter { $0.name == name && $0.attributes["selftest.pid"] == .int(Int64(pid)) }
    }
}
