import Foundation
import TestSupport
import XCTest

/// scripts/test.sh's closing line (scripts/xctest-summary.sh) counts what XCTest reports, skips included.
final class TestScriptTests: XCTestCase {
    private let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/xctest-summary.sh").path

    func testBothXCTestSummaryFormsAreCounted() throws {
        let withoutSkips = """
            Test Suite 'A' passed at 2026-12-06 03:00:00.000
            \t Executed 2 tests, with 0 failures (0 unexpected) in 0.1 (0.1) seconds
            Test Suite 'All tests' failed at 2026-12-06 03:00:00.000
            \t Executed 12 tests, with 3 failures (1 unexpected) in 1.0 (1.0) seconds

            """
        XCTAssertEqual(try TestSupport.run(script, [], input: withoutSkips), "tests: 9 passed, 3 failed, 0 skipped\n")
        let withSkips = """
            \t Executed 1 test, with 1 test skipped and 0 failures (0 unexpected) in 0.0 (0.0) seconds
            \t Executed 300 tests, with 7 tests skipped and 2 failures (0 unexpected) in 5.0 (5.0) seconds

            """
        XCTAssertEqual(try TestSupport.run(script, [], input: withSkips), "tests: 291 passed, 2 failed, 7 skipped\n")
        XCTAssertThrowsError(try TestSupport.run(script, [], input: "error: build failed\n")) { error in
            XCTAssertEqual((error as? CommandFailed)?.output, "tests: no XCTest summary found (the build or the test runner failed)\n")
        }
    }
}
