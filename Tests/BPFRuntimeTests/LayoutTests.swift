import BPFPrograms
import BPFRuntime
import CTracerABI
import XCTest

/// The Swift view of every shared C struct (imported from the same header the BPF program includes) must
/// match what the BPF compiler laid out, as recorded in the object's BTF. Needs no privileges.
final class LayoutTests: XCTestCase {
    func testSelftestEventMatchesItsBTFLayout() throws {
        let layout = try BPFPrograms.Selftest.object.structLayout(named: "selftest_event")
        XCTAssertEqual(layout.size, MemoryLayout<selftest_event>.size)
        XCTAssertEqual(layout.members.map(\.name), ["header", "cookie", "value", "sequence", "comm"])
        let swiftOffsets: [Int?] = [
            MemoryLayout<selftest_event>.offset(of: \.header), MemoryLayout<selftest_event>.offset(of: \.cookie),
            MemoryLayout<selftest_event>.offset(of: \.value), MemoryLayout<selftest_event>.offset(of: \.sequence),
            MemoryLayout<selftest_event>.offset(of: \.comm),
        ]
        XCTAssertEqual(layout.members.map(\.offset), swiftOffsets.map { $0! })
    }

    func testEventHeaderMatchesItsBTFLayout() throws {
        let layout = try BPFPrograms.Selftest.object.structLayout(named: "tracer_event_header")
        XCTAssertEqual(layout.size, MemoryLayout<tracer_event_header>.size)
        XCTAssertEqual(layout.members.map(\.name), ["type", "pid", "tid", "reserved", "timestamp_ns"])
        let swiftOffsets: [Int?] = [
            MemoryLayout<tracer_event_header>.offset(of: \.type), MemoryLayout<tracer_event_header>.offset(of: \.pid),
            MemoryLayout<tracer_event_header>.offset(of: \.tid), MemoryLayout<tracer_event_header>.offset(of: \.reserved),
            MemoryLayout<tracer_event_header>.offset(of: \.timestamp_ns),
        ]
        XCTAssertEqual(layout.members.map(\.offset), swiftOffsets.map { $0! })
    }

    func testUnknownStructIsAClearError() {
        XCTAssertThrowsError(try BPFPrograms.Selftest.object.structLayout(named: "no_such_struct")) { error in
            XCTAssertTrue("\(error)".contains("no_such_struct"), "\(error)")
        }
    }
}
