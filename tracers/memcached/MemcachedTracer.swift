import BPFRuntime
import TracerFramework

/// memcached (the text and binary protocols) for any client or server process: a protocol parser on the shared capture
/// layer (tracers/memcached). One span per command — pipelined ones too — following the OpenTelemetry database
/// conventions (TracerFramework's `DatabaseSpans`), CLIENT in the client process and SERVER in memcached. Keys
/// and arguments are never recorded unless `db.query.text` is configured.
public struct MemcachedTracer: Tracer {
    public let name = "memcached"
    public let statistics = MemcachedTracerCounters()
    public let queryText: DatabaseQueryText

    public init(queryText: DatabaseQueryText = .off) {
        self.queryText = queryText
    }

    public var parser: (any ProtocolParser)? { MemcachedParser(counters: statistics, queryText: queryText) }

    public func counters(object: BPFObject?) -> [TracerCounter] {
        let statistics = statistics
        return [
            TracerCounter("malformed_streams", help: "memcached streams that stopped being the text protocol (garbage, absurd lengths, uncaptured lines); parsing resumed at a later command.") {
                statistics.malformed.load(ordering: .relaxed)
            },
            TracerCounter("commands_without_reply", help: "memcached commands whose response was never matched (closed, stream broken).") {
                statistics.withoutReply.load(ordering: .relaxed)
            },
            TracerCounter("unmatched_responses", help: "memcached responses with no command waiting.") {
                statistics.unmatchedResponses.load(ordering: .relaxed)
            },
            TracerCounter("abandoned_commands", help: "memcached commands dropped unanswered (more than 1024 pipelined).") {
                statistics.abandoned.load(ordering: .relaxed)
            },
            TracerCounter("unsupported_commands", help: "memcached connections that sent quiet meta commands (not followed: no more spans).") {
                statistics.unsupported.load(ordering: .relaxed)
            },
        ]
    }

    public func applicability(to process: TracedProcess) -> Applicability { .applies }
}
