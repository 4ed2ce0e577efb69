import Foundation
import Telemetry

/// Container and Kubernetes identity of a traced process, for its OTel resource.
///
/// - `container.id` comes from the process's cgroup path (`/proc/PID/cgroup`, cgroup v1 or v2): Docker
///   (`/docker/<id>`, `docker-<id>.scope`), containerd (`cri-containerd-<id>.scope`, or the bare id under
///   `/kubepods/...`), CRI-O (`crio-<id>.scope`) and Podman (`libpod-<id>`). The innermost match wins.
/// - `k8s.pod.uid` comes from the `pod<uid>` component that kubelet puts in the same path.
/// - `k8s.node.name` is the agent's own node (`K8S_NODE_NAME`, set by the DaemonSet's downward API).
/// - `k8s.pod.name` and `k8s.namespace.name` are the traced process's: only its own environment
///   (`K8S_POD_NAME`, `K8S_NAMESPACE`, or `OTEL_RESOURCE_ATTRIBUTES`) can tell them; nothing is guessed.
enum ContainerIdentity {
    /// The container id in cgroup text: either `/proc/PID/cgroup` lines (`0::/path`, `4:memory:/path`)
    /// or bare paths, one per line. v2 lines (`0::`) are preferred over v1 lines.
    static func containerID(cgroup: String) -> String? {
        innermost(in: cgroup) { component in
            var name = Substring(component)
            if name.hasSuffix(".scope") { name = name.dropLast(".scope".count) }
            let id = name.split(separator: "-").last ?? name
            return id.count == 64 && id.allSatisfy(\.isHexDigit) ? String(id).lowercased() : nil
        }
    }

    /// The Kubernetes pod UID in cgroup text: `pod<uid>` (cgroupfs driver) or
    /// `kubepods-<qos>-pod<uid with underscores>.slice` (systemd driver).
    static func podUID(cgroup: String) -> String? {
        innermost(in: cgroup) { component in
            var name = Substring(component)
            if name.hasSuffix(".slice") { name = name.dropLast(".slice".count) }
            guard let range = name.range(of: "pod", options: .backwards),
                  range.lowerBound == name.startIndex || name[name.index(before: range.lowerBound)] == "-" else { return nil }
            let uid = name[range.upperBound...].replacingOccurrences(of: "_", with: "-")
            let groups = uid.split(separator: "-", omittingEmptySubsequences: false).map(\.count)
            return groups == [8, 4, 4, 4, 12] && uid.allSatisfy({ $0.isHexDigit || $0 == "-" }) ? uid.lowercased() : nil
        }
    }

    /// The container and Kubernetes attributes of a process, in a fixed order.
    static func attributes(cgroup: String, processEnvironment: [String: String],
                           agentEnvironment: [String: String]) -> [(key: String, value: String)] {
        var attributes: [(key: String, value: String)] = []
        func add(_ key: String, _ value: String?) {
            if let value, !value.isEmpty { attributes.append((key, value)) }
        }
        add(SemanticConventions.containerID, containerID(cgroup: cgroup))
        add(SemanticConventions.k8sPodUID, podUID(cgroup: cgroup))
        add(SemanticConventions.k8sNodeName, agentEnvironment["K8S_NODE_NAME"])
        add(SemanticConventions.k8sPodName, processEnvironment["K8S_POD_NAME"])
        add(SemanticConventions.k8sNamespaceName, processEnvironment["K8S_NAMESPACE"])
        return attributes
    }

    /// The first match of `match` over the path components, innermost component first, v2 paths first.
    private static func innermost(in cgroup: String, _ match: (Substring) -> String?) -> String? {
        var v2: [Substring] = [], v1: [Substring] = []
        for line in cgroup.split(separator: "\n") {
            if line.hasPrefix("/") {
                v2.append(line)
            } else {
                let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                guard fields.count == 3 else { continue }
                if fields[0] == "0" && fields[1].isEmpty { v2.append(fields[2]) } else { v1.append(fields[2]) }
            }
        }
        for path in v2 + v1 {
            for component in path.split(separator: "/").reversed() {
                if let found = match(component) { return found }
            }
        }
        return nil
    }
}
