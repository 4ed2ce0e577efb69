import BPFRuntime
import Synchronization
import TracerFramework

/// HTTP/2 and gRPC for any language (tracers/http2): a protocol parser on the shared capture layer —
/// cleartext h2c (prior knowledge and `Upgrade: h2c`) from socket data, HTTP/2 inside TLS from libssl's
/// plaintext. One span per stream on the server and the client side: gRPC streams follow the OTel RPC
/// conventions (`RPCSpans`), the others the HTTP ones (`HTTPSpans`, `network.protocol.version` 2).
public struct HTTP2Tracer: Tracer {
    public let name = "http2"
    public let statistics = HTTP2TracerCounters()

    public init() {}

    public var parser: (any ProtocolParser)? { HTTP2Parser(counters: statistics) }

    public func counters(object: BPFObject?) -> [TracerCounter] {
        let statistics = statistics
        return [
            TracerCounter("partial_headers", help: "Streams whose headers were only partly decoded (HPACK table unknown: a connection older than the agent, or header bytes not captured).") {
                statistics.partialHeaders.load(ordering: .relaxed)
            },
            TracerCounter("lost_frames", help: "Times a connection's frame boundaries were lost (bytes past the capture's prefix that were not inside a skipped payload).") {
                statistics.lostFrames.load(ordering: .relaxed)
            },
            TracerCounter("malformed", help: "Frames or header blocks that did not decode (HPACK errors, bad padding).") {
                statistics.malformed.load(ordering: .relaxed)
            },
            TracerCounter("reset_streams", help: "Streams ended by RST_STREAM.") {
                statistics.resetStreams.load(ordering: .relaxed)
            },
            TracerCounter("abandoned_streams", help: "Streams dropped because a connection had more than 256 open.") {
                statistics.abandonedStreams.load(ordering: .relaxed)
            },
            TracerCounter("unmatched_streams", help: "Response headers for a stream whose request was not seen.") {
                statistics.unmatchedStreams.load(ordering: .relaxed)
            },
            TracerCounter("joined_mid_stream", help: "Connections claimed from their frames, without the preface (opened before the agent).") {
                statistics.joinedMidStream.load(ordering: .relaxed)
            },
            TracerCounter("declined_upgrades", help: "Upgrade: h2c requests the server answered without 101 (HTTP/1 connections, not traced by this parser).") {
                statistics.declinedUpgrades.load(ordering: .relaxed)
            },
        ]
    }

    public func applicability(to process: TracedProcess) -> Applicability { .applies }
}

/// Counters of the HTTP/2 parser, for the agent's self-metrics.
public final class HTTP2TracerCounters: Sendable {
    public let partialHeaders = Atomic<UInt64>(0)
    public let lostFrames = Atomic<UInt64>(0)
    public let malformed = Atomic<UInt64>(0)
    public let resetStreams = Atomic<UInt64>(0)
    public let abandonedStreams = Atomic<UInt64>(0)
    public let unmatchedStreams = Atomic<UInt64>(0)
    public let joinedMidStream = Atomic<UInt64>(0)
    public let declinedUpgrades = Atomic<UInt64>(0)

    public init() {}
}
