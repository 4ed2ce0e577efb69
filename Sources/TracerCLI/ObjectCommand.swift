import ArgumentParser
import BPFRuntime
import Foundation

/// `tracer object run|pack`: run a compiled CO-RE BPF object, or a JSON package of one, with no user-space
/// code of its own (events printed from BTF, maps sampled, `.rodata` settings as options, program statistics).
struct ObjectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "object",
        abstract: "Run a compiled BPF object (.bpf.o) or a JSON package of one; pack an object into a package.",
        subcommands: [ObjectRunCommand.self, ObjectPackCommand.self])

    /// Prints a failure as one line (plus the verifier log's tail) and exits 1.
    static func fail(_ error: ObjectCommandError, command: String) -> ExitCode {
        let lines = ["tracer object \(command): \(error.description)"] + error.detail
        FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        return ExitCode(1)
    }
}

/// `tracer object run FILE [--json] [--interval S] [-- OPTIONS]`.
struct ObjectRunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Load a BPF object or package, attach its programs, print its events and sampled maps.",
        discussion: """
            Every program is attached by its section (tracepoint/, tp_btf/, raw_tp/, uprobe/PATH:FUNCTION,
            kprobe/, fentry/ where the kernel has them); one line for each that cannot be, the others run.
            Records of ring buffers and perf event arrays are printed with the struct the object exports
            (`const struct event *unused;`). Maps whose value has a `slots` array, or that the package's meta
            samples, are printed as histograms or tables every interval and at exit. The object's
            `const volatile` globals in .rodata are options after `--`; `tracer object run FILE --help` lists
            them. Program statistics (runs, average ns, CPU %) are printed at exit and on SIGUSR1.
            """,
        helpNames: [.short, .customLong("help-command")])

    @Argument(help: "A BPF ELF object (clang -target bpf -g) or a package written by `tracer object pack`.")
    var file: String?

    @Flag(help: "With FILE: list the object's own options; without: this help.")
    var help = false

    @Flag(help: "One JSON object per record and per sample.")
    var json = false

    @Option(help: ArgumentHelp("Sample maps every S seconds (overrides the meta's interval; default 1).", valueName: "S"))
    var interval: Double?

    @Option(help: ArgumentHelp("Stop after S seconds (default: at SIGINT or SIGTERM).", valueName: "S"))
    var duration: Double?

    @Option(help: ArgumentHelp("Print program statistics every S seconds too.", valueName: "S"))
    var statsInterval: Double?

    @Flag(help: "Do not print the header line before the records.")
    var noHeader = false

    @Flag(help: "Copy bpf_printk output (/sys/kernel/tracing/trace_pipe) to stderr.")
    var printKernelDebug = false

    @Argument(parsing: .postTerminator, help: "The object's options, after --.")
    var objectOptions: [String] = []

    func validate() throws {
        for (name, value) in [("--interval", interval), ("--duration", duration), ("--stats-interval", statsInterval)] {
            if let value, !(value > 0) { throw ValidationError("\(name): expected a positive number of seconds") }
        }
    }

    func run() throws {
        guard let file else {
            if help { print(Self.helpMessage()); return }
            throw ValidationError("give the object or package to run: tracer object run FILE")
        }
        do {
            let input = try ObjectInput(path: file)
            if help {
                print(input.optionsHelp)
                return
            }
            let values = try input.settingValues(objectOptions)
            let runner = try ObjectRunner(input: input, values: values)
            var settings = ObjectRunSettings()
            settings.json = json
            settings.interval = interval
            settings.duration = duration
            settings.statsInterval = statsInterval
            settings.printHeader = noHeader ? false : nil
            settings.printKernelDebug = printKernelDebug
            try runner.run(settings, output: ObjectOutput())
        } catch {
            throw ObjectCommand.fail(error, command: "run")
        }
    }
}

private extension String {
    var nonEmpty: String? { isEmpty ? nil : self }
}

/// `tracer object pack FILE.bpf.o [-o package.json]`.
struct ObjectPackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pack",
        abstract: "Write a JSON package of a BPF object: the object (zlib, base64) and meta generated from its BTF.",
        discussion: """
            The meta lists the exported event structs, the .rodata/.bss variables with their defaults, the maps
            (histogram-shaped ones sampled as log2 histograms every second) and the programs with their sections.
            Edit it by hand to add descriptions, docs or sampling; `tracer object run` checks it against the object.
            """)

    @Argument(help: "A BPF ELF object compiled with BTF (clang -target bpf -g).")
    var file: String

    @Option(name: .shortAndLong, help: ArgumentHelp("Where to write the package (default: FILE without .bpf.o, plus .json).", valueName: "PATH"))
    var output: String?

    func run() throws {
        do throws(ObjectCommandError) {
            let input = try ObjectInput(path: file)
            let destination = output ?? ObjectInput.objectName(of: file) + ".json"
            let package = BPFObjectPackage(object: input.object.bytes, meta: input.meta)
            do {
                try package.encoded().write(to: URL(fileURLWithPath: destination))
            } catch {
                throw ObjectCommandError("cannot write \(destination): \(error.localizedDescription)")
            }
            let sampled = (input.meta.bpfSkel.maps ?? []).filter { $0.sample != nil }.map(\.name)
            print("wrote \(destination): \(input.object.programs.count) programs, \(input.object.maps.filter { !$0.isInternal }.count) maps"
                  + (sampled.isEmpty ? "" : " (sampled: \(sampled.joined(separator: ", ")))")
                  + ", \(input.settings.count) options, export types: \((input.meta.exportTypes ?? []).map(\.name).joined(separator: ", ").nonEmpty ?? "none")")
        } catch {
            throw ObjectCommand.fail(error, command: "pack")
        }
    }
}
