import BPFRuntime
import Foundation
import OTLPExport
import Synchronization
import TestSupport
@testable import TracerCLI
import XCTest

/// `tracer object run|pack` with BPF programs compiled here by the toolchain clang: records, histograms and
/// tables checked against what this test process did, packages (generated and hand-edited), and bad input.
final class ObjectCommandTests: XCTestCase {
    // MARK: - Programs

    /// An exec snooper: ring buffer, an exported struct with an enum, a nested struct, an array and a
    /// `char[]`, a `const volatile` parent-PID filter, a bpf_printk behind a flag, and a kprobe that cannot
    /// attach here (no CONFIG_KPROBES) and must not stop the rest.
    static let execSnooper = """
        #include "vmlinux.h"
        #include <bpf/bpf_helpers.h>
        #include <bpf/bpf_core_read.h>

        enum exec_kind { EXEC_PLAIN = 1, EXEC_FILTERED = 2 };
        struct ids { __u32 uid; __u32 gid; };
        struct exec_event {
            __u32 pid;
            __u32 ppid;
            enum exec_kind kind;
            struct ids ids;
            __u16 digits[3];
            char comm[16];
        };
        const struct exec_event *unused_exec_event __attribute__((unused));

        const volatile __u32 target_ppid = 0;
        const volatile bool verbose = false;

        struct { __uint(type, OUTPUT_MAP_TYPE); OUTPUT_MAP_SIZE; } events SEC(".maps");

        SEC("tracepoint/sched/sched_process_exec")
        int handle_exec(void *ctx)
        {
            struct task_struct *task = (struct task_struct *)bpf_get_current_task();
            __u32 ppid = BPF_CORE_READ(task, real_parent, tgid);
            if (target_ppid && ppid != target_ppid)
                return 0;
            struct exec_event e = {};
            e.pid = bpf_get_current_pid_tgid() >> 32;
            e.ppid = ppid;
            e.kind = target_ppid ? EXEC_FILTERED : EXEC_PLAIN;
            __u64 ids = bpf_get_current_uid_gid();
            e.ids.uid = ids;
            e.ids.gid = ids >> 32;
            e.digits[0] = 1; e.digits[1] = 2; e.digits[2] = 3;
            bpf_get_current_comm(e.comm, sizeof(e.comm));
            if (verbose)
                bpf_printk("tracer-object-test exec %d", e.pid);
            OUTPUT(e);
            return 0;
        }

        SEC("kprobe/do_nanosleep")
        int on_nanosleep(void *ctx) { return 0; }

        char LICENSE[] SEC("license") = "GPL";
        """

    static let ringBufferDefines = ["-DOUTPUT_MAP_TYPE=BPF_MAP_TYPE_RINGBUF", "-DOUTPUT_MAP_SIZE=__uint(max_entries, 256 * 1024)",
                                    "-DOUTPUT(e)=bpf_ringbuf_output(&events, &e, sizeof(e), 0)"]
    static let perfArrayDefines = ["-DOUTPUT_MAP_TYPE=BPF_MAP_TYPE_PERF_EVENT_ARRAY",
                                   "-DOUTPUT_MAP_SIZE=__uint(key_size, sizeof(__u32)); __uint(value_size, sizeof(__u32))",
                                   "-DOUTPUT(e)=bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e))"]

    /// A log2 histogram (libbpf-tools' `struct hist`) of the sizes of write(2) calls by one command name,
    /// and a per-fd call count for a key/value table.
    static let writeSizes = """
        #include "vmlinux.h"
        #include <bpf/bpf_helpers.h>

        #define MAX_SLOTS 27
        struct hist { __u32 slots[MAX_SLOTS]; };

        const volatile char target_comm[16] = "";

        struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, struct hist); } sizes SEC(".maps");
        struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 64); __type(key, __u32); __type(value, __u64); } calls SEC(".maps");

        SEC("tracepoint/syscalls/sys_enter_write")
        int on_write(struct trace_event_raw_sys_enter *ctx)
        {
            char comm[16];
            bpf_get_current_comm(comm, sizeof(comm));
            for (int i = 0; i < 16; i++) {
                if (comm[i] != target_comm[i]) return 0;
                if (!comm[i]) break;
            }
            __u32 zero = 0;
            struct hist *h = bpf_map_lookup_elem(&sizes, &zero);
            if (!h) return 0;
            __u64 size = ctx->args[2];
            __u32 slot = 0;
            for (int i = 0; i < 63 && size > 1; i++) { size >>= 1; slot++; }
            if (slot >= MAX_SLOTS) slot = MAX_SLOTS - 1;
            __sync_fetch_and_add(&h->slots[slot], 1);
            __u32 fd = ctx->args[0];
            __u64 one = 1, *count = bpf_map_lookup_elem(&calls, &fd);
            if (count) __sync_fetch_and_add(count, 1);
            else bpf_map_update_elem(&calls, &fd, &one, BPF_ANY);
            return 0;
        }

        char LICENSE[] SEC("license") = "GPL";
        """

    /// Run-queue delay (libbpf-tools' runqlat, reduced): a task of `target_comm` woken (or preempted while
    /// runnable) is stamped; when it is switched in, the wait goes into a log2 histogram of microseconds.
    static let runQueueDelay = """
        #include "vmlinux.h"
        #include <bpf/bpf_helpers.h>
        #include <bpf/bpf_tracing.h>

        #define MAX_SLOTS 27
        struct hist { __u32 slots[MAX_SLOTS]; };

        const volatile char target_comm[16] = "";

        struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 10240); __type(key, __u32); __type(value, __u64); } queued SEC(".maps");
        struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, struct hist); } delays SEC(".maps");

        static __always_inline int is_target(struct task_struct *task)
        {
            char comm[16];
            bpf_probe_read_kernel_str(comm, sizeof(comm), task->comm);
            for (int i = 0; i < 16; i++) {
                if (comm[i] != target_comm[i]) return 0;
                if (!comm[i]) break;
            }
            return 1;
        }

        static __always_inline void enqueue(struct task_struct *task)
        {
            if (!is_target(task)) return;
            __u32 pid = task->pid;
            __u64 now = bpf_ktime_get_ns();
            bpf_map_update_elem(&queued, &pid, &now, BPF_ANY);
        }

        SEC("tp_btf/sched_wakeup")
        int BPF_PROG(on_wakeup, struct task_struct *task) { enqueue(task); return 0; }

        SEC("tp_btf/sched_wakeup_new")
        int BPF_PROG(on_wakeup_new, struct task_struct *task) { enqueue(task); return 0; }

        SEC("tp_btf/sched_switch")
        int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
        {
            if (prev->__state == 0) enqueue(prev); /* preempted while runnable: back on the run queue */
            __u32 pid = next->pid;
            __u64 *since = bpf_map_lookup_elem(&queued, &pid);
            if (!since) return 0;
            __u64 delta = (bpf_ktime_get_ns() - *since) / 1000;
            bpf_map_delete_elem(&queued, &pid);
            __u32 zero = 0, slot = 0;
            struct hist *h = bpf_map_lookup_elem(&delays, &zero);
            if (!h) return 0;
            for (int i = 0; i < 63 && delta > 1; i++) { delta >>= 1; slot++; }
            if (slot >= MAX_SLOTS) slot = MAX_SLOTS - 1;
            __sync_fetch_and_add(&h->slots[slot], 1);
            return 0;
        }

        char LICENSE[] SEC("license") = "GPL";
        """

