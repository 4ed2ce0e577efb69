import Foundation
import OTLPExport
import Telemetry
import XCTest

final class ExportSettingsTests: XCTestCase {
    func testEnvironmentVariablesFollowTheSDKSpec() throws {
        let env = try ExportSettingsLayer.fromEnvironment([
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=secret%20value, tenant = a",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_SERVICE_NAME": "checkout",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,deployment.environment.name=prod%2Ceu",
            "OTEL_METRIC_EXPORT_INTERVAL": "15000",
        ])
        let s = try ExportSettings.resolve(environment: env)
        XCTAssertEqual(s.tracesURL, "https://collector:4318/v1/traces")
        XCTAssertEqual(s.metricsURL, "https://collector:4318/v1/metrics")
        XCTAssertEqual(s.protocol_, .httpJSON)
        XCTAssertEqual(s.headers.map { "\($0.0)=\($0.1)" }, ["api-key=secret value", "tenant=a"])
        XCTAssertEqual(s.compression, .gzip, "the signal-specific variable wins")
        XCTAssertEqual(s.timeout, .milliseconds(2500))
        XCTAssertEqual(s.resourceAttributes["service.name"], "checkout", "OTEL_SERVICE_NAME wins")
        XCTAssertEqual(s.resourceAttributes["deployment.environment.name"], "prod,eu")
        XCTAssertEqual(s.metricExportInterval, .seconds(15))
    }

    func testTracesEndpointIsUsedAsIs() throws {
        let env = try ExportSettingsLayer.fromEnvironment([
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:9999/custom",
        ])
        let s = try ExportSettings.resolve(environment: env)
        XCTAssertEqual(s.tracesURL, "http://b:9999/custom")
        XCTAssertEqual(s.metricsURL, "http://a:4318/v1/metrics")
    }

    func testFlagBeatsEnvironmentBeatsFile() throws {
        var file = ExportSettingsLayer()
        file.endpoint = "http://file:4318"
        file.protocol_ = "http/json"
        file.maxQueueSpans = 100
        file.maxBatchSpans = 10
        var env = ExportSettingsLayer()
        env.endpoint = "http://env:4318"
        env.maxBatchSpans = 20
        var flags = ExportSettingsLayer()
        flags.maxBatchSpans = 30
        let s = try ExportSettings.resolve(flags: flags, environment: env, file: file)
        XCTAssertEqual(s.tracesURL, "http://env:4318/v1/traces")
        XCTAssertEqual(s.protocol_, .httpJSON)
        XCTAssertEqual(s.maxQueueSpans, 100)
        XCTAssertEqual(s.maxBatchSpans, 30)
    }

    func testInvalidSettingsAreRejectedWithTheSettingName() {
        var layer = ExportSettingsLayer()
        layer.maxQueueSpans = 10
        layer.maxBatchSpans = 20
        XCTAssertThrowsError(try ExportSettings.resolve(flags: layer)) { error in
            XCTAssertEqual((error as? ExportSettingsError)?.setting, "max batch size")
            XCTAssertTrue("\(error)".contains("larger than the queue"), "\(error)")
        }
        var grpc = ExportSettingsLayer()
        grpc.protocol_ = "grpc"
        XCTAssertThrowsError(try ExportSettings.resolve(flags: grpc)) { error in
            XCTAssertTrue("\(error)".contains("HTTP only"), "\(error)")
        }
        var bad = ExportSettingsLayer()
        bad.endpoint = "collector:4318"
        XCTAssertThrowsError(try ExportSettings.resolve(flags: bad))
        var cert = ExportSettingsLayer()
        cert.certificate = "/nonexistent/ca.pem"
        XCTAssertThrowsError(try ExportSettings.resolve(flags: cert)) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/ca.pem"), "\(error)")
        }
        XCTAssertThrowsError(try ExportSettingsLayer.fromEnvironment(["OTEL_EXPORTER_OTLP_TIMEOUT": "soon"])) { error in
            XCTAssertEqual((error as? ExportSettingsError)?.setting, "OTEL_EXPORTER_OTLP_TIMEOUT")
        }
        XCTAssertThrowsError(try ExportSettingsLayer.fromEnvironment(["OTEL_EXPORTER_OTLP_HEADERS": "novalue"]))
    }

    func testRetryAfterAcceptsSecondsAndHTTPDates() {
        XCTAssertEqual(parseRetryAfter("2"), .seconds(2))
        let now = Date(timeIntervalSince1970: 1_445_412_480)  // Wed, 21 Oct 2015 07:28:00 GMT
        XCTAssertEqual(parseRetryAfter("Wed, 21 Oct 2015 07:28:05 GMT", now: now), .seconds(5))
        XCTAssertEqual(parseRetryAfter("Wed, 21 Oct 2015 07:27:00 GMT", now: now), .zero, "past dates mean now")
        XCTAssertNil(parseRetryAfter("soon"))
    }

    func testBackoffGrowsIsCappedAndJittered() {
        let policy = RetryPolicy(initialBackoff: .seconds(1), maxBackoff: .seconds(5), multiplier: 2, jitter: 0.2)
        XCTAssertEqual(policy.backoff(attempt: 1, random: 0.5), .seconds(1))
        XCTAssertEqual(policy.backoff(attempt: 3, random: 0.5), .seconds(4))
        XCTAssertEqual(policy.backoff(attempt: 10, random: 0.5), .seconds(5))
        XCTAssertEqual(policy.backoff(attempt: 1, random: 0), .milliseconds(800))
        XCTAssertEqual(policy.backoff(attempt: 1, random: 1), .milliseconds(1200))
    }
}

