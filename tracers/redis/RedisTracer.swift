import BPFRuntime
import TracerFramework

/// Redis (RESP2 and RESP3) for any client or server process: a protocol parser on the shared capture layer
/// (tracers/redis). One span per command — pipelined ones and those inside MULTI/EXEC too — following the
/// OpenTelemetry database conventions (TracerFramework's `DatabaseSpans`), CLIENT in the client process and
/// SERVER in redis-server. Arguments are never recorded unless `db.query.text` is configured.
public struct RedisTracer: Tracer {
    public let name = "redis"
    public let statistics = RedisTracerCounters()
    public let queryText: DatabaseQueryText

    public init(queryText: DatabaseQueryText = .off) {
        self.queryText = queryText
    }

    public var parser: (any ProtocolParser)? { RedisParser(counters: statistics, queryText: queryText) }

    public func counters(object: BPFObject?) -> [TracerCounter] {
        let statistics = statistics
        return [
            TracerCounter("malformed_streams", help: "Redis streams that stopped being RESP (garbage, absurd lengths); parsing resumed at a later command.") {
                statistics.malformed.load(ordering: .relaxed)
            },
            TracerCounter("commands_without_reply", help: "Redis commands whose reply was never matched (closed, stream broken).") {
                statistics.withoutReply.load(ordering: .relaxed)
            },
            TracerCounter("unmatched_replies", help: "Redis replies with no command waiting (connections seen mid-stream).") {
                statistics.unmatchedReplies.load(ordering: .relaxed)
            },
            TracerCounter("abandoned_commands", help: "Redis commands dropped unanswered (more than 1024 pipelined).") {
                statistics.abandoned.load(ordering: .relaxed)
            },
            TracerCounter("subscribed_connections", help: "Redis connections in SUBSCRIBE mode (their messages make no spans).") {
                statistics.subscribedConnections.load(ordering: .relaxed)
            },
        ]
    }

    public func applicability(to process: TracedProcess) -> Applicability { .applies }
}
