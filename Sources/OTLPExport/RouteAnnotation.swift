import Telemetry

/// Puts `http.route` on HTTP server spans whose path matches a configured route template (the config
/// file's `routes:`), and names them `{method} {route}` as the HTTP semantic conventions ask, before
/// handing them to the sinks behind it (printers, exporter, RED metrics). Spans that already carry a route,
/// or whose path no template matches, pass unchanged: a heuristic route is good enough for a metric label
/// but is not asserted on a span.
public final class RouteAnnotatingSink: SpanSink {
    public let routes: RouteGrouper
    public let downstream: [any SpanSink]

    public init(routes: RouteGrouper, downstream: [any SpanSink]) {
        self.routes = routes
        self.downstream = downstream
    }

    public func consume(_ spans: [Span]) {
        let annotated = routes.hasPatterns ? spans.map(annotate) : spans
        for sink in downstream { sink.consume(annotated) }
    }

    func annotate(_ span: Span) -> Span {
        guard span.kind == .server, span.attributes[SemanticConventions.httpRoute] == nil,
              let path = span.attributes[SemanticConventions.urlPath]?.stringValue,
              let route = routes.configuredRoute(for: path) else { return span }
        var span = span
        span.attributes[SemanticConventions.httpRoute] = .string(route)
        let method = span.attributes[SemanticConventions.httpRequestMethod]?.stringValue
        if span.name == method || span.name == "HTTP" { span.name = "\(span.name) \(route)" }
        return span
    }

    @discardableResult public func flush(timeout: Duration) -> Bool {
        downstream.reduce(true) { $0 && $1.flush(timeout: timeout) }
    }

    public func shutdown(timeout: Duration) {
        for sink in downstream { sink.shutdown(timeout: timeout) }
    }
}
