import BPFPrograms
import BPFRuntime
import CTracerABI
import Tracers
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

/// Every struct of every header that CTracerABI imports (the one definition shared by BPF and Swift) against
/// the BTF of the object that uses it: size, the `_Static_assert` in the header, and the members' names in
/// order. The headers are read at test time, so a struct added to one without a check here fails.
final class SharedHeaderLayoutTests: XCTestCase {
    /// Swift's view of each struct: its size and its members' names, in order (a C flexible array member
    /// such as `data[]` is not imported).
    static let swiftLayouts: [String: (size: Int, members: [String])] = [
        "tracer_event_header": layout(tracer_event_header()),
        "selftest_event": layout(selftest_event()),
        "process_event": layout(process_event()),
        "capture_tuple": layout(capture_tuple()),
        "capture_process": layout(capture_process()),
        "capture_chunk_event": layout(capture_chunk_event()),
        "capture_close_event": layout(capture_close_event()),
        "capture_context_event": layout(capture_context_event()),
        "capture_connection": layout(capture_connection()),
        "go_nethttp_offsets": layout(go_nethttp_offsets()),
        "go_nethttp_http2_server_fields": layout(go_nethttp_http2_server_fields()),
        "go_nethttp_span_context": layout(go_nethttp_span_context()),
        "go_nethttp_goroutine_key": layout(go_nethttp_goroutine_key()),
        "go_nethttp_header_key": layout(go_nethttp_header_key()),
        "go_nethttp_context_event": layout(go_nethttp_context_event()),
        "go_nethttp_client_start_event": layout(go_nethttp_client_start_event()),
        "go_nethttp_client_end_event": layout(go_nethttp_client_end_event()),
        "go_nethttp_stream_event": layout(go_nethttp_stream_event()),
        "flow_key": layout(flow_key()),
        "flow_counters": layout(flow_counters()),
        "kernel_hist": layout(kernel_hist()),
        "kernel_event_header": layout(kernel_event_header()),
        "runqlat_key": layout(runqlat_key()),
        "oomkill_event": layout(oomkill_event()),
        "tcp_event": layout(tcp_event()),
        "tcp_endpoint_key": layout(tcp_endpoint_key()),
        "biolatency_key": layout(biolatency_key()),
        "flow_owner": layout(flow_owner()),
        "files_event": layout(files_event()),
        "files_prefix": layout(files_prefix()),
        "fds_counts": layout(fds_counts()),
        "syscalls_key": layout(syscalls_key()),
    ]

    static func layout<T>(_ value: T) -> (size: Int, members: [String]) {
        (MemoryLayout<T>.size, Mirror(reflecting: value).children.compactMap(\.label))
    }

    /// Every embedded object: a struct is checked against the first whose BTF has it.
    static let objects: [(String, EmbeddedBPFObject)] = [
        ("selftest", BPFPrograms.Selftest.object), ("process_watcher", BPFPrograms.ProcessWatcher.object),
        ("capture", BPFPrograms.Capture.object), ("go_nethttp", Tracers.GoNethttp.object),
        ("flows_skb", Tracers.FlowsSkb.object), ("runqlat", Tracers.Runqlat.object),
        ("oomkill", Tracers.Oomkill.object), ("tcp", Tracers.Tcp.object),
        ("biolatency", Tracers.Biolatency.object), ("files", Tracers.Files.object),
        ("fds", Tracers.Fds.object), ("syscalls", Tracers.Syscalls.object),
    ]

    func testEveryStructOfTheSharedHeadersMatchesSwiftAndBTF() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let abi = try String(contentsOf: root.appendingPathComponent("Sources/CTracerABI/include/tracer_abi.h"), encoding: .utf8)
        let headers = abi.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("#include \"../../../") else { return nil }
            return String(line.dropFirst("#include \"../../../".count).dropLast())
        }
        XCTAssertGreaterThanOrEqual(headers.count, 5, abi)
        var checked = 0
        for header in headers {
            let text = try String(contentsOf: root.appendingPathComponent(header), encoding: .utf8)
            for line in text.split(separator: "\n") where line.hasPrefix("struct ") && line.hasSuffix(" {") {
                let name = String(line.dropFirst(7).dropLast(2))
                guard let swift = Self.swiftLayouts[name] else {
                    XCTFail("\(header): struct \(name) has no layout check: add it to SharedHeaderLayoutTests.swiftLayouts")
                    continue
                }
                let asserted = text.components(separatedBy: "_Static_assert(sizeof(struct \(name)) == ").dropFirst().first
                    .flatMap { Int($0.prefix { $0.isNumber }) }
                XCTAssertEqual(asserted, swift.size, "\(header): _Static_assert of \(name)")
                guard let (object, btf) = Self.objects.lazy.compactMap({ entry in
                    (try? entry.1.structLayout(named: name)).map { (entry.0, $0) }
                }).first else {
                    XCTFail("struct \(name) of \(header) is in no embedded object's BTF (anchor it in the program that uses it)")
                    continue
                }
                XCTAssertEqual(btf.size, swift.size, "\(name) in \(object)")
                var members = btf.members.map(\.name)
                if members.count == swift.members.count + 1, btf.members.last?.offset == btf.size { members.removeLast() }
                XCTAssertEqual(members, swift.members, "\(name) in \(object)")
                checked += 1
            }
        }
        XCTAssertEqual(checked, Self.swiftLayouts.count, "every checked struct is still in a header")
    }
}
