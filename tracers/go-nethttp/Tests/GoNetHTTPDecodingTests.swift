import BPFRuntime
import CTracerABI
import Telemetry
import TracerFramework
@testable import Tracers
import XCTest

/// Without a kernel: client host and port, and the C layouts against the object's BTF.
final class GoNetHTTPDecodingTests: XCTestCase {
    func testClientHostPort() {
        XCTAssertTrue(splitHostPort("example.com:8080") == ("example.com", 8080))
        XCTAssertTrue(splitHostPort("[::1]:9000") == ("::1", 9000))
        XCTAssertTrue(splitHostPort("example.com") == ("example.com", nil))
        XCTAssertTrue(splitHostPort("::1") == ("::1", nil))
    }

    func testEventLayoutsMatchTheirBTF() throws {
        let object = Tracers.GoNethttp.object
        /// `flexible`: the trailing flexible array member Swift does not import; it starts at the struct's size.
        func check<T>(_ name: String, _: T.Type, _ members: [(String, PartialKeyPath<T>)], flexible: String? = nil) throws {
            let layout = try object.structLayout(named: name)
            XCTAssertEqual(layout.size, MemoryLayout<T>.size, name)
            XCTAssertEqual(layout.members.map(\.name), members.map(\.0) + (flexible.map { [$0] } ?? []), name)
            XCTAssertEqual(layout.members.map(\.offset),
                           members.map { MemoryLayout<T>.offset(of: $0.1)! } + (flexible == nil ? [] : [MemoryLayout<T>.size]), name)
        }
        try check("go_nethttp_context_event", go_nethttp_context_event.self, [
            ("header", \.header), ("goid", \.goid), ("context", \.context),
        ])
        try check("go_nethttp_span_context", go_nethttp_span_context.self, [
            ("trace_id_high", \.trace_id_high), ("trace_id_low", \.trace_id_low), ("span_id", \.span_id),
            ("parent_span_id", \.parent_span_id), ("flags", \.flags), ("valid", \.valid), ("reserved", \.reserved),
        ])
        try check("go_nethttp_client_start_event", go_nethttp_client_start_event.self, [
            ("header", \.header), ("goid", \.goid), ("parent_goid", \.parent_goid), ("method_length", \.method_length), ("scheme_length", \.scheme_length),
            ("host_length", \.host_length), ("path_length", \.path_length), ("query_length", \.query_length),
            ("query_truncated", \.query_truncated), ("path_truncated", \.path_truncated), ("reserved", \.reserved),
            ("context", \.context), ("method", \.method), ("scheme", \.scheme), ("host", \.host), ("path", \.path), ("query", \.query),
        ])
        try check("go_nethttp_client_end_event", go_nethttp_client_end_event.self, [
            ("header", \.header), ("goid", \.goid), ("status_code", \.status_code), ("failed", \.failed), ("reserved", \.reserved),
        ])
        try check("go_nethttp_offsets", go_nethttp_offsets.self, [
            ("g_tls_offset", \.g_tls_offset), ("g_goid", \.g_goid), ("g_parent_goid", \.g_parent_goid),
            ("request_method", \.request_method),
            ("request_url", \.request_url), ("url_scheme", \.url_scheme), ("url_host", \.url_host), ("url_path", \.url_path),
            ("url_raw_query", \.url_raw_query), ("response_status_code", \.response_status_code),
            ("request_header", \.request_header), ("transfer_writer_header", \.transfer_writer_header),
            ("bufio_writer_buf", \.bufio_writer_buf), ("bufio_writer_n", \.bufio_writer_n),
            ("http2_client_conn_fr", \.http2_client_conn_fr), ("http2_client_conn_bw", \.http2_client_conn_bw),
            ("http2_framer_wbuf", \.http2_framer_wbuf), ("x_http2_client_conn_fr", \.x_http2_client_conn_fr),
            ("x_http2_client_conn_bw", \.x_http2_client_conn_bw), ("x_http2_framer_wbuf", \.x_http2_framer_wbuf),
            ("grpc_loopy_framer", \.grpc_loopy_framer), ("grpc_framer_writer", \.grpc_framer_writer), ("grpc_framer_fr", \.grpc_framer_fr),
            ("grpc_buf_writer_buf", \.grpc_buf_writer_buf), ("grpc_buf_writer_offset", \.grpc_buf_writer_offset), ("propagate", \.propagate),
            ("http2_servers", \.http2_servers),
            ("grpc_stream_id", \.grpc_stream_id), ("grpc_out_stream_id", \.grpc_out_stream_id), ("grpc_out_stream_itl", \.grpc_out_stream_itl),
            ("grpc_item_list_head", \.grpc_item_list_head), ("grpc_item_node_it", \.grpc_item_node_it),
            ("grpc_header_frame_hf", \.grpc_header_frame_hf), ("streams", \.streams),
        ])
        try check("go_nethttp_http2_server_fields", go_nethttp_http2_server_fields.self, [
            ("response_writer_rws", \.response_writer_rws), ("response_writer_state_stream", \.response_writer_state_stream),
            ("stream_id", \.stream_id),
        ])
        try check("go_nethttp_stream_event", go_nethttp_stream_event.self, [
            ("header", \.header), ("goid", \.goid), ("parent_goid", \.parent_goid), ("mover_goid", \.mover_goid),
            ("stream_id", \.stream_id), ("role", \.role), ("reserved", \.reserved),
        ])
    }
}
