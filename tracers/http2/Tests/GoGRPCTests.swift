import Foundation
import Telemetry
import TestSupport
import TracerFramework
import Tracers
import XCTest

/// gRPC between Go programs built with go1.19 and Debian's grpc-go 1.33 (golang-google-grpc-dev, GOPATH mode),
/// all traced: a caller, a front server and an upstream server of `demo.Greeter` (its ServiceDesc written by
/// hand, google.protobuf.StringValue in and out, no generated code).
final class GoGRPCTests: XCTestCase {
    /// `svc UPSTREAM`: serves `Hello`, `Missing` (NOT_FOUND) and `Relay` (calls `Hello` on UPSTREAM from the
    /// handler, on a connection dialed by the first Relay), prints its port. `svc call ADDRESS METHOD...`: calls
    /// each method in turn on one connection and prints `METHOD CODE REPLY` for each.
    static let service = """
    package main

    import (
    \t"context"
    \t"fmt"
    \t"net"
    \t"os"
    \t"sync"

    \t"github.com/golang/protobuf/ptypes/wrappers"
    \t"google.golang.org/grpc"
    \t"google.golang.org/grpc/codes"
    \t"google.golang.org/grpc/status"
    )

    type greeter interface{}

    type handler func(ctx context.Context, in *wrappers.StringValue) (*wrappers.StringValue, error)

    func unary(name string, handle handler) grpc.MethodDesc {
    \treturn grpc.MethodDesc{MethodName: name, Handler: func(_ interface{}, ctx context.Context, decode func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
    \t\tin := new(wrappers.StringValue)
    \t\tif err := decode(in); err != nil {
    \t\t\treturn nil, err
    \t\t}
    \t\treturn handle(ctx, in)
    \t}}
    }

    func call(conn *grpc.ClientConn, ctx context.Context, method string, in *wrappers.StringValue) (*wrappers.StringValue, error) {
    \tout := new(wrappers.StringValue)
    \terr := conn.Invoke(ctx, "/demo.Greeter/"+method, in, out)
    \treturn out, err
    }

    func main() {
    \tif os.Args[1] == "call" {
    \t\tconn, err := grpc.Dial(os.Args[2], grpc.WithInsecure(), grpc.WithBlock())
    \t\tif err != nil {
    \t\t\tpanic(err)
    \t\t}
    \t\tfor _, method := range os.Args[3:] {
    \t\t\tout, err := call(conn, context.Background(), method, &wrappers.StringValue{Value: "you"})
    \t\t\tfmt.Println(method, status.Code(err), out.Value)
    \t\t}
    \t\treturn
    \t}
    \tvar once sync.Once
    \tvar upstream *grpc.ClientConn
    \tdesc := grpc.ServiceDesc{ServiceName: "demo.Greeter", HandlerType: (*greeter)(nil), Methods: []grpc.MethodDesc{
    \t\tunary("Hello", func(ctx context.Context, in *wrappers.StringValue) (*wrappers.StringValue, error) {
    \t\t\treturn &wrappers.StringValue{Value: "hello " + in.Value}, nil
    \t\t}),
    \t\tunary("Missing", func(ctx context.Context, in *wrappers.StringValue) (*wrappers.StringValue, error) {
    \t\t\treturn nil, status.Error(codes.NotFound, "no such greeting")
    \t\t}),
    \t\tunary("Relay", func(ctx context.Context, in *wrappers.StringValue) (*wrappers.StringValue, error) {
    \t\t\tonce.Do(func() { upstream, _ = grpc.Dial(os.Args[1], grpc.WithInsecure()) })
    \t\t\treturn call(upstream, ctx, "Hello", in)
    \t\t}),
    \t}}
    \tlistener, err := net.Listen("tcp", "127.0.0.1:0")
    \tif err != nil {
    \t\tpanic(err)
    \t}
    \tserver := grpc.NewServer()
    \tserver.RegisterService(&desc, struct{}{})
    \tfmt.Println(listener.Addr().(*net.TCPAddr).Port)
    \tpanic(server.Serve(listener))
    }
    """

