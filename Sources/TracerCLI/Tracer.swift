import ArgumentParser

/// `tracer`: eBPF instrumentation agent. Each subcommand is its own `ParsableCommand` in this folder.
@main
struct Tracer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tracer",
        abstract: "eBPF instrumentation agent: traces and RED metrics for unmodified services.",
        discussion: """
            Examples:
              tracer features              what this kernel supports (BPF features, capabilities, mounts)
              tracer features --json       the same as JSON
              tracer inspect ./server      what the agent sees in an executable (--pid N for a process)
            """,
        subcommands: [InspectCommand.self])
}
