import Foundation
import OTLPExport
import Telemetry
import XCTest

/// A span shaped as the HTTP tracers make them (tracers/http `HTTPTracer.decode`, tracers/go-nethttp): named
/// after the method (`HTTP` for other methods, which become `_OTHER` + `http.request.method_original`);
/// server spans carry `url.path` (+ `url.query`), client spans `url.full` and `server.address`/`server.port`;
/// no tracer sets `http.route`.
func httpSpan(
    kind: SpanKind = .server, method: String = "GET", path: String, status: Int64 = 200,
    seconds: Double, service: String = "shop", responseBytes: Int64? = nil
) -> Span {
    let known = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"].contains(method)
    var attributes: Attributes = ["http.request.method": .string(known ? method : "_OTHER")]
    if !known { attributes["http.request.method_original"] = .string(method) }
    let pathOnly = String(path.prefix { $0 != "?" })
    if kind == .server {
        attributes["url.path"] = .string(pathOnly)
        if pathOnly.count < path.count { attributes["url.query"] = .string(String(path.dropFirst(pathOnly.count + 1))) }
        attributes["url.scheme"] = "http"
    } else {
        attributes["url.full"] = .string("http://10.0.0.7:8080\(path)")
    }
    attributes["http.response.status_code"] = .int(status)
    attributes["network.protocol.name"] = "http"
    attributes["network.protocol.version"] = "1.1"
    attributes["server.address"] = kind == .server ? "127.0.0.1" : "10.0.0.7"
    attributes["server.port"] = 8080
    if let responseBytes { attributes["http.response.body.size"] = .int(responseBytes) }
    return Span(
        name: known ? method : "HTTP", kind: kind, traceID: .random(), spanID: .random(), startTimeUnixNano: 1_000_000_000,
        endTimeUnixNano: 1_000_000_000 + UInt64(seconds * 1e9), attributes: attributes,
        resource: Resource(attributes: ["service.name": .string(service)]), scope: InstrumentationScope(name: "t"))
}

final class RouteGrouperTests: XCTestCase {
    func testConfiguredTemplatesWin() {
        let g = RouteGrouper(patterns: ["/users/{id}", "/static/*", "/orders/{order}/items/{item}"])
        XCTAssertEqual(g.route(for: "/users/alice"), "/users/{id}")
        XCTAssertEqual(g.route(for: "/users/alice?x=1"), "/users/{id}")
        XCTAssertEqual(g.route(for: "/static/css/site.css"), "/static/*")
        XCTAssertEqual(g.route(for: "/orders/12/items/3"), "/orders/{order}/items/{item}")
        XCTAssertEqual(g.route(for: "/users/alice/posts"), "/users/alice/posts", "no template, nothing ID-like")
    }

    func testHeuristicReplacesIDLikeSegments() {
        let g = RouteGrouper()
        XCTAssertEqual(g.route(for: "/api/v1/users/12345"), "/api/v1/users/{id}")
        XCTAssertEqual(g.route(for: "/items/550e8400-e29b-41d4-a716-446655440000/edit"), "/items/{id}/edit")
        XCTAssertEqual(g.route(for: "/blobs/deadbeef42"), "/blobs/{id}")
        XCTAssertEqual(g.route(for: "/s/aZ3kQ9xP2mL7vB1n"), "/s/{id}", "long token")
        XCTAssertEqual(g.route(for: "/health"), "/health")
        XCTAssertEqual(g.route(for: "/"), "/")
        XCTAssertEqual(g.route(for: "/a/b/c/d/e/f/g/h/i/j"), "/a/b/c/d/e/f/g/h/*", "depth capped")
    }

