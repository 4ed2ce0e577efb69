import BPFRuntime
import TracerFramework

/// MySQL and MariaDB (the client/server protocol) for any client or server process: a protocol parser on the
/// shared capture layer (tracers/mysql). One span per COM_QUERY and per COM_STMT_EXECUTE (prepared statements
/// named by the text their COM_STMT_PREPARE sent), following the OpenTelemetry database conventions
/// (TracerFramework's `DatabaseSpans`), CLIENT in the client process and SERVER in mariadbd/mysqld. Query text
/// is never recorded unless `db.query.text` is configured.
public struct MySQLTracer: Tracer {
    public let name = "mysql"
    public let statistics = MySQLTracerCounters()
    public let queryText: DatabaseQueryText

    public init(queryText: DatabaseQueryText = .off) {
        self.queryText = queryText
    }

    public var parser: (any ProtocolParser)? { MySQLParser(counters: statistics, queryText: queryText) }

    public func counters(object: BPFObject?) -> [TracerCounter] {
        let statistics = statistics
        return [
            TracerCounter("malformed_streams", help: "MySQL streams that stopped being the protocol (sequence numbers out of order, a bad column count, garbage); the connection makes no more spans.") {
                statistics.malformed.load(ordering: .relaxed)
            },
            TracerCounter("commands_without_reply", help: "MySQL commands whose response was never matched (closed, stream stopped).") {
                statistics.withoutReply.load(ordering: .relaxed)
            },
            TracerCounter("unmatched_responses", help: "MySQL response packets with no command waiting.") {
                statistics.unmatchedResponses.load(ordering: .relaxed)
            },
            TracerCounter("abandoned_commands", help: "MySQL commands dropped unanswered (more than 1024 pipelined).") {
                statistics.abandoned.load(ordering: .relaxed)
            },
            TracerCounter("forgotten_statements", help: "MySQL prepared statements not remembered (more than 1024 per connection).") {
                statistics.forgottenStatements.load(ordering: .relaxed)
            },
            TracerCounter("encrypted_connections", help: "MySQL connections that switched to TLS (not readable on the socket).") {
                statistics.encryptedConnections.load(ordering: .relaxed)
            },
            TracerCounter("compressed_connections", help: "MySQL connections using the compressed protocol (not parsed).") {
                statistics.compressedConnections.load(ordering: .relaxed)
            },
            TracerCounter("unsupported_exchanges", help: "MySQL commands or handshakes not followed (COM_CHANGE_USER, replication, LOAD DATA LOCAL, pre-4.1 handshakes); the connection makes no more spans.") {
                statistics.unsupported.load(ordering: .relaxed)
            },
            TracerCounter("failed_handshakes", help: "MySQL handshakes the server refused.") {
                statistics.failedHandshakes.load(ordering: .relaxed)
            },
            TracerCounter("beyond_capture", help: "MySQL responses (or commands) with packet headers in a read's uncaptured part.") {
                statistics.beyondCapture.load(ordering: .relaxed)
            },
        ]
    }

    public func applicability(to process: TracedProcess) -> Applicability { .applies }
}
