import ExecutableInspection
import Foundation
import Telemetry

/// The OTel resource of a traced process. `service.name` comes from the process's own
/// `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` when present (as an SDK inside it would report),
/// else from the selection rule (`--service-name`, or the agent's own `OTEL_SERVICE_NAME` for flag rules),
/// else the name people know it by (``ProcessNames/serviceName(executablePath:)``: an interpreter's script or
/// module, a symlink's invoked name), else the executable's name.
enum ServiceIdentity {
    /// The node's name: in a Kubernetes pod the agent's own hostname is the pod's, so the downward-API
    /// `K8S_NODE_NAME` wins when set.
    static let hostName: String = {
        ProcessInfo.processInfo.environment["K8S_NODE_NAME"].flatMap { $0.isEmpty ? nil : $0 } ?? ProcessInfo.processInfo.hostName
    }()

    static func resource(for snapshot: ProcessSnapshot, executable: ExecutableInfo, rule: SelectionRule?,
                         environment: [String: String], cgroup: String, names: ProcessNames? = nil,
                         agentEnvironment: [String: String] = ProcessInfo.processInfo.environment) -> Resource {
        let fromEnvironment = parseResourceAttributes(environment["OTEL_RESOURCE_ATTRIBUTES"] ?? "")
        let executableName = URL(fileURLWithPath: snapshot.executablePath).lastPathComponent
        let serviceName = environment["OTEL_SERVICE_NAME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? fromEnvironment[SemanticConventions.serviceName]
            ?? rule?.serviceName
            ?? (names ?? ProcessNames.read(pid: snapshot.pid)).serviceName(executablePath: snapshot.executablePath)
            ?? executableName
        let namespacedPID = snapshot.namespacePIDs.last ?? snapshot.pid

        var attributes = Attributes(capacity: 16)
        attributes.appendUnchecked(SemanticConventions.serviceName, .string(serviceName))
        if let namespace = fromEnvironment[SemanticConventions.serviceNamespace] ?? rule?.serviceNamespace {
            attributes.appendUnchecked(SemanticConventions.serviceNamespace, .string(namespace))
        }
        attributes.appendUnchecked(SemanticConventions.serviceInstanceID, .string("\(hostName):\(snapshot.pid)"))
        attributes.appendUnchecked(SemanticConventions.processPID, .int(Int64(namespacedPID)))
        attributes.appendUnchecked(SemanticConventions.processExecutableName, .string(executableName))
        attributes.appendUnchecked(SemanticConventions.processExecutablePath, .string(snapshot.executablePath))
        if let runtime = runtime(of: executable) {
            attributes.appendUnchecked(SemanticConventions.processRuntimeName, .string(runtime.name))
            if let version = runtime.version { attributes.appendUnchecked(SemanticConventions.processRuntimeVersion, .string(version)) }
        }
        attributes.appendUnchecked(SemanticConventions.hostName, .string(hostName))
        for (key, value) in ContainerIdentity.attributes(cgroup: cgroup, processEnvironment: environment, agentEnvironment: agentEnvironment)
        where fromEnvironment[key] == nil {
            attributes.appendUnchecked(key, .string(value))
        }
        attributes.appendUnchecked(SemanticConventions.telemetrySDKName, .string("tracer"))
        attributes.appendUnchecked(SemanticConventions.telemetrySDKLanguage, .string(executable.language.rawValue))
        for (key, value) in fromEnvironment.sorted(by: { $0.key < $1.key })
        where key != SemanticConventions.serviceName && attributes[key] == nil {
            attributes.appendUnchecked(key, .string(value))
        }
        return Resource(attributes: attributes)
    }

    private static func runtime(of executable: ExecutableInfo) -> (name: String, version: String?)? {
        switch executable.language {
        case .go: ("go", executable.go?.buildInfo?.goVersion)
        case .python: ("cpython", nil)
        case .node: ("nodejs", nil)
        case .java: ("java", nil)
        case .dotnet: ("dotnet", nil)
        case .ruby: ("ruby", nil)
        case .native: nil
        }
    }

    /// `OTEL_RESOURCE_ATTRIBUTES`: comma-separated `key=value`, values percent-encoded (OTel SDK spec).
    static func parseResourceAttributes(_ text: String) -> [String: String] {
        var attributes: [String: String] = [:]
        for pair in text.split(separator: ",") {
            guard let equals = pair.firstIndex(of: "=") else { continue }
            let key = pair[..<equals].trimmingCharacters(in: .whitespaces)
            let value = pair[pair.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty else { continue }
            attributes[key] = value.removingPercentEncoding ?? value
        }
        return attributes
    }
}
