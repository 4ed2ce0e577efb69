import BPFRuntime
import CTracerABI
import ExecutableInspection
import Foundation
import Synchronization
import Telemetry
import TestSupport
import Tracers
import TracerFramework
import XCTest

/// A child process the tests talk to: servers print their port on the first stdout line.
final class ChildProcess {
    let process = Process()
    private let stdout = Pipe()
    private let stdin = Pipe()

    init(_ executable: String, _ arguments: [String], directory: URL? = nil) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        process.standardOutput = stdout
        process.standardInput = stdin
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    /// The first line of standard output (a server's port).
    func readLine(timeout: TimeInterval = 10) throws -> String {
        var line = [UInt8]()
        let handle = stdout.fileHandleForReading
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let byte = handle.readData(ofLength: 1)
            guard let c = byte.first else { break }
            if c == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(c)
        }
        throw ChildProcessError(description: "\(process.executableURL?.path ?? "") printed no line: \(String(decoding: line, as: UTF8.self))")
    }

    func port() throws -> Int {
        let line = try readLine()
        guard let port = Int(line.trimmingCharacters(in: .whitespaces)) else {
            throw ChildProcessError(description: "\(process.executableURL?.path ?? "") printed \(line), not a port")
        }
        return port
    }

    /// Lets a process started as `sh -c 'read go; exec …'` continue (after its PID was allowed).
    func release() { stdin.fileHandleForWriting.write(Data("go\n".utf8)) }

    func waitForExit(timeout: TimeInterval = 20) -> Int32? {
        guard waitUntil(timeout: timeout, { !self.process.isRunning }) else { return nil }
        return process.terminationStatus
    }

    func output() -> String {
        String(decoding: stdout.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    deinit {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}

struct ChildProcessError: Error, CustomStringConvertible {
    let description: String
}

/// The test servers and clients, written into a test's scratch directory.
enum Programs {
    static let python = "/usr/bin/python3"
    static let node = "/usr/bin/node"
    static let curl = "/usr/bin/curl"
    static let nginx = "/usr/sbin/nginx"

    /// One nginx process (no master) serving `index.html` from `directory` on 127.0.0.1:`port`.
    static func nginxConfig(port: Int, in directory: URL, sendfile: Bool = false) throws -> String {
        try "hello\n".write(to: directory.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
        let config = directory.appendingPathComponent("nginx.conf")
        try """
        daemon off; master_process off; worker_processes 1; pid \(directory.path)/nginx.pid;
        error_log \(directory.path)/error.log;
        events { worker_connections 64; }
        http { access_log off; sendfile \(sendfile ? "on" : "off"); client_body_temp_path \(directory.path); proxy_temp_path \(directory.path);
               fastcgi_temp_path \(directory.path); uwsgi_temp_path \(directory.path); scgi_temp_path \(directory.path);
               server { listen 127.0.0.1:\(port); root \(directory.path); } }
        """.write(to: config, atomically: true, encoding: .utf8)
        return config.path
    }

    /// A threading `http.server` (HTTP/1.1, keep-alive) on 127.0.0.1; with a certificate and key it serves
    /// HTTPS through the `ssl` module. Routes: /hello 200, /slow 200 after 50 ms, /missing 404, /fail 500,
    /// POST anything 201 (the body is read).
    static let pythonServer = #"""
    import http.server, socketserver, ssl, sys, time

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *args):
            pass
        def reply(self, code, body=b"ok\n"):
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_GET(self):
            if self.path.startswith("/slow"):
                time.sleep(0.05)
            code = {"/missing": 404, "/fail": 500}.get(self.path.split("?")[0], 200)
            self.reply(code)
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.reply(201)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    if len(sys.argv) == 3:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[1], sys.argv[2])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """#

    /// A forking `http.server` (HTTP/1.0: one request per connection, each served by a new child process,
    /// as pre-fork and fork-per-connection servers do) on 127.0.0.1. Routes as `pythonServer`'s GET.
    static let forkingServer = #"""
    import http.server, socketserver

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass
        def do_GET(self):
            body = b"ok\n"
            self.send_response({"/missing": 404, "/fail": 500}.get(self.path, 200))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(socketserver.ForkingMixIn, http.server.HTTPServer):
        pass

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """#

    /// HTTP/1.1 whose messages cross the socket as several iovec segments (`sendmsg`/`recvmsg_into`, as
    /// writev-using servers and clients move them): `server` prints its port and answers each connection's
    /// one request with "201 Created" split over three segments, reading the request into a 10-byte and a
    /// large segment; `client PORT PATH` writes its request in two segments and reads the answer likewise.
    static let segmentedPeer = #"""
    import socket, sys

    def receive_head(connection):
        data = b""
        while b"\r\n\r\n" not in data:
            small, large = bytearray(10), bytearray(4096)
            count = connection.recvmsg_into([small, large])[0]
            if count == 0:
                break
            data += (bytes(small) + bytes(large))[:count]
        return data

    if sys.argv[1] == "server":
        listener = socket.create_server(("127.0.0.1", 0))
        print(listener.getsockname()[1], flush=True)
        while True:
            connection, _ = listener.accept()
            receive_head(connection)
            connection.sendmsg([b"HTTP/1.1 20", b"1 Created\r\nContent-Length: 5\r\n", b"\r\nhello"])
            connection.recv(1)
            connection.close()
    else:
        connection = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
        path = sys.argv[3].encode()
        connection.sendmsg([b"GET " + path[:4], path[4:] + b" HTTP/1.1\r\nHost: x\r\n\r\n"])
        answer = receive_head(connection)
        while not answer.endswith(b"hello"):
            more = connection.recv(4096)
            if not more:
                break
            answer += more
        print(answer.split(b"\r\n")[0].decode(), flush=True)
        connection.close()
    """#

    /// Node's `http` server on 127.0.0.1 (keep-alive): 200 for every path, 500 for /fail.
    static let nodeServer = #"""
    const http = require("http");
    const server = http.createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        res.statusCode = req.url === "/fail" ? 500 : 200;
        res.setHeader("Content-Type", "text/plain");
        res.end("ok\n");
      });
    });
    server.listen(0, "127.0.0.1", () => console.log(server.address().port));
    """#

    /// Python `urllib` client: GETs each URL given (one connection per request) and prints the statuses.
    static let pythonClient = #"""
    import sys, urllib.request, urllib.error
    for url in sys.argv[1:]:
        try:
            with urllib.request.urlopen(url) as response:
                response.read()
                print(response.status)
        except urllib.error.HTTPError as error:
            print(error.code)
    """#

    /// Sends three pipelined requests in one write on one connection, then reads until all three
    /// responses arrived.
    static let pipeliningClient = #"""
    import socket, sys
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
              b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
              b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while data.count(b"HTTP/1.") < 3 or not data.endswith(b"ok\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    print(data.count(b"HTTP/1."))
    """#

    /// Misbehaving clients of 127.0.0.1:argv[1], by argv[2]: `early` connects, makes a request, prints
    /// "connected", waits for a line on stdin, then makes another on the same connection; `garbage` sends
    /// bytes that are no protocol, 12 times; `large` POSTs a 64 KiB body in one write; `vanish` sends a request
    /// for /slow and closes before the answer.
    static let badClients = #"""
    import socket, sys
    port, mode = int(sys.argv[1]), sys.argv[2]
    def request(s, path):
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"ok\n"):
            data += s.recv(65536)
    s = socket.create_connection(("127.0.0.1", port))
    if mode == "early":
        request(s, b"/before-start")
        print("connected", flush=True)
        sys.stdin.readline()
        request(s, b"/after-start")
    elif mode == "garbage":
        try:
            for i in range(12):
                s.sendall(bytes([0, 1, 2, 255]) * 8 + b" no protocol %d\n" % i)
        except OSError:
            pass  # the server answered 400 and closed
    elif mode == "large":
        body = b"x" * 65536
        s.sendall(b"POST /large HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n" + body)
        data = b""
        while not data.endswith(b"ok\n"):
            data += s.recv(65536)
    elif mode == "vanish":
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    s.close()
    """#

    /// Downloads a URL (argv 1) reading at most argv 2 bytes per second (curl 7.88's --limit-rate does not
    /// hold back a fast loopback transfer); prints the byte count.
    static let slowDownload = #"""
    import sys, time, urllib.request
    rate = int(sys.argv[2])
    total = 0
    start = time.monotonic()
    with urllib.request.urlopen(sys.argv[1]) as response:
        while True:
            block = response.read(65536)
            if not block:
                break
            total += len(block)
            ahead = total / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    print(total)
    """#

    static func write(_ source: String, named name: String, in directory: URL) throws -> String {
        let file = directory.appendingPathComponent(name)
        try source.write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }

    /// A self-signed certificate for 127.0.0.1, made with `openssl req`.
    static func certificate(in directory: URL) throws -> (cert: String, key: String) {
        let cert = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        try run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                                     "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        return (cert, key)
    }
}
