import Foundation
import XCTest

/// Builds real test binaries (C with `cc`, Go with Debian's go1.19) in one temporary directory shared
/// by test runs; a binary is rebuilt when its source, flags or toolchain change (they are in its name).
/// No network: Go programs use the standard library only and `GOPROXY=off`.
enum Fixtures {
    static let directory: URL = {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tracer-inspection-fixtures")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }()

    /// Runs `arguments` and returns stdout; fails the test (and throws) on a non-zero exit.
    @discardableResult
    static func run(_ arguments: [String], environment: [String: String] = [:], in cwd: URL? = nil) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        if let cwd { process.currentDirectoryURL = cwd }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw FixtureError(message: "\(arguments.joined(separator: " ")) failed: \(String(decoding: errData, as: UTF8.self))")
        }
        return String(decoding: data, as: UTF8.self)
    }

    struct FixtureError: Error, CustomStringConvertible { let message: String; var description: String { message } }

    static let cSource = """
        #include <stdio.h>
        #include <stdlib.h>
        __attribute__((noinline)) int probe_me(int x) {
            if (x > 10) return x * 3;
            if (x < -5) { printf("neg\\n"); return -x; }
            return x + 1;
        }
        int main(int argc, char **argv) { return probe_me(argc) == 42; }
        """

    private static let lock = NSLock()
    nonisolated(unsafe) private static var built: [String: String] = [:]

    /// Compiles `cSource` with `flags` (e.g. `-no-pie`, `-static-pie`) at `-O2` and returns the path.
    static func cBinary(_ name: String, flags: [String]) throws -> String {
        try once(name, key: [cSource] + flags) { output in
            let source = directory.appendingPathComponent("probe-\(getpid()).c")
            try cSource.write(to: source, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: source) }
            try run(["cc", "-O2", "-g"] + flags + ["-o", output, source.path])
        }
    }

    static let goSource = """
        package main

        import (
        \t"fmt"
        \t"net/http"
        \t"os"
        )

        func handler(w http.ResponseWriter, r *http.Request) {
        \tfmt.Fprintf(w, "hello %s", r.URL.Path)
        }

        func main() {
        \tif len(os.Args) > 5 {
        \t\thttp.HandleFunc("/", handler)
        \t\t_ = http.ListenAndServe(":0", nil)
        \t\tresp, err := http.Get("http://127.0.0.1/")
        \t\tif err == nil { resp.Body.Close() }
        \t}
        \tfmt.Println("ok")
        }
        """

    static let cgoSource = """
        package main

        // int add(int a, int b) { return a + b; }
        import "C"

        import (
        \t"fmt"
        \t"net/http"
        \t"os"
        )

        func main() {
        \tif len(os.Args) > 5 {
        \t\t_ = http.ListenAndServe(":0", nil)
        \t}
        \tfmt.Println(C.add(1, 2))
        }
        """

    /// Builds a Go program with `go` (default: Debian's go1.19 on PATH) and `flags`.
    static func goBinary(_ name: String, source: String = goSource, flags: [String] = [], cgo: Bool = false,
                         go: String = "go") throws -> String {
        try once(name, key: [source, go, cgo ? "cgo" : ""] + flags) { output in
            let dir = directory.appendingPathComponent("src-\(name)-\(getpid())")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try source.write(to: dir.appendingPathComponent("main.go"), atomically: true, encoding: .utf8)
            try "module example.com/fixture\n\ngo 1.19\n".write(to: dir.appendingPathComponent("go.mod"), atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: dir) }
            try run([go, "build"] + flags + ["-o", output, "."],
                    environment: ["CGO_ENABLED": cgo ? "1" : "0", "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local",
                                  "GOCACHE": directory.appendingPathComponent("gocache").path, "HOME": directory.path],
                    in: dir)
        }
    }

    /// The path of binary `name` built from `key` (source, flags, toolchain): reused if already built
    /// (by this or an earlier run), else `make(temporaryPath)` builds it and it is renamed into place.
    private static func once(_ name: String, key: [String], _ make: (String) throws -> Void) throws -> String {
        lock.lock()
        defer { lock.unlock() }
        if let path = built[name] { return path }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a: stable across runs, unlike Hasher
        for byte in key.joined(separator: "\u{0}").utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let path = directory.appendingPathComponent("\(name)-\(String(hash, radix: 16))").path
        if !FileManager.default.fileExists(atPath: path) {
            let temporary = path + ".tmp-\(getpid())"
            try make(temporary)
            guard rename(temporary, path) == 0 else { throw FixtureError(message: "cannot rename \(temporary)") }
        }
        built[name] = path
        return path
    }

    /// Writes `bytes` to a fresh file and returns its path.
    static func file(_ name: String, _ bytes: [UInt8]) throws -> String {
        let url = directory.appendingPathComponent("input-\(getpid())-\(name)")
        try Data(bytes).write(to: url)
        return url.path
    }

    /// Deletes this process's ``file(_:_:)`` outputs.
    static func removeInputFiles() {
        let prefix = "input-\(getpid())-"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        for name in names where name.hasPrefix(prefix) {
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(name))
        }
    }

    /// `nm` output: symbol name → address.
    static func nm(_ path: String) throws -> [String: UInt64] {
        var result: [String: UInt64] = [:]
        for line in try run(["nm", path]).split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count == 3, let address = UInt64(parts[0], radix: 16) else { continue }
            result[String(parts[2])] = address
        }
        return result
    }
}
