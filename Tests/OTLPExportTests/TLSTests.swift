import Foundation
import OTLPExport
import TestSupport
import XCTest

/// HTTPS and mutual TLS with `OTEL_EXPORTER_OTLP_CERTIFICATE`, `…_CLIENT_CERTIFICATE` and `…_CLIENT_KEY`, against
/// the receiver wrapped in Python's `ssl`, with certificates made by the `openssl` command for this test.
final class TLSTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("tracer-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let script = """
            set -e
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=test-ca 2>/dev/null
            for who in server client; do
              openssl req -newkey rsa:2048 -nodes -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null
              printf 'subjectAltName=IP:127.0.0.1\\n' > $who.ext
              openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days 1 -extfile $who.ext 2>/dev/null
            done
            """
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/bin/sh")
        openssl.arguments = ["-c", script]
        openssl.currentDirectoryURL = directory
        try requireExecutable("/usr/bin/openssl", package: "openssl")
        try openssl.run()
        openssl.waitUntilExit()
        if openssl.terminationStatus != 0 { try prerequisiteMissing("openssl", "openssl could not make test certificates") }
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    func testMutualTLSDeliversWithClientCertificateAndFailsWithout() throws {
        let receiver = try OTLPReceiver(tlsArguments: [
            "--tls-cert", path("server.pem"), "--tls-key", path("server.key"), "--client-ca", path("ca.pem"),
        ])
        var layer = ExportSettingsLayer()
        layer.endpoint = "https://127.0.0.1:\(receiver.port)"
        layer.certificate = path("ca.pem")
        layer.clientCertificate = path("client.pem")
        layer.clientKey = path("client.key")
        var settings = try ExportSettings.resolve(flags: layer)
        settings.scheduleDelay = .milliseconds(50)
        let exporter = OTLPTraceExporter(settings: settings)
        exporter.consume(sampleSpans(3))
        XCTAssertTrue(exporter.flush(timeout: .seconds(10)))
        XCTAssertEqual(exporter.stats.spansExported.load(ordering: .relaxed), 3)
        exporter.shutdown(timeout: .seconds(2))

        var anonymous = settings
        anonymous.clientCertificatePath = nil
        anonymous.clientKeyPath = nil
        anonymous.retry = RetryPolicy(initialBackoff: .milliseconds(50), maxBackoff: .milliseconds(50), maxElapsed: .milliseconds(200))
        let refused = OTLPTraceExporter(settings: anonymous)
        refused.consume(sampleSpans(2))
        XCTAssertTrue(refused.flush(timeout: .seconds(10)))
        XCTAssertEqual(refused.stats.spansFailed.load(ordering: .relaxed), 2, "handshake without a client certificate fails")
        refused.shutdown(timeout: .seconds(2))
    }
}