    // MARK: - Helpers

    private struct ClangMissing: Error {}

    private var repositoryRoot: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent() }

    /// The toolchain's clang (the one the build plugin uses), which has the BPF target.
    private func clangPath() throws -> String {
        let candidates = [ProcessInfo.processInfo.environment["TRACER_CLANG"], "/opt/swift/usr/bin/clang"]
            + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/clang" }
        guard let clang = candidates.compactMap({ $0 }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            XCTFail("no clang with the BPF target found (the Swift toolchain's clang; set TRACER_CLANG)")
            throw ClangMissing()
        }
        return clang
    }

    /// Compiles BPF C source to `NAME.bpf.o` in `directory` (`-target bpf -O2`, `-g` unless `debugInfo` is false).
    private func compileBPF(_ source: String, name: String, in directory: URL, flags: [String] = [], debugInfo: Bool = true) throws -> URL {
        let sourceFile = directory.appendingPathComponent("\(name).bpf.c")
        let object = directory.appendingPathComponent("\(name).bpf.o")
        try source.write(to: sourceFile, atomically: true, encoding: .utf8)
        try TestSupport.run(try clangPath(), ["-target", "bpf", "-O2", "-D__TARGET_ARCH_x86", "-idirafter", "/usr/include",
                                  "-I", repositoryRoot.appendingPathComponent("bpf").path] + (debugInfo ? ["-g"] : [])
                + flags + ["-c", sourceFile.path, "-o", object.path])
        return object
    }

    /// Runs `tracer object run ARGUMENTS` until it has attached, calls `whileRunning` with its PID, then stops
    /// it with SIGINT; returns its exit status, stdout and stderr.
    private func runObject(_ arguments: [String], whileRunning: (Int32) throws -> Void) throws -> (status: Int32, stdout: String, stderr: String) {
        let tracer = Process()
        tracer.executableURL = productsDirectory.appendingPathComponent("tracer")
        tracer.arguments = ["object", "run"] + arguments
        let stderr = Pipe(), stdout = Pipe()
        tracer.standardError = stderr
        tracer.standardOutput = stdout
        let log = Mutex(""), output = Mutex(Data())
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            log.withLock { $0 += text }
        }
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            output.withLock { $0.append(data) }
        }
        try tracer.run()
        defer { if tracer.isRunning { tracer.terminate() } }
        guard waitUntil(timeout: 30, { log.withLock { $0.contains("SIGINT or SIGTERM stops") } || !tracer.isRunning }), tracer.isRunning else {
            tracer.waitUntilExit()
            stderr.fileHandleForReading.readabilityHandler = nil
            XCTFail("tracer object run did not start: \(log.withLock { $0 })")
            return (tracer.terminationStatus, "", log.withLock { $0 })
        }
        try whileRunning(tracer.processIdentifier)
        kill(tracer.processIdentifier, SIGINT)
        tracer.waitUntilExit()
        stderr.fileHandleForReading.readabilityHandler = nil
        stdout.fileHandleForReading.readabilityHandler = nil
        let rest = stdout.fileHandleForReading.readDataToEndOfFile()
        let errors = log.withLock { $0 } + String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (tracer.terminationStatus, String(decoding: output.withLock { $0 } + rest, as: UTF8.self), errors)
    }

    /// Starts `path` with `arguments` as a child of this test process and waits for it.
    @discardableResult
    private func spawn(_ path: String, _ arguments: [String] = []) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.processIdentifier
    }

    private func jsonLines(_ text: String) -> [[String: Any]] {
        text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    // MARK: - Events

    func testExecSnooperRingBufferRecordsNameTheProcessesThisTestStarts() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let object = try compileBPF(Self.execSnooper, name: "execsnoop", in: directory, flags: Self.ringBufferDefines)
        let me = getpid()
        var started: [Int32: String] = [:]
        let result = try runObject([object.path, "--json", "--", "--target-ppid", "\(me)"]) { tracerPID in
            started[try spawn("/bin/true")] = "true"
            started[try spawn("/bin/echo", ["hello"])] = "echo"
            started[try spawn("/bin/sleep", ["0"])] = "sleep"
            kill(tracerPID, SIGUSR1)
            usleep(500_000)
        }
        XCTAssertEqual(result.status, 0, result.stderr)
        let records = jsonLines(result.stdout)
        XCTAssertEqual(records.count, 3, result.stdout)
        for record in records {
            let pid = Int32(record["pid"] as? Int ?? -1)
            XCTAssertEqual(record["comm"] as? String, started[pid], "\(record)")
            XCTAssertEqual(record["ppid"] as? Int, Int(me))
            XCTAssertEqual(record["kind"] as? String, "EXEC_FILTERED")
            XCTAssertEqual((record["ids"] as? [String: Any])?["uid"] as? Int, Int(getuid()))
            XCTAssertEqual(record["digits"] as? [Int], [1, 2, 3])
        }
        XCTAssertEqual(Set(records.compactMap { $0["comm"] as? String }), ["true", "echo", "sleep"])
        // The kprobe cannot attach on this kernel: one line, and the tracepoint runs regardless.
        XCTAssertTrue(result.stderr.contains("cannot attach program on_nanosleep (SEC(\"kprobe/do_nanosleep\"))"), result.stderr)
        XCTAssertTrue(result.stderr.contains("1 of 2 programs attached"), result.stderr)
        // Statistics on SIGUSR1 and at exit; the exec program ran at least once per process started.
        XCTAssertEqual(result.stderr.components(separatedBy: "program statistics after").count - 1, 2, result.stderr)
        let row = result.stderr.split(separator: "\n").last { $0.contains("handle_exec") }.map { $0.split(separator: " ") } ?? []
        XCTAssertGreaterThanOrEqual(Int(row.count > 1 ? row[1] : "") ?? 0, 3, result.stderr)
        XCTAssertTrue(result.stderr.contains("events: 3 ("), result.stderr)
    }

    func testPerfEventArrayVariantPrintsATextTableWithHeaderAndKernelDebug() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let object = try compileBPF(Self.execSnooper, name: "execperf", in: directory, flags: Self.perfArrayDefines)
        var truePID: Int32 = 0
        let result = try runObject([object.path, "--print-kernel-debug", "--", "--target-ppid=\(getpid())", "--verbose"]) { _ in
            truePID = try spawn("/bin/true")
            usleep(500_000)
        }
        XCTAssertEqual(result.status, 0, result.stderr)
        let lines = result.stdout.split(separator: "\n")
        XCTAssertEqual(lines.first.map { $0.split(separator: " ", omittingEmptySubsequences: true) },
                       ["TIME", "PID", "PPID", "KIND", "IDS", "DIGITS", "COMM"], result.stdout)
        XCTAssertEqual(lines.count, 2, result.stdout)
        let fields = lines.last?.split(separator: " ", omittingEmptySubsequences: true).map(String.init) ?? []
        XCTAssertEqual(Array(fields.dropFirst()), ["\(truePID)", "\(getpid())", "EXEC_FILTERED", "{uid=\(getuid())", "gid=\(getgid())}", "[1,2,3]", "true"])
        XCTAssertTrue(result.stderr.contains("tracer-object-test exec \(truePID)"), "bpf_printk output: \(result.stderr)")
    }

    // MARK: - Maps

    /// A copy of dd under a name of its own, so the histogram counts only this test's writes.
    private func privateDD(in directory: URL) throws -> (path: String, comm: String) {
        let comm = "ddobj\(getpid() % 100000)"
        let path = directory.appendingPathComponent(comm).path
        try FileManager.default.copyItem(atPath: "/bin/dd", toPath: path)
        return (path, comm)
    }

    func testLog2HistogramBucketsAddUpToTheWritesThisTestMade() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let object = try compileBPF(Self.writeSizes, name: "writesizes", in: directory)
        let dd = try privateDD(in: directory)
        let result = try runObject([object.path, "--json", "--interval", "30", "--", "--target-comm", dd.comm]) { _ in
            try spawn(dd.path, ["if=/dev/zero", "of=/dev/null", "bs=100", "count=7", "status=none"])
            try spawn(dd.path, ["if=/dev/zero", "of=/dev/null", "bs=5000", "count=3", "status=none"])
        }
        XCTAssertEqual(result.status, 0, result.stderr)
        let samples = jsonLines(result.stdout).filter { $0["map"] as? String == "sizes" }
        XCTAssertEqual(samples.count, 1, "one sample, at exit: \(result.stdout)")
        let slots = ((samples.last?["histograms"] as? [[String: Any]])?.first?["slots"] as? [Int]) ?? []
        XCTAssertEqual(slots.count, 27)
        XCTAssertEqual(slots.reduce(0, +), 10, "every write counted once: \(slots)")
        XCTAssertEqual(slots[6], 7, "100-byte writes in 64 -> 127")
        XCTAssertEqual(slots[12], 3, "5000-byte writes in 4096 -> 8191")
        XCTAssertFalse(jsonLines(result.stdout).contains { $0["map"] as? String == "calls" }, "plain objects sample only histogram maps")
    }

    /// runqlat's job: more busy tasks of one binary than CPUs wait on the run queue for whole scheduler
    /// slices; the histogram counts their switches-in, and some waits are past a millisecond.
    func testRunQueueDelayHistogramOfBusyTasksThisTestStarts() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let object = try compileBPF(Self.runQueueDelay, name: "runqdelay", in: directory)
        let comm = "runqhog\(getpid() % 100000)"
        let hog = directory.appendingPathComponent(comm).path
        try FileManager.default.copyItem(atPath: "/usr/bin/yes", toPath: hog)
        let busy = ProcessInfo.processInfo.activeProcessorCount + 2
        let result = try runObject([object.path, "--json", "--interval", "30", "--", "--target-comm", comm]) { _ in
            let hogs = try (0..<busy).map { _ in
                let process = Process()
                process.executableURL = URL(fileURLWithPath: hog)
                process.standardOutput = FileHandle.nullDevice
                try process.run()
                return process
            }
            usleep(1_500_000)
            hogs.forEach { $0.terminate() }
            hogs.forEach { $0.waitUntilExit() }
        }
        XCTAssertEqual(result.status, 0, result.stderr)
        let samples = jsonLines(result.stdout).filter { $0["map"] as? String == "delays" }
        let slots = ((samples.last?["histograms"] as? [[String: Any]])?.first?["slots"] as? [Int]) ?? []
        XCTAssertEqual(slots.count, 27, result.stdout)
        XCTAssertGreaterThan(slots.reduce(0, +), busy, "every hog was switched in at least once after waiting: \(slots)")
        XCTAssertGreaterThan(slots.dropFirst(10).reduce(0, +), 0, "\(busy) busy tasks on fewer CPUs wait ≥ 1 ms for a slice: \(slots)")
    }

    func testLog2HistogramTextMatchesLibbpfToolsLayout() {
        var slots = [UInt64](repeating: 0, count: 27)
        slots[0] = 1
        slots[6] = 8
        slots[12] = 4
        let lines = ObjectPrinters.log2Histogram(slots, unit: "bytes").split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.count, 15)
        XCTAssertEqual(lines[0], "     bytes               : count    distribution")
        XCTAssertEqual(lines[1], "         0 -> 1          : 1        |*****                                   |")
        XCTAssertEqual(lines[7], "        64 -> 127        : 8        |****************************************|")
        XCTAssertEqual(lines[13], "      4096 -> 8191       : 4        |********************                    |")
        XCTAssertEqual(ObjectPrinters.log2Histogram([0, 0], unit: "x"), "     (no values)\n")
        // Linear: one row per value from the first to the last non-empty slot.
        XCTAssertEqual(ObjectPrinters.linearHistogram([0, 0, 2, 0, 1, 0], unit: "cpu"), """
                     cpu : count    distribution
                       2 : 2        |****************************************|
                       3 : 0        |                                        |
                       4 : 1        |********************                    |

            """)
    }

    func testPackagedObjectWithHandEditedMetaSamplesTablesAndDocumentsOptions() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let object = try compileBPF(Self.writeSizes, name: "writesizes", in: directory)
        let packagePath = directory.appendingPathComponent("writes.json").path
        let packed = try runProduct("tracer", ["object", "pack", object.path, "-o", packagePath])
        XCTAssertEqual(packed.status, 0, packed.stderr)
        XCTAssertTrue(packed.stdout.contains("1 programs, 2 maps (sampled: sizes), 1 options"), packed.stdout)

        // Edit the meta the way a user would: a unit and clearing for the histogram, a table for calls, docs.
        var package = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: packagePath))) as? [String: Any])
        var meta = try XCTUnwrap(package["meta"] as? [String: Any])
        var skeleton = try XCTUnwrap(meta["bpf_skel"] as? [String: Any])
        var maps = try XCTUnwrap(skeleton["maps"] as? [[String: Any]])
        XCTAssertEqual(maps.map { $0["name"] as? String }, ["sizes", "calls"])
        maps[0]["sample"] = ["type": "log2_hist", "interval": 30000, "unit": "bytes", "clear_map": true]
        maps[1]["sample"] = ["type": "default_kv", "interval": 30000]
        skeleton["maps"] = maps
        var sections = try XCTUnwrap(skeleton["data_sections"] as? [[String: Any]])
        var variables = try XCTUnwrap(sections[0]["variables"] as? [[String: Any]])
        variables[0]["description"] = "the command whose writes are counted"
        sections[0]["variables"] = variables
        skeleton["data_sections"] = sections
        skeleton["doc"] = ["brief": "write(2) sizes of one command"]
        meta["bpf_skel"] = skeleton
        meta["debug_verbose"] = true // libbpf's account of the load on stderr
        package["meta"] = meta
        try JSONSerialization.data(withJSONObject: package).write(to: URL(fileURLWithPath: packagePath))

        let help = try runProduct("tracer", ["object", "run", packagePath, "--help"])
        XCTAssertEqual(help.status, 0, help.stderr)
        XCTAssertTrue(help.stdout.contains("write(2) sizes of one command"), help.stdout)
        XCTAssertTrue(help.stdout.contains("--target-comm <string(15)>"), help.stdout)
        XCTAssertTrue(help.stdout.contains("the command whose writes are counted (default \"\")"), help.stdout)

        let dd = try privateDD(in: directory)
        let result = try runObject([packagePath, "--", "--target-comm", dd.comm]) { _ in
            try spawn(dd.path, ["if=/dev/zero", "of=/dev/null", "bs=100", "count=7", "status=none"])
        }
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("     bytes               : count    distribution"), result.stdout)
        XCTAssertTrue(result.stdout.contains("        64 -> 127        : 7        |****************************************|"), result.stdout)
        XCTAssertTrue(result.stdout.contains("calls: 1 entries\n  1 -> 7\n"), "dd writes to fd 1 seven times: \(result.stdout)")
        XCTAssertTrue(result.stderr.contains("libbpf: "), "debug_verbose shows libbpf's messages: \(result.stderr.prefix(2000))")
    }

    // MARK: - Kernels with kprobes and fentry

    /// An object with a kprobe and an fentry program on the same function, run by `tracer` in Debian's 6.1
    /// kernel under qemu, which has both (this machine's kernel has neither): both attach by their sections
    /// and each reports the opens of `cat`s the script runs.
    static let openProbes = """
        #include "vmlinux.h"
        #include <bpf/bpf_helpers.h>
        #include <bpf/bpf_tracing.h>

        struct open_event { __u32 pid; char comm[16]; __u32 hook; };
        const struct open_event *unused_open_event __attribute__((unused));

        struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 16); } events SEC(".maps");

        static __always_inline void emit(__u32 hook)
        {
            struct open_event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
            if (!event) return;
            event->pid = bpf_get_current_pid_tgid() >> 32;
            bpf_get_current_comm(event->comm, sizeof(event->comm));
            event->hook = hook;
            bpf_ringbuf_submit(event, 0);
        }

        SEC("kprobe/do_sys_openat2")
        int BPF_KPROBE(open_kprobe) { emit(1); return 0; }

        SEC("fentry/do_sys_openat2")
        int BPF_PROG(open_fentry) { emit(2); return 0; }

        char LICENSE[] SEC("license") = "GPL";
        """

    func testKprobeAndFentryProgramsAttachBySectionOnAKernelThatHasThem() throws {
        try requireBPF()
        try requireGuestKernel()
        let directory = try temporaryDirectory(self)
        let object = try compileBPF(Self.openProbes, name: "openprobes", in: directory)
        let tracer = productsDirectory.appendingPathComponent("tracer")
        let script = """
            tracer=$1 object=$2
            $tracer object run $object --json > /tmp/records.json 2> /tmp/run.log &
            runner=$!
            for i in $(seq 1 300); do grep -q "SIGINT or SIGTERM stops" /tmp/run.log && break; sleep 0.2; done
            for i in 1 2 3; do cat /proc/version > /dev/null; done
            sleep 1
            kill -INT $runner
            wait $runner
            echo "runner exit: $?"
            cat /tmp/run.log
            echo "--- records"
            cat /tmp/records.json
            echo "--- end"
            """
        let run = try runInGuest(files: [tracer, object], script: script, arguments: [tracer.path, object.path], timeout: 300)
        XCTAssertEqual(run.status, 0, "guest script failed:\n\(run.output)\n\(run.log.suffix(3000))")
        let output = run.output
        XCTAssertTrue(output.contains("runner exit: 0"), output)
        XCTAssertTrue(output.contains("2 of 2 programs attached"), output)
        let lines = output.components(separatedBy: "--- records\n").last?.components(separatedBy: "--- end").first ?? ""
        let records = jsonLines(lines).filter { $0["comm"] as? String == "cat" }
        XCTAssertGreaterThanOrEqual(records.filter { $0["hook"] as? Int == 1 }.count, 3, "kprobe records of the cats: \(output)")
        XCTAssertGreaterThanOrEqual(records.filter { $0["hook"] as? Int == 2 }.count, 3, "fentry records of the cats: \(output)")
    }

    // MARK: - Bad input

    /// Counts of this process's BPF file descriptors, to show a failure left nothing loaded or attached.
    private func descriptorCounts() -> [Int] {
        ["bpf-prog", "bpf-map", "bpf_link", "perf_event"].map(openBPFDescriptors)
    }

    private func expectFailure(_ body: () throws -> Void, contains expected: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            try body()
            XCTFail("expected a failure with \(expected)", file: file, line: line)
        } catch let error as ObjectCommandError {
            XCTAssertTrue(error.description.contains(expected), error.description, file: file, line: line)
            XCTAssertFalse(error.description.contains("\n"), "one line: \(error.description)", file: file, line: line)
        } catch {
            XCTFail("unexpected \(error)", file: file, line: line)
        }
    }

    func testRejectedObjectsAreOneLineErrorsAndLeaveNothingLoaded() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let rejected = try compileBPF("""
            #include "vmlinux.h"
            #include <bpf/bpf_helpers.h>
            struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4); __type(key, __u32); __type(value, __u64); } vals SEC(".maps");
            SEC("tracepoint/sched/sched_process_exec")
            int unchecked(void *ctx) { __u32 k = 0; __u64 *v = bpf_map_lookup_elem(&vals, &k); return *v; }
            SEC("tracepoint/sched/sched_process_exit")
            int fine(void *ctx) { return 0; }
            char LICENSE[] SEC("license") = "GPL";
            """, name: "rejected", in: directory)
        let oddMap = try compileBPF("""
            #include "vmlinux.h"
            #include <bpf/bpf_helpers.h>
            struct { __uint(type, 250); __uint(max_entries, 4); __type(key, __u32); __type(value, __u64); } odd SEC(".maps");
            SEC("tracepoint/sched/sched_process_exec")
            int on_exec(void *ctx) { __u32 k = 0; bpf_map_lookup_elem(&odd, &k); return 0; }
            char LICENSE[] SEC("license") = "GPL";
            """, name: "oddmap", in: directory)
        let kprobeOnly = try compileBPF("""
            #include "vmlinux.h"
            #include <bpf/bpf_helpers.h>
            SEC("kprobe/do_nanosleep")
            int on_nanosleep(void *ctx) { return 0; }
            char LICENSE[] SEC("license") = "GPL";
            """, name: "kprobeonly", in: directory)
        let noBTF = try compileBPF(Self.writeSizes, name: "nobtf", in: directory, debugInfo: false)

        let before = descriptorCounts()
        do {
            _ = try ObjectRunner(input: try ObjectInput(path: rejected.path), values: [:])
            XCTFail("the verifier must reject the program")
        } catch {
            XCTAssertTrue(error.description.hasPrefix("\(rejected.path): load program unchecked of object rejected failed: EACCES"), error.description)
            XCTAssertTrue(error.detail.contains { $0.contains("invalid mem access 'map_value_or_null'") }, "\(error.detail)")
            XCTAssertLessThanOrEqual(error.detail.count, 6)
        }
        expectFailure({ _ = try ObjectRunner(input: try ObjectInput(path: oddMap.path), values: [:]) },
                      contains: "create map odd of object oddmap failed: EINVAL")
        expectFailure({ _ = try ObjectRunner(input: try ObjectInput(path: kprobeOnly.path), values: [:]) },
                      contains: "no program could be attached: cannot attach program on_nanosleep (SEC(\"kprobe/do_nanosleep\")) failed: ENOENT")
        expectFailure({ _ = try ObjectInput(path: noBTF.path) }, contains: "compile it with clang -g")
        expectFailure({ _ = try ObjectInput(bytes: Array("not an object".utf8), path: "junk.bpf.o") }, contains: "junk.bpf.o: open BPF object junk")
        expectFailure({ _ = try ObjectInput(path: directory.appendingPathComponent("missing.bpf.o").path) }, contains: "cannot read")
        XCTAssertEqual(descriptorCounts(), before, "nothing left loaded or attached")

        // Through the CLI: one line (plus the verifier's last lines), exit 1.
        let cli = try runProduct("tracer", ["object", "run", rejected.path])
        XCTAssertEqual(cli.status, 1)
        let lines = cli.stderr.split(separator: "\n")
        XCTAssertTrue(lines.first?.hasPrefix("tracer object run: \(rejected.path): load program unchecked") ?? false, cli.stderr)
        XCTAssertTrue(lines.dropFirst().allSatisfy { $0.hasPrefix("  verifier: ") }, cli.stderr)
    }

    func testCorruptPackagesAndBadOptionsAreOneLineErrors() throws {
        let directory = try temporaryDirectory(self)
        let object = try compileBPF(Self.writeSizes, name: "writesizes", in: directory)
        let bytes = [UInt8](try Data(contentsOf: object))
        let good = try BPFObjectPackage(object: bytes, meta: PackageMeta(generatedFrom: BPFObjectFile(bytes: bytes, name: "writesizes"))).encoded()
        let package = try XCTUnwrap(JSONSerialization.jsonObject(with: good) as? [String: Any])
        XCTAssertNoThrow(try ObjectInput(bytes: [UInt8](good), path: "good.json"))

        func variant(_ change: (inout [String: Any]) -> Void) throws -> [UInt8] {
            var copy = package
            change(&copy)
            return [UInt8](try JSONSerialization.data(withJSONObject: copy))
        }
        func meta(_ change: (inout [String: Any]) -> Void) throws -> [UInt8] {
            try variant { top in
                var meta = top["meta"] as! [String: Any]
                change(&meta)
                top["meta"] = meta
            }
        }
        let encoded = package["bpf_object"] as! String
        let size = package["bpf_object_size"] as! Int
        let cases: [([UInt8], String)] = [
            (Array(String(decoding: good, as: UTF8.self).prefix(200).utf8), "package p.json is not valid JSON"),
            (try variant { $0["bpf_object"] = "%%%not base64%%%" }, "\"bpf_object\" is not valid base64"),
            (try variant { $0["bpf_object"] = Data("plain text, not zlib".utf8).base64EncodedString() }, "is not a valid zlib stream"),
            (try variant { $0["bpf_object"] = String(encoded.prefix(encoded.count / 2 / 4 * 4)) }, "truncated zlib stream"),
            (try variant { $0["bpf_object_size"] = size + 10 }, "inflates to \(size) bytes, but \"bpf_object_size\" says \(size + 10)"),
            (try variant { $0["bpf_object_size"] = size - 10 }, "inflates to more than \"bpf_object_size\""),
            (try variant { $0["bpf_object_size"] = 1 << 40 }, "has no valid \"bpf_object_size\""),
            (try variant { $0.removeValue(forKey: "meta") }, "has no \"meta\" object"),
            (try meta { $0["export_types"] = [["name": "no_such_event"]] }, "meta.export_types names struct no_such_event"),
            (try meta { meta in
                var skeleton = meta["bpf_skel"] as! [String: Any]
                skeleton["maps"] = [["name": "no_such_map", "sample": ["type": "log2_hist"]]]
                meta["bpf_skel"] = skeleton
            }, "meta.bpf_skel.maps names map no_such_map"),
            (try meta { meta in
                var skeleton = meta["bpf_skel"] as! [String: Any]
                skeleton["maps"] = [["name": "sizes", "sample": ["type": "pie_chart"]]]
                meta["bpf_skel"] = skeleton
            }, "sample.type is pie_chart"),
            (try meta { meta in
                var skeleton = meta["bpf_skel"] as! [String: Any]
                skeleton["maps"] = "sizes"
                meta["bpf_skel"] = skeleton
            }, "\"meta\" does not have the expected shape (meta.bpf_skel.maps"),
        ]
        for (input, expected) in cases {
            expectFailure({ _ = try ObjectInput(bytes: input, path: "p.json") }, contains: expected)
        }

        // Malformed objects are refused before libbpf parses them (libbpf 1.1 dereferences bad type ids).
        expectFailure({ _ = try ObjectInput(bytes: Array(bytes.prefix(bytes.count / 2)), path: "half.bpf.o") }, contains: "malformed: section")
        var badTable = bytes
        badTable.replaceSubrange(0x28..<0x30, with: [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])
        expectFailure({ _ = try ObjectInput(bytes: badTable, path: "table.bpf.o") }, contains: "malformed: section header table out of the file")
        expectFailure({ _ = try ObjectInput(bytes: Self.withFirstPointerRetargeted(bytes), path: "btf.bpf.o") },
                      contains: "refers to type 65535 of")

        let input = try ObjectInput(path: object.path)
        expectFailure({ _ = try input.settingValues(["--target-comm", "a-name-longer-than-15"]) }, contains: "expected text of at most 15 bytes")
        expectFailure({ _ = try input.settingValues(["--no-such-option", "1"]) }, contains: "has no option --no-such-option (its options: --target-comm)")
        expectFailure({ _ = try input.settingValues(["--target-comm"]) }, contains: "option --target-comm needs a value")
        XCTAssertEqual(try input.settingValues(["--target_comm=ab"])["target_comm"], Array("ab".utf8) + [UInt8](repeating: 0, count: 14))

        let exec = try ObjectInput(path: try compileBPF(Self.execSnooper, name: "execsnoop", in: directory, flags: Self.ringBufferDefines).path)
        expectFailure({ _ = try exec.settingValues(["--target-ppid", "12x"]) }, contains: "option --target-ppid: expected an unsigned 32-bit integer, not '12x'")
        expectFailure({ _ = try exec.settingValues(["--target-ppid", "4294967296"]) }, contains: "(0...4294967295)")
        expectFailure({ _ = try exec.settingValues(["--verbose=maybe"]) }, contains: "option --verbose: expected true or false")
        XCTAssertEqual(try exec.settingValues(["--verbose", "--target-ppid", "0x10"]), ["verbose": [1], "target_ppid": [16, 0, 0, 0]])

        let cli = try runProduct("tracer", ["object", "run", object.path, "--", "--target-comm", "a-name-longer-than-15"])
        XCTAssertEqual(cli.status, 1)
        XCTAssertEqual(cli.stderr, "tracer object run: option --target-comm: expected text of at most 15 bytes, not 'a-name-longer-than-15'\n")
    }

    /// `bytes` with the first BTF pointer type's target set to 65535 (past the last type).
    static func withFirstPointerRetargeted(_ bytes: [UInt8]) -> [UInt8] {
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
        let table = u32(0x28), names = u32(table + u16(0x3e) * 64 + 24)
        var result = bytes
        for index in 0..<u16(0x3c) {
            let header = table + index * 64
            let nameStart = names + u32(header)
            guard Array(bytes[nameStart..<nameStart + 5]) == Array(".BTF\0".utf8) else { continue }
            let start = u32(header + 24)
            var offset = start + u32(start + 4) + u32(start + 8)
            let end = offset + u32(start + 12)
            while offset < end {
                let info = u32(offset + 4), kind = (info >> 24) & 0x1f, count = info & 0xffff
                if kind == 2 {
                    result.replaceSubrange((offset + 8)..<(offset + 12), with: [0xff, 0xff, 0, 0])
                    return result
                }
                offset += 12 + [1: 4, 3: 12, 4: count * 12, 5: count * 12, 6: count * 8, 13: count * 8, 14: 4, 15: count * 12, 17: 4, 19: count * 12][kind, default: 0]
            }
        }
        return result
    }

    // MARK: - Reading objects without privileges

    func testObjectFileDescribesProgramsMapsSettingsAndEventTypeFromBTF() throws {
        let directory = try temporaryDirectory(self)
        let url = try compileBPF(Self.execSnooper, name: "execsnoop", in: directory, flags: Self.ringBufferDefines)
        let file = try BPFObjectFile(bytes: [UInt8](try Data(contentsOf: url)), name: "execsnoop")
        XCTAssertEqual(file.programs.map { "\($0.name) \($0.section)" },
                       ["handle_exec tracepoint/sched/sched_process_exec", "on_nanosleep kprobe/do_nanosleep"])
        XCTAssertEqual(file.settings.map(\.name), ["target_ppid", "verbose"])
        let events = try XCTUnwrap(file.maps.first { $0.name == "events" })
        XCTAssertTrue(events.isEventOutput)
        XCTAssertEqual(file.exportTypes.map(\.name), ["exec_event"])
        let type = try XCTUnwrap(file.exportTypes.first?.type)
        XCTAssertEqual(type.size, 44)
        guard case .structure(_, _, _, let members) = type else { return XCTFail("\(type)") }
        XCTAssertEqual(members.map(\.name), ["pid", "ppid", "kind", "ids", "digits", "comm"])
        XCTAssertEqual(members.map(\.type.cName), ["unsigned int", "unsigned int", "enum exec_kind", "struct ids", "unsigned short[3]", "char[16]"])

        // A record decoded through the type: enum by name, nested struct, array, text up to the NUL.
        var record = [UInt8](repeating: 0, count: 44)
        record.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt32(42), toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: UInt32(7), toByteOffset: 4, as: UInt32.self)
            raw.storeBytes(of: UInt32(2), toByteOffset: 8, as: UInt32.self)
            raw.storeBytes(of: UInt32(1000), toByteOffset: 12, as: UInt32.self)
            raw.storeBytes(of: UInt16(9), toByteOffset: 20, as: UInt16.self)
        }
        record.replaceSubrange(26..<31, with: Array("bash\0".utf8))
        let value = record.withUnsafeBytes { BTFValue(type, in: $0) }
        XCTAssertEqual(value.json, #"{"pid":42,"ppid":7,"kind":"EXEC_FILTERED","ids":{"uid":1000,"gid":0},"digits":[9,0,0],"comm":"bash"}"#)
        XCTAssertEqual(value.text, "{pid=42 ppid=7 kind=EXEC_FILTERED ids={uid=1000 gid=0} digits=[9,0,0] comm=bash}")
        // A short record reads what it has, the rest as zeros.
        XCTAssertEqual(record.prefix(6).withUnsafeBytes { BTFValue(type, in: $0) }[member: "pid"], .unsigned(42))
    }
}

