import Foundation
import TestSupport
import XCTest

/// HTTP/2 and gRPC context propagation end to end in Debian's 6.1 kernel under qemu (this machine's kernel
/// forbids `bpf_probe_write_user`). A traced go1.19 front service, while serving an HTTP/1 request that
/// carries a `traceparent`, calls an HTTPS server with net/http's HTTP/2 client and a gRPC server with
/// grpc-go 1.33 (Debian's, GOPATH mode). The back servers are not traced and answer with the `traceparent`
/// they received, so the test sees exactly what the tracer wrote into the HEADERS frames.
final class GuestHTTP2PropagationTests: XCTestCase {
    static let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
    static let callerSpanID = "00f067aa0ba902b7"

    /// `svc back`: an HTTPS server (HTTP/2, httptest's certificate) and a gRPC server of `demo.Echo/Traceparent`,
    /// both answering with the traceparent values they received; prints the HTTPS URL and the gRPC address.
    /// `svc front`: an HTTP/1 server whose `/h2?to=URL` fetches URL over HTTPS (HTTP/2) and `/grpc?to=ADDRESS`
    /// calls `demo.Echo/Traceparent`, each from the handler, answering `upstream <what the back server said>`;
    /// prints its port.
    static let service = """
    package main

    import (
    \t"context"
    \t"crypto/tls"
    \t"fmt"
    \t"io"
    \t"net"
    \t"net/http"
    \t"net/http/httptest"
    \t"os"
    \t"strings"

    \t"github.com/golang/protobuf/ptypes/wrappers"
    \t"google.golang.org/grpc"
    \t"google.golang.org/grpc/metadata"
    )

    type echo interface{}

    func back() {
    \th2 := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
    \t\tfmt.Fprintf(w, "%s %s", r.Proto, strings.Join(r.Header.Values("traceparent"), ","))
    \t}))
    \th2.EnableHTTP2 = true
    \th2.StartTLS()
    \tdesc := grpc.ServiceDesc{ServiceName: "demo.Echo", HandlerType: (*echo)(nil), Methods: []grpc.MethodDesc{{MethodName: "Traceparent",
    \t\tHandler: func(_ interface{}, ctx context.Context, decode func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
    \t\t\tin := new(wrappers.StringValue)
    \t\t\tif err := decode(in); err != nil {
    \t\t\t\treturn nil, err
    \t\t\t}
    \t\t\tmd, _ := metadata.FromIncomingContext(ctx)
    \t\t\treturn &wrappers.StringValue{Value: strings.Join(md.Get("traceparent"), ",")}, nil
    \t\t}}}}
    \tlistener, err := net.Listen("tcp", "127.0.0.1:0")
    \tif err != nil {
    \t\tpanic(err)
    \t}
    \tserver := grpc.NewServer()
    \tserver.RegisterService(&desc, struct{}{})
    \tfmt.Println(h2.URL, listener.Addr())
    \tpanic(server.Serve(listener))
    }

    func front() {
    \tclient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
    \tconnections := map[string]*grpc.ClientConn{}
    \thttp.HandleFunc("/h2", func(w http.ResponseWriter, r *http.Request) {
    \t\tresp, err := client.Get(r.URL.Query().Get("to"))
    \t\tif err != nil {
    \t\t\thttp.Error(w, err.Error(), http.StatusBadGateway)
    \t\t\treturn
    \t\t}
    \t\tbody, _ := io.ReadAll(resp.Body)
    \t\tresp.Body.Close()
    \t\tfmt.Fprintf(w, "upstream %s", body)
    \t})
    \thttp.HandleFunc("/grpc", func(w http.ResponseWriter, r *http.Request) {
    \t\taddress := r.URL.Query().Get("to")
    \t\tif connections[address] == nil {
    \t\t\tconnections[address], _ = grpc.Dial(address, grpc.WithInsecure(), grpc.WithBlock())
    \t\t}
    \t\tout := new(wrappers.StringValue)
    \t\tif err := connections[address].Invoke(r.Context(), "/demo.Echo/Traceparent", &wrappers.StringValue{Value: "?"}, out); err != nil {
    \t\t\thttp.Error(w, err.Error(), http.StatusBadGateway)
    \t\t\treturn
    \t\t}
    \t\tfmt.Fprintf(w, "upstream %s", out.Value)
    \t})
    \tlistener, err := net.Listen("tcp", "127.0.0.1:0")
    \tif err != nil {
    \t\tpanic(err)
    \t}
    \tfmt.Println(listener.Addr().(*net.TCPAddr).Port)
    \tpanic(http.Serve(listener, nil))
    }

    func main() {
    \tif os.Args[1] == "back" {
    \t\tback()
    \t}
    \tfront()
    }
    """

