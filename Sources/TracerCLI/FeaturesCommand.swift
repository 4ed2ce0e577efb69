import ArgumentParser
import BPFPrograms
import BPFRuntime
import Foundation

/// `tracer features`: what this kernel and process can do for BPF tracing.
struct FeaturesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "features",
        abstract: "Probe the kernel's BPF features, capabilities and mounts.",
        discussion: """
            Each feature is probed by loading (and where cheap, attaching) a minimal BPF program.
            Examples:
              tracer features
              tracer features --json | jq '.features[] | select(.available == false)'
            """)

    @Flag(help: "Print the report as JSON.")
    var json = false

    func run() throws {
        let features = KernelFeatures.detect()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(features), as: UTF8.self))
        } else {
            print(FeatureReport(features).text)
        }
    }
}

/// The readable form of `KernelFeatures`.
struct FeatureReport {
    let features: KernelFeatures

    init(_ features: KernelFeatures) { self.features = features }

    var text: String {
        var lines = ["Linux \(features.kernelRelease)", "", "BPF features:"]
        let width = FeatureID.allCases.map(\.title.count).max() ?? 0
        for feature in features.features {
            let mark = feature.available ? "yes" : "no "
            let title = feature.id.title.padding(toLength: width, withPad: " ", startingAt: 0)
            lines.append("  \(mark)  \(title)  (Linux \(feature.minimumKernel))  \(feature.detail)")
        }
        lines.append("")
        lines.append("Capabilities:")
        for capability in features.capabilities {
            lines.append("  \(capability.held ? "yes" : "no ")  \(capability.name.padding(toLength: 22, withPad: " ", startingAt: 0))  \(capability.neededFor)")
        }
        lines.append("")
        lines.append("Filesystems:")
        for mount in features.mounts {
            lines.append("  \(mount.mounted ? "yes" : "no ")  \(mount.filesystem.padding(toLength: 10, withPad: " ", startingAt: 0))  \(mount.path ?? "not mounted")")
        }
        lines.append("")
        lines.append("Kernel lockdown: \(features.lockdown ?? "unknown (securityfs not mounted)")")
        return lines.joined(separator: "\n")
    }
}