extension ObjectCommandTests {
    /// A program type the kernel may lack (fentry: EPERM here) is left out at load with one line; the
    /// object's other programs load and attach.
    func testProgramsOfKindsTheKernelLacksAreSkippedAndTheRestRun() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let source = """
            #include "vmlinux.h"
            #include <bpf/bpf_helpers.h>
            #include <bpf/bpf_tracing.h>
            SEC("fentry/do_nanosleep")
            int BPF_PROG(on_fentry) { return 0; }
            SEC("tracepoint/sched/sched_process_exec")
            int on_exec(void *ctx) { return 0; }
            char LICENSE[] SEC("license") = "GPL";
            """
        let object = try compileBPF(source, name: "fentry", in: directory)
        let before = ["bpf-prog", "bpf_link"].map(openBPFDescriptors)
        do {
            let runner = try ObjectRunner(input: try ObjectInput(path: object.path), values: [:])
            let fentrySkipped = runner.notices.contains { $0.hasPrefix("cannot load program on_fentry (SEC(\"fentry/do_nanosleep\")): load program on_fentry of object fentry failed: ") && $0.hasSuffix("this kernel lacks fentry programs, running the others") }
            XCTAssertEqual(runner.links.count + (fentrySkipped ? 1 : 0), 2, "\(runner.notices)")
            XCTAssertTrue(runner.links.contains { $0.description.contains("on_exec") })
            runner.detach()
        }
        XCTAssertEqual(["bpf-prog", "bpf_link"].map(openBPFDescriptors), before)
    }
}

