// swift-tools-version: 6.1
import Foundation
import PackageDescription

/// Files below `directory` (relative paths) for which `matches` holds: used to keep BPF C programs,
/// headers, scripts and docs that live next to Swift code out of SwiftPM's sources (the BPF embed plugin
/// finds the `.bpf.c` files by itself).
/// SwiftPM caches the evaluated manifest by its text: after adding such a file, build once with
/// `--manifest-cache none` (the project's scripts always do).
func files(in directory: String, where matches: (String) -> Bool) -> [String] {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(directory)
    guard let walker = FileManager.default.enumerator(atPath: root.path) else { return [] }
    var found: [String] = []
    while let relative = walker.nextObject() as? String {
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: root.appendingPathComponent(relative).path, isDirectory: &isDirectory)
        if !isDirectory.boolValue && matches(relative) { found.append(relative) }
    }
    return found
}

/// The `Tests` folders of the tracers (`tracers/NAME/Tests`): they form the `TracersTests` target.
func tracerTestFolders() -> [String] {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("tracers")
    let names = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
    return names.sorted().filter { FileManager.default.fileExists(atPath: root.appendingPathComponent("\($0)/Tests").path) }
        .map { "\($0)/Tests" }
}

/// Release builds skip Swift's run-time exclusivity checks: they took ~8 % of the agent's CPU per span (perf on
/// the Redis benchmark, BENCHMARKS.md); debug builds, which every test runs, keep them, so a conflicting access
/// still fails there.
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

/// The tests that live in the tracers' own folders (`tracers/NAME/Tests`), as one test target.
let tracerTests: [Target] = tracerTestFolders().isEmpty ? [] : [
    .testTarget(
        name: "TracersTests",
        dependencies: ["Tracers", "TracerFramework", "TestSupport", "CTracerABI", "BPFRuntime", "BPFPrograms", "Telemetry", "ExecutableInspection",
                       "OTLPExport"],
        path: "tracers",
        exclude: files(in: "tracers") { !$0.hasSuffix(".swift") || !$0.contains("/Tests/") },
        sources: tracerTestFolders(),
        swiftSettings: swiftSettings),
]

