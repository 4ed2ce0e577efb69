/// Attribute keys from the OpenTelemetry semantic conventions (registry, stable HTTP/network/service names)
/// used by the tracers, printers and RED metrics. Only keys the agent emits or reads are listed.
public enum SemanticConventions {
    // HTTP (semconv `http.*`, stable since 1.23).
    public static let httpRequestMethod = "http.request.method"
    public static let httpRequestMethodOriginal = "http.request.method_original"
    public static let httpRoute = "http.route"
    public static let httpResponseStatusCode = "http.response.status_code"
    public static let httpRequestBodySize = "http.request.body.size"
    public static let httpResponseBodySize = "http.response.body.size"
    public static let urlPath = "url.path"
    public static let urlQuery = "url.query"
    public static let urlScheme = "url.scheme"
    public static let urlFull = "url.full"
    public static let errorType = "error.type"
    public static let userAgentOriginal = "user_agent.original"

    // Network.
    public static let serverAddress = "server.address"
    public static let serverPort = "server.port"
    public static let clientAddress = "client.address"
    public static let clientPort = "client.port"
    public static let networkProtocolName = "network.protocol.name"
    public static let networkProtocolVersion = "network.protocol.version"
    public static let networkPeerAddress = "network.peer.address"
    public static let networkPeerPort = "network.peer.port"
    public static let networkTransport = "network.transport"

    // RPC.
    public static let rpcSystem = "rpc.system"
    public static let rpcService = "rpc.service"
    public static let rpcMethod = "rpc.method"
    public static let rpcGRPCStatusCode = "rpc.grpc.status_code"

    // Database (stable since semconv 1.33).
    public static let dbSystemName = "db.system.name"
    public static let dbNamespace = "db.namespace"
    public static let dbCollectionName = "db.collection.name"
    public static let dbOperationName = "db.operation.name"
    public static let dbQueryText = "db.query.text"
    public static let dbOperationBatchSize = "db.operation.batch.size"
    public static let dbResponseStatusCode = "db.response.status_code"

    // Messaging.
    public static let messagingSystem = "messaging.system"
    public static let messagingDestinationName = "messaging.destination.name"
    public static let messagingOperationType = "messaging.operation.type"
    public static let messagingOperationName = "messaging.operation.name"
    public static let messagingMessageBodySize = "messaging.message.body.size"
    public static let messagingDestinationTemplate = "messaging.destination.template"
    public static let messagingDestinationTemporary = "messaging.destination.temporary"

    // Resource: service.
    public static let serviceName = "service.name"
    public static let serviceNamespace = "service.namespace"
    public static let serviceVersion = "service.version"
    public static let serviceInstanceID = "service.instance.id"

    // Resource: process.
    public static let processPID = "process.pid"
    public static let processParentPID = "process.parent_pid"
    public static let processExecutableName = "process.executable.name"
    public static let processExecutablePath = "process.executable.path"
    public static let processCommand = "process.command"
    public static let processCommandLine = "process.command_line"
    public static let processOwner = "process.owner"
    public static let processRuntimeName = "process.runtime.name"
    public static let processRuntimeVersion = "process.runtime.version"
    public static let processRuntimeDescription = "process.runtime.description"

    // Resource: host, OS, container, Kubernetes.
    public static let hostName = "host.name"
    public static let hostID = "host.id"
    public static let hostArch = "host.arch"
    public static let osType = "os.type"
    public static let containerID = "container.id"
    public static let containerName = "container.name"
    public static let k8sNamespaceName = "k8s.namespace.name"
    public static let k8sPodName = "k8s.pod.name"
    public static let k8sPodUID = "k8s.pod.uid"
    public static let k8sContainerName = "k8s.container.name"
    public static let k8sNodeName = "k8s.node.name"
    public static let k8sDeploymentName = "k8s.deployment.name"
    public static let k8sReplicaSetName = "k8s.replicaset.name"
    public static let k8sDaemonSetName = "k8s.daemonset.name"
    public static let k8sStatefulSetName = "k8s.statefulset.name"
    public static let k8sJobName = "k8s.job.name"
    public static let k8sCronJobName = "k8s.cronjob.name"

    // Resource: the telemetry SDK (this agent).
    public static let telemetrySDKName = "telemetry.sdk.name"
    public static let telemetrySDKLanguage = "telemetry.sdk.language"
    public static let telemetrySDKVersion = "telemetry.sdk.version"
    public static let telemetryDistroName = "telemetry.distro.name"
    public static let telemetryDistroVersion = "telemetry.distro.version"
}