extension ObjectCommandTests {
    /// `tracer --object` (and the config's `objects:`): the objects run next to the tracers, their records are
    /// printed with the spans, their histogram and table maps are published on the Prometheus endpoint.
    func testAgentRunsObjectsBesideTheTracersAndPublishesTheirMaps() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let dd = try privateDD(in: directory)
        let writes = try compileBPF(Self.writeSizes, name: "writesizes", in: directory)
        let exec = try compileBPF(Self.execSnooper, name: "execsnoop", in: directory, flags: Self.ringBufferDefines)
        // A package whose meta sets the option's default (the agent takes no object options) and samples both maps.
        let bytes = [UInt8](try Data(contentsOf: writes))
        var meta = PackageMeta(generatedFrom: try BPFObjectFile(bytes: bytes, name: "writesizes"))
        meta.bpfSkel.dataSections?[0].variables[0].default = .string(dd.comm)
        meta.bpfSkel.maps?[0].sample?.unit = "By"
        meta.bpfSkel.maps?[1].sample = .init(interval: 1000, type: "default_kv", unit: nil, clearMap: nil)
        let package = directory.appendingPathComponent("writes.json")
        try BPFObjectPackage(object: bytes, meta: meta).encoded().write(to: package)
        let config = directory.appendingPathComponent("tracer.yaml")
        try "objects: [\"\(exec.path)\"]\n".write(to: config, atomically: true, encoding: .utf8)

