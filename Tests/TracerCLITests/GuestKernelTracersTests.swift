import Foundation
import TestSupport
import XCTest

/// The kernel utility tracers (`tracer tool NAME`) on Debian's 6.1 kernel under qemu (scripts/guest/run-in-guest.sh),
/// all in one boot: each attaches (its start line names the hooks it chose on 6.1) and reports the known truth of
/// a workload phase run while it is attached — context switches (runqlat), connections with their byte counts
/// (tcp), creates/opens/renames/unlinks (files), opens and closes (fds), getppid and failing close calls
/// (syscalls), direct I/O on a loop device (biolatency; the loop module comes from
/// scripts/guest/fetch-block-modules.sh), an OOM kill in a memory cgroup (oomkill). Then, with tracefs unmounted,
/// a tracer on named tracepoints (oomkill) cannot attach and says why in one line, while runqlat (BTF
/// tracepoints) still runs, as `tracer tool` and beside the agent (`--kernel-tracers oomkill,runqlat`).
final class GuestKernelTracersTests: XCTestCase {
    static let workload = #"""
        /* Workloads with known counts for the kernel tracers in the guest. One process (kept alive between phases,
           so `--pid` tools follow it) reads one byte from stdin before each phase and prints "done PHASE" after it.
           hog is a separate process: touches memory until the OOM killer kills it. */
        #define _GNU_SOURCE
        #include <arpa/inet.h>
        #include <errno.h>
        #include <fcntl.h>
        #include <netinet/in.h>
        #include <pthread.h>
        #include <sched.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <sys/socket.h>
        #include <sys/stat.h>
        #include <unistd.h>

        /* Blocks until the script sends the next phase's byte on stdin (a FIFO): no polling, so no wake-ups between phases. */
        static void wait_for_phase(void) { char byte; if (read(0, &byte, 1) != 1) exit(2); }
        /* Reported on stdout (a file the script reads): no open or close that fds or files would see. */
        static void done(const char *phase) { printf("done %s\n", phase); fflush(stdout); }
        static void pin(void) { cpu_set_t cpus; CPU_ZERO(&cpus); CPU_SET(0, &cpus); sched_setaffinity(0, sizeof cpus, &cpus); }

        /* runqlat: two threads of this process on CPU 0 pass a byte back and forth ROUND_TRIPS times. */
        enum { ROUND_TRIPS = 2000 };
        static int there[2], back[2];
        /* The echoing thread stays (blocked) after the round trips, so /proc still has its context-switch counts. */
        static void *echo(void *unused) {
            char byte; pin();
            for (int i = 0; i < ROUND_TRIPS; i++) if (read(there[0], &byte, 1) != 1 || write(back[1], &byte, 1) != 1) exit(3);
            read(there[0], &byte, 1);
            return unused;
        }
        static void pingpong(void) {
            pthread_t thread; char byte = 0;
            if (pipe(there) || pipe(back)) exit(3);
            pin();
            pthread_create(&thread, NULL, echo, NULL);
            for (int i = 0; i < ROUND_TRIPS; i++) if (write(there[1], &byte, 1) != 1 || read(back[0], &byte, 1) != 1) exit(3);
        }

