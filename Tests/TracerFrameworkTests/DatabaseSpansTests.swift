import Telemetry
import TracerFramework
import XCTest

/// The database span family: SQL summaries, query-text sanitizing, span names and status.
final class DatabaseSpansTests: XCTestCase {
    private func summary(_ sql: String) -> SQLStatementSummary {
        Array(sql.utf8).withUnsafeBytes { SQLStatementSummary($0) }
    }

    private func sanitized(_ sql: String) -> String {
        Array(sql.utf8).withUnsafeBytes { DatabaseQueryText.sanitize($0) }
    }

    func testSummaryNamesTheOperationAndOnlyASingleTable() {
        XCTAssertEqual(summary("select * from users where id = 1"), SQLStatementSummary(operation: "SELECT", collection: "users"))
        XCTAssertEqual(summary("INSERT INTO public.orders (a) VALUES ('x')"), SQLStatementSummary(operation: "INSERT", collection: "public.orders"))
        XCTAssertEqual(summary("UPDATE pgbench_accounts SET abalance = abalance + 1"), SQLStatementSummary(operation: "UPDATE", collection: "pgbench_accounts"))
        XCTAssertEqual(summary("DELETE FROM t"), SQLStatementSummary(operation: "DELETE", collection: "t"))
        XCTAssertEqual(summary("SELECT * FROM a JOIN b ON a.id = b.id"), SQLStatementSummary(operation: "SELECT", collection: nil))
        XCTAssertEqual(summary("SELECT * FROM a, b"), SQLStatementSummary(operation: "SELECT", collection: nil))
        XCTAssertEqual(summary("SELECT 1"), SQLStatementSummary(operation: "SELECT", collection: nil))
        XCTAssertEqual(summary("  -- comment\nBEGIN"), SQLStatementSummary(operation: "BEGIN", collection: nil))
        XCTAssertEqual(summary(""), SQLStatementSummary(operation: nil, collection: nil))
    }

    func testSanitizingReplacesLiteralsOnly() {
        XCTAssertEqual(sanitized("SELECT * FROM t2 WHERE name = 'O''Brien' AND id = 42 AND x > 1.5e3"),
                       "SELECT * FROM t2 WHERE name = ? AND id = ? AND x > ?")
        XCTAssertEqual(sanitized("SELECT \"col1\" FROM t WHERE a = $1::int4 AND b = E'x\\n'"), "SELECT \"col1\" FROM t WHERE a = $1::int4 AND b = ?")
        XCTAssertEqual(sanitized("SELECT $$secret$$"), "SELECT ?")
        XCTAssertEqual(sanitized("SELECT 'unterminated"), "SELECT ?")
    }

    func testSpanNameStatusAndAttributes() {
        var exchange = DatabaseExchange(pid: 1, role: .client, system: "postgresql", operation: "SELECT", start: 10, end: 30,
                                        identity: SpanIdentity(traceID: .invalid, spanID: .invalid, parentSpanID: .invalid, flags: 0))
        exchange.collection = "users"
        exchange.namespace = "shop"
        exchange.failed = true
        exchange.statusCode = "42P01"
        exchange.peer = SocketAddress(address: "127.0.0.1", port: 5432)
        let span = DatabaseSpans.span(exchange, resource: .empty, scope: InstrumentationScope(name: "test")) { $0 }
        XCTAssertEqual(span.name, "SELECT users")
        XCTAssertEqual(span.kind, .client)
        XCTAssertEqual(span.status, .error(message: ""))
        XCTAssertEqual(span.attributes[SemanticConventions.errorType]?.stringValue, "42P01")
        XCTAssertEqual(span.attributes[SemanticConventions.dbResponseStatusCode]?.stringValue, "42P01")
        XCTAssertEqual(span.attributes[SemanticConventions.dbNamespace]?.stringValue, "shop")
        XCTAssertEqual(span.attributes[SemanticConventions.serverPort]?.intValue, 5432)
        XCTAssertNil(span.attributes[SemanticConventions.dbQueryText])
    }

    func testQueryTextConfigurationKey() throws {
        XCTAssertEqual(try ConfigurationFile(yaml: "db_query_text: off").databaseQueryText, "off", "YAML's bare off is false")
        XCTAssertEqual(try ConfigurationFile(yaml: "db_query_text: sanitized").databaseQueryText, "sanitized")
        XCTAssertEqual(try ConfigurationFile(yaml: "print: text").databaseQueryText, nil)
        XCTAssertThrowsError(try ConfigurationFile(yaml: "db_query_text: everything"))
    }
}
