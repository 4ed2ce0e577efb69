import Telemetry

/// One message a client published or had delivered (NATS `PUB`/`HPUB`, `MSG`/`HMSG`): the input of
/// ``MessagingSpans``.
public struct MessagingExchange: Sendable {
    /// What the client did with the message (semconv `messaging.operation.type`).
    public enum Operation: String, Sendable {
        /// The client published it (PRODUCER span, type `send`, name `publish`).
        case publish
        /// It was delivered to the client (CONSUMER span, type `process`, name `process`).
        case process
    }

    public var pid: UInt32
    /// `messaging.system` (`nats`).
    public var system: String
    public var operation: Operation
    /// The subject or topic.
    public var destination: String
    /// Bytes of the payload (headers excluded).
    public var bodySize: Int?
    /// The broker's end and this process's end of the connection.
    public var peer: SocketAddress?
    public var local: SocketAddress?
    /// The broker refused the message (`-ERR` right after it).
    public var failed = false
    /// The broker's error text (`-ERR 'Permissions Violation…'`), when failed.
    public var errorMessage: String?
    /// `error.type` when failed (low cardinality: `Permissions Violation`); `_OTHER` when nil.
    public var errorType: String?
    /// The side of the connection the process is on: a client (publisher or subscriber), or the broker that read
    /// a published message (SERVER span).
    public var role: ExchangeRole = .client
    /// `messaging.destination.template`: a low-cardinality stand-in for a generated destination name (NATS
    /// `_INBOX.>`); it names the span instead of the destination.
    public var destinationTemplate: String?
    /// `messaging.destination.temporary`: the destination lives only for one conversation (a reply inbox).
    public var temporaryDestination = false
    /// CLOCK_MONOTONIC nanoseconds.
    public var start: UInt64
    public var end: UInt64
    public var identity: SpanIdentity

    public init(pid: UInt32, system: String, operation: Operation, destination: String, start: UInt64, end: UInt64, identity: SpanIdentity) {
        self.pid = pid
        self.system = system
        self.operation = operation
        self.destination = destination
        self.start = start
        self.end = end
        self.identity = identity
    }
}

/// The one span builder of the messaging semantic-convention family: name `{operation} {destination}` (the
/// destination's template when it has one), PRODUCER for a publish, CONSUMER for a delivery, SERVER for a message
/// a broker read; `messaging.system`, `messaging.destination.name`,
/// `messaging.operation.type` (`send` / `process`), `messaging.operation.name`, `messaging.message.body.size`,
/// `server.*` (the broker) and `network.peer.*`.
public enum MessagingSpans {
    public static func span(_ exchange: MessagingExchange, resource: Resource, scope: InstrumentationScope,
                            unixNanoseconds: (UInt64) -> UInt64) -> Span {
        var attributes = Attributes(capacity: 10)
        let (type, name) = switch exchange.operation {
        case .publish: ("send", "publish")
        case .process: ("process", "process")
        }
        attributes.appendUnchecked(SemanticConventions.messagingSystem, .string(exchange.system))
        attributes.appendUnchecked(SemanticConventions.messagingDestinationName, .string(exchange.destination))
        attributes.appendUnchecked(SemanticConventions.messagingOperationType, .string(type))
        attributes.appendUnchecked(SemanticConventions.messagingOperationName, .string(name))
        if let template = exchange.destinationTemplate {
            attributes.appendUnchecked(SemanticConventions.messagingDestinationTemplate, .string(template))
        }
        if exchange.temporaryDestination { attributes.appendUnchecked(SemanticConventions.messagingDestinationTemporary, true) }
        if let size = exchange.bodySize { attributes.appendUnchecked(SemanticConventions.messagingMessageBodySize, .int(Int64(size))) }
        if exchange.role == .server {
            // The broker's side: it is the server, the publisher its client.
            attributes.appendConnectionEnds(server: exchange.local, client: exchange.peer, peer: exchange.peer)
        } else if let broker = exchange.peer {
            attributes.appendUnchecked(SemanticConventions.serverAddress, .string(broker.address))
            attributes.appendUnchecked(SemanticConventions.serverPort, .int(Int64(broker.port)))
            attributes.appendUnchecked(SemanticConventions.networkPeerAddress, .string(broker.address))
            attributes.appendUnchecked(SemanticConventions.networkPeerPort, .int(Int64(broker.port)))
        }
        var status = SpanStatus.unset
        if exchange.failed {
            status = .error(message: exchange.errorMessage ?? "")
            attributes.appendUnchecked(SemanticConventions.errorType, .string(exchange.errorType ?? "_OTHER"))
        }
        let start = unixNanoseconds(exchange.start)
        let end = max(unixNanoseconds(exchange.end), start)
        let identity = exchange.identity
        attributes.appendParentSource(of: identity)
        let kind: SpanKind = exchange.role == .server ? .server : exchange.operation == .publish ? .producer : .consumer
        return Span(name: "\(name) \(exchange.destinationTemplate ?? exchange.destination)", kind: kind,
                    traceID: identity.traceID, spanID: identity.spanID, parentSpanID: identity.parentSpanID, flags: identity.flags,
                    startTimeUnixNano: start, endTimeUnixNano: end, status: status, attributes: attributes, resource: resource, scope: scope)
    }
}
