import Foundation
import Logging
import OTLPExport
import Synchronization
import XCTest

/// Log records kept in memory, for tests that count what the exporter said.
final class CapturedLog: Sendable {
    private let records = Mutex<[(Logger.Level, String)]>([])

    var logger: Logger {
        Logger(label: "test") { _ in Handler(log: self) }
    }

    func lines(at level: Logger.Level) -> [String] { records.withLock { $0.filter { $0.0 == level }.map(\.1) } }
    var all: [String] { records.withLock { $0.map { "\($0.0): \($0.1)" } } }

    struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
            log.records.withLock { $0.append((level, message.description)) }
        }
    }
}

/// A transport answering from a script of outcomes (the last one repeats), recording when each request came.
final class ScriptedTransport: HTTPTransport, @unchecked Sendable {
    private let lock = NSLock()
    private var script: [HTTPOutcome]
    private(set) var requests = 0

    init(_ script: [HTTPOutcome]) { self.script = script }

    func replace(_ script: [HTTPOutcome]) { lock.withLock { self.script = script } }
    var count: Int { lock.withLock { requests } }

    func post(url: String, body: UnsafeRawBufferPointer, contentType: String, timeout: Duration) -> HTTPOutcome {
        lock.withLock {
            requests += 1
            return script.count > 1 ? script.removeFirst() : script[0]
        }
    }
}

final class ExportOutageLogTests: XCTestCase {
    private let refused = HTTPOutcome.transportFailure(message: "Couldn't connect to server")
    private let ok = HTTPOutcome.response(status: 200, body: [], retryAfter: nil)

    private func settings(backoff: Duration) -> ExportSettings {
        var settings = ExportSettings()
        settings.scheduleDelay = .milliseconds(10)
        settings.retry = RetryPolicy(initialBackoff: backoff, maxBackoff: backoff, jitter: 0, maxElapsed: .seconds(30))
        return settings
    }

    func testAnOutageIsLoggedWhenItStartsAndWhenItEndsWithTheCount() {
        let log = CapturedLog()
        let transport = ScriptedTransport([refused, refused, .response(status: 503, body: [], retryAfter: nil), refused, ok])
        let exporter = OTLPTraceExporter(settings: settings(backoff: .milliseconds(20)), logger: log.logger, makeTransport: { transport })
        exporter.consume(sampleSpans(3))
        XCTAssertTrue(exporter.flush(timeout: .seconds(10)))
        exporter.consume(sampleSpans(2))
        XCTAssertTrue(exporter.flush(timeout: .seconds(10)))
        exporter.shutdown(timeout: .seconds(2))

        XCTAssertEqual(transport.count, 6, "4 failures, then 2 batches delivered")
        XCTAssertEqual(exporter.stats.spansExported.load(ordering: .relaxed), 5)
        let warnings = log.lines(at: .warning)
        XCTAssertEqual(warnings.count, 1, "\(log.all)")
        XCTAssertTrue(warnings.first?.hasPrefix("OTLP traces export to http://localhost:4318/v1/traces failing (Couldn't connect to server): retrying") ?? false, "\(warnings)")
        let recovered = log.lines(at: .notice)
        XCTAssertEqual(recovered.count, 1, "\(log.all)")
        XCTAssertTrue(recovered.first?.hasPrefix("OTLP traces export to http://localhost:4318/v1/traces recovered after 4 failed attempts over ") ?? false, "\(recovered)")
    }

    /// The collector came back during a long backoff and the agent is stopped: the queued spans go out in one
    /// last attempt, and no stale "couldn't connect" warning is printed at this clean shutdown.
    func testShutdownDuringBackoffTriesOnceMoreInsteadOfGivingUpOnAnOldError() {
        let log = CapturedLog()
        let transport = ScriptedTransport([refused, ok])
        let exporter = OTLPTraceExporter(settings: settings(backoff: .seconds(20)), logger: log.logger, makeTransport: { transport })
        exporter.consume(sampleSpans(4))
        let start = ContinuousClock.now
        while transport.count == 0 && ContinuousClock.now - start < .seconds(5) { usleep(5_000) }
        let t0 = ContinuousClock.now
        exporter.shutdown(timeout: .seconds(2))
        XCTAssertLessThan(ContinuousClock.now - t0, .seconds(2), "no wait for the 20 s backoff")
        XCTAssertEqual(transport.count, 2)
        XCTAssertEqual(exporter.stats.spansExported.load(ordering: .relaxed), 4)
        XCTAssertEqual(exporter.stats.spansFailed.load(ordering: .relaxed), 0)
        XCTAssertFalse(log.all.contains { $0.contains("export of") && $0.contains("failed") }, "\(log.all)")
        XCTAssertEqual(log.lines(at: .notice).count, 1, "the recovery: \(log.all)")
    }

    func testAnOutageLastingThroughShutdownFailsOnceAfterTheLastAttempt() {
        let log = CapturedLog()
        let transport = ScriptedTransport([refused])
        let exporter = OTLPTraceExporter(settings: settings(backoff: .seconds(20)), logger: log.logger, makeTransport: { transport })
        exporter.consume(sampleSpans(4))
        let start = ContinuousClock.now
        while transport.count == 0 && ContinuousClock.now - start < .seconds(5) { usleep(5_000) }
        exporter.shutdown(timeout: .seconds(2))
        XCTAssertEqual(transport.count, 2, "the first attempt and one at shutdown, no more")
        XCTAssertEqual(exporter.stats.spansFailed.load(ordering: .relaxed), 4)
        XCTAssertEqual(log.lines(at: .warning).count, 2, "the outage, then the lost batch: \(log.all)")
    }
}
