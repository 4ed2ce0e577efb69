import BPFPrograms
import BPFRuntime
import XCTest

final class EmbeddingTests: XCTestCase {
    func testSelftestObjectIsEmbeddedWithNameConstants() {
        XCTAssertEqual(BPFPrograms.Selftest.object.name, "selftest")
        XCTAssertEqual(Array(BPFPrograms.Selftest.object.bytes.prefix(4)), [0x7f, 0x45, 0x4c, 0x46])
        XCTAssertEqual(BPFPrograms.Selftest.Program.selftestUprobe.rawValue, "selftest_uprobe")
        XCTAssertEqual(BPFPrograms.Selftest.Map.tracerEvents.rawValue, "tracer_events")
        XCTAssertEqual(BPFPrograms.Selftest.Global.floodCount.rawValue, "flood_count")
    }
}
