/// The entity that produced telemetry: OTLP `Resource` (its attributes, e.g. `service.name`, `process.pid`).
///
/// A reference type on purpose: a process's resource is built once and shared by all its spans, so exporters
/// group spans by object identity first and only compare attributes between the few distinct objects of a batch.
public final class Resource: Sendable, Hashable, CustomStringConvertible {
    public let attributes: Attributes
    /// `service.name`, if set (looked up once: every span's metrics ask).
    public let serviceName: String?

    public init(attributes: Attributes) {
        self.attributes = attributes
        serviceName = attributes[SemanticConventions.serviceName]?.stringValue
    }

    /// A resource with no attributes.
    public static let empty = Resource(attributes: Attributes())

    /// A new resource with `other`'s attributes layered over this one's (OTel resource merge: the updating
    /// resource wins).
    public func merging(_ other: Attributes) -> Resource {
        var merged = attributes
        merged.merge(other)
        return Resource(attributes: merged)
    }

    public static func == (a: Resource, b: Resource) -> Bool { a === b || a.attributes == b.attributes }
    public func hash(into hasher: inout Hasher) { hasher.combine(attributes) }

    public var description: String {
        attributes.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }
}

/// The instrumentation that produced spans: OTLP `InstrumentationScope` (for this agent, one per tracer plugin).
/// Shared by reference like `Resource`.
public final class InstrumentationScope: Sendable, Hashable {
    public let name: String
    public let version: String
    public let attributes: Attributes

    public init(name: String, version: String = "", attributes: Attributes = Attributes()) {
        self.name = name
        self.version = version
        self.attributes = attributes
    }

    public static func == (a: InstrumentationScope, b: InstrumentationScope) -> Bool {
        a === b || (a.name == b.name && a.version == b.version && a.attributes == b.attributes)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(version)
    }
}