        let port = 20000 + Int((getpid() + 7) % 20000)
        let agent = Process()
        agent.executableURL = productsDirectory.appendingPathComponent("tracer")
        agent.arguments = ["--config", config.path, "--object", package.path, "--prometheus-port", "\(port)", "--print", "json"]
        let stdout = Pipe(), stderr = Pipe()
        agent.standardOutput = stdout
        agent.standardError = stderr
        let output = Mutex(Data())
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            output.withLock { $0.append(data) }
        }
        try agent.run()
        addTeardownBlock { if agent.isRunning { agent.terminate(); agent.waitUntilExit() } }
        // The objects are attached once their collector answers on the endpoint.
        XCTAssertTrue(waitUntil(timeout: 20) {
            (try? TestSupport.run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/metrics"]))?.contains("tracer_object_records_total") ?? false
        })
        let ddPID = try spawn(dd.path, ["if=/dev/zero", "of=/dev/null", "bs=100", "count=7", "status=none"])
        var page = ""
        XCTAssertTrue(waitUntil(timeout: 10) {
            page = (try? TestSupport.run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/metrics"])) ?? ""
            return page.contains("writesizes_sizes_bytes_count{service_name=\"tracer\"} 7")
        }, page)
        XCTAssertTrue(page.contains("writesizes_sizes_bytes_bucket{service_name=\"tracer\",le=\"63\"} 0"), page)
        XCTAssertTrue(page.contains("writesizes_sizes_bytes_bucket{service_name=\"tracer\",le=\"127\"} 7"), page)
        XCTAssertTrue(page.contains("writesizes_calls{service_name=\"tracer\",key=\"1\"} 7"), page)
        XCTAssertTrue(waitUntil(timeout: 5) {
            String(decoding: output.withLock { $0 }, as: UTF8.self).contains("\"pid\":\(ddPID),")
        })
        agent.terminate()
        agent.waitUntilExit()
        stdout.fileHandleForReading.readabilityHandler = nil
        XCTAssertEqual(agent.terminationStatus, 0)
        let records = jsonLines(String(decoding: output.withLock { $0 }, as: UTF8.self)).filter { $0["object"] as? String == "execsnoop" }
        let dds = records.compactMap { $0["record"] as? [String: Any] }.filter { $0["pid"] as? Int == Int(ddPID) }
        XCTAssertEqual(dds.first?["comm"] as? String, dd.comm, "\(records.count) records, none of dd")
        let log = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(log.contains("object execsnoop (\(exec.path)): 1 of 2 programs attached"), log)
        XCTAssertTrue(log.contains("object writesizes (\(package.path)): 1 of 1 programs attached"), log)
    }
}

