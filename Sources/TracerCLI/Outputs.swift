import ArgumentParser
import Foundation
import Logging
import OTLPExport
import Telemetry
import TracerFramework

/// Where spans, metrics and log records go in one run: the stdout printer, the OTLP trace, metrics and logs
/// exporters, RED metrics and the Prometheus endpoint with the agent's self-metrics.
final class Outputs {
    let sinks: [any SpanSink]
    /// `text`, `json` or `none`: what stdout carries.
    let printFormat: String
    private let exporter: OTLPTraceExporter?
    private let metricsExporter: OTLPMetricsExporter?
    /// Made when objects or event-emitting kernel tracers run beside the agent and OTLP export is on.
    private var logExporter: OTLPLogExporter?
    private let settings: ExportSettings
    private let exporting: Bool
    private let logger: Logger
    private let prometheus: PrometheusServer?
    private let registry = MetricsRegistry()
    private let red: REDMetrics
    let agentResource = Resource(attributes: [
        SemanticConventions.serviceName: "tracer", SemanticConventions.telemetrySDKName: "tracer",
        SemanticConventions.hostName: .string(ProcessInfo.processInfo.hostName),
    ])

    init(options: RunOptions, file: ConfigurationFile?, logger: Logger) throws {
        let fileLayer = try Self.layer(fromFile: file?.export ?? [:], path: options.config ?? "")
        var flagLayer = ExportSettingsLayer()
        flagLayer.endpoint = options.otlpEndpoint
        flagLayer.protocol_ = options.otlpProtocol
        let environment = ProcessInfo.processInfo.environment
        self.logger = logger
        let settings: ExportSettings
        do {
            settings = try ExportSettings.resolve(flags: flagLayer, environment: try .fromEnvironment(environment), file: fileLayer)
        } catch {
            throw ValidationError("\(error)")
        }
        let exporting = [flagLayer, try? ExportSettingsLayer.fromEnvironment(environment), fileLayer]
            .contains { $0?.endpoint != nil || $0?.tracesEndpoint != nil }
        self.settings = settings
        self.exporting = exporting

        let routes = RouteGrouper(patterns: file?.routes ?? [])
        red = REDMetrics(routes: routes)
        var sinks: [any SpanSink] = [red]
        printFormat = try options.printFormat(file: file, exporting: exporting)
        switch printFormat {
        case "json": sinks.append(JSONLinesSpanPrinter())
        case "text": sinks.append(TextSpanPrinter())
        default: break
        }
        if exporting {
            let exporter = OTLPTraceExporter(settings: settings, logger: logger)
            registry.register(exporter: exporter.stats)
            sinks.append(exporter)
            self.exporter = exporter
            metricsExporter = OTLPMetricsExporter(settings: settings, red: red, registry: registry, agentResource: agentResource)
            logger.info("exporting spans to \(settings.tracesURL) (\(settings.protocol_.rawValue)) and metrics to \(settings.metricsURL)")
        } else {
            exporter = nil
            metricsExporter = nil
        }
        // Configured routes go on server spans too, before every sink sees them.
        self.sinks = [RouteAnnotatingSink(routes: routes, downstream: sinks)]

        let port = options.prometheusPort ?? file?.export["prometheus_port"].flatMap { Int($0) }
        if let port {
            let host = options.prometheusHost ?? file?.export["prometheus_host"] ?? "127.0.0.1"
            let (red, registry, agentResource) = (red, registry, agentResource)
            do {
                prometheus = try PrometheusServer(host: host, port: port) {
                    PrometheusExposition.render(red.snapshot() + [ResourceMetricsData(resource: agentResource, metrics: registry.collect())])
                }
            } catch {
                throw ValidationError("--prometheus-port \(port): \(error)")
            }
            logger.info("Prometheus metrics on http://\(host):\(port)/metrics")
        } else {
            prometheus = nil
        }
    }

