import BPFRuntime
import TracerFramework

/// PostgreSQL (frontend/backend protocol 3.0) for any client or server process: a protocol parser on the
/// shared capture layer (tracers/postgres). One span per executed statement — each statement of a simple
/// Query, each Execute of the extended protocol — following the OpenTelemetry database conventions
/// (TracerFramework's `DatabaseSpans`), CLIENT in the client process and SERVER in the postgres backend.
/// Query text is never recorded unless `db.query.text` is configured.
public struct PostgresTracer: Tracer {
    public let name = "postgres"
    public let statistics = PostgresTracerCounters()
    public let queryText: DatabaseQueryText

    public init(queryText: DatabaseQueryText = .off) {
        self.queryText = queryText
    }

    public var parser: (any ProtocolParser)? { PostgresParser(counters: statistics, queryText: queryText) }

    public func counters(object: BPFObject?) -> [TracerCounter] {
        let statistics = statistics
        return [
            TracerCounter("malformed_streams", help: "PostgreSQL streams that stopped being the protocol (garbage, a length below 4 or absurd, uncaptured headers); the connection makes no more spans.") {
                statistics.malformed.load(ordering: .relaxed)
            },
            TracerCounter("statements_without_reply", help: "PostgreSQL statements whose response was never matched (closed, stream broken).") {
                statistics.withoutReply.load(ordering: .relaxed)
            },
            TracerCounter("executes_skipped_after_error", help: "PostgreSQL Executes the server skipped after an error earlier in their batch (no span).") {
                statistics.skippedAfterError.load(ordering: .relaxed)
            },
            TracerCounter("unmatched_responses", help: "PostgreSQL responses with no statement waiting (Parse/Bind errors without an Execute).") {
                statistics.unmatchedResponses.load(ordering: .relaxed)
            },
            TracerCounter("abandoned_statements", help: "PostgreSQL statements dropped unanswered (more than 1024 pipelined).") {
                statistics.abandoned.load(ordering: .relaxed)
            },
            TracerCounter("forgotten_statements", help: "PostgreSQL named statements or portals not remembered (more than 256 per connection).") {
                statistics.forgottenStatements.load(ordering: .relaxed)
            },
            TracerCounter("encrypted_connections", help: "PostgreSQL connections that went SSL/GSS-encrypted (not readable on the socket).") {
                statistics.encryptedConnections.load(ordering: .relaxed)
            },
            TracerCounter("unsupported_startups", help: "PostgreSQL StartupMessages of an unknown protocol version.") {
                statistics.unsupportedStartup.load(ordering: .relaxed)
            },
        ]
    }

    public func applicability(to process: TracedProcess) -> Applicability { .applies }
}