extension ObjectCommandTests {
    /// A uprobe attached by its section (`uprobe/BINARY:FUNCTION`), counting into a hash map that a hand-edited
    /// meta samples as a key/value table: the count is what this test's program did.
    func testUprobeBySectionCountsTheCallsOfAProgramThisTestRuns() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let object = try compileBPF("""
            #include "vmlinux.h"
            #include <bpf/bpf_helpers.h>
            const volatile char target_comm[16] = "";
            struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 64); __type(key, __u32); __type(value, __u64); } calls SEC(".maps");
            SEC("uprobe/libc.so.6:getppid")
            int on_getppid(void *ctx)
            {
                char comm[16];
                bpf_get_current_comm(comm, sizeof(comm));
                for (int i = 0; i < 16; i++) {
                    if (comm[i] != target_comm[i]) return 0;
                    if (!comm[i]) break;
                }
                __u32 pid = bpf_get_current_pid_tgid() >> 32;
                __u64 one = 1, *count = bpf_map_lookup_elem(&calls, &pid);
                if (count) __sync_fetch_and_add(count, 1);
                else bpf_map_update_elem(&calls, &pid, &one, BPF_ANY);
                return 0;
            }
            char LICENSE[] SEC("license") = "GPL";
            """, name: "getppid", in: directory)
        let comm = "ppid\(getpid() % 100000)"
        let caller = try compileC("""
            #include <unistd.h>
            int main(void) { int sum = 0; for (int i = 0; i < 5; i++) sum += getppid(); return sum == 0; }
            """, name: comm, in: directory)
        let bytes = [UInt8](try Data(contentsOf: object))
        var meta = PackageMeta(generatedFrom: try BPFObjectFile(bytes: bytes, name: "getppid"))
        meta.bpfSkel.maps?[0].sample = .init(interval: 60000, type: "default_kv", unit: nil, clearMap: nil)
        let package = directory.appendingPathComponent("getppid.json")
        try BPFObjectPackage(object: bytes, meta: meta).encoded().write(to: package)