        /* tcp: 5 connections to our own listener, connection i sends 3000 + 1000 i bytes and half-closes, the server
           answers 5000 + 100 i bytes and closes; then 3 connects to CLOSED_PORT (refused). */
        static int listener;
        static void drain(int fd) { char buffer[65536]; while (read(fd, buffer, sizeof buffer) > 0) {} }
        static void send_all(int fd, size_t size) {
            static char data[16384]; memset(data, 'x', sizeof data);
            while (size > 0) { ssize_t sent = write(fd, data, size < sizeof data ? size : sizeof data); if (sent <= 0) exit(4); size -= sent; }
        }
        static void *serve(void *unused) {
            for (int i = 0; i < 5; i++) { int connection = accept(listener, NULL, NULL); drain(connection); send_all(connection, 5000 + 100 * i); close(connection); }
            return unused;
        }
        static void tcp(int server_port, int closed_port) {
            struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons(server_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
            listener = socket(AF_INET, SOCK_STREAM, 0);
            int yes = 1; setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
            if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 16)) exit(4);
            pthread_t thread; pthread_create(&thread, NULL, serve, NULL);
            for (int i = 0; i < 5; i++) {
                int client = socket(AF_INET, SOCK_STREAM, 0);
                if (connect(client, (struct sockaddr *)&address, sizeof address)) exit(4);
                send_all(client, 3000 + 1000 * i); shutdown(client, SHUT_WR); drain(client); close(client);
            }
            pthread_join(thread, NULL);
            close(listener);
            address.sin_port = htons(closed_port);
            for (int i = 0; i < 3; i++) {
                int client = socket(AF_INET, SOCK_STREAM, 0);
                if (connect(client, (struct sockaddr *)&address, sizeof address) == 0 || errno != ECONNREFUSED) exit(4);
                close(client);
            }
        }

        /* files and fds: 20 creates of /tmp/kt/files/f-i (closed), one open of a missing file (ENOENT), a rename and
           an unlink under /tmp/kt/files, then 15 opens of /dev/null left open. */
        static void files(void) {
            char path[64], renamed[64];
            mkdir("/tmp/kt/files", 0755);
            for (int i = 0; i < 20; i++) { snprintf(path, sizeof path, "/tmp/kt/files/f-%d", i); int fd = open(path, O_CREAT | O_WRONLY, 0600); if (fd < 0) exit(5); close(fd); }
            if (open("/tmp/kt/files/missing", O_RDONLY) >= 0 || errno != ENOENT) exit(5);
            snprintf(path, sizeof path, "/tmp/kt/files/f-0"); snprintf(renamed, sizeof renamed, "/tmp/kt/files/renamed");
            if (rename(path, renamed) || unlink(renamed)) exit(5);
            for (int i = 0; i < 15; i++) if (open("/dev/null", O_RDONLY) < 0) exit(5);
        }

        /* syscalls: 3000 getppid, 1000 close(-1) (EBADF). */
        static void syscalls(void) {
            for (int i = 0; i < 3000; i++) getppid();
            for (int i = 0; i < 1000; i++) if (close(-1) == 0 || errno != EBADF) exit(6);
        }

        /* blockio: 500 direct 4 KiB writes then 500 direct reads of DEVICE. */
        static void blockio(const char *device) {
            int fd = open(device, O_RDWR | O_DIRECT); if (fd < 0) exit(7);
            void *buffer; if (posix_memalign(&buffer, 4096, 4096)) exit(7); memset(buffer, 7, 4096);
            for (int i = 0; i < 500; i++) if (pwrite(fd, buffer, 4096, (off_t)i * 4096) != 4096) exit(7);
            for (int i = 0; i < 500; i++) if (pread(fd, buffer, 4096, (off_t)i * 4096) != 4096) exit(7);
            close(fd);
        }

        /* hog: touches 1 MiB after 1 MiB until killed. */
        static void hog(void) { for (;;) { char *block = malloc(1 << 20); if (!block) exit(8); memset(block, 1, 1 << 20); } }

        int main(int argc, char **argv) {
            if (argc > 1 && strcmp(argv[1], "hog") == 0) hog();
            if (argc < 4) { fprintf(stderr, "usage: %s SERVER_PORT CLOSED_PORT DEVICE|none, or %s hog\n", argv[0], argv[0]); return 2; }
            printf("%d\n", getpid()); fflush(stdout);
            wait_for_phase(); pingpong(); done("runqlat");
            wait_for_phase(); tcp(atoi(argv[1]), atoi(argv[2])); done("tcp");
            wait_for_phase(); files(); done("files");
            wait_for_phase(); syscalls(); done("syscalls");
            wait_for_phase(); if (strcmp(argv[3], "none") != 0) blockio(argv[3]); done("blockio");
            wait_for_phase();
            return 0;
        }
        """#

    /// Runs as root in the guest: $1 the tracer, $2 the workload, $3 the directory with loop.ko.
    static let script = #"""
        tracer=$1 workload=$2 modules=$3
        mkdir -p /tmp/kt
        # A block device: a loop device over a file in the initramfs (the guest has no disk).
        device=none
        if insmod $modules/loop.ko && [ -b /dev/loop0 ] && dd if=/dev/zero of=/tmp/kt/disk bs=1M count=4 2>/dev/null && losetup /dev/loop0 /tmp/kt/disk; then
            device=/dev/loop0
            echo none > /sys/block/loop0/queue/scheduler
        fi
        echo "block device: $device"
        # A memory cgroup (v2) limited to 32 MiB for the OOM kill.
        memcg=no
        if echo +memory > /sys/fs/cgroup/cgroup.subtree_control && mkdir /sys/fs/cgroup/kt-oom && echo 32M > /sys/fs/cgroup/kt-oom/memory.max; then memcg=yes; fi
        echo "memory cgroup: $memcg"
        # The workload reads one byte per phase from this FIFO and prints "done PHASE" after each.
        mkfifo /tmp/kt/control
        $workload 5000 5001 $device < /tmp/kt/control > /tmp/kt/workload.out &
        exec 3> /tmp/kt/control
        until [ -s /tmp/kt/workload.out ]; do sleep 0.1; done
        W=$(head -n 1 /tmp/kt/workload.out)
        echo "workload: $W"
        start() { name=$1; shift; $tracer tool $name --json "$@" > /tmp/kt/$name.out 2> /tmp/kt/$name.err & echo $! > /tmp/kt/$name.pid; }
        attached() { waited=0; until grep -q "Ctrl-C to end" /tmp/kt/$1.err || ! kill -0 $(cat /tmp/kt/$1.pid) 2>/dev/null || [ $waited -ge 900 ]; do sleep 0.2; waited=$((waited + 1)); done; }
        # A tool that does not stop within 60 s of SIGINT, or a phase that does not end within 120 s, is said by
        # name (with the workload threads' states) and the script goes on, so a hang fails the step it is in.
        # halt SIGNAL PID LABEL: sends the signal, waits for the process, prints "LABEL exit STATUS".
        halt() {
            kill -$1 $2 2>/dev/null
            ( sleep 60; kill -KILL $2 2>/dev/null && echo "$3 did not stop within 60 s of SIG$1: killed" ) & watchdog=$!
            wait $2; echo "$3 exit $?"
            kill $watchdog 2>/dev/null
        }
        stop() { for name in "$@"; do halt INT $(cat /tmp/kt/$name.pid) "=== $name"; sed 's/^/stderr: /' /tmp/kt/$name.err; cat /tmp/kt/$name.out; done; }
        phase() {
            printf x >&3
            waited=0
            until grep -q "^done $1" /tmp/kt/workload.out || ! kill -0 $W 2>/dev/null; do
                sleep 0.1; waited=$((waited + 1))
                if [ $waited -ge 1200 ]; then
                    echo "phase $1 did not end within 120 s; workload threads (state, wchan): $(for t in /proc/$W/task/*; do echo "$(cut -d' ' -f3 $t/stat) $(cat $t/wchan)"; done | tr '\n' ',')"
                    return
                fi
            done
        }
        start runqlat --pid $W
        start tcp
        start oomkill
        if [ $device != none ]; then start biolatency --disk loop0; else start biolatency; fi
        start files --pid $W --path-prefix /tmp/kt/files
        start fds --pid $W --interval 1
        start syscalls --pid $W
        for name in runqlat tcp oomkill biolatency files fds syscalls; do attached $name; done
        echo "attached after $(cut -d' ' -f1 /proc/uptime) s"
        phase runqlat
        stop runqlat
        # The kernel's own count of the workload's context switches (both threads), taken once runqlat has stopped:
        # every sample but a new thread's first run follows one of them.
        echo "switches: $(cat /proc/$W/task/*/status | awk '/_ctxt_switches:/ { sum += $2 } END { print sum }')"
        phase tcp
        sleep 0.5
        stop tcp
        until grep -q fd_count /tmp/kt/fds.out || ! kill -0 $(cat /tmp/kt/fds.pid) 2>/dev/null; do sleep 0.2; done
        phase files
        sleep 2.5
        stop files fds
        phase syscalls
        stop syscalls
        [ $device = none ] || echo "diskstats before: $(cat /sys/block/loop0/stat)"
        phase blockio
        [ $device = none ] || echo "diskstats after: $(cat /sys/block/loop0/stat)"
        sleep 0.5
        stop biolatency
        if [ $memcg = yes ]; then
            sh -c 'echo $$ > /sys/fs/cgroup/kt-oom/cgroup.procs; echo $$ > /tmp/kt/hog.pid; exec "$0" hog' $workload
            echo "hog: $(cat /tmp/kt/hog.pid) exit $?"
            dmesg | grep "Killed process"
            sleep 0.5
        fi
        stop oomkill
        printf x >&3
        wait $W; echo "workload exit $?"
        # Without tracefs (as in a container that does not mount it): tracers on tracepoints by name (oomkill, files)
        # cannot attach and say why in one line; those on BTF or raw tracepoints (runqlat) still run, alone or in the agent.
        umount /sys/kernel/debug/tracing 2>/dev/null; umount /sys/kernel/tracing; umount /sys/kernel/debug
        echo "=== no tracefs"
        for name in oomkill runqlat; do $tracer tool $name --json --duration 1 > /tmp/kt/nt.out 2> /tmp/kt/nt.err; echo "--- $name exit $?"; sed 's/^/stderr: /' /tmp/kt/nt.err; cat /tmp/kt/nt.out; done
        sleep 60 &
        target=$!
        : > /tmp/kt/agent.err
        $tracer --pid $target --kernel-tracers oomkill,runqlat --print json --log-level info > /tmp/kt/agent.out 2> /tmp/kt/agent.err &
        agent=$!
        waited=0; until grep -q "tracing:" /tmp/kt/agent.err || ! kill -0 $agent 2>/dev/null || [ $waited -ge 900 ]; do sleep 0.2; waited=$((waited + 1)); done
        sleep 1
        halt TERM $agent "--- agent"
        sed 's/^/stderr: /' /tmp/kt/agent.err
        kill $target 2>/dev/null
        echo "=== end"
        """#

    func testEachKernelTracerAttachesOn61AndReportsItsWorkload() throws {
        try requireGuestKernel()
        let modules = try blockModules()
        let directory = try temporaryDirectory(self)
        let workload = try compileC(Self.workload, name: "kt-workload", in: directory, flags: ["-lpthread"])
        let tracer = productsDirectory.appendingPathComponent("tracer")
        let run = try runInGuest(files: [tracer, workload, modules], script: Self.script,
                                 arguments: [tracer.path, workload.path, modules.path], timeout: 500)
        print("guest run: \(run.timing)")
        XCTAssertEqual(run.status, 0, "guest script failed:\n\(run.output)\n\(run.log.suffix(3000))")
        let output = run.output
        XCTAssertTrue(output.contains("block device: /dev/loop0"), output)
        XCTAssertTrue(output.contains("memory cgroup: yes"), output)
        let workloadPID = try XCTUnwrap(value(after: "workload: ", in: output), output)

        // runqlat: 2000 round trips between two threads on CPU 0 are at least 4000 switch-ins after a wait
        // on the run queue; at most the threads' own context switches (/proc) plus the new thread's first run.
        let runqlat = try tool("runqlat", in: output)
        XCTAssertTrue(runqlat.stderr.contains("hooks: tp_btf sched_wakeup, sched_wakeup_new, sched_switch"), runqlat.stderr)
        let delays = try XCTUnwrap(runqlat.json.first { $0["name"] as? String == "tracer.runqlat.delay" }, runqlat.stderr)
        let switches = try XCTUnwrap(value(after: "switches: ", in: output), output)
        let samples = delays["count"] as? Int ?? -1
        print("runqlat in the guest: \(samples) samples, the workload's threads switched \(switches) times")
        XCTAssertGreaterThanOrEqual(samples, 4000, "\(delays)")
        XCTAssertLessThanOrEqual(samples, switches + 1, "\(delays)")

        // tcp: 5 connects, 5 accepts, 3 refused, 10 closes with the payloads plus SYN/FIN, 5 connect latencies.
        let tcp = try tool("tcp", in: output)
        XCTAssertTrue(tcp.stderr.contains("hooks: tp_btf inet_sock_set_state, tcp_retransmit_skb"), tcp.stderr)
        let events = tcp.json.filter { $0["event"] != nil }
        func named(_ name: String) -> [[String: Any]] { events.filter { $0["event"] as? String == name } }
        func port(_ event: [String: Any], _ side: String) -> Int { event["network.\(side).port"] as? Int ?? -1 }
        XCTAssertEqual(named("connect").count, 5, "\(events)")
        XCTAssertTrue(named("connect").allSatisfy { $0["pid"] as? Int == workloadPID && port($0, "peer") == 5000 }, "\(events)")
        XCTAssertEqual(named("accept").count, 5, "\(events)")
        XCTAssertTrue(named("accept").allSatisfy { port($0, "local") == 5000 }, "\(events)")
        let failures = named("connect_failed")
        XCTAssertEqual(failures.count, 3, "\(events)")
        XCTAssertTrue(failures.allSatisfy { $0["error.type"] as? String == "ECONNREFUSED" && port($0, "peer") == 5001 }, "\(failures)")
        var expected: Set<String> = []
        for i in 0..<5 {
            expected.insert("client \(3000 + 1000 * i + 2) \(5000 + 100 * i + 1)")
            expected.insert("server \(5000 + 100 * i + 1) \(3000 + 1000 * i + 1)")
        }
        let closes = named("close")
        XCTAssertEqual(closes.count, 10, "\(events)")
        XCTAssertEqual(Set(closes.map { "\(port($0, "local") == 5000 ? "server" : "client") \($0["tcp.bytes_acked"] as? Int ?? -1) \($0["tcp.bytes_received"] as? Int ?? -1)" }), expected, "\(closes)")
        let connectLatency = tcp.json.first { $0["name"] as? String == "tracer.tcp.connect.duration" }
        XCTAssertEqual(connectLatency?["count"] as? Int, 5, "\(tcp.json)")
        XCTAssertTrue(tcp.stderr.contains("events.dropped 0"), tcp.stderr)

        // files: 20 creates, an open failing with ENOENT, a rename and an unlink, all of the workload.
        let files = try tool("files", in: output)
        XCTAssertTrue(files.stderr.contains("hooks: tracepoints syscalls:sys_enter/sys_exit_{openat,openat2,unlinkat,renameat2,open,creat,unlink,rename,renameat}"), files.stderr)
        XCTAssertTrue(files.json.allSatisfy { $0["pid"] as? Int == workloadPID }, "\(files.json)")
        let creates = files.json.filter { $0["event"] as? String == "create" }
        XCTAssertEqual(Set(creates.compactMap { $0["file.path"] as? String }), Set((0..<20).map { "/tmp/kt/files/f-\($0)" }), "\(files.json)")
        XCTAssertEqual(creates.count, 20)
        XCTAssertTrue(creates.allSatisfy { ($0["fd"] as? Int ?? -1) >= 0 }, "\(creates)")
        let opens = files.json.filter { $0["event"] as? String == "open" }
        XCTAssertEqual(opens.count, 1, "\(files.json)")
        XCTAssertEqual(opens.first?["file.path"] as? String, "/tmp/kt/files/missing")
        XCTAssertEqual(opens.first?["error.type"] as? String, "ENOENT")
        let renames = files.json.filter { $0["event"] as? String == "rename" }
        XCTAssertEqual(renames.map { "\($0["file.path"] ?? "") \($0["file.new_path"] ?? "")" }, ["/tmp/kt/files/f-0 /tmp/kt/files/renamed"], "\(files.json)")
        XCTAssertEqual(files.json.filter { $0["event"] as? String == "unlink" }.compactMap { $0["file.path"] as? String }, ["/tmp/kt/files/renamed"])

        // fds: while attached the workload closed 14 sockets (tcp phase), then created and closed 20 files,
        // failed one open and left 15 opens of /dev/null open: 3 standard + 4 pipe ends + 15 descriptors.
        let fds = try tool("fds", in: output)
        XCTAssertTrue(fds.stderr.contains("hooks: tracepoints syscalls:sys_exit_{openat,openat2,open,creat,close}"), fds.stderr)
        let counts = fds.json.filter { $0["event"] as? String == "fd_count" && $0["pid"] as? Int == workloadPID }
        func total(_ field: String) -> Int { counts.reduce(0) { $0 + ($1[field] as? Int ?? 0) } }
        XCTAssertEqual(total("opens"), 35, "\(counts)")
        XCTAssertEqual(total("open_errors"), 1, "\(counts)")
        XCTAssertEqual(total("closes"), 34, "\(counts)")
        XCTAssertEqual(total("close_errors"), 0, "\(counts)")
        XCTAssertEqual(counts.last?["open_fds"] as? Int, 22, "\(counts)")
        XCTAssertFalse(counts.contains { $0["leak_suspected"] as? Bool == true }, "one interval of growth is no leak: \(counts)")

        // syscalls: 3000 getppid, 1000 close(-1) failing with EBADF.
        let syscalls = try tool("syscalls", in: output)
        XCTAssertTrue(syscalls.stderr.contains("hooks: tp_btf sys_enter, sys_exit"), syscalls.stderr)
        func histogram(_ name: String, _ syscall: String, _ error: String? = nil) -> Int? {
            syscalls.json.first { entry in
                let labels = entry["labels"] as? [String: Any]
                return entry["name"] as? String == name && labels?["syscall.name"] as? String == syscall && labels?["error.type"] as? String == error
            }?["count"] as? Int
        }
        XCTAssertEqual(histogram("tracer.syscalls.duration", "getppid"), 3000, "\(syscalls.json)")
        XCTAssertEqual(histogram("tracer.syscalls.error.duration", "close", "EBADF"), 1000, "\(syscalls.json)")

        // biolatency: 500 direct writes and 500 direct reads on loop0, as the kernel's diskstats count them
        // (up to 0.5 % fewer: see tracers/biolatency/README.md; never more than the device's lifetime count).
        let biolatency = try tool("biolatency", in: output)
        XCTAssertTrue(biolatency.stderr.contains("hooks: tp_btf block_rq_insert, block_rq_issue, block_rq_complete"), biolatency.stderr)
        let before = try XCTUnwrap(fields(after: "diskstats before:", in: output), output)
        let after = try XCTUnwrap(fields(after: "diskstats after:", in: output), output)
        let kernelReads = after[0] - before[0], kernelWrites = after[4] - before[4]
        XCTAssertEqual(kernelReads, 500, output)
        XCTAssertEqual(kernelWrites, 500, output)
        for (direction, kernel, lifetime) in [("read", kernelReads, after[0]), ("write", kernelWrites, after[4])] {
            let ours = biolatency.json.first { ($0["labels"] as? [String: Any])?["disk.io.direction"] as? String == direction }?["count"] as? Int ?? 0
            XCTAssertLessThanOrEqual(ours, lifetime, "\(direction): \(biolatency.json)")
            XCTAssertGreaterThanOrEqual(Double(ours), Double(kernel) * 0.995, "\(direction): \(biolatency.json)")
        }

        // oomkill: the one kill, with the memory figures the kernel logged for it.
        let oomkill = try tool("oomkill", in: output)
        XCTAssertTrue(oomkill.stderr.contains("hooks: tracepoint oom:mark_victim"), oomkill.stderr)
        let hogPID = try XCTUnwrap(value(after: "hog: ", in: output), output)
        let kills = oomkill.json.filter { $0["event"] as? String == "oom_kill" }
        XCTAssertEqual(kills.count, 1, "\(oomkill.json)")
        let kill = try XCTUnwrap(kills.first)
        XCTAssertEqual(kill["pid"] as? Int, hogPID)
        XCTAssertEqual(kill["comm"] as? String, "kt-workload")
        XCTAssertEqual(kill["trigger_pid"] as? Int, hogPID)
        XCTAssertEqual(kill["memory_cgroup"] as? String, "kt-oom")
        let logLine = try XCTUnwrap(output.split(separator: "\n").first { $0.contains("Killed process \(hogPID) (kt-workload)") }, output)
        for (field, logged) in [("total_vm_kib", "total-vm"), ("anon_rss_kib", "anon-rss"), ("file_rss_kib", "file-rss"), ("shmem_rss_kib", "shmem-rss"), ("pgtables_kib", "pgtables")] {
            let kib = logLine.components(separatedBy: "\(logged):").dropFirst().first.flatMap { Int($0.prefix { $0.isNumber }) }
            XCTAssertEqual(kill[field] as? Int, kib, "\(field): \(kill) vs \(logLine)")
        }
        XCTAssertGreaterThan(kill["anon_rss_kib"] as? Int ?? 0, 16 * 1024, "\(kill)")

        // Without tracefs: oomkill's one-line reason; runqlat runs, alone and beside the agent.
        let withoutTracefs = output.components(separatedBy: "=== no tracefs\n").dropFirst().first ?? ""
        let oomkillAlone = withoutTracefs.components(separatedBy: "--- oomkill exit ").dropFirst().first?.components(separatedBy: "--- ").first ?? ""
        XCTAssertTrue(oomkillAlone.hasPrefix("1\n"), withoutTracefs)
        let reason = oomkillAlone.split(separator: "\n").filter { $0.hasPrefix("stderr: ") }
        XCTAssertEqual(reason.count, 1, withoutTracefs)
        XCTAssertTrue(reason.first?.contains("oomkill: no hooks attach on this kernel (tracepoint oom:mark_victim:") ?? false, withoutTracefs)
        let runqlatAlone = withoutTracefs.components(separatedBy: "--- runqlat exit ").dropFirst().first?.components(separatedBy: "--- ").first ?? ""
        XCTAssertTrue(runqlatAlone.hasPrefix("0\n"), withoutTracefs)
        XCTAssertTrue(runqlatAlone.contains("hooks: tp_btf sched_wakeup"), withoutTracefs)
        let machineWide = runqlatAlone.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        XCTAssertGreaterThan(machineWide.first?["count"] as? Int ?? 0, 0, withoutTracefs)
        let agent = withoutTracefs.components(separatedBy: "--- agent exit ").dropFirst().first ?? ""
        XCTAssertEqual(agent.split(separator: "\n").filter { $0.contains("kernel tracer off:") }.count, 1, agent)
        XCTAssertTrue(agent.contains("kernel tracer off: oomkill: no hooks attach on this kernel"), agent)
        XCTAssertTrue(agent.contains("kernel tracer runqlat: hooks: tp_btf sched_wakeup"), agent)
    }

    /// One tool's section of the output: its exit status must be 0; its stderr lines and JSON lines.
    private func tool(_ name: String, in output: String) throws -> (stderr: String, json: [[String: Any]]) {
        let section = output.components(separatedBy: "=== \(name) exit ").dropFirst().first?.components(separatedBy: "\n===").first ?? ""
        XCTAssertTrue(section.hasPrefix("0\n"), "\(name) did not exit 0:\n\(section.isEmpty ? output : section)")
        let lines = section.split(separator: "\n").dropFirst()
        let stderr = lines.filter { $0.hasPrefix("stderr: ") }.joined(separator: "\n")
        let json = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        return (stderr, json)
    }

    private func value(after prefix: String, in output: String) -> Int? {
        output.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { Int($0.dropFirst(prefix.count).prefix { $0.isNumber }) }
    }

    private func fields(after prefix: String, in output: String) -> [Int]? {
        output.split(separator: "\n").first { $0.hasPrefix(prefix) }.map { $0.dropFirst(prefix.count).split(separator: " ").compactMap { Int($0) } }
    }

    /// The guest kernel's loop module (scripts/guest/fetch-block-modules.sh, run by scripts/install-deps.sh).
    private func blockModules() throws -> URL {
        let cache = ProcessInfo.processInfo.environment["TRACER_GUEST_CACHE"]
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/tracer-guest").path
        let kernels = (try? FileManager.default.contentsOfDirectory(atPath: cache))?.filter { $0.hasPrefix("linux-image-") }.sorted() ?? []
        for kernel in kernels.reversed() {
            let directory = URL(fileURLWithPath: cache).appendingPathComponent(kernel).appendingPathComponent("block")
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent("loop.ko").path) { return directory }
        }
        try skipOrFail(kind: "guest-kernel", reason: "no loop module for the guest kernel in \(cache) (scripts/guest/fetch-block-modules.sh)",
                       requiredBy: "TRACER_REQUIRE_GUEST", file: #filePath, line: #line)
    }
}