    func testEverySegmentWithADigitButAVersionIsAnID() {
        let g = RouteGrouper()
        XCTAssertEqual(Set((1...20).map { g.route(for: "/exp\($0)") }), ["/{id}"], "/exp1 … /exp20: one route")
        XCTAssertEqual(g.route(for: "/api/v2/items"), "/api/v2/items")
        XCTAssertEqual(g.route(for: "/static/app.3f9a2c.js"), "/static/{id}")
        XCTAssertEqual(g.route(for: "/reset/" + String(repeating: "abcXYZ", count: 6)), "/reset/{id}", "a 36-character token")
        XCTAssertEqual(g.route(for: "/users/alice/posts"), "/users/alice/posts", "words stay")
        let configured = RouteGrouper(patterns: ["/exp{n}/*"])
        XCTAssertNil(configured.configuredRoute(for: "/exp1/a"), "templates match whole segments only")
        XCTAssertEqual(RouteGrouper(patterns: ["/users/{id}"]).configuredRoute(for: "/users/7?x=1"), "/users/{id}")
    }
}

final class REDMetricsTests: XCTestCase {
    func histogram(_ groups: [ResourceMetricsData], _ service: String, _ name: String) -> [HistogramPoint] {
        for g in groups where g.resource.serviceName == service {
            for m in g.metrics where m.name == name {
                if case .histogram(_, let points) = m.points { return points }
            }
        }
        return []
    }

    func testServerAndClientDurationsWithLowCardinalityAttributes() throws {
        let red = REDMetrics()
        red.consume([
            httpSpan(path: "/users/1", seconds: 0.003),
            httpSpan(path: "/users/2?expand=1", seconds: 0.2),
            httpSpan(path: "/users/3", seconds: 0.02),
            httpSpan(method: "PROPFIND", path: "/x", status: 500, seconds: 20),
            httpSpan(kind: .client, path: "/v1/pay/99", seconds: 0.06, responseBytes: 300),
            Span(name: "internal", kind: .internal_, traceID: .random(), spanID: .random(), startTimeUnixNano: 0,
                 endTimeUnixNano: 1, resource: .empty, scope: InstrumentationScope(name: "t")),
        ])
        let snapshot = red.snapshot()
        let server = histogram(snapshot, "shop", "http.server.request.duration")
        XCTAssertEqual(server.count, 2, "users paths grouped into one series + the _OTHER method series")
        let users = try XCTUnwrap(server.first { $0.attributes["http.route"] == "/users/{id}" })
        XCTAssertEqual(users.count, 3)
        XCTAssertEqual(users.attributes["http.request.method"], "GET")
        XCTAssertEqual(users.attributes["http.response.status_code"], 200)
        XCTAssertEqual(users.sum, 0.223, accuracy: 1e-9)
        XCTAssertEqual(users.bucketCounts[0], 1, "3 ms ≤ 5 ms")
        XCTAssertEqual(users.bucketCounts[2], 1, "20 ms in (10, 25] ms")
        XCTAssertEqual(users.bucketCounts[6], 1, "200 ms in (100, 250] ms")
        XCTAssertEqual(users.min, 0.003)
        let other = try XCTUnwrap(server.first { $0.attributes["http.request.method"] == "_OTHER" })
        XCTAssertEqual(other.bucketCounts.last, 1, "20 s goes to +Inf")
        let client = histogram(snapshot, "shop", "http.client.request.duration")
        XCTAssertEqual(client.first?.attributes["server.address"], "10.0.0.7")
        XCTAssertEqual(client.count, 1)
        XCTAssertNil(client.first?.attributes["http.route"], "client spans carry url.full, and http.route is no client attribute")
        XCTAssertEqual(histogram(snapshot, "shop", "http.client.response.body.size").first?.sum, 300)
    }

    /// A span as the database, RPC and messaging span builders make it (TracerFramework `DatabaseSpans`,
    /// `RPCSpans`, `MessagingSpans`), with attributes that must stay out of metrics (query text, peer port).
    func span(_ kind: SpanKind, _ attributes: Attributes, seconds: Double) -> Span {
        Span(name: "op", kind: kind, traceID: .random(), spanID: .random(), startTimeUnixNano: 1_000_000_000,
             endTimeUnixNano: 1_000_000_000 + UInt64(seconds * 1e9), attributes: attributes,
             resource: Resource(attributes: ["service.name": "shop"]), scope: InstrumentationScope(name: "t"))
    }

