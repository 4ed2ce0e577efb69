/// Why inspecting a file or a process failed. `description` is one line naming the file (or PID)
/// and what was wrong, suitable for a log line or the CLI's stderr.
public struct InspectionError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The broad class of failure, for callers that react differently (e.g. skip a vanished PID).
    public enum Reason: String, Sendable {
        /// The path does not exist (`ENOENT`).
        case notFound
        /// The path exists but is not a regular file (a directory, a socket...).
        case notRegularFile
        /// `open`/`read`/`mmap` failed for another reason (permissions, I/O).
        case io
        /// The file is not an ELF object (no `\x7fELF` magic) or is empty.
        case notELF
        /// The ELF, build info, pclntab or DWARF data is inconsistent (truncated, out of range).
        case malformed
        /// Well-formed but outside what the inspector supports (byte order, pclntab version...).
        case unsupported
        /// A Go binary that cannot be instrumented as Go (unknown version without DWARF...).
        case notInstrumentableAsGo
        /// The symbol or address asked for is not in the file.
        case symbolNotFound
        /// The virtual address is in no `PT_LOAD` segment's file-backed part.
        case addressNotMapped
        /// The process exited (or was never there) while being inspected.
        case processGone
    }

    public let reason: Reason
    /// The file path or `pid N` the error is about.
    public let subject: String
    /// What was wrong, without the subject.
    public let detail: String

    public init(_ reason: Reason, _ subject: String, _ detail: String) {
        self.reason = reason
        self.subject = subject
        // Keep the one-line promise even if a C library hands back a multi-line message.
        self.detail = detail.replacingNewlines()
    }

    public var description: String { "\(subject): \(detail)" }
}

extension String {
    fileprivate func replacingNewlines() -> String {
        String(map { $0.isNewline ? " " : $0 })
    }
}
