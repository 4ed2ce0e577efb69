import FuzzDriver
import Telemetry
import TracerFramework
import Tracers

/// One fuzz input through the database parsers of captured bytes: SQL summaries and query-text sanitizing,
/// and the connection tracker with the Redis, PostgreSQL, MySQL, memcached and NATS parsers behind it (queries recorded in full, so
/// argument and query-text handling run too). The input is cut into records — a control byte (bit 0: direction, bit 1: close,
/// bit 2: raw event bytes, bits 3-4: connection, bits 5-7: n, with 16·4^n uncaptured bytes after the data
/// when n > 0), a length byte, then that many bytes — so split values, truncated transfers and
/// truncated events all occur.
func fuzzOne(_ data: UnsafeRawBufferPointer) {
    _ = SQLStatementSummary(data)
    _ = DatabaseQueryText.sanitize(data)
    let tracker = ConnectionTracker(traceContexts: TraceContexts(), parsers: { _, _ in .init(parsers: parsers) }, countOnly: { _ in })
    var exchanges: [Exchange] = []
    var offset = 0
    var time: UInt64 = 1
    while offset + 2 <= data.count {
        let control = data[offset], length = Int(data[offset + 1])
        let bytes = Array(data[(offset + 2)..<min(offset + 2 + length, data.count)])
        offset += 2 + length
        time += 1
        let connection = UInt64(control >> 3 & 3)
        let event: [UInt8]
        if control & 4 != 0 {
            event = bytes
        } else if control & 2 != 0 {
            event = CaptureEvents.close(connection: connection, pid: 1, timestamp: time)
        } else {
            let uncaptured = control >> 5 == 0 ? 0 : 1 << (2 * Int(control >> 5) + 4)
            event = CaptureEvents.chunk(connection: connection, pid: 1, direction: control & 1 == 0 ? .send : .receive,
                                        data: bytes, length: bytes.count + uncaptured, timestamp: time)
        }
        event.withUnsafeBytes { tracker.handle($0, into: &exchanges) }
    }
    for exchange in exchanges {
        switch exchange {
        case .database(let database): _ = DatabaseSpans.span(database, resource: .empty, scope: scope) { $0 }
        case .messaging(let message): _ = MessagingSpans.span(message, resource: .empty, scope: scope) { $0 }
        default: break
        }
    }
}

let parsers = [RedisTracer(queryText: .full).parser!, PostgresTracer(queryText: .full).parser!, MySQLTracer(queryText: .full).parser!,
               MemcachedTracer(queryText: .full).parser!, NATSTracer().parser!]
let scope = InstrumentationScope(name: "fuzz")

runFuzzTarget(named: "DatabaseFuzz", fuzzOne)