    func testGoHTTP2AndGRPCClientRequestsCarryTheirClientSpansTraceparent() throws {
        try requireGuestKernel()
        if !FileManager.default.fileExists(atPath: "/usr/share/gocode/src/google.golang.org/grpc/server.go") {
            try prerequisiteMissing("golang-google-grpc-dev", "grpc-go is not in /usr/share/gocode (apt-get install golang-google-grpc-dev)")
        }
        let service = try GoServerBuild.binary(stripped: false, program: ("propagation-svc", Self.service), gopath: "/usr/share/gocode")
        let tracer = productsDirectory.appendingPathComponent("tracer")
        // capstone (RET offsets) is loaded with dlopen, so ldd does not list it.
        let capstone = try sharedLibrary("libcapstone.so.4")
        let run = try runInGuest(files: [service, tracer, capstone], script: Self.script, arguments: [service.path, tracer.path], timeout: 500)
        XCTAssertEqual(run.status, 0, "guest script failed:\n\(run.output)\n\(run.log.suffix(3000))")
        print("guest run: \(run.timing)")
        let output = run.output
        XCTAssertTrue(output.contains("context propagation on"), output)
        XCTAssertTrue(output.contains("agent exit: 0"), output)

        let spans = try GuestPropagationTests.spans(in: output)
        let servers = spans.filter { $0.kind == "server" }
        let clients = spans.filter { $0.kind == "client" }
        XCTAssertEqual(clients.count, 4, "one call per request:\n\(output)")
        // Sent one after the other: the server spans are in the order of the requests.
        XCTAssertEqual(servers.map(\.path), ["/h2", "/h2", "/grpc", "/grpc"], output)
        for (index, (route, server)) in zip(["h2", "h2", "grpc", "grpc"], servers).enumerated() {
            let answer = try XCTUnwrap(Self.answer(index, in: output), output)
            XCTAssertEqual(server.traceID, Self.traceID, "the incoming traceparent is honoured")
            XCTAssertEqual(server.parentSpanID, Self.callerSpanID)
            // The back server received exactly one traceparent: the one naming the front's client span.
            let expected = route == "h2" ? "upstream HTTP/2.0 00-\(Self.traceID)-" : "upstream 00-\(Self.traceID)-"
            XCTAssertTrue(answer.hasPrefix(expected) && answer.hasSuffix("-01"), "request \(index): \(answer)")
            let injectedSpanID = String(answer.dropLast(3).suffix(16))
            let client = try XCTUnwrap(clients.first { $0.spanID == injectedSpanID }, "request \(index): no client span \(injectedSpanID):\n\(output)")
            XCTAssertEqual(client.traceID, Self.traceID, "request \(index)")
            XCTAssertEqual(client.parentSpanID, server.spanID, "request \(index): the call is the child of the request it is made for")
        }
        XCTAssertEqual(Set(clients.map(\.spanID)).count, 4)
    }

    /// What the front answered to request `index` (`answer INDEX: ...` lines of the script).
    static func answer(_ index: Int, in output: String) -> String? {
        output.split(separator: "\n").first { $0.hasPrefix("answer \(index): ") }.map { String($0.dropFirst("answer \(index): ".count)) }
    }

    /// Starts the back and the front service, the agent selecting the front by PID with `--context-propagation
    /// go`, sends two requests with a traceparent through each of the front's routes (the second one on the
    /// connections the first opened), stops the agent and prints its log and spans.
    static let script: String = """
        service=$1 tracer=$2
        $service back > /tmp/back.out &
        $service front > /tmp/front.port &
        front_pid=$!
        for i in $(seq 1 150); do [ -s /tmp/back.out ] && [ -s /tmp/front.port ] && break; sleep 0.2; done
        read h2 grpc < /tmp/back.out
        front=$(head -n1 /tmp/front.port)
        $tracer --pid $front_pid --context-propagation go --print json --log-level info > /tmp/spans.json 2> /tmp/tracer.log &
        agent=$!
        \(GuestPropagationTests.awaitAgent)
        index=0
        for url in "/h2?to=$h2/" "/h2?to=$h2/" "/grpc?to=$grpc" "/grpc?to=$grpc"; do
            wget -q -O /tmp/body --header "traceparent: 00-\(traceID)-\(callerSpanID)-01" "http://127.0.0.1:$front$url"
            echo "answer $index: $(cat /tmp/body)"
            index=$((index + 1))
            sleep 0.3
        done
        \(GuestPropagationTests.stopAgentAndPrint)
        """
}
