import ExecutableInspection
import Foundation

// Inspects one binary the way the agent does before attaching — symbols, Go build info, pclntab,
// DWARF field offsets, RET offsets of the probed functions — and prints wall time and memory.
// Usage: InspectionBenchmark PATH [ITERATIONS]   (scripts/benchmark-inspection.sh builds a ~20 MB Go binary)

/// A `kB` line of /proc/self/status (`VmRSS`, `VmHWM`), in MB.
func statusMB(_ key: String) -> Double {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix(key + ":") } ?? ""
    return Double(line.split(separator: " ").dropFirst().first ?? "0").map { $0 / 1024 } ?? 0
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    print("usage: InspectionBenchmark PATH [ITERATIONS]")
    exit(2)
}
let path = arguments[1]
let iterations = arguments.count > 2 ? Int(arguments[2]) ?? 10 : 10
let size = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.doubleValue ?? 0
let inspector = ExecutableInspector(goFields: GoField.netHTTP)
/// This thread's CPU time in ms (`CLOCK_THREAD_CPUTIME_ID`): unlike wall time, not inflated when
/// other work shares the cores.
func cpuMilliseconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
    return Double(now.tv_sec) * 1e3 + Double(now.tv_nsec) / 1e6
}

let baselineRSS = statusMB("VmRSS")
var times: [Double] = []
var cpuTimes: [Double] = []
var info: ExecutableInfo?
for _ in 0..<iterations {
    let start = DispatchTime.now().uptimeNanoseconds
    let cpuStart = cpuMilliseconds()
    do {
        info = try inspector.inspect(path: path, queries: ProbeTargetQuery.goNetHTTP)
    } catch {
        print("inspect failed: \(error)")
        exit(1)
    }
    times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
    cpuTimes.append(cpuMilliseconds() - cpuStart)
}
let peakRSS = statusMB("VmHWM")

/// CPU ms of one phase on a fresh `ELFFile` (after the runs above, so the page cache is warm).
func phase(_ body: (ELFFile) throws -> Void) -> Double {
    guard let elf = try? ELFFile(path: path) else { return .nan }
    let start = cpuMilliseconds()
    try? body(elf)
    return cpuMilliseconds() - start
}
let names = Set(ProbeTargetQuery.goNetHTTP.map(\.symbol))
let phases = [
    ("open", phase { _ = try ELFFile(path: $0.path) }),
    ("symtab lookup", phase { _ = $0.symbols(named: names) }),
    ("build info", phase { _ = try $0.goBuildInfo() }),
    ("pclntab lookup", phase { _ = try $0.goFunctions(named: names) }),
    ("DWARF offsets", phase { _ = try $0.goFieldOffsets(GoField.netHTTP, buildInfo: $0.goBuildInfo()) }),
    ("RET offsets", phase { elf in
        for (_, symbol) in elf.symbols(named: names) { _ = try elf.returnOffsets(address: symbol.address, size: symbol.size) }
    }),
]
let afterRSS = statusMB("VmRSS")
times.sort()
cpuTimes.sort()
guard let info else { exit(1) }
print(String(format: "binary: %@ (%.1f MB), %@, %d symbols, %d Go functions, offsets from %@",
             path, size / 1e6, info.go?.buildInfo?.goVersion ?? "not Go", info.symbolCount, info.go?.functionCount ?? 0,
             info.go?.fieldOffsets.map { "\($0.source) (\($0.offsets.count) fields)" } ?? "none"))
print("probe targets: \(info.probeTargets.count) found, \(info.probeTargets.reduce(0) { $0 + $1.returnOffsets.count }) RET offsets, \(info.missingProbeTargets.count) missing")
print(String(format: "inspect time over %d runs: min %.1f ms, median %.1f ms, max %.1f ms",
             iterations, times.first ?? 0, times[times.count / 2], times.last ?? 0))
print(String(format: "inspect CPU time: min %.1f ms, median %.1f ms (load average %@)", cpuTimes.first ?? 0, cpuTimes[cpuTimes.count / 2],
             ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?").split(separator: " ").prefix(3).joined(separator: " ")))
print("phases (CPU ms): " + phases.map { String(format: "%@ %.1f", $0.0, $0.1) }.joined(separator: ", "))
print(String(format: "RSS: baseline %.1f MB, peak %.1f MB (+%.1f MB), after %.1f MB (+%.1f MB retained)",
             baselineRSS, peakRSS, peakRSS - baselineRSS, afterRSS, afterRSS - baselineRSS))
