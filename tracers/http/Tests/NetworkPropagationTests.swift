import Foundation
import Telemetry
import TestSupport
import TracerFramework
import XCTest

/// Network-level `traceparent` injection (`--context-propagation network`: a sockops program puts the client
/// sockets of selected processes into a SOCKHASH at connect, an sk_msg program inserts the header after the
/// request line of outgoing plaintext HTTP/1 requests that carry none), end to end with real BPF and real
/// processes. The central check: an untraced recording server keeps exactly the bytes each connection brought,
/// and they must equal what the traced client wrote, except for one `traceparent` line right after a request
/// line where one was inserted — never anywhere else (inside a body, in a request that carried one, in a head
/// split over writes, on a connection older than the agent).
final class NetworkPropagationTests: XCTestCase {
    /// A raw TCP server on 127.0.0.1 (prints its port) that appends the bytes of each connection to
    /// `argv[1]/recv-PEER.bin` (PEER: the client's port) as they arrive, in reads sized by FIONREAD (a FIONREAD
    /// that disagrees with what recv returns goes to `fionread-PEER.txt`), frames HTTP/1 requests
    /// (Content-Length and chunked bodies), logs each as `METHOD TARGET BODY-LENGTH` in `requests-PEER.txt`,
    /// then answers it `200 ok`. Bytes it cannot frame are logged as `unparsable` and end the connection.
    static let recorder = #"""
    import fcntl, os, select, socket, struct, sys, termios, threading

    directory = sys.argv[1]
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"

    def complete_requests(buffer):
        """The complete requests at the start of `buffer` as (method, target, body length), and the bytes they take."""
        requests, used = [], 0
        while True:
            end = buffer.find(b"\r\n\r\n", used)
            if end < 0:
                return requests, used
            lines = buffer[used:end].split(b"\r\n")
            method, target, version = lines[0].split(b" ")
            if not version.startswith(b"HTTP/1."):
                raise ValueError("not a request line: %r" % lines[0])
            headers = {}
            for line in lines[1:]:
                name, colon, value = line.partition(b":")
                if not colon:
                    raise ValueError("not a header: %r" % line)
                headers[name.strip().lower()] = value.strip()
            position, length = end + 4, 0
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                while True:
                    size_end = buffer.find(b"\r\n", position)
                    if size_end < 0:
                        return requests, used
                    size = int(buffer[position:size_end], 16)
                    if len(buffer) < size_end + 2 + size + 2:
                        return requests, used
                    if buffer[size_end + 2 + size:size_end + 4 + size] != b"\r\n":
                        raise ValueError("chunk not followed by CRLF")
                    position = size_end + 4 + size
                    length += size
                    if size == 0:
                        break
            else:
                length = int(headers.get(b"content-length", b"0"))
                if len(buffer) < position + length:
                    return requests, used
                position += length
            requests.append((method.decode(), target.decode(), length))
            used = position

    def serve(connection, peer):
        """Appends what arrives to recv-PEER.bin as it comes (reads sized by FIONREAD), and each complete request to
        requests-PEER.txt, before answering it; a FIONREAD that disagrees with recv goes to fionread-PEER.txt."""
        path = lambda kind: os.path.join(directory, "%s-%d.%s" % (kind, peer, "bin" if kind == "recv" else "txt"))
        buffer = b""
        with open(path("recv"), "ab") as record, open(path("requests"), "a") as log:
            while True:
                select.select([connection], [], [])
                queued = struct.unpack("i", fcntl.ioctl(connection, termios.FIONREAD, b"\0\0\0\0"))[0]
                data = connection.recv(queued or 65536)
                if len(data) != queued:  # at the end of the stream both are 0
                    with open(path("fionread"), "a") as mismatch:
                        mismatch.write("FIONREAD %d, recv %d\n" % (queued, len(data)))
                if not data:
                    return
                record.write(data)
                record.flush()
                buffer += data
                try:
                    requests, used = complete_requests(buffer)
                except ValueError as error:
                    log.write("unparsable: %s\n" % error)
                    log.flush()
                    return
                buffer = buffer[used:]
                for request in requests:
                    log.write("%s %s %d\n" % request)
                log.flush()
                connection.sendall(ANSWER * len(requests))

    while True:
        connection, address = listener.accept()
        threading.Thread(target=serve, args=(connection, address[1]), daemon=True).start()
    """#

    /// A raw-socket HTTP/1.1 client of the recorder: `argv[1]` the mode, `argv[2]` the recorder's port, `argv[3]`
    /// the directory where each connection leaves what it sent (`sent-PORT.bin`) and the offsets just after its
    /// request lines (`lines-PORT.txt`); prints each connection's local port. Every answer is checked byte for
    /// byte (exit 1 with the reason on stderr otherwise).
    static let client = #"""
    import fcntl, os, select, signal, socket, struct, sys, termios, time

    mode, port, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
    # Request-looking bytes inside bodies: an injector that does not frame bodies would write into them.
    LOOKALIKE = b"GET /inside-a-body HTTP/1.1\r\nHost: x\r\n\r\n"
    signal.alarm(20)

