import Foundation

/// A command run in the background whose standard output and error are collected as they come, so a test
/// can wait for a line (e.g. that a tracer attached), act, then interrupt it and read everything.
public final class BackgroundCommand: @unchecked Sendable {
    public let process = Process()
    private let lock = NSLock()
    private var outputData = Data()
    private var errorData = Data()
    private let outputPipe = Pipe(), errorPipe = Pipe()
    public let input = Pipe()

    public init(_ executable: String, _ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = outputPipe
        process.standardError = errorPipe
        process.standardInput = input
        outputPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            self?.lock.withLock { self?.outputData.append(data) }
        }
        errorPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            self?.lock.withLock { self?.errorData.append(data) }
        }
        try process.run()
    }

    deinit {
        if process.isRunning { process.terminate() }
    }

    public var pid: Int32 { process.processIdentifier }
    public var stdout: String { lock.withLock { String(decoding: outputData, as: UTF8.self) } }
    public var stderr: String { lock.withLock { String(decoding: errorData, as: UTF8.self) } }

    /// Waits until standard output or error contains `text`; false on timeout or when the command exited first.
    @discardableResult
    public func waitFor(_ text: String, timeout: TimeInterval = 15) -> Bool {
        waitUntil(timeout: timeout) { stdout.contains(text) || stderr.contains(text) || !process.isRunning }
        return stdout.contains(text) || stderr.contains(text)
    }

    /// Sends `signal` (SIGINT by default), waits for the exit and for the pipes to drain; returns the status.
    @discardableResult
    public func stop(signal: Int32 = SIGINT, timeout: TimeInterval = 15) -> Int32 {
        if process.isRunning { kill(process.processIdentifier, signal) }
        return waitForExit(timeout: timeout)
    }

    /// Waits for the command to exit by itself (killing it after `timeout`) and for its pipes to drain.
    @discardableResult
    public func waitForExit(timeout: TimeInterval = 15) -> Int32 {
        if !waitUntil(timeout: timeout, { !process.isRunning }) { process.terminate() }
        process.waitUntilExit()
        for pipe in [outputPipe, errorPipe] {
            pipe.fileHandleForReading.readabilityHandler = nil
            let rest = pipe.fileHandleForReading.readDataToEndOfFile()
            lock.withLock { if pipe === outputPipe { outputData.append(rest) } else { errorData.append(rest) } }
        }
        return process.terminationStatus
    }
}
