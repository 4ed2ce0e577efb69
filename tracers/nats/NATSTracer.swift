import BPFRuntime
import TracerFramework

/// NATS (the client protocol: `PUB`/`HPUB`, `MSG`/`HMSG`) for any client or server process: a protocol parser on
/// the shared capture layer (tracers/nats). Messaging spans following the OpenTelemetry messaging conventions
/// (TracerFramework's `MessagingSpans`): PRODUCER per message a client publishes, CONSUMER per message delivered
/// to a client, SERVER per message nats-server reads. Payloads and header values (but `traceparent`) are never
/// recorded.
public struct NATSTracer: Tracer {
    public let name = "nats"
    public let statistics = NATSTracerCounters()

    public init() {}

    public var parser: (any ProtocolParser)? { NATSParser(counters: statistics) }

    public func counters(object: BPFObject?) -> [TracerCounter] {
        let statistics = statistics
        return [
            TracerCounter("malformed_streams", help: "NATS streams that stopped being the protocol (garbage, absurd sizes, uncaptured lines); parsing resumed at a later operation.") {
                statistics.malformed.load(ordering: .relaxed)
            },
            TracerCounter("publishes_without_reply", help: "NATS publishes in verbose mode whose +OK/-ERR was never matched (closed, stream broken).") {
                statistics.withoutReply.load(ordering: .relaxed)
            },
            TracerCounter("unmatched_responses", help: "NATS +OK/-ERR answers with no operation waiting (verbose mode).") {
                statistics.unmatchedResponses.load(ordering: .relaxed)
            },
            TracerCounter("abandoned_publishes", help: "NATS publishes dropped unanswered (more than 1024 waiting, verbose mode).") {
                statistics.abandoned.load(ordering: .relaxed)
            },
            TracerCounter("server_errors", help: "NATS -ERR messages seen.") {
                statistics.serverErrors.load(ordering: .relaxed)
            },
        ]
    }

    public func applicability(to process: TracedProcess) -> Applicability { .applies }
}