        var callerPID: Int32 = 0
        let result = try runObject([package.path, "--json", "--", "--target-comm", comm]) { _ in
            callerPID = try spawn(caller.path)
        }
        XCTAssertEqual(result.status, 0, result.stderr)
        let tables = jsonLines(result.stdout).filter { $0["map"] as? String == "calls" }
        let entries = tables.last?["entries"] as? [[String: Any]] ?? []
        XCTAssertEqual(entries.count, 1, result.stdout)
        XCTAssertEqual(entries.first?["key"] as? Int, Int(callerPID))
        XCTAssertEqual(entries.first?["value"] as? Int, 5)
        XCTAssertTrue(result.stderr.contains("1 of 1 programs attached"), result.stderr)
    }
}

extension ObjectCommandTests {
    /// The agent with `--object` and an OTLP endpoint: each record of the exec snooper reaches the receiver
    /// (official opentelemetry-proto decoding) as a log record whose body is the record's fields, naming the
    /// processes this test executed, with the object's attributes, the agent's resource and scope `tracer/object`.
    func testAgentExportsObjectRecordsAsOTLPLogRecords() throws {
        try requireBPF()
        let directory = try temporaryDirectory(self)
        let exec = try compileBPF(Self.execSnooper, name: "execsnoop", in: directory, flags: Self.ringBufferDefines)
        // A copy of true under a name of its own: its records are this test's.
        let comm = "objlog\(getpid() % 100000)"
        let program = directory.appendingPathComponent(comm).path
        try FileManager.default.copyItem(atPath: "/bin/true", toPath: program)

        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("OTLPExportTests/receiver/otlp_receiver.py").path
        let receiver = Process()
        receiver.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        receiver.arguments = ["python3", script, "--port", "0"]
        let receiverOutput = Pipe()
        receiver.standardOutput = receiverOutput
        receiver.standardError = FileHandle.nullDevice
        try receiver.run()
        addTeardownBlock { receiver.terminate(); receiver.waitUntilExit() }
        let line = String(decoding: receiverOutput.fileHandleForReading.availableData, as: UTF8.self)
        guard line.hasPrefix("PORT "), let port = Int(line.dropFirst(5).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            try prerequisiteMissing("OTLP receiver", "the OTLP receiver did not start (pip install opentelemetry-proto): \(line)",
                                    requiredBy: "TRACER_REQUIRE_OTLP_RECEIVER")
        }
        func logs() -> [[String: Any]] {
            guard let text = try? TestSupport.run("/usr/bin/curl", ["-sf", "-X", "POST", "-d", "{}", "http://127.0.0.1:\(port)/control/received"]),
                  let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return [] }
            return object["logs"] as? [[String: Any]] ?? []
        }
        func body(_ record: [String: Any]) -> [String: Any] { record["body"] as? [String: Any] ?? [:] }

