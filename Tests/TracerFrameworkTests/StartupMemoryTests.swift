import CTracerShim
import Foundation
import XCTest

/// The agent gives back, after start, the pages of its executable's relocation table (read once by the
/// dynamic loader): this test binary has a few hundred KiB of it.
final class StartupMemoryTests: XCTestCase {
    func testRelocationTablePagesAreReleasedAndNoLongerResident() throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var start: UInt = 0
        let released = tracer_release_relocation_pages(&start)
        XCTAssertGreaterThan(released, 64 * 1024, "this binary's .rela.dyn spans many pages")
        XCTAssertEqual(released % page, 0)
        XCTAssertEqual(Int(start) % page, 0)
        let present = try presentPages(from: Int(start), count: released / page)
        XCTAssertEqual(present, 0, "no page of the released range is mapped any more")
        XCTAssertEqual(tracer_release_relocation_pages(nil), released, "calling it again is harmless")
    }

    /// How many of `count` pages from `address` are present in this process's page tables
    /// (/proc/self/pagemap: bit 63 of each 8-byte entry).
    private func presentPages(from address: Int, count: Int) throws -> Int {
        let handle = try XCTUnwrap(FileHandle(forReadingAtPath: "/proc/self/pagemap"))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(address / Int(sysconf(Int32(_SC_PAGESIZE))) * 8))
        let data = try XCTUnwrap(try handle.read(upToCount: count * 8))
        XCTAssertEqual(data.count, count * 8)
        return stride(from: 0, to: data.count, by: 8).filter { offset in
            data[data.startIndex + offset + 7] & 0x80 != 0
        }.count
    }
}
