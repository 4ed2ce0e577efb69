import Foundation
import Glibc

/// The write end of the current `SignalHandlers`' pipe, for the async-signal-safe C handler (which can
/// reach only globals); -1 when none is installed.
private nonisolated(unsafe) var signalPipeWriter: Int32 = -1

/// Signals handled on a thread instead of by their default action, so a command can stop cleanly (detach,
/// flush, print its totals). The handler is installed with `sigaction(2)` before `init` returns, so a signal
/// sent right after the command says it is ready is never lost (a `DispatchSourceSignal` registers later,
/// on libdispatch's manager thread, and a signal arriving before that was dropped). The C handler only
/// writes the signal number to a pipe; a thread reads it and calls `handler`. `cancel()` ignores the
/// signals from then on and ends the thread.
final class SignalHandlers: @unchecked Sendable {
    private let signals: [Int32]
    private let pipeEnds: (read: Int32, write: Int32)

    /// `handler` runs on the handlers' thread with the number of each signal that arrives.
    init(_ signals: [Int32] = [SIGINT, SIGTERM], handler: @escaping @Sendable (Int32) -> Void) {
        self.signals = signals
        var ends: [Int32] = [-1, -1]
        pipe(&ends)
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        pipeEnds = (ends[0], ends[1])
        signalPipeWriter = ends[1]
        let reader = ends[0]
        Thread {
            var number: UInt8 = 0
            while read(reader, &number, 1) == 1, number != 0 { handler(Int32(number)) }
            close(reader)
        }.start()
        for signalNumber in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { number in
                var byte = UInt8(truncatingIfNeeded: number)
                _ = write(signalPipeWriter, &byte, 1)
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signalNumber, &action, nil)
        }
    }

    /// Ignores the signals from now on and stops the thread. Call once.
    func cancel() {
        for signalNumber in signals { signal(signalNumber, SIG_IGN) }
        var stop: UInt8 = 0
        _ = write(pipeEnds.write, &stop, 1)
        if signalPipeWriter == pipeEnds.write { signalPipeWriter = -1 }
        close(pipeEnds.write)
    }
}