        let agent = Process()
        agent.executableURL = productsDirectory.appendingPathComponent("tracer")
        let prometheusPort = 20000 + Int((getpid() + 11) % 20000)
        agent.arguments = ["--object", exec.path, "--otlp-endpoint", "http://127.0.0.1:\(port)", "--log-level", "info",
                           "--prometheus-port", "\(prometheusPort)"]
        agent.environment = ProcessInfo.processInfo.environment.merging(
            ["OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=objtest"]) { $1 }
        let stderr = Pipe()
        agent.standardOutput = FileHandle.nullDevice
        agent.standardError = stderr
        try agent.run()
        addTeardownBlock { if agent.isRunning { agent.terminate(); agent.waitUntilExit() } }
        // The object is attached once a run of the program shows up as a log record.
        XCTAssertTrue(waitUntil(timeout: 20) {
            _ = try? spawn(program)
            return logs().contains { body($0)["comm"] as? String == comm }
        })
        var started: Set<Int> = []
        for _ in 0..<3 { started.insert(Int(try spawn(program))) }
        XCTAssertTrue(waitUntil(timeout: 10) {
            started.isSubset(of: Set(logs().filter { body($0)["comm"] as? String == comm }.compactMap { body($0)["pid"] as? Int }))
        }, "\(started)")
        // The log exporter's own counters are self-metrics.
        var page = ""
        XCTAssertTrue(waitUntil(timeout: 5) {
            page = (try? TestSupport.run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(prometheusPort)/metrics"])) ?? ""
            let exported = page.split(separator: "\n").first { $0.hasPrefix("tracer_log_records_exported_total") }
            return (exported?.split(separator: " ").last.flatMap { Double($0) } ?? 0) >= 4
        }, page)
        XCTAssertTrue(page.contains("tracer_log_records_failed_total{service_name=\"tracer\"} 0"), page)
        agent.terminate()
        agent.waitUntilExit()
        XCTAssertEqual(agent.terminationStatus, 0)
        let log = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(log.contains("exporting object records as log records to http://127.0.0.1:\(port)/v1/logs"), log)

        let mine = logs().filter { started.contains(body($0)["pid"] as? Int ?? -1) }
        XCTAssertEqual(mine.count, 3, "one log record per exec: \(mine)")
        for record in mine {
            let fields = body(record)
            XCTAssertEqual(fields["comm"] as? String, comm)
            XCTAssertEqual(fields["ppid"] as? Int, Int(getpid()), "the test started it")
            XCTAssertEqual(fields["kind"] as? String, "EXEC_PLAIN", "enums by name")
            XCTAssertEqual(fields["ids"] as? [String: Int], ["uid": Int(getuid()), "gid": Int(getgid())], "nested struct as a kvlist")
            XCTAssertEqual(fields["digits"] as? [Int], [1, 2, 3], "array")
            XCTAssertEqual(Set(fields.keys), ["pid", "ppid", "kind", "ids", "digits", "comm"], "only what the object emits")
            XCTAssertEqual(record["attributes"] as? [String: String],
                           ["tracer.object.name": "execsnoop", "tracer.object.record_type": "exec_event"])
            XCTAssertEqual((record["scope"] as? [String: Any])?["name"] as? String, "tracer/object")
            let resource = record["resource"] as? [String: Any] ?? [:]
            XCTAssertEqual(resource["service.name"] as? String, "tracer")
            XCTAssertEqual(resource["deployment.environment"] as? String, "objtest", "OTEL_RESOURCE_ATTRIBUTES layered under")
            XCTAssertEqual(record["severityText"] as? String, "INFO")
            XCTAssertEqual(record["severityNumber"] as? Int, 9)
            let observed = Double(record["observedTimeUnixNano"] as? UInt64 ?? 0) / 1e9
            XCTAssertEqual(observed, Date().timeIntervalSince1970, accuracy: 120, "observed time is the wall clock")
        }
    }

    /// The config file's `export.logs_endpoint` is the logs URL as is; the base endpoint gets `/v1/logs`.
    func testConfigFileLogsEndpoint() throws {
        let own = try Outputs.layer(fromFile: ["endpoint": "http://base:4318", "logs_endpoint": "http://logs:1/in"], path: "t.yaml")
        XCTAssertEqual(try ExportSettings.resolve(file: own).logsURL, "http://logs:1/in")
        let base = try Outputs.layer(fromFile: ["endpoint": "http://base:4318"], path: "t.yaml")
        XCTAssertEqual(try ExportSettings.resolve(file: base).logsURL, "http://base:4318/v1/logs")
    }
}
