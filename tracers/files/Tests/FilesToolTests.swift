import Foundation
import TestSupport
import XCTest

/// `tracer tool files` as a user runs it (the built binary), on file operations of a C program the test
/// starts once the tracers are attached, next to Debian's libbpf-tools `opensnoop` (0.26, syscall
/// tracepoints: it runs on this kernel).
final class FilesToolTests: XCTestCase {
    /// `files DIR N`: on a byte from standard input, in DIR: creates N files (open O_CREAT), opens each
    /// again read-only, opens N missing files (ENOENT), opens N files relative to DIR (openat with a
    /// directory fd), creates sub/ and a file in it with creat(), renames it, unlinks it and N/2 of the
    /// files; then prints "done" and waits for a second byte.
    static let workload = """
        #define _GNU_SOURCE
        #include <fcntl.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <sys/stat.h>
        #include <unistd.h>

        int main(int argc, char **argv) {
            const char *dir = argv[1];
            int n = atoi(argv[2]);
            char path[512], other[512];
            printf("ready\\n");
            fflush(stdout);
            char go;
            if (read(0, &go, 1) != 1) return 1;
            for (int i = 0; i < n; i++) {
                snprintf(path, sizeof path, "%s/file%d", dir, i);
                int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0640);
                if (fd < 0) { perror(path); return 2; }
                close(fd);
            }
            for (int i = 0; i < n; i++) {
                snprintf(path, sizeof path, "%s/file%d", dir, i);
                int fd = open(path, O_RDONLY);
                if (fd >= 0) close(fd);
            }
            for (int i = 0; i < n; i++) {
                snprintf(path, sizeof path, "%s/missing%d", dir, i);
                if (open(path, O_RDONLY) >= 0) return 3;
            }
            int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
            for (int i = 0; i < n; i++) {
                snprintf(path, sizeof path, "file%d", i);
                int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
                if (fd >= 0) close(fd);
            }
            snprintf(path, sizeof path, "%s/sub", dir);
            mkdir(path, 0750);
            snprintf(path, sizeof path, "%s/sub/new", dir);
            int fd = creat(path, 0600);
            if (fd < 0) { perror(path); return 4; }
            close(fd);
            snprintf(other, sizeof other, "%s/sub/renamed", dir);
            if (rename(path, other)) { perror("rename"); return 5; }
            if (unlink(other)) { perror("unlink"); return 6; }
            for (int i = 0; i < n / 2; i++) {
                snprintf(path, sizeof path, "%s/file%d", dir, i);
                if (unlinkat(AT_FDCWD, path, 0)) { perror("unlinkat"); return 7; }
            }
            printf("done\\n");
            fflush(stdout);
            if (read(0, &go, 1) != 1) return 1;
            return 0;
        }
        """

    static let files = 40

    var tracerPath: String { productsDirectory.appendingPathComponent("tracer").path }