    /// Publishes the agent's self-metrics (processes, events, drops, spans) with the exporter's.
    func observe(_ agent: Agent) {
        registry.register { [weak agent] in
            guard let metrics = agent?.metricsSnapshot else { return [] }
            func metric(_ name: String, _ help: String, _ value: Double, counter: Bool = true) -> MetricData {
                MetricData(name: name, description: help, unit: "1",
                           points: counter ? .counter([.init(value: value)]) : .gauge([.init(value: value)]))
            }
            return [
                metric("tracer.processes.selected", "Processes selected now.", Double(metrics.processesSelected), counter: false),
                metric("tracer.processes.instrumented", "Selected processes at least one tracer instruments.", Double(metrics.processesInstrumented), counter: false),
                metric("tracer.attach.errors", "Failed attach attempts.", Double(metrics.attachErrors)),
                metric("tracer.events", "Events read from the kernel.", Double(metrics.events)),
                metric("tracer.events.dropped.kernel", "Events the kernel could not hand over (ring buffer full).", Double(metrics.eventsDroppedKernel)),
                metric("tracer.events.dropped.userspace", "Events dropped in user space (unselected process, unknown type).", Double(metrics.eventsDroppedUserspace)),
                metric("tracer.spans.produced", "Spans made from events.", Double(metrics.spans)),
            ] + (agent?.counters ?? []).map { tracer, counter in
                metric("tracer.\(tracer).\(counter.name)", counter.help, Double(counter.value()))
            }
        }
    }

    /// Starts the objects run beside the agent: records printed like spans and, with OTLP export on, exported
    /// as log records (agent resource); maps published as metrics.
    func observe(_ objects: ObjectsBesideAgent) throws {
        registry.register { objects.metrics() }
        if exporting { _ = logExporterStarted(for: "object records") }
        do { try objects.start(format: printFormat, logs: logExporter, resource: agentResource) } catch {
            throw ValidationError(error.description)
        }
    }

    /// Publishes the kernel tracers' metrics with the others and, with OTLP export on, sends their events as
    /// log records.
    func observe(_ kernel: KernelTracersBesideAgent) {
        registry.register { [kernel] in kernel.metrics() }
        guard exporting && kernel.emitsEvents else { return }
        kernel.send(logs: logExporterStarted(for: "kernel tracer events"))
    }

    /// The OTLP log exporter, made on first use (`what` names what it carries, for the start line).
    private func logExporterStarted(for what: String) -> OTLPLogExporter {
        if let logExporter { return logExporter }
        let logs = OTLPLogExporter(settings: settings, logger: logger)
        registry.register(logExporter: logs.stats)
        logExporter = logs
        logger.info("exporting \(what) as log records to \(settings.logsURL)")
        return logs
    }

    /// Publishes network flow metrics (`--network-flows`) with the others.
    func observe(_ flows: FlowMetrics) {
        registry.register { [flows] in flows.collect() }
    }

    /// Sends the last log records and metrics and stops the endpoint (span sinks are shut down by the agent).
    func shutdown(timeout: Duration) {
        logExporter?.shutdown(timeout: timeout)
        metricsExporter?.shutdown(timeout: timeout)
        prometheus?.stop()
    }

    /// The config file's `export:` section as a settings layer (below flags and the environment).
    static func layer(fromFile section: [String: String], path: String) throws -> ExportSettingsLayer {
        var layer = ExportSettingsLayer()
        func integer(_ key: String, _ value: String) throws -> Int {
            guard let number = Int(value), number >= 0 else { throw ConfigurationError(file: path, problem: "export.\(key): '\(value)' is not a non-negative integer") }
            return number
        }
        for (key, value) in section {
            switch key {
            case "endpoint": layer.endpoint = value
            case "traces_endpoint": layer.tracesEndpoint = value
            case "metrics_endpoint": layer.metricsEndpoint = value
            case "logs_endpoint": layer.logsEndpoint = value
            case "protocol": layer.protocol_ = value
            case "headers":
                do { layer.headers = try ExportSettingsLayer.parseKeyValueList(value, setting: "export.headers") } catch {
                    throw ConfigurationError(file: path, problem: "\(error)")
                }
            case "compression": layer.compression = value
            case "timeout_ms": layer.timeoutMilliseconds = try integer(key, value)
            case "certificate": layer.certificate = value
            case "client_certificate": layer.clientCertificate = value
            case "client_key": layer.clientKey = value
            case "max_queue_size": layer.maxQueueSpans = try integer(key, value)
            case "max_export_batch_size": layer.maxBatchSpans = try integer(key, value)
            case "schedule_delay_ms": layer.scheduleDelayMilliseconds = try integer(key, value)
            case "metric_export_interval_ms": layer.metricExportIntervalMilliseconds = try integer(key, value)
            case "prometheus_port": _ = try integer(key, value)
            case "prometheus_host": break
            default:
                throw ConfigurationError(file: path, problem: "unknown key 'export.\(key)' (known: endpoint, traces_endpoint, metrics_endpoint, logs_endpoint, protocol, headers, compression, timeout_ms, certificate, client_certificate, client_key, max_queue_size, max_export_batch_size, schedule_delay_ms, metric_export_interval_ms, prometheus_port, prometheus_host)")
            }
        }
        return layer
    }
}
