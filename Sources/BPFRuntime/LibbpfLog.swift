internal import CTracerShim
import Logging
import Synchronization

/// libbpf's messages (`libbpf_set_print`): forwarded to a `Logger` at debug level, and captured while a
/// load runs so a rejected program's verifier log can travel with its error.
enum LibbpfLog {
    private struct State {
        var logger = Logger(label: "tracer.libbpf")
        var captured: [String]? = nil
    }

    private static let state: Mutex<State> = {
        tracer_libbpf_set_print { _, line in
            guard let line else { return }
            LibbpfLog.receive(String(cString: line))
        }
        return Mutex(State())
    }()

    /// Serialises loads: libbpf's print callback is process-wide.
    private static let loadLock = Mutex(())

    /// Routes libbpf's messages here from now on (before it, libbpf prints to stderr itself).
    static func install() {
        state.withLock { _ in }
    }

    static func setLogger(_ logger: Logger) {
        state.withLock { $0.logger = logger }
    }
}

/// Where libbpf's messages go (at debug level): e.g. a logger at debug level on stderr to see every step of
/// a load (the object runner's `debug_verbose`).
public func forwardLibbpfMessages(to logger: Logger) {
    LibbpfLog.install()
    LibbpfLog.setLogger(logger)
}

extension LibbpfLog {

    private static func receive(_ line: String) {
        state.withLock { state in
            state.captured?.append(line)
            state.logger.debug("libbpf: \(line.trimmingCharacters(in: .newlines))")
        }
    }

    /// Runs `body` while capturing libbpf's messages; returns its result and the captured text.
    static func capturing<T>(_ body: () -> T) -> (T, String) {
        loadLock.withLock { _ in
            state.withLock { $0.captured = [] }
            let result = body()
            let messages = state.withLock { state in
                defer { state.captured = nil }
                return (state.captured ?? []).joined()
            }
            return (result, messages)
        }
    }

    /// The verifier's part of libbpf's load messages (between its BEGIN/END PROG LOAD LOG markers), or
    /// all of them when the markers are missing; at most the last `limit` bytes, where the verdict is.
    static func verifierLog(in messages: String, limit: Int = 32 << 10) -> String {
        var log = Substring(messages)
        if let begin = log.range(of: "-- BEGIN PROG LOAD LOG --\n") {
            log = log[begin.upperBound...]
            log = log[..<(log.range(of: "-- END PROG LOAD LOG --")?.lowerBound ?? log.endIndex)]
        }
        guard log.utf8.count > limit else { return String(log) }
        let tail = log.utf8.suffix(limit)
        let firstLine = tail.firstIndex(of: UInt8(ascii: "\n")).map { tail.index(after: $0) } ?? tail.startIndex
        return "[... earlier verifier output omitted ...]\n" + String(Substring(tail[firstLine...]))
    }
}