let package = Package(
    name: "tracer",
    products: [
        .executable(name: "tracer", targets: ["TracerCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // C libraries (Debian's -dev packages, found with pkg-config).
        .systemLibrary(name: "CLibBPF", pkgConfig: "libbpf", providers: [.apt(["libbpf-dev"])]),
        .systemLibrary(name: "CLibElf", pkgConfig: "libdw", providers: [.apt(["libelf-dev", "libdw-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // Headers only (`<capstone/capstone.h>`): the library is dlopen'ed when RET offsets are first needed.
        .systemLibrary(name: "CCapstone", providers: [.apt(["libcapstone-dev"])]),

        /// `tracer_`-prefixed C helpers for what Swift cannot call directly (variadic callbacks,
        /// `LIBBPF_OPTS`, `bpf()` commands Debian's libbpf 1.1 has no API for).
        .target(name: "CTracerShim", dependencies: ["CLibBPF"]),
        /// The C headers that define every layout shared by BPF programs and Swift.
        .target(name: "CTracerABI"),

        // BPF build pipeline: compile `*.bpf.c` with the toolchain clang and embed the objects.
        .executableTarget(name: "BPFEmbedTool", dependencies: ["CLibElf"], swiftSettings: swiftSettings),
        .plugin(name: "BPFEmbedPlugin", capability: .buildTool(), dependencies: ["BPFEmbedTool"]),
        /// Syscall and errno names from the kernel's UAPI headers (linux-libc-dev), generated at build time.
        .executableTarget(name: "SyscallTableTool", swiftSettings: swiftSettings),
        .plugin(name: "SyscallTablePlugin", capability: .buildTool(), dependencies: ["SyscallTableTool"]),

        .target(
            name: "BPFRuntime",
            dependencies: ["CLibBPF", "CLibElf", "CTracerShim", "CTracerABI", "CZlib", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings),
        /// The shared BPF programs of `bpf/` (feature probes, self-test), embedded in the binary.
        .target(
            name: "BPFPrograms",
            dependencies: ["BPFRuntime"],
            path: "bpf",
            exclude: files(in: "bpf") { !$0.hasSuffix(".swift") },
            swiftSettings: swiftSettings,
            plugins: ["BPFEmbedPlugin"]),

        /// ELF, Go build info / pclntab, DWARF struct offsets, RET offsets and /proc inspection (issue 3).
        .target(
            name: "ExecutableInspection",
            dependencies: ["CLibElf", "CCapstone", "CTracerShim", .product(name: "Logging", package: "swift-log")],
            exclude: ["README.md"],
            swiftSettings: swiftSettings),
        /// Replays files through the inspection parsers; built with `-sanitize=fuzzer` by
        /// `scripts/fuzz-inspection.sh` it becomes a libFuzzer target.
        /// libFuzzer's driver, or a replay of files, for the fuzz targets.
        .target(name: "FuzzDriver", path: "Fuzz/FuzzDriver", swiftSettings: swiftSettings),
        .executableTarget(
            name: "InspectionFuzz",
            dependencies: ["ExecutableInspection", "FuzzDriver"],
            path: "Fuzz/InspectionFuzz",
            swiftSettings: swiftSettings),
        /// Replays inputs through the HTTP tracer's parsers and event decoder; built with `-sanitize=fuzzer` by
        /// `scripts/fuzz-http.sh` it becomes a libFuzzer target.
        .executableTarget(
            name: "HTTPFuzz",
            dependencies: ["FuzzDriver", "Tracers", "TracerFramework", "Telemetry", "CTracerABI"],
            path: "Fuzz/HTTPFuzz",
            swiftSettings: swiftSettings),
        /// Replays inputs through the database parsers (SQL summaries, query text, Redis); built with
        /// `-sanitize=fuzzer` by `scripts/fuzz-database.sh` it becomes a libFuzzer target.
        .executableTarget(
            name: "DatabaseFuzz",
            dependencies: ["FuzzDriver", "Tracers", "TracerFramework", "Telemetry"],
            path: "Fuzz/DatabaseFuzz",
            swiftSettings: swiftSettings),
        /// Replays inputs through the BPF object package and ELF/BTF readers of `tracer object`; built with
        /// `-sanitize=fuzzer` by `scripts/fuzz-object.sh` it becomes a libFuzzer target.
        .executableTarget(
            name: "ObjectFuzz",
            dependencies: ["FuzzDriver", "BPFRuntime"],
            path: "Fuzz/ObjectFuzz",
            swiftSettings: swiftSettings),
        /// The HTTP tracer's cost: a server under wrk traced vs untraced, and an unselected process's syscalls.
        .executableTarget(
            name: "HTTPTracerBenchmark",
            dependencies: ["Tracers", "TracerFramework", "BPFRuntime", "Telemetry", "CTracerABI", "ExecutableInspection",
                           .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/HTTPTracerBenchmark",
            swiftSettings: swiftSettings),
        /// A protocol parser's user-space cost: CPU per span, NATS heap per idle connection (`swift run -c release ParserBenchmark redis`).
        .executableTarget(
            name: "ParserBenchmark",
            dependencies: ["Tracers", "TracerFramework", "Telemetry", "OTLPExport"],
            path: "Benchmarks/ParserBenchmark",
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "InspectionBenchmark",
            dependencies: ["ExecutableInspection"],
            path: "Benchmarks/InspectionBenchmark",
            swiftSettings: swiftSettings),
        /// The span model shared by tracers and sinks, and the span printers.
        .target(name: "Telemetry", swiftSettings: swiftSettings),
        /// OTLP/HTTP export (protobuf and JSON over libcurl), RED metrics and the Prometheus endpoint.
        .target(
            name: "OTLPExport",
            dependencies: ["Telemetry", "CCurl", "CZlib", .product(name: "Logging", package: "swift-log")],
            exclude: ["README.md"],
            swiftSettings: swiftSettings),

        /// The tracer plugin model, discovery and attach machinery, and the events-to-spans pipeline.
        .target(
            name: "TracerFramework",
            dependencies: [
                "BPFRuntime", "BPFPrograms", "CTracerABI", "ExecutableInspection", "Telemetry",
                .product(name: "Logging", package: "swift-log"), .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings),
        /// One folder per tracer plugin (BPF program, event header, Swift decoding, README, tests).
        .target(
            name: "Tracers",
            dependencies: ["TracerFramework", "BPFRuntime", "Telemetry", "CTracerABI", "ExecutableInspection"],
            path: "tracers",
            exclude: files(in: "tracers") { !$0.hasSuffix(".swift") || $0.contains("/Tests/") },
            swiftSettings: swiftSettings,
            plugins: ["BPFEmbedPlugin", "SyscallTablePlugin"]),

        .executableTarget(
            name: "TracerCLI",
            dependencies: [
                "BPFRuntime", "BPFPrograms", "ExecutableInspection", "TracerFramework", "Tracers", "Telemetry", "OTLPExport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .target(name: "CBenchTargets", path: "Benchmarks/CBenchTargets"),
        .executableTarget(
            name: "TracerBenchmarks",
            dependencies: ["BPFRuntime", "BPFPrograms", "CTracerABI", "CBenchTargets", "TracerFramework", "Telemetry"],
            path: "Benchmarks/TracerBenchmarks",
            swiftSettings: swiftSettings),

        /// Go net/http tracer overhead under wrk (scripts/bench-go-http.sh).
        .executableTarget(
            name: "GoNetHTTPBenchmark",
            dependencies: ["Tracers", "TracerFramework", "BPFRuntime", "ExecutableInspection", "Telemetry",
                           .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/GoNetHTTPBenchmark",
            swiftSettings: swiftSettings),

        /// Flow accounting's cost: loopback throughput with and without it, BPF time per packet, reader cost.
        .executableTarget(
            name: "FlowsBenchmark",
            dependencies: ["Tracers", "BPFRuntime", "CTracerABI"],
            path: "Benchmarks/FlowsBenchmark",
            swiftSettings: swiftSettings),

        .executableTarget(
            name: "ExportBenchmarks",
            dependencies: ["Telemetry", "OTLPExport"],
            path: "Benchmarks/ExportBenchmarks",
            swiftSettings: swiftSettings),

        .target(
            name: "TestSupport",
            dependencies: ["TracerFramework", "Tracers", "Telemetry", .product(name: "Logging", package: "swift-log")],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings),
        .testTarget(
            name: "BPFRuntimeTests",
            dependencies: ["BPFRuntime", "BPFPrograms", "CTracerABI", "TestSupport", "Tracers"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TracerFrameworkTests",
            dependencies: ["TracerFramework", "BPFPrograms", "BPFRuntime", "CTracerABI", "Telemetry", "TestSupport", "CTracerShim"],
            swiftSettings: swiftSettings),
        .testTarget(name: "TracerCLITests", dependencies: ["TracerCLI", "TestSupport", "Tracers", "OTLPExport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "ExecutableInspectionTests",
            dependencies: ["ExecutableInspection", "TestSupport"],
            swiftSettings: swiftSettings),
        .testTarget(name: "TelemetryTests", dependencies: ["Telemetry"], swiftSettings: swiftSettings),
        .testTarget(
            name: "OTLPExportTests",
            dependencies: ["OTLPExport", "Telemetry", "TestSupport"],
            exclude: ["receiver"],
            swiftSettings: swiftSettings),
    ] + tracerTests
)
