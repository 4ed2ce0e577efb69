import BPFRuntime
import TracerFramework

/// HTTP/1.x for any language (tracers/http): a protocol parser on the shared capture layer. Server and client
/// spans from the socket data of every selected process, and from TLS plaintext (libssl) for HTTPS; spans
/// follow the OpenTelemetry HTTP conventions (TracerFramework's `HTTPSpans`).
public struct HTTPTracer: Tracer {
    public let name = "http"
    /// Exchanges that did not become complete spans, for the agent's self-metrics.
    public let statistics = HTTPTracerCounters()

    public init() {}

    public var parser: (any ProtocolParser)? { HTTP1Parser(counters: statistics) }

    public func counters(object: BPFObject?) -> [TracerCounter] {
        let statistics = statistics
        return [
            TracerCounter("abandoned_requests", help: "Pipelined requests dropped unanswered (more than 64 waiting).") {
                statistics.abandoned.load(ordering: .relaxed)
            },
            TracerCounter("exchanges_without_response", help: "Exchanges that ended before a response was seen.") {
                statistics.withoutResponse.load(ordering: .relaxed)
            },
            TracerCounter("unmatched_responses", help: "Response bytes with no request waiting (connections seen mid-stream).") {
                statistics.unmatchedResponses.load(ordering: .relaxed)
            },
            TracerCounter("unparsed_responses", help: "Bytes where a response head had to start but none did.") {
                statistics.unparsedResponses.load(ordering: .relaxed)
            },
        ]
    }

    /// Every selected process: the framework leaves connections whose exchanges another tracer of the
    /// process makes (Go's HTTP client calls) to that tracer.
    public func applicability(to process: TracedProcess) -> Applicability { .applies }
}