/// A transport that blocks each request until released, and records what it got.
final class GatedTransport: HTTPTransport, @unchecked Sendable {
    let gate = DispatchSemaphore(value: 0)
    let lock = NSLock()
    var bodies: [Int] = []

    func post(url: String, body: UnsafeRawBufferPointer, contentType: String, timeout: Duration) -> HTTPOutcome {
        lock.withLock { bodies.append(body.count) }
        gate.wait()
        return .response(status: 200, body: [], retryAfter: nil)
    }
}

final class ExporterQueueTests: XCTestCase {
    func testFullQueueDropsAndCountsWithoutBlocking() {
        var settings = ExportSettings()
        settings.maxQueueSpans = 10
        settings.maxBatchSpans = 10
        settings.scheduleDelay = .milliseconds(10)
        let transport = GatedTransport()
        let exporter = OTLPTraceExporter(settings: settings, makeTransport: { transport })
        exporter.consume(sampleSpans(10))  // the worker takes these and blocks in the transport
        let start = ContinuousClock.now
        while transport.lock.withLock({ transport.bodies.isEmpty }) && ContinuousClock.now - start < .seconds(5) {
            Thread.sleep(forTimeInterval: 0.01)
        }
        let t0 = ContinuousClock.now
        exporter.consume(sampleSpans(10))  // fills the queue
        exporter.consume(sampleSpans(5))  // no room
        XCTAssertLessThan(ContinuousClock.now - t0, .milliseconds(100), "consume never blocks")
        XCTAssertEqual(exporter.stats.spansDropped.load(ordering: .relaxed), 5)
        XCTAssertEqual(exporter.stats.queued.load(ordering: .relaxed), 10)
        transport.gate.signal()
        transport.gate.signal()
        XCTAssertTrue(exporter.flush(timeout: .seconds(5)))
        XCTAssertEqual(exporter.stats.spansExported.load(ordering: .relaxed), 20)
        XCTAssertEqual(exporter.stats.spansReceived.load(ordering: .relaxed), 25)
        exporter.shutdown(timeout: .seconds(1))
    }

    func testByteLimitDropsSpansToo() {
        var settings = ExportSettings()
        settings.maxQueueBytes = 4096
        settings.scheduleDelay = .seconds(60)
        let transport = GatedTransport()
        let exporter = OTLPTraceExporter(settings: settings, makeTransport: { transport })
        exporter.consume(sampleSpans(100))
        let dropped = exporter.stats.spansDropped.load(ordering: .relaxed)
        XCTAssertGreaterThan(dropped, 50, "a 4 KiB queue holds only a handful of spans")
        XCTAssertLessThan(dropped, 100)
        for _ in 0..<10 { transport.gate.signal() }
        exporter.shutdown(timeout: .seconds(2))
        XCTAssertEqual(exporter.stats.spansExported.load(ordering: .relaxed), 100 - dropped)
    }

    func testOversizedRequestIsSplitBeforeSending() {
        var settings = ExportSettings()
        settings.maxRequestBytes = 2048
        settings.scheduleDelay = .seconds(60)
        let transport = GatedTransport()
        for _ in 0..<64 { transport.gate.signal() }
        let exporter = OTLPTraceExporter(settings: settings, makeTransport: { transport })
        exporter.consume(sampleSpans(32))
        XCTAssertTrue(exporter.flush(timeout: .seconds(5)))
        XCTAssertGreaterThan(transport.bodies.count, 1)
        XCTAssertTrue(transport.bodies.allSatisfy { $0 <= 2048 }, "\(transport.bodies)")
        XCTAssertEqual(exporter.stats.spansExported.load(ordering: .relaxed), 32)
        exporter.shutdown(timeout: .seconds(1))
    }
}
