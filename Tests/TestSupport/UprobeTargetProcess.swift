import Foundation

/// A small C program the uprobe tests attach to: 50 functions `target_N(x) = 2x + N`, whose file offsets it
/// prints at start (address − mapping start + mapping file offset, from /proc/self/maps: exactly the
/// offset a uprobe takes), then calls on command from stdin.
public final class UprobeTargetProcess {
    public static let functionCount = 50
    public let binary: URL
    public let offsets: [UInt64]
    public var pid: Int32 { process.processIdentifier }
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private var pending = Data()

    /// Compiles the target program into `directory` as `name` (also its process name, so tests can pick
    /// their own processes by name); returns its path.
    public static func build(in directory: URL, name: String = "uprobe-target") throws -> URL {
        try compileC(source, name: name, in: directory)
    }

    public convenience init(directory: URL) throws {
        try self.init(binary: try Self.build(in: directory))
    }

    /// Starts an already built target program (several processes can share one file).
    public init(binary: URL, environment: [String: String]? = nil) throws {
        self.binary = binary
        process.executableURL = binary
        if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        var offsets = [UInt64](repeating: 0, count: Self.functionCount)
        var line = ""
        while true {
            line = try Self.readLine(from: output.fileHandleForReading, buffer: &pending)
            if line == "ready" { break }
            let fields = line.split(separator: " ")
            if fields.count == 3, fields[0] == "offset", let index = Int(fields[1]), let offset = UInt64(fields[2]) {
                offsets[index] = offset
            }
        }
        self.offsets = offsets
    }

    deinit { stop() }

    /// Calls `target_<index>(argument)` `times` times in the target process and waits until it is done.
    public func call(_ index: Int, times: Int = 1, argument: UInt64 = 0) throws {
        input.fileHandleForWriting.write(Data("call \(index) \(times) \(argument)\n".utf8))
        let line = try Self.readLine(from: output.fileHandleForReading, buffer: &pending)
        guard line.hasPrefix("done") else { throw CommandFailed(command: "call \(index)", status: -1, output: line) }
    }

    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    private static func readLine(from handle: FileHandle, buffer: inout Data) throws -> String {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex...newline)
                return line
            }
            let chunk = handle.availableData
            if chunk.isEmpty { throw CommandFailed(command: "uprobe-target", status: -1, output: "exited early") }
            buffer.append(chunk)
        }
    }

    static let source: String = {
        let count = functionCount
        let functions = (0..<count).map {
            "__attribute__((noinline, used)) uint64_t target_\($0)(uint64_t x) { __asm__ volatile(\"\" ::: \"memory\"); return x * 2 + \($0); }"
        }.joined(separator: "\n")
        let table = (0..<count).map { "target_\($0)" }.joined(separator: ", ")
        return """
        #include <stdint.h>
        #include <stdio.h>
        \(functions)
        static uint64_t (*targets[\(count)])(uint64_t) = { \(table) };

        static unsigned long file_offset(void *address) {
            FILE *maps = fopen("/proc/self/maps", "r");
            char line[512], perms[5];
            unsigned long start, end, offset;
            while (maps && fgets(line, sizeof line, maps)) {
                if (sscanf(line, "%lx-%lx %4s %lx", &start, &end, perms, &offset) == 4 &&
                    (unsigned long)address >= start && (unsigned long)address < end) {
                    fclose(maps);
                    return (unsigned long)address - start + offset;
                }
            }
            if (maps) fclose(maps);
            return 0;
        }

        int main(void) {
            setvbuf(stdout, NULL, _IONBF, 0);
            for (int i = 0; i < \(count); i++) printf("offset %d %lu\\n", i, file_offset((void *)targets[i]));
            printf("ready\\n");
            char command[128];
            int index;
            unsigned long times, argument;
            while (fgets(command, sizeof command, stdin)) {
                if (sscanf(command, "call %d %lu %lu", &index, &times, &argument) == 3 && index >= 0 && index < \(count)) {
                    uint64_t sum = 0;
                    for (unsigned long i = 0; i < times; i++) sum += targets[index](argument);
                    printf("done %lu\\n", (unsigned long)sum);
                }
            }
            return 0;
        }
        """
    }()
}