    func testDatabaseRPCAndMessagingDurations() throws {
        let red = REDMetrics()
        let select: Attributes = [
            "db.system.name": "postgresql", "db.operation.name": "SELECT", "db.collection.name": "users",
            "db.namespace": "shop", "db.query.text": "SELECT * FROM users WHERE id = ?", "server.address": "127.0.0.1",
            "server.port": 5432, "network.peer.port": 5432, "client.port": 40123,
        ]
        var failed = select
        failed["db.response.status_code"] = "42P01"
        failed["error.type"] = "42P01"
        red.consume([
            span(.client, select, seconds: 0.0004), span(.client, select, seconds: 0.02), span(.client, failed, seconds: 0.003),
            span(.server, select, seconds: 0.01), // a database server span: no db.client metric
            span(.server, ["rpc.system": "grpc", "rpc.service": "etcdserverpb.KV", "rpc.method": "Range", "rpc.grpc.status_code": 0,
                           "server.address": "127.0.0.1"], seconds: 0.002),
            span(.client, ["rpc.system": "grpc", "rpc.service": "etcdserverpb.KV", "rpc.method": "Put", "rpc.grpc.status_code": 14,
                           "error.type": "14", "server.address": "10.0.0.9"], seconds: 0.3),
            span(.producer, ["messaging.system": "nats", "messaging.operation.name": "publish", "messaging.destination.name": "orders",
                             "messaging.message.body.size": 12], seconds: 0.0001),
            span(.consumer, ["messaging.system": "nats", "messaging.operation.name": "process", "messaging.destination.name": "orders"], seconds: 0.004),
        ])
        let snapshot = red.snapshot()
        let database = histogram(snapshot, "shop", "db.client.operation.duration")
        XCTAssertEqual(database.count, 2, "one series for the successes, one for the failure")
        let ok = try XCTUnwrap(database.first { $0.attributes["db.response.status_code"] == nil })
        XCTAssertEqual(ok.count, 2)
        XCTAssertEqual(ok.attributes.elements.map(\.key), ["db.system.name", "db.operation.name", "db.collection.name", "db.namespace", "server.address", "server.port"],
                       "no query text, no peer or client port")
        XCTAssertEqual(ok.bucketCounts[0], 1, "0.4 ms ≤ 1 ms (database bounds start at 1 ms)")
        XCTAssertEqual(ok.bucketCounts[3], 1, "20 ms in (10, 50] ms")
        let error = try XCTUnwrap(database.first { $0.attributes["db.response.status_code"] == "42P01" })
        XCTAssertEqual(error.attributes["error.type"], "42P01")
        let rpcServer = try XCTUnwrap(histogram(snapshot, "shop", "rpc.server.call.duration").first)
        XCTAssertEqual(rpcServer.attributes["rpc.method"], "Range")
        XCTAssertNil(rpcServer.attributes["server.address"], "server.address only on the client side")
        let rpcClient = try XCTUnwrap(histogram(snapshot, "shop", "rpc.client.call.duration").first)
        XCTAssertEqual(rpcClient.attributes["rpc.grpc.status_code"], 14)
        XCTAssertEqual(rpcClient.attributes["server.address"], "10.0.0.9")
        XCTAssertEqual(histogram(snapshot, "shop", "messaging.client.operation.duration").first?.attributes["messaging.destination.name"], "orders")
        XCTAssertEqual(histogram(snapshot, "shop", "messaging.process.duration").first?.count, 1)
        let units = Dictionary(uniqueKeysWithValues: snapshot.flatMap(\.metrics).map { ($0.name, $0.unit) })
        XCTAssertEqual(units["db.client.operation.duration"], "s")
        XCTAssertEqual(units["rpc.client.call.duration"], "s")
    }

