import Foundation
import PackagePlugin

/// Compiles every `*.bpf.c` below a target's directory with the toolchain's clang (`-target bpf -O2 -g`)
/// and turns each object, its DWARF emptied (libbpf reads only the BTF `-g` also produces), into a Swift
/// file that embeds it, with name constants for its programs, maps and globals. One command per program
/// emits only the `.swift` file (an extra output such as a `.o` would make SwiftPM create a resource bundle).
@main
struct BPFEmbedPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let target = target as? SourceModuleTarget else { return [] }
        let tool = try context.tool(named: "BPFEmbedTool")
        let clang = try context.tool(named: "clang")
        let sharedHeaders = context.package.directoryURL.appending(path: "bpf")
        let programs = files(below: target.directoryURL, endingWith: ".bpf.c")
        let headers = files(below: target.directoryURL, endingWith: ".h") + files(below: sharedHeaders, endingWith: ".h")

        return programs.map { program in
            let stem = String(program.lastPathComponent.dropLast(".bpf.c".count))
            let output = context.pluginWorkDirectoryURL.appending(path: "\(stem).bpf.swift")
            return .buildCommand(
                displayName: "Compiling BPF program \(program.lastPathComponent)",
                executable: tool.url,
                arguments: [
                    "--clang", clang.url.path,
                    "--input", program.path,
                    "--output", output.path,
                    "--namespace", target.name,
                    "--include", sharedHeaders.path,
                    "--include", program.deletingLastPathComponent().path,
                ],
                inputFiles: [program] + headers,
                outputFiles: [output])
        }
    }

    private func files(below directory: URL, endingWith suffix: String) -> [URL] {
        guard let walker = FileManager.default.enumerator(at: directory, includingPropertiesForKeys: nil) else { return [] }
        return walker.compactMap { $0 as? URL }.filter { $0.lastPathComponent.hasSuffix(suffix) }
            .sorted { $0.path < $1.path }
    }
}
