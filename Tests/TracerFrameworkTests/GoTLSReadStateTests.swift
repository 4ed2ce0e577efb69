import ExecutableInspection
import Foundation
import TestSupport
@testable import TracerFramework
import XCTest

/// Go TLS plaintext needs to know where a `crypto/tls.Conn` keeps what its Reads hand out (the capture layer takes
/// a Read's bytes from there at the connection's next call): where that is unknown, nothing is guessed and the
/// reason names the fields.
final class GoTLSReadStateTests: XCTestCase {
    /// Debian's Caddy: stripped (no DWARF), built with go1.19, whose line the offsets table has.
    func testReadStateFromTheOffsetsTableAndItsAbsenceSaysWhy() throws {
        try requireExecutable("/usr/bin/caddy", package: "caddy")
        let info = try ExecutableInspector(goFields: CaptureTracer.goFieldsRead)
            .inspect(path: "/usr/bin/caddy", queries: captureProbeTargetQueries)
        XCTAssertEqual(info.go?.fieldOffsets?.source, .table(goVersion: "go1.19"))
        XCTAssertNil(CaptureTracer.goTLSUnavailableReason(info))
        let state = try XCTUnwrap(GoTLSReadOffsets(info.go?.fieldOffsets))
        let offsets = try XCTUnwrap(info.go?.fieldOffsets)
        func offset(_ type: String, _ field: String) throws -> UInt32 { UInt32(try XCTUnwrap(offsets.offset(GoField(type, field)))) }
        XCTAssertEqual(state.input, try offset("crypto/tls.Conn", "input") + offset("bytes.Reader", "s"))
        XCTAssertEqual(state.consumed, try offset("crypto/tls.Conn", "input") + offset("bytes.Reader", "i"))
        XCTAssertEqual(state.sequence, try offset("crypto/tls.Conn", "in") + offset("crypto/tls.halfConn", "seq"))
        XCTAssertEqual(state.failure, try offset("crypto/tls.Conn", "in") + offset("crypto/tls.halfConn", "err"))

        // The same binary as if its Go release were one the table lacks (no DWARF either): not captured, and why.
        var json = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(info)) as? [String: Any])
        var go = try XCTUnwrap(json["go"] as? [String: Any])
        var fieldOffsets = try XCTUnwrap(go["fieldOffsets"] as? [String: Any])
        fieldOffsets["offsets"] = (fieldOffsets["offsets"] as? [String: Any])?.filter { !$0.key.hasPrefix("crypto/tls.") }
        go["fieldOffsets"] = fieldOffsets
        json["go"] = go
        let unknown = try JSONDecoder().decode(ExecutableInfo.self, from: JSONSerialization.data(withJSONObject: json))
        XCTAssertNil(GoTLSReadOffsets(unknown.go?.fieldOffsets))
        let reason = try XCTUnwrap(CaptureTracer.goTLSUnavailableReason(unknown))
        XCTAssertTrue(reason.hasPrefix("crypto/tls.Conn's read state is not located (crypto/tls.Conn.in, crypto/tls.Conn.input, "
                                       + "crypto/tls.halfConn.seq, crypto/tls.halfConn.err unknown: not in DWARF or the offsets table for go1.19"), reason)
    }
}