    /// Deliveries to generated reply inboxes (NATS `_INBOX.…`, one subject per request) make one series, keyed by
    /// their destination template instead of their names.
    func testTemporaryMessagingDestinationsAreKeyedByTheirTemplate() {
        let red = REDMetrics()
        red.consume((0..<50).map {
            span(.consumer, ["messaging.system": "nats", "messaging.operation.name": "process", "messaging.destination.name": .string("_INBOX.abc.\($0)"),
                             "messaging.destination.template": "_INBOX.>", "messaging.destination.temporary": true], seconds: 0.001)
        })
        let points = histogram(red.snapshot(), "shop", "messaging.process.duration")
        XCTAssertEqual(points.count, 1)
        XCTAssertEqual(points.first?.count, 50)
        XCTAssertEqual(points.first?.attributes["messaging.destination.template"], "_INBOX.>")
        XCTAssertNil(points.first?.attributes["messaging.destination.name"])
    }

    func testCardinalityLimitFoldsIntoOverflowSeries() {
        let red = REDMetrics(maxSeriesPerService: 3)
        let words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
        red.consume(words.map { httpSpan(path: "/\($0)", seconds: 0.01) })
        let points = histogram(red.snapshot(), "shop", "http.server.request.duration")
        XCTAssertEqual(points.count, 4)
        XCTAssertEqual(points.first { $0.attributes["otel.metric.overflow"] == true }?.count, 7)
        XCTAssertEqual(red.overflowCount, 7)
    }
}

final class RouteCardinalityTests: XCTestCase {
    /// The server-duration points of `service`.
    private func points(_ red: REDMetrics, _ service: String) -> [HistogramPoint] {
        for group in red.snapshot() where group.resource.serviceName == service {
            for metric in group.metrics where metric.name == "http.server.request.duration" {
                if case .histogram(_, let points) = metric.points { return points }
            }
        }
        return []
    }

    private func routes(_ red: REDMetrics, _ service: String) -> Set<String> {
        Set(points(red, service).compactMap { $0.attributes["http.route"]?.stringValue })
    }

    func testTwentyPathsWithNumbersMakeOneSeries() {
        let red = REDMetrics()
        red.consume((1...20).map { httpSpan(path: "/exp\($0)", seconds: 0.01) })
        XCTAssertEqual(routes(red, "shop"), ["/{id}"])
    }

    /// More distinct paths than the agent remembers span inputs for (the memo is cleared and filled again):
    /// every span is still counted once, in its route's series, and the route limit still holds.
    func testMorePathsThanTheInputMemoHoldsAreEachCountedInTheirRoute() {
        let red = REDMetrics(maxRoutesPerService: 3)
        let ids = 1...20_000
        red.consume(ids.map { httpSpan(path: "/users/\($0)", seconds: 0.01) })
        red.consume(ids.map { httpSpan(path: "/users/\($0)/orders", seconds: 0.01) })
        red.consume(["/alpha", "/beta", "/alpha"].map { httpSpan(path: $0, seconds: 0.01) })
        let counts = Dictionary(uniqueKeysWithValues: points(red, "shop").compactMap { point in
            point.attributes["http.route"]?.stringValue.map { ($0, point.count) }
        })
        XCTAssertEqual(counts, ["/users/{id}": 20_000, "/users/{id}/orders": 20_000, "/alpha": 2, "{overflow}": 1])
    }

    func testRoutesPerServiceAreCappedWithAnOverflowRouteAndConfiguredRoutesAreExempt() {
        let red = REDMetrics(routes: RouteGrouper(patterns: ["/users/{id}"]), maxRoutesPerService: 3)
        let words = ["alpha", "beta", "gamma", "delta", "epsilon"]
        red.consume(words.map { httpSpan(path: "/\($0)", seconds: 0.01) })
        red.consume([httpSpan(path: "/users/alice", seconds: 0.01), httpSpan(path: "/alpha", seconds: 0.02),
                     httpSpan(path: "/zeta", seconds: 0.01, service: "billing")])
        XCTAssertEqual(routes(red, "shop"), ["/alpha", "/beta", "/gamma", "{overflow}", "/users/{id}"])
        XCTAssertEqual(routes(red, "billing"), ["/zeta"], "each service has its own budget")
    }
}

