import Foundation
import PackagePlugin

/// Generates `LinuxSyscallTable.swift` (syscall numbers → names, errno numbers → names) at build time from
/// the kernel's UAPI headers of the build machine (Debian's `linux-libc-dev`): `asm/unistd_64.h` and
/// `asm-generic/errno-base.h` + `errno.h`, so the table is never copied by hand and follows the headers.
@main
struct SyscallTablePlugin: BuildToolPlugin {
    /// The UAPI headers, per architecture (the build machine's multiarch directory).
    static let syscallHeaders = ["/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/aarch64-linux-gnu/asm/unistd.h"]
    static let errnoHeaders = ["/usr/include/asm-generic/errno-base.h", "/usr/include/asm-generic/errno.h"]

    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let tool = try context.tool(named: "SyscallTableTool")
        guard let syscalls = Self.syscallHeaders.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            Diagnostics.error("no asm/unistd header (install linux-libc-dev): looked at \(Self.syscallHeaders.joined(separator: ", "))")
            return []
        }
        let output = context.pluginWorkDirectoryURL.appending(path: "LinuxSyscallTable.swift")
        let inputs = [syscalls] + Self.errnoHeaders
        return [.buildCommand(
            displayName: "Generating the syscall and errno name tables from \(syscalls)",
            executable: tool.url,
            arguments: ["--output", output.path, "--syscalls", syscalls] + Self.errnoHeaders.flatMap { ["--errno", $0] },
            inputFiles: inputs.map { URL(fileURLWithPath: $0) },
            outputFiles: [output])]
    }
}