    def fail(message):
        sys.stderr.write("client: %s\n" % message)
        sys.exit(1)

    class Connection:
        """A client connection that writes what it sent so far to sent-PORT.bin (PORT: its local port) and the offsets
        just after each of its request lines to lines-PORT.txt; appends PORT to connections.txt and prints it."""
        def __init__(self):
            self.socket = socket.create_connection(("127.0.0.1", port))
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.port = self.socket.getsockname()[1]
            self.data, self.starts = b"", []
            with open(os.path.join(directory, "connections.txt"), "a") as f:
                f.write("%d\n" % self.port)
            print(self.port, flush=True)

        def note(self, data, requests=(0,)):
            """Records `data` as sent; `requests`: where in it requests start."""
            self.starts += [len(self.data) + start for start in requests]
            self.data += data
            ends = [self.data.index(b"\r\n", start) + 2 for start in self.starts if b"\r\n" in self.data[start:]]
            for kind, content in (("sent", self.data), ("lines", "".join("%d\n" % end for end in ends).encode())):
                with open(os.path.join(directory, "%s-%d.%s" % (kind, self.port, "bin" if kind == "sent" else "txt")), "wb") as f:
                    f.write(content)

        def send(self, data, requests=(0,)):
            """One write (sendall: one send for these sizes)."""
            self.socket.sendall(data)
            self.note(data, requests)

        def expect(self, count):
            """Reads `count` answers and checks them byte for byte."""
            wanted, data = ANSWER * count, b""
            while len(data) < len(wanted):
                more = self.socket.recv(65536)
                if not more:
                    fail("connection closed after %r" % data)
                data += more
            if data != wanted:
                fail("answers differ: %r" % data)

    def post(path, body, extra=b""):
        return b"POST %s HTTP/1.1\r\nHost: recorder\r\nContent-Length: %d\r\n%s\r\n" % (path, len(body), extra) + body

    def get(path, extra=b""):
        return b"GET %s HTTP/1.1\r\nHost: recorder\r\nUser-Agent: inject-test\r\n%s\r\n" % (path, extra)