    private func jsonLines(_ text: String) -> [[String: Any]] {
        text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// opensnoop's rows (`PID COMM FD ERR PATH`) of `pid`: (fd, err, path).
    private func opensnoopRows(_ text: String, pid: Int32) -> [(fd: Int, err: Int, path: String)] {
        text.split(separator: "\n").compactMap { line in
            let words = line.split(separator: " ", maxSplits: 4, omittingEmptySubsequences: true)
            guard words.count == 5, Int32(words[0]) == pid, let fd = Int(words[2]), let err = Int(words[3]) else { return nil }
            return (fd, err, String(words[4]))
        }
    }

    private func startWorkload(in directory: URL) throws -> (BackgroundCommand, URL) {
        let data = directory.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        let workload = try BackgroundCommand(try compileC(Self.workload, name: "fileops", in: directory).path, [data.path, String(Self.files)])
        XCTAssertTrue(workload.waitFor("ready"), workload.stderr)
        return (workload, data)
    }

    func testOpensSeenByOpensnoopAreSeenWithTheirResultsAndCreatesUnlinksRenames() throws {
        try requireBPF()
        try requireExecutable("/usr/sbin/opensnoop", package: "libbpf-tools")
        let directory = try temporaryDirectory(self)
        let (workload, data) = try startWorkload(in: directory)
        let ours = try BackgroundCommand(tracerPath, ["tool", "files", "--pid", String(workload.pid), "--json"])
        let theirs = try BackgroundCommand("/usr/bin/stdbuf", ["-oL", "/usr/sbin/opensnoop", "-p", String(workload.pid)])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        XCTAssertTrue(theirs.waitFor("PATH"), theirs.stdout + theirs.stderr)
        XCTAssertTrue(ours.stderr.contains("hooks: tracepoints syscalls:sys_enter/sys_exit_{openat,openat2,unlinkat,renameat2,open,creat,unlink,rename,renameat}"), ours.stderr)
        XCTAssertTrue(ours.stderr.contains("cost: syscall tracepoints"), ours.stderr)
        workload.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertTrue(workload.waitFor("done"), workload.stderr)
        let n = Self.files
        // Every open of the workload: n creates, n reads, n failures, the directory, n relative, one creat.
        let expectedOpens = 4 * n + 2
        XCTAssertTrue(waitUntil(timeout: 10) { self.jsonLines(ours.stdout).count >= expectedOpens + 2 + n / 2 }, ours.stdout)
        XCTAssertTrue(waitUntil(timeout: 10) { self.opensnoopRows(theirs.stdout, pid: workload.pid).count >= expectedOpens - 1 }, theirs.stdout)
        workload.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertEqual(workload.waitForExit(), 0, workload.stderr)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        XCTAssertEqual(theirs.stop(), 0, theirs.stderr)

        let events = jsonLines(ours.stdout)
        XCTAssertTrue(events.allSatisfy { $0["tool"] as? String == "files" && $0["pid"] as? Int == Int(workload.pid) && $0["comm"] as? String == "fileops" },
                      ours.stdout)
        let opens = events.filter { ["open", "create"].contains($0["event"] as? String) }
        // opensnoop's view: (fd or -1, errno, path as given); ours in the same form.
        func key(_ fd: Int, _ err: Int, _ path: String) -> String { "\(fd) \(err) \(path)" }
        let errnoNumbers = ["ENOENT": 2]
        let oursKeys = opens.map { event -> String in
            let path = event["file.path"] as? String ?? "?"
            if let fd = event["fd"] as? Int { return key(fd, 0, path) }
            return key(-1, errnoNumbers[event["error.type"] as? String ?? ""] ?? -999, path)
        }
        let theirsKeys = opensnoopRows(theirs.stdout, pid: workload.pid).map { key($0.fd, $0.err, $0.path) }
        print("files vs opensnoop: \(oursKeys.count) opens vs \(theirsKeys.count)")
        XCTAssertEqual(oursKeys.count, expectedOpens, ours.stdout)
        // opensnoop 0.26 hooks open and openat only (not creat): the creat() of sub/new is ours alone.
        XCTAssertEqual(oursKeys.filter { !$0.hasSuffix("sub/new") }.sorted(), theirsKeys.sorted())
        XCTAssertEqual(theirsKeys.count, expectedOpens - 1, theirs.stdout)

        XCTAssertEqual(opens.filter { $0["event"] as? String == "create" }.count, n + 1)
        let firstCreate = try XCTUnwrap(opens.first { $0["file.path"] as? String == data.path + "/file0" })
        XCTAssertEqual(firstCreate["event"] as? String, "create")
        XCTAssertEqual(firstCreate["flags"] as? String, "O_WRONLY|O_CREAT|O_TRUNC")
        XCTAssertEqual(firstCreate["mode"] as? String, "640")
        let failed = opens.filter { $0["error.type"] as? String == "ENOENT" }
        XCTAssertEqual(failed.count, n)
        let relative = try XCTUnwrap(opens.first { $0["file.path"] as? String == "file1" }, ours.stdout)
        XCTAssertEqual(relative["flags"] as? String, "O_RDONLY|O_CLOEXEC")
        let creat = try XCTUnwrap(opens.first { $0["file.path"] as? String == data.path + "/sub/new" })
        XCTAssertEqual(creat["event"] as? String, "create")
        XCTAssertEqual(creat["mode"] as? String, "600")

        let renames = events.filter { $0["event"] as? String == "rename" }
        XCTAssertEqual(renames.count, 1, ours.stdout)
        XCTAssertEqual(renames.first?["file.path"] as? String, data.path + "/sub/new")
        XCTAssertEqual(renames.first?["file.new_path"] as? String, data.path + "/sub/renamed")
        let unlinks = events.filter { $0["event"] as? String == "unlink" }
        XCTAssertEqual(unlinks.count, 1 + n / 2, ours.stdout)
        XCTAssertTrue(unlinks.allSatisfy { $0["error.type"] == nil }, ours.stdout)
        XCTAssertTrue(ours.stderr.contains("events.dropped 0"), ours.stderr)
    }

    /// With `--path-prefix DIR/sub/ --path-prefix DIR/file3` only the events under them are reported: absolute
    /// paths judged in the kernel, paths relative to a directory fd in user space (with the directory).
    func testPathPrefixesKeepOnlyPathsUnderThem() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let (workload, data) = try startWorkload(in: directory)
        let ours = try BackgroundCommand(tracerPath, ["tool", "files", "--pid", String(workload.pid), "--json",
                                                      "--path-prefix", data.path + "/sub/", "--path-prefix", data.path + "/file3"])
        XCTAssertTrue(ours.waitFor("Ctrl-C to end"), ours.stderr)
        workload.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertTrue(workload.waitFor("done"), workload.stderr)
        // Of the 40 files, file3 and file30...file39 (11) are under the second prefix: created, opened again,
        // opened relative to the directory fd; file3 is also unlinked. sub/: the creat, the rename, the unlink.
        let matching = 11
        XCTAssertTrue(waitUntil(timeout: 10) { self.jsonLines(ours.stdout).count >= 3 + 3 * matching + 1 }, ours.stdout)
        workload.input.fileHandleForWriting.write(Data("g".utf8))
        XCTAssertEqual(workload.waitForExit(), 0)
        XCTAssertEqual(ours.stop(), 0, ours.stderr)
        let events = jsonLines(ours.stdout)
        XCTAssertEqual(events.count, 3 + 3 * matching + 1, ours.stdout)
        let paths = events.compactMap { $0["file.path"] as? String }
        let absolute = paths.filter { $0.hasPrefix("/") }, relative = paths.filter { !$0.hasPrefix("/") }
        XCTAssertTrue(absolute.allSatisfy { $0.hasPrefix(data.path + "/sub/") || $0.hasPrefix(data.path + "/file3") }, "\(absolute)")
        XCTAssertEqual(absolute.filter { $0.hasPrefix(data.path + "/sub/") }.count, 3, "\(absolute)")
        XCTAssertEqual(relative.sorted(), (["file3"] + (30..<40).map { "file\($0)" }).sorted())
        XCTAssertTrue(events.filter { ($0["file.path"] as? String)?.hasPrefix("/") == false }.allSatisfy { $0["file.directory"] as? String == data.path },
                      ours.stdout)
        // The other 29 relative opens were decoded and left out in user space.
        XCTAssertTrue(ours.stderr.contains("events.filtered 29,"), ours.stderr)
    }

    func testBadPrefixesAndAVanishedPIDAreOneLineErrors() throws {
        let relative = try runProduct("tracer", ["tool", "files", "--path-prefix", "etc/"])
        XCTAssertEqual(relative.status, 1)
        XCTAssertEqual(relative.stderr, "tracer tool: files: path prefix 'etc/' is not absolute (start it with /)\n")
        let tooMany = try runProduct("tracer", ["tool", "files"] + (0..<9).flatMap { ["--path-prefix", "/p\($0)"] })
        XCTAssertEqual(tooMany.status, 1)
        XCTAssertEqual(tooMany.stderr, "tracer tool: files: at most 8 path prefixes, not 9\n")
        let long = try runProduct("tracer", ["tool", "files", "--path-prefix", "/" + String(repeating: "a", count: 300)])
        XCTAssertEqual(long.status, 1)
        XCTAssertEqual(long.stderr.split(separator: "\n").count, 1, long.stderr)
        XCTAssertTrue(long.stderr.contains("is longer than 251 bytes"), long.stderr)
        let missing = try runProduct("tracer", ["tool", "files", "--pid", "999999999"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertEqual(missing.stderr, "tracer tool: files: no process with PID 999999999\n")
    }
}