final class RouteAnnotatingSinkTests: XCTestCase {
    final class Collector: SpanSink, @unchecked Sendable {
        var spans: [Span] = []
        var flushed = 0, shutDown = 0
        func consume(_ spans: [Span]) { self.spans += spans }
        func flush(timeout: Duration) -> Bool { flushed += 1; return true }
        func shutdown(timeout: Duration) { shutDown += 1 }
    }

    func testAConfiguredRouteGoesOnTheServerSpanAndItsName() {
        let collector = Collector()
        let sink = RouteAnnotatingSink(routes: RouteGrouper(patterns: ["/users/{id}", "/static/*"]), downstream: [collector])
        sink.consume([
            httpSpan(path: "/users/alice?tab=posts", seconds: 0.01),
            httpSpan(method: "PROPFIND", path: "/static/a/b.css", seconds: 0.01),
            httpSpan(path: "/orders/17", seconds: 0.01),
            httpSpan(kind: .client, path: "/users/bob", seconds: 0.01),
        ])
        XCTAssertEqual(collector.spans.map(\.name), ["GET /users/{id}", "HTTP /static/*", "GET", "GET"])
        XCTAssertEqual(collector.spans.map { $0.attributes["http.route"]?.stringValue }, ["/users/{id}", "/static/*", nil, nil],
                       "a heuristic route is no fact about the span; client spans have no route")
        XCTAssertEqual(collector.spans[0].attributes["url.path"], "/users/alice", "the path stays")
        XCTAssertTrue(sink.flush(timeout: .seconds(1)))
        sink.shutdown(timeout: .seconds(1))
        XCTAssertEqual([collector.flushed, collector.shutDown], [1, 1])
    }
}

final class PrometheusTests: XCTestCase {
    func scrape(_ port: Int, path: String = "/metrics") throws -> (Int, String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(rc, 0)
        let request = Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
        let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        return (status, body)
    }

    func testEndpointServesREDAndSelfMetrics() throws {
        let red = REDMetrics()
        red.consume([httpSpan(path: "/users/7", seconds: 0.03), httpSpan(path: "/users/8", seconds: 0.7)])
        let registry = MetricsRegistry()
        registry.counter("tracer.ringbuffer.drops", help: "Events lost in the kernel ring buffer.").add(7)
        registry.gauge("tracer.processes.instrumented", help: "Processes with probes attached.").set(3)
        let stats = ExporterStats()
        stats.spansDropped.add(5, ordering: .relaxed)
        registry.register(exporter: stats)
        let agent = Resource(attributes: [:])
        let server = try PrometheusServer(port: 0) {
            PrometheusExposition.render(red.snapshot() + [ResourceMetricsData(resource: agent, metrics: registry.collect())])
        }
        defer { server.stop() }
        let (status, body) = try scrape(server.port)
        XCTAssertEqual(status, 200)
        XCTAssertTrue(body.contains("# TYPE http_server_request_duration_seconds histogram\n"), body)
        let labels = "service_name=\"shop\",http_request_method=\"GET\",http_route=\"/users/{id}\",http_response_status_code=\"200\""
        XCTAssertTrue(body.contains("http_server_request_duration_seconds_bucket{\(labels),le=\"0.05\"} 1\n"), body)
        XCTAssertTrue(body.contains("http_server_request_duration_seconds_bucket{\(labels),le=\"0.75\"} 2\n"), body)
        XCTAssertTrue(body.contains("http_server_request_duration_seconds_bucket{\(labels),le=\"+Inf\"} 2\n"), body)
        XCTAssertTrue(body.contains("http_server_request_duration_seconds_count{\(labels)} 2\n"), body)
        XCTAssertTrue(body.contains("# TYPE tracer_ringbuffer_drops counter\ntracer_ringbuffer_drops_total 7\n"), body)
        XCTAssertTrue(body.contains("tracer_processes_instrumented 3\n"), body)
        XCTAssertTrue(body.contains("tracer_spans_dropped_total 5\n"), body)
        XCTAssertTrue(body.contains("# TYPE tracer_export_queue_size gauge\ntracer_export_queue_size 0\n"), body)
        XCTAssertTrue(body.contains("# TYPE tracer_export_duration_seconds histogram"), body)
        XCTAssertEqual(try scrape(server.port, path: "/other").0, 404)
    }