    if mode == "get":
        c = Connection()
        c.send(get(b"/one"))
        c.expect(1)
    elif mode == "carried":
        # A traceparent right after the request line, one later in the head in other letter case, then none.
        c = Connection()
        c.send(b"GET /carried HTTP/1.1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nHost: recorder\r\n\r\n")
        c.expect(1)
        c = Connection()
        c.send(get(b"/carried-later", b"TraceParent: 00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01\r\n"))
        c.expect(1)
        c = Connection()
        c.send(get(b"/plain"))
        c.expect(1)
    elif mode == "pipelined":
        c = Connection()
        requests = [get(b"/p1"), post(b"/p2", b"hello"), get(b"/p3")]
        c.send(b"".join(requests), [0, len(requests[0]), len(requests[0]) + len(requests[1])])
        c.expect(3)
    elif mode == "split":
        # The head over two writes (after its request line), then the request line itself over two writes.
        c = Connection()
        c.send(b"GET /split HTTP/1.1\r\n")
        time.sleep(0.05)
        c.send(b"Host: recorder\r\nUser-Agent: inject-test\r\n\r\n", ())
        c.expect(1)
        c = Connection()
        c.send(b"GET /spl")
        time.sleep(0.05)
        c.send(b"it-line HTTP/1.1\r\nHost: recorder\r\n\r\n", ())
        c.expect(1)
    elif mode == "bodies":
        body = LOOKALIKE * 50
        # Head and body in one write, then a keep-alive GET.
        c = Connection()
        c.send(post(b"/together", body))
        c.expect(1)
        c.send(get(b"/after-together"))
        c.expect(1)
        # The head, then the body in two writes, then a keep-alive GET.
        c = Connection()
        head = post(b"/apart", body)[:-len(body)]
        c.send(head)
        c.send(body[:700], ())
        time.sleep(0.02)
        c.send(body[700:], ())
        c.expect(1)
        c.send(get(b"/after-apart"))
        c.expect(1)
    elif mode == "chunked":
        c = Connection()
        c.send(b"POST /chunked HTTP/1.1\r\nHost: recorder\r\nTransfer-Encoding: chunked\r\n\r\n")
        c.send(b"5\r\nhello\r\n", ())
        c.send(b"%x\r\n%s\r\n" % (len(LOOKALIKE), LOOKALIKE), ())
        c.send(b"0\r\n\r\n", ())
        c.expect(1)
        c.send(get(b"/after-chunked"))
        c.expect(1)
    elif mode == "kernel-copies":
        # A body sent with sendfile(2), a whole request spliced from a pipe, a GET whose answer is spliced into a pipe.
        body = LOOKALIKE * 4000
        path = os.path.join(directory, "body.bin")
        with open(path, "wb") as f:
            f.write(body)
        c = Connection()
        c.send(post(b"/sendfile", body)[:-len(body)])
        with open(path, "rb") as f:
            if c.socket.sendfile(f) != len(body):
                fail("sendfile sent less")
        c.note(body, ())
        c.expect(1)
        spliced = post(b"/spliced", LOOKALIKE * 20)
        pipe_out, pipe_in = os.pipe()
        os.write(pipe_in, spliced)
        moved = 0
        while moved < len(spliced):
            moved += os.splice(pipe_out, c.socket.fileno(), len(spliced) - moved)
        c.note(spliced)
        c.expect(1)
        c.send(get(b"/splice-answer"))
        answer = b""
        while len(answer) < len(ANSWER):
            count = os.splice(c.socket.fileno(), pipe_in, len(ANSWER) - len(answer))
            if count == 0:
                fail("connection closed")
            answer += os.read(pipe_out, count)
        if answer != ANSWER:
            fail("spliced answer differs: %r" % answer)
        c.send(get(b"/last"))
        c.expect(1)
    elif mode == "large-head":
        # A head of 1.6 KiB in one write (beyond the window the injector reads), then a small GET.
        c = Connection()
        c.send(get(b"/large-head", b"X-Padding: %s\r\n" % (b"p" * 1600)))
        c.expect(1)
        c.send(get(b"/small-after"))
        c.expect(1)
    elif mode == "forms":
        # HTTP/1.0, an absolute-form target (as sent to a proxy), other methods: one connection each.
        for request in (b"GET /ten HTTP/1.0\r\nHost: recorder\r\n\r\n",
                        b"GET http://recorder/absolute HTTP/1.1\r\nHost: recorder\r\n\r\n",
                        b"DELETE /item HTTP/1.1\r\nHost: recorder\r\n\r\n",
                        b"PUT /item HTTP/1.1\r\nHost: recorder\r\nContent-Length: 4\r\n\r\nbody"):
            c = Connection()
            c.send(request)
            c.expect(1)
    elif mode == "asyncio":
        # An epoll event loop (asyncio) waiting for each answer on its (SOCKHASH) socket: woken every time.
        import asyncio
        async def exchange():
            c = Connection()
            c.socket.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=c.socket)
            for path in (b"/loop-1", b"/loop-2", b"/loop-3"):
                c.note(get(path))
                writer.write(get(path))
                await writer.drain()
                answer = await asyncio.wait_for(reader.readexactly(len(ANSWER)), 5)
                if answer != ANSWER:
                    fail("answer differs: %r" % answer)
            writer.close()
        asyncio.run(exchange())
    elif mode == "fionread":
        # Each answer: FIONREAD once it is readable (as nginx, Java NIO and .NET size reads), noted in
        # fionread.txt, then read whole.
        c = Connection()
        for path in (b"/sized-1", b"/sized-2"):
            c.send(get(path))
            select.select([c.socket], [], [])
            time.sleep(0.05)
            queued = struct.unpack("i", fcntl.ioctl(c.socket, termios.FIONREAD, b"\0\0\0\0"))[0]
            with open(os.path.join(directory, "fionread.txt"), "a") as noted:
                noted.write("%d\n" % queued)
            c.expect(1)
    elif mode == "early":
        # A connection made before the agent starts, used again after it started; then a new connection.
        c = Connection()
        c.send(get(b"/before"))
        c.expect(1)
        print("connected", flush=True)
        sys.stdin.readline()
        c.send(get(b"/old-connection"))
        c.expect(1)
        c = Connection()
        c.send(get(b"/new-connection"))
        c.expect(1)
    else:
        fail("unknown mode " + mode)
    """#

    /// A threading `http.server` (HTTP/1.1) bound to `argv[1]` (any port; prints it): `/call?to=URL` fetches URL
    /// with urllib from the handler's thread and answers `called STATUS`; anything else answers `ok`.
    static let tracedServer = #"""
    import http.server, socketserver, sys, urllib.parse, urllib.request

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *args):
            pass
        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            body = b"ok\n"
            if url.path == "/call":
                with urllib.request.urlopen(urllib.parse.parse_qs(url.query)["to"][0], timeout=10) as response:
                    response.read()
                    body = b"called %d" % response.status
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    server = Server((sys.argv[1], 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """#

    private static let python = "/usr/bin/python3"
    private static let ip = "/usr/sbin/ip"
    /// "traceparent: 00-" + 32 hex + "-" + 16 hex + "-01\r\n"
    private static let traceparentLineLength = 70

    /// A `traceparent` line the capture inserted into a stream: where (the offset in what the client wrote) and
    /// the ids it carries.
    struct Injection: Equatable {
        var offset: Int
        var traceID: String
        var spanID: String
    }

    /// One connection as the client wrote it and the recorder received it.
    struct RecordedConnection {
        var port: Int
        var sent: [UInt8]
        var received: [UInt8]
        /// Offsets in `sent` just after each request line: the only places a line may be inserted.
        var requestLineEnds: [Int]
        /// The requests the recorder framed, `METHOD TARGET BODY-LENGTH`.
        var requests: [String]
        /// `received` is `sent` with these lines inserted.
        var injections: [Injection]
    }

    /// Compares what the server received with what the client sent: equal except for whole `traceparent` lines
    /// inserted at `requestLineEnds`; throws a description of the first other difference.
    static func injections(sent: [UInt8], received: [UInt8], requestLineEnds: Set<Int>) throws -> [Injection] {
        var found: [Injection] = []
        var (i, j) = (0, 0)
        while i < sent.count || j < received.count {
            if requestLineEnds.contains(i), found.last?.offset != i, let line = traceparentLine(received, at: j),
               Array(received[j..<j + traceparentLineLength]) != Array(sent[i..<min(sent.count, i + traceparentLineLength)]) {
                found.append(Injection(offset: i, traceID: line.traceID, spanID: line.spanID))
                j += traceparentLineLength
                continue
            }
            guard i < sent.count, j < received.count, sent[i] == received[j] else {
                let show = { (bytes: [UInt8], at: Int) in String(decoding: bytes[min(at, bytes.count)..<min(bytes.count, at + 80)], as: UTF8.self).debugDescription }
                throw StreamMismatch(description: "the received bytes differ from the sent ones at sent offset \(i) (received \(j)): sent \(show(sent, i)), received \(show(received, j)) (\(sent.count) bytes sent, \(received.count) received)")
            }
            i += 1
            j += 1
        }
        return found
    }

    struct StreamMismatch: Error, CustomStringConvertible {
        let description: String
    }

    /// The ids of a `traceparent: 00-TRACE-SPAN-01\r\n` line at `offset`, lowercase hex as W3C Trace Context
    /// writes it, or nil.
    static func traceparentLine(_ bytes: [UInt8], at offset: Int) -> (traceID: String, spanID: String)? {
        guard offset + traceparentLineLength <= bytes.count else { return nil }
        let line = String(decoding: bytes[offset..<offset + traceparentLineLength], as: UTF8.self)
        guard line.hasPrefix("traceparent: 00-"), line.hasSuffix("-01\r\n") else { return nil }
        let traceID = String(line.dropFirst(16).prefix(32)), spanID = String(line.dropFirst(49).prefix(16))
        let hex = Set("0123456789abcdef")
        guard line.dropFirst(48).first == "-", traceID.allSatisfy(hex.contains), spanID.allSatisfy(hex.contains),
              TraceID(hex: traceID)?.isValid == true, SpanID(hex: spanID)?.isValid == true else { return nil }
        return (traceID, spanID)
    }

    /// What one client run left: its connections in the order it opened them, and the processes.
    struct Run {
        var connections: [RecordedConnection]
        /// What the client's FIONREAD said before each answer it read ("fionread" mode).
        var fionread: [Int] = []
        var client: ChildProcess
        var recorder: ChildProcess
        var harness: TracingHarness
    }

    /// The recorder (traced when `traceRecorder`) and the client in `mode` (traced, network propagation on,
    /// selected before it connects): runs the client to its end and returns its connections, after
    /// checking that it saw every answer intact, that the recorder framed every request and saw FIONREAD agree
    /// with recv, and that each connection's bytes arrived unchanged except for `traceparent` lines inserted
    /// right after request lines.
    private func record(_ mode: String, traceRecorder: Bool = false, beforeTheAgent: ((ChildProcess) throws -> Void)? = nil) throws -> Run {
        try requireBPF()
        try requireExecutable(Self.python, package: "python3")
        let directory = try temporaryDirectory(self)
        let recorderScript = try Programs.write(Self.recorder, named: "recorder.py", in: directory)
        let clientScript = try Programs.write(Self.client, named: "client.py", in: directory)
        let recorder = try ChildProcess(Self.python, [recorderScript, directory.path])
        let port = try recorder.port()
        let client: ChildProcess
        let harness: TracingHarness
        if let beforeTheAgent {
            client = try ChildProcess(Self.python, [clientScript, mode, String(port), directory.path])
            try beforeTheAgent(client)
            harness = try TracingHarness(pids: [client.pid] + (traceRecorder ? [recorder.pid] : []), contextPropagation: .network)
        } else {
            // Held at `read` until released (`exec` keeps the PID): selected before it connects.
            client = try ChildProcess("/bin/sh", ["-c", "read go; exec \"$0\" \"$@\"", Self.python, clientScript, mode, String(port), directory.path])
            harness = try TracingHarness(pids: [client.pid] + (traceRecorder ? [recorder.pid] : []), contextPropagation: .network)
        }
        client.release()
        XCTAssertEqual(client.waitForExit(), 0, "the client saw every answer intact (its stderr says what not)")
        let read = { (name: String) in (try? Data(contentsOf: directory.appendingPathComponent(name))).map { [UInt8]($0) } }
        let ports = String(decoding: read("connections.txt") ?? [], as: UTF8.self).split(separator: "\n").compactMap { Int($0) }
        XCTAssertFalse(ports.isEmpty, "the client opened connections")
        var connections: [RecordedConnection] = []
        for port in ports {
            let sent = try XCTUnwrap(read("sent-\(port).bin"), "connection \(port)")
            let received = read("recv-\(port).bin") ?? []
            let requestLineEnds = String(decoding: read("lines-\(port).txt") ?? [], as: UTF8.self).split(separator: "\n").compactMap { Int($0) }
            let requests = String(decoding: read("requests-\(port).txt") ?? [], as: UTF8.self).split(separator: "\n").map(String.init)
            XCTAssertNil(read("fionread-\(port).txt").map { String(decoding: $0, as: UTF8.self) }, "connection \(port): the recorder's FIONREAD")
            XCTAssertFalse(requests.contains { $0.hasPrefix("unparsable") }, "connection \(port): \(requests)")
            do {
                let injections = try Self.injections(sent: sent, received: received, requestLineEnds: Set(requestLineEnds))
                connections.append(RecordedConnection(port: port, sent: sent, received: received, requestLineEnds: requestLineEnds,
                                                      requests: requests, injections: injections))
            } catch {
                XCTFail("connection \(port): \(error)")
            }
        }
        XCTAssertEqual(connections.count, ports.count, "every connection arrived intact")
        let fionread = String(decoding: read("fionread.txt") ?? [], as: UTF8.self).split(separator: "\n").compactMap { Int($0) }
        return Run(connections: connections, fionread: fionread, client: client, recorder: recorder, harness: harness)
    }

    private func counter(_ harness: TracingHarness, _ name: String) -> UInt64? {
        harness.agent.counters.first { $0.tracer == "capture" && $0.counter.name == name }?.counter.value()
    }

    private func source(_ span: Span) -> String? { span.string(ParentSource.attribute) }

    /// The comparison itself (no kernel): only whole lines right after request lines pass; a line elsewhere, a cut
    /// line, two lines at one place or any other changed byte is reported.
    func testTheComparisonAcceptsOnlyWholeLinesAfterRequestLines() throws {
        let sent = Array("POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n".utf8)
        let ends = [18, 61]
        let line = Array("traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n".utf8)
        let inserting = { (offsets: [Int], bytes: [UInt8]) in
            offsets.sorted(by: >).reduce(sent) { stream, offset in Array(stream[..<offset]) + bytes + Array(stream[offset...]) }
        }
        XCTAssertEqual(try Self.injections(sent: sent, received: sent, requestLineEnds: Set(ends)), [])
        let both = try Self.injections(sent: sent, received: inserting(ends, line), requestLineEnds: Set(ends))
        XCTAssertEqual(both.map(\.offset), ends)
        XCTAssertEqual(both.first?.traceID, "0af7651916cd43dd8448eb211c80319c")
        XCTAssertEqual(both.first?.spanID, "b7ad6b7169203331")
        XCTAssertThrowsError(try Self.injections(sent: sent, received: inserting([41], line), requestLineEnds: Set(ends)), "inside the body")
        XCTAssertThrowsError(try Self.injections(sent: sent, received: inserting([18], Array(line.dropLast())), requestLineEnds: Set(ends)), "a cut line")
        XCTAssertThrowsError(try Self.injections(sent: sent, received: inserting([18], line + line), requestLineEnds: Set(ends)), "two lines")
        XCTAssertThrowsError(try Self.injections(sent: sent, received: Array(sent.dropLast()), requestLineEnds: Set(ends)), "a lost byte")
        var changed = sent
        changed[50] = UInt8(ascii: "X")
        XCTAssertThrowsError(try Self.injections(sent: sent, received: changed, requestLineEnds: Set(ends)), "a changed byte")
    }

    /// One GET from a traced client: the recorder gets exactly one `traceparent` line, right after the request
    /// line, whose ids are the client span's (a new trace: the client serves no request); the answer comes back
    /// intact; the injection is counted.
    func testAGetCarriesTheClientSpansIdsRightAfterItsRequestLine() throws {
        let run = try record("get")
        let (connections, client, harness) = (run.connections, run.client, run.harness)
        let connection = try XCTUnwrap(connections.first)
        XCTAssertEqual(connection.requests, ["GET /one 0"])
        XCTAssertEqual(connection.injections.map(\.offset), connection.requestLineEnds)
        XCTAssertEqual(connection.received.count, connection.sent.count + Self.traceparentLineLength)
        let injected = try XCTUnwrap(connection.injections.first)
        let spans = harness.waitForSpans(of: client.pid, kind: .client, count: 1)
        XCTAssertEqual(spans.count, 1, "\(spans.map(\.name))")
        let span = try XCTUnwrap(spans.first)
        XCTAssertTrue((span.string(SemanticConventions.urlFull) ?? span.string(SemanticConventions.urlPath) ?? "").hasSuffix("/one"), "\(span.attributes)")
        XCTAssertEqual(span.traceID.hex, injected.traceID)
        XCTAssertEqual(span.spanID.hex, injected.spanID)
        XCTAssertEqual(span.parentSpanID, .invalid, "the client serves no request: a new trace")
        XCTAssertNil(source(span), "a root span names no parent source")
        XCTAssertEqual(counter(harness, "propagation_injected"), 1)
        XCTAssertEqual(counter(harness, "propagation_skipped"), 0)
        XCTAssertEqual(counter(harness, "propagation_failed"), 0)
    }

    /// Requests that carry a `traceparent` (right after the request line, or later in the head in other letter
    /// case) arrive byte for byte as sent and count as skipped; a plain request from the same client is injected.
    func testRequestsThatCarryATraceparentAreLeftAlone() throws {
        let run = try record("carried")
        let (connections, harness) = (run.connections, run.harness)
        XCTAssertEqual(connections.count, 3)
        guard connections.count == 3 else { return }
        XCTAssertEqual(connections[0].received, connections[0].sent)
        XCTAssertEqual(connections[1].received, connections[1].sent)
        XCTAssertEqual(connections[2].injections.map(\.offset), connections[2].requestLineEnds)
        XCTAssertEqual(connections.map(\.requests), [["GET /carried 0"], ["GET /carried-later 0"], ["GET /plain 0"]])
        XCTAssertEqual(counter(harness, "propagation_injected"), 1)
        XCTAssertEqual(counter(harness, "propagation_skipped"), 2)
        XCTAssertEqual(counter(harness, "propagation_failed"), 0)
    }

    /// Three requests pipelined in one write (GET, POST with a body, GET): only the first gets a line; the rest
    /// arrive byte for byte, and the recorder frames the same three requests.
    func testOnlyTheFirstOfPipelinedRequestsInOneWriteIsInjected() throws {
        let connections = try record("pipelined").connections
        let connection = try XCTUnwrap(connections.first)
        XCTAssertEqual(connection.requests, ["GET /p1 0", "POST /p2 5", "GET /p3 0"])
        XCTAssertEqual(connection.requestLineEnds.count, 3)
        XCTAssertEqual(connection.injections.map(\.offset), Array(connection.requestLineEnds.prefix(1)))
    }

    /// A head split over two writes after its request line, and a request line split over two writes: both
    /// arrive byte for byte as sent.
    func testHeadsSplitOverSeveralWritesAreLeftAlone() throws {
        let connections = try record("split").connections
        XCTAssertEqual(connections.count, 2)
        for connection in connections {
            XCTAssertEqual(connection.received, connection.sent, "connection \(connection.port): \(connection.injections)")
        }
        XCTAssertEqual(connections.map(\.requests), [["GET /split 0"], ["GET /split-line 0"]])
    }

    /// POSTs whose 2000-byte bodies are full of request-looking lines, the body in the head's write or in two
    /// writes of its own, each followed by a GET on the same connection: bodies arrive intact and every
    /// request, the GET after the body too, gets its line.
    func testContentLengthBodiesAreFramedAndTheNextRequestIsInjectedAgain() throws {
        let connections = try record("bodies").connections
        XCTAssertEqual(connections.count, 2)
        XCTAssertEqual(connections.map(\.requests), [["POST /together 2000", "GET /after-together 0"], ["POST /apart 2000", "GET /after-apart 0"]])
        for connection in connections {
            XCTAssertEqual(connection.requestLineEnds.count, 2)
            XCTAssertEqual(connection.injections.map(\.offset), connection.requestLineEnds, "connection \(connection.port)")
        }
    }

    /// A chunked POST (chunks in writes of their own, one holding a request-looking line) then a GET: nothing
    /// is corrupted (lines only right after request lines; the connection may be left alone after the body).
    func testAChunkedBodyIsNotCorrupted() throws {
        let connections = try record("chunked").connections
        let connection = try XCTUnwrap(connections.first)
        XCTAssertEqual(connection.requests, ["POST /chunked 45", "GET /after-chunked 0"])
        XCTAssertTrue(Set(connection.injections.map(\.offset)).isSubset(of: connection.requestLineEnds))
    }

    /// The kernel's own copies: a body sent with sendfile(2), a whole request spliced from a pipe into the socket,
    /// an answer spliced from the socket into a pipe: every byte is right, and every request (the spliced one too,
    /// and those after the sendfile body) gets its line.
    func testSendfileAndSpliceSeeCorrectData() throws {
        let connections = try record("kernel-copies").connections
        let connection = try XCTUnwrap(connections.first)
        XCTAssertEqual(connection.requests, ["POST /sendfile 160000", "POST /spliced 800", "GET /splice-answer 0", "GET /last 0"])
        XCTAssertEqual(connection.injections.map(\.offset), connection.requestLineEnds)
    }

    /// A head larger than the window the injector reads (1.6 KiB, in one write) may hide a traceparent past it:
    /// left alone and counted as skipped (the rest of the connection may be left alone too).
    func testAHeadLargerThanTheWindowIsLeftAlone() throws {
        let run = try record("large-head")
        let connection = try XCTUnwrap(run.connections.first)
        XCTAssertEqual(connection.requests, ["GET /large-head 0", "GET /small-after 0"])
        XCTAssertFalse(connection.injections.map(\.offset).contains(connection.requestLineEnds.first ?? -1), "\(connection.injections)")
        XCTAssertTrue(Set(connection.injections.map(\.offset)).isSubset(of: connection.requestLineEnds))
        XCTAssertGreaterThanOrEqual(counter(run.harness, "propagation_skipped") ?? 0, 1)
    }

    /// HTTP/1.0, an absolute-form target, DELETE and PUT with a body: each arrives intact with its line.
    func testOtherRequestFormsAreInjectedToo() throws {
        let connections = try record("forms").connections
        XCTAssertEqual(connections.map(\.requests), [["GET /ten 0"], ["GET http://recorder/absolute 0"], ["DELETE /item 0"], ["PUT /item 4"]])
        for connection in connections {
            XCTAssertEqual(connection.injections.map(\.offset), connection.requestLineEnds, "connection \(connection.port)")
        }
    }

    /// An asyncio client (an epoll loop) on its SOCKHASH socket: each of three keep-alive answers wakes it (kernels
    /// with commit 929e30f93125 may lose that wakeup for sockmap sockets), and each request gets its line.
    func testAnEpollLoopIsWokenForEveryAnswer() throws {
        let connection = try XCTUnwrap(try record("asyncio").connections.first)
        XCTAssertEqual(connection.requests, ["GET /loop-1 0", "GET /loop-2 0", "GET /loop-3 0"])
        XCTAssertEqual(connection.injections.map(\.offset), connection.requestLineEnds)
    }

    /// A client that sizes its reads with ioctl(FIONREAD) on its SOCKHASH socket: the answer is read whole either
    /// way, and FIONREAD says what the agent's start-up line says — the queued answer's length, or 0 on kernels
    /// with `tcp_bpf_ioctl` (6.18.14+, this machine), which count only the sockmap's own queue.
    func testFIONREADOnTheClientsSocketIsWhatTheStartUpLineSays() throws {
        let run = try record("fionread")
        let connection = try XCTUnwrap(run.connections.first)
        XCTAssertEqual(connection.requests, ["GET /sized-1 0", "GET /sized-2 0"])
        XCTAssertEqual(connection.injections.map(\.offset), connection.requestLineEnds)
        let answer = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n".utf8.count
        let expected = NetworkPropagation.kernelHasSockmapIoctl() ? 0 : answer
        XCTAssertEqual(run.harness.agent.networkPropagation, .on(fionreadReportsZero: NetworkPropagation.kernelHasSockmapIoctl()))
        XCTAssertEqual(run.fionread, [expected, expected])
    }

    /// A connection opened before the agent started and used again after it: never modified; a connection the
    /// same client opens afterwards is injected.
    func testAConnectionFromBeforeTheAgentIsNeverModified() throws {
        let run = try record("early") { client in
            XCTAssertNotNil(Int(try client.readLine()), "the first connection's port")
            XCTAssertEqual(try client.readLine(), "connected")
        }
        let (connections, harness) = (run.connections, run.harness)
        XCTAssertEqual(connections.count, 2)
        guard connections.count == 2 else { return }
        let (old, new) = (connections[0], connections[1])
        XCTAssertEqual(old.requests, ["GET /before 0", "GET /old-connection 0"])
        XCTAssertEqual(old.received, old.sent, "\(old.injections)")
        XCTAssertEqual(new.requests, ["GET /new-connection 0"])
        XCTAssertEqual(new.injections.map(\.offset), new.requestLineEnds)
        XCTAssertEqual(counter(harness, "propagation_injected"), 1)
    }

    /// The recorder traced too: its server span reads the injected header and is the client span's child (same-host
    /// linking names the same parent when it matches too).
    func testATracedServerIsTheChildOfTheInjectedClientSpan() throws {
        let run = try record("get", traceRecorder: true)
        let injected = try XCTUnwrap(run.connections.first?.injections.first)
        let servers = run.harness.waitForSpans(of: run.recorder.pid, kind: .server, count: 1)
        let clients = run.harness.waitForSpans(of: run.client.pid, kind: .client, count: 1)
        XCTAssertEqual(servers.count, 1, "\(servers.map(\.name))")
        XCTAssertEqual(clients.count, 1, "\(clients.map(\.name))")
        let (server, client) = (try XCTUnwrap(servers.first), try XCTUnwrap(clients.first))
        XCTAssertEqual(client.spanID.hex, injected.spanID)
        XCTAssertEqual(server.parentSpanID, client.spanID)
        XCTAssertEqual(server.traceID.hex, injected.traceID)
        XCTAssertTrue(["traceparent", "same-host-peer"].contains(source(server) ?? "-"), "\(source(server) ?? "-")")
    }

    /// A Go net/http client (the fixture server's `/proxy` call) is never injected by `network` (Go's own write
    /// path is `go` mode): the recorder gets no traceparent, the Go client span still exists.
    func testGoClientsAreNeverInjected() throws {
        try requireBPF()
        try requireExecutable(Self.python, package: "python3")
        try requireExecutable(Programs.curl, package: "curl")
        let directory = try temporaryDirectory(self)
        let recorder = try ChildProcess(Self.python, [try Programs.write(Self.recorder, named: "recorder.py", in: directory), directory.path])
        let port = try recorder.port()
        let go = try GoServerProcess(binary: try GoServerBuild.binary(stripped: false))
        let harness = try TracingHarness(pids: [go.pid], contextPropagation: .network)
        let target = "http://127.0.0.1:\(port)/from-go".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        XCTAssertEqual(try curl(["\(go.base)/proxy?to=\(target)"]), "upstream 200")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasPrefix("recv-") }
        XCTAssertEqual(files.count, 1, "one connection from the Go client")
        let received = try Data(contentsOf: directory.appendingPathComponent(try XCTUnwrap(files.first)))
        XCTAssertTrue(String(decoding: received, as: UTF8.self).hasPrefix("GET /from-go HTTP/1.1\r\n"))
        XCTAssertNil(String(decoding: received, as: UTF8.self).lowercased().range(of: "traceparent"), "no traceparent in what the Go client sent")
        let clients = harness.waitForSpans(of: go.pid, kind: .client, count: 1)
        XCTAssertEqual(clients.count, 1, "\(clients.map(\.name))")
        XCTAssertNotEqual(clients.first.flatMap(source), "injected")
        XCTAssertEqual(counter(harness, "propagation_injected"), 0)
    }

    /// One trace across two network namespaces, which same-host linking deliberately never links: a traced
    /// Python ThreadingHTTPServer on the host calls (urllib, from the handler's thread) a traced one in another
    /// namespace over a veth pair. The call's span carries the upstream server span as parent and the injected
    /// ids; the downstream server reads them from the header and becomes the call's child.
    func testATraceCrossesNetworkNamespacesThroughTheInjectedHeader() throws {
        try requireBPF()
        try requireExecutable(Self.python, package: "python3")
        try requireExecutable(Self.ip, package: "iproute2")
        try requireExecutable(Programs.curl, package: "curl")
        let directory = try temporaryDirectory(self)
        let script = try Programs.write(Self.tracedServer, named: "server.py", in: directory)
        let tag = getpid() % 100_000
        let (namespace, hostSide, namespaceSide) = ("tracer-inject-\(tag)", "tinj\(tag)h", "tinj\(tag)n")
        let subnet = "10.213.\(tag % 250)"
        _ = try? TestSupport.run(Self.ip, ["netns", "del", namespace])
        _ = try? TestSupport.run(Self.ip, ["link", "del", hostSide])
        try TestSupport.run(Self.ip, ["netns", "add", namespace])
        defer { _ = try? TestSupport.run(Self.ip, ["netns", "del", namespace]) } // takes the veth pair with it
        try TestSupport.run(Self.ip, ["link", "add", hostSide, "type", "veth", "peer", "name", namespaceSide])
        try TestSupport.run(Self.ip, ["link", "set", namespaceSide, "netns", namespace])
        try TestSupport.run(Self.ip, ["addr", "add", "\(subnet).1/30", "dev", hostSide])
        try TestSupport.run(Self.ip, ["link", "set", hostSide, "up"])
        for command in [["addr", "add", "\(subnet).2/30", "dev", namespaceSide], ["link", "set", namespaceSide, "up"], ["link", "set", "lo", "up"]] {
            try TestSupport.run(Self.ip, ["netns", "exec", namespace, Self.ip] + command)
        }
        // `ip netns exec` enters the namespace and execs the command: the PID stays.
        let downstream = try ChildProcess(Self.ip, ["netns", "exec", namespace, Self.python, script, "\(subnet).2"])
        let downstreamPort = try downstream.port()
        let upstream = try ChildProcess(Self.python, [script, "127.0.0.1"])
        let upstreamPort = try upstream.port()
        let harness = try TracingHarness(pids: [upstream.pid, downstream.pid], contextPropagation: .network)
        let target = "http://\(subnet).2:\(downstreamPort)/hello".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        XCTAssertEqual(try curl(["http://127.0.0.1:\(upstreamPort)/call?to=\(target)"]), "called 200")

        let downstreamSpans = harness.waitForSpans(of: downstream.pid, kind: .server, count: 1)
        let calls = harness.waitForSpans(of: upstream.pid, kind: .client, count: 1)
        let upstreamSpans = harness.waitForSpans(of: upstream.pid, kind: .server, count: 1)
        XCTAssertEqual(downstreamSpans.count, 1, "\(downstreamSpans.map(\.name))")
        XCTAssertEqual(calls.count, 1, "\(calls.map(\.name))")
        XCTAssertEqual(upstreamSpans.count, 1, "\(upstreamSpans.map(\.name))")
        let (server, call, downstreamServer) = (try XCTUnwrap(upstreamSpans.first), try XCTUnwrap(calls.first), try XCTUnwrap(downstreamSpans.first))
        XCTAssertEqual(server.string(SemanticConventions.urlPath), "/call")
        XCTAssertEqual(downstreamServer.string(SemanticConventions.urlPath), "/hello")
        XCTAssertEqual(source(call), "injected")
        XCTAssertEqual(call.parentSpanID, server.spanID, "the call is made from the thread that serves /call")
        XCTAssertEqual(call.traceID, server.traceID)
        XCTAssertEqual(downstreamServer.parentSpanID, call.spanID)
        XCTAssertEqual(downstreamServer.traceID, call.traceID)
        XCTAssertEqual(source(downstreamServer), "traceparent", "only the header links across namespaces")
        XCTAssertEqual(counter(harness, "propagation_injected"), 1)
    }
}