    /// A caller makes Hello, Missing, Relay, Relay on the front server; each Relay calls Hello on the upstream.
    /// The status code comes from the trailers (NOT_FOUND: 5, a client error, not a server error), each server
    /// span is the child of its caller's client span (same-host linking), the upstream's spans are the
    /// children of the front's calls, and each of the front's calls is the child of the Relay request it is made
    /// for: grpc-go runs the handler on a goroutine of its own (named by the go-nethttp tracer at
    /// `grpc.(*Server).handleStream`, probed from the front's first call on) and the call's frames are written by the client transport's loopyWriter
    /// goroutine (which names the calling goroutine at `originateStream`), so one trace runs through all three.
    func testGoGRPCStatusFromTrailersAndOneTraceThroughARelayingHandler() throws {
        try requireBPF()
        if !FileManager.default.fileExists(atPath: "/usr/share/gocode/src/google.golang.org/grpc/server.go") {
            try prerequisiteMissing("golang-google-grpc-dev", "grpc-go is not in /usr/share/gocode (apt-get install golang-google-grpc-dev)")
        }
        let binary = try GoServerBuild.binary(stripped: false, program: ("grpc-svc", Self.service), gopath: "/usr/share/gocode")
        let upstream = try GoServerProcess(binary: binary, arguments: ["none"])
        let front = try GoServerProcess(binary: binary, arguments: ["127.0.0.1:\(upstream.port)"])
        let caller = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", binary.path, "call", "127.0.0.1:\(front.port)",
                                                  "Hello", "Missing", "Relay", "Relay"])
        let harness = try TracingHarness(pids: [caller.pid, front.pid, upstream.pid])
        // The handler probes come with the front's first call (a server that calls nothing pays nothing): an
        // untraced caller's Relay makes it, and is left out below.
        XCTAssertFalse(harness.agent.attachedFiles().contains { $0.forCalls }, "no handler probe before a call")
        let warmUp = try ChildProcess(binary.path, ["call", "127.0.0.1:\(front.port)", "Relay"])
        XCTAssertEqual(warmUp.waitForExit(), 0)
        XCTAssertTrue(harness.waitForCallProbes(of: front.pid), "\(harness.agent.attachedFiles())")
        XCTAssertEqual(harness.waitForSpans(of: front.pid, kind: .client, count: 1).count, 1, "the warm-up's call")
        caller.release()
        XCTAssertEqual(caller.waitForExit(), 0)
        XCTAssertEqual(caller.output(), "Hello OK hello you\nMissing NotFound \nRelay OK hello you\nRelay OK hello you\n")

        let served = Array(harness.waitForSpans(of: front.pid, kind: .server, count: 5).dropFirst())
        XCTAssertEqual(served.map(\.name), ["demo.Greeter/Hello", "demo.Greeter/Missing", "demo.Greeter/Relay", "demo.Greeter/Relay"])
        XCTAssertEqual(served.map { $0.int(SemanticConventions.rpcGRPCStatusCode) }, [0, 5, 0, 0])
        XCTAssertTrue(served.allSatisfy { $0.string(SemanticConventions.rpcSystem) == "grpc" && $0.status == .unset },
                      "NOT_FOUND is no server error")
        let calls = harness.waitForSpans(of: caller.pid, kind: .client, count: 4)
        XCTAssertEqual(calls.map(\.name), served.map(\.name))
        XCTAssertEqual(calls.map { $0.int(SemanticConventions.rpcGRPCStatusCode) }, [0, 5, 0, 0])
        XCTAssertEqual(calls.map { $0.status == .unset }, [true, false, true, true], "NOT_FOUND is a client error")
        for (call, request) in zip(calls, served) {
            XCTAssertEqual(request.parentSpanID, call.spanID, "linked to its caller's span: \(request)")
            XCTAssertEqual(request.traceID, call.traceID)
        }

        // Each Relay's call to the upstream: a client span of the front, the upstream's span its child.
        let relayed = Array(harness.waitForSpans(of: front.pid, kind: .client, count: 3).dropFirst())
        XCTAssertEqual(relayed.map(\.name), ["demo.Greeter/Hello", "demo.Greeter/Hello"])
        XCTAssertTrue(relayed.allSatisfy { $0.int(SemanticConventions.serverPort) == Int64(upstream.port) && $0.int(SemanticConventions.rpcGRPCStatusCode) == 0 })
        let upstreamSpans = Array(harness.waitForSpans(of: upstream.pid, kind: .server, count: 3).dropFirst())
        XCTAssertEqual(upstreamSpans.map(\.parentSpanID), relayed.map(\.spanID))
        XCTAssertEqual(upstreamSpans.map(\.traceID), relayed.map(\.traceID))
        // Each relayed call continues its Relay request's trace: caller → Relay → call → upstream.
        for (call, relay) in zip(relayed, served.suffix(2)) {
            XCTAssertTrue(relay.startTimeUnixNano <= call.startTimeUnixNano && call.endTimeUnixNano <= relay.endTimeUnixNano,
                          "the call is made while its Relay request is served")
            XCTAssertEqual(call.parentSpanID, relay.spanID, "the call is the child of its Relay request: \(call)")
            XCTAssertEqual(call.traceID, relay.traceID)
        }
        XCTAssertEqual(Set(upstreamSpans.map(\.traceID)), Set(calls.suffix(2).map(\.traceID)), "one trace from the caller to the upstream")
    }
}