    func testStopReleasesThePort() throws {
        let server = try PrometheusServer(port: 0) { "" }
        let port = server.port
        server.stop()
        let again = try PrometheusServer(port: port) { "x 1\n" }
        XCTAssertEqual(try scrape(port).1, "x 1\n")
        again.stop()
    }
}

final class MetricsExportReceiverTests: XCTestCase {
    func exportMetrics(_ protocol_: OTLPProtocol) throws {
        let receiver = try OTLPReceiver()
        var settings = testSettings(receiver)
        settings.protocol_ = protocol_
        settings.metricExportInterval = .seconds(60)
        let red = REDMetrics()
        red.consume([httpSpan(path: "/users/7", seconds: 0.03), httpSpan(path: "/users/8", seconds: 0.7, service: "billing")])
        let registry = MetricsRegistry()
        registry.counter("tracer.ringbuffer.drops", help: "Events lost.").add(4)
        let exporter = OTLPMetricsExporter(
            settings: settings, red: red, registry: registry,
            agentResource: Resource(attributes: ["service.name": "tracer-agent"]))
        XCTAssertTrue(exporter.forceFlush(timeout: .seconds(10)))
        let received = try receiver.received()
        XCTAssertTrue(received.requests.allSatisfy { $0["error"] == nil }, "\(received.requests)")
        XCTAssertEqual(received.requests.first?["path"] as? String, "/v1/metrics")
        let durations = received.metrics.filter { $0["name"] as? String == "http.server.request.duration" }
        XCTAssertEqual(Set(durations.compactMap { ($0["resource"] as? [String: Any])?["service.name"] as? String }), ["shop", "billing"])
        let shop = try XCTUnwrap(durations.first { ($0["resource"] as? [String: Any])?["service.name"] as? String == "shop" })
        XCTAssertEqual(shop["unit"] as? String, "s")
        XCTAssertEqual(shop["type"] as? String, "histogram")
        XCTAssertEqual(shop["temporality"] as? Int, 2, "cumulative")
        let point = try XCTUnwrap((shop["points"] as? [[String: Any]])?.first)
        XCTAssertEqual(point["count"] as? Int, 1)
        XCTAssertEqual(point["explicitBounds"] as? [Double], REDMetrics.durationBounds)
        XCTAssertEqual((point["bucketCounts"] as? [Int])?[3], 1, "30 ms in (25, 50] ms")
        XCTAssertEqual((point["attributes"] as? [String: Any])?["http.route"] as? String, "/users/{id}")
        let drops = try XCTUnwrap(received.metrics.first { $0["name"] as? String == "tracer.ringbuffer.drops" })
        XCTAssertEqual(drops["monotonic"] as? Bool, true)
        XCTAssertEqual((drops["points"] as? [[String: Any]])?.first?["value"] as? Double, 4)
        exporter.shutdown(timeout: .seconds(2))
        XCTAssertEqual(exporter.exportsSucceeded.load(ordering: .relaxed), 2, "forced export + final export on shutdown")
    }

    func testProtobufMetrics() throws { try exportMetrics(.httpProtobuf) }
    func testJSONMetrics() throws { try exportMetrics(.httpJSON) }
}
