import Telemetry

/// Encodes metrics as an OTLP `ExportMetricsServiceRequest` (`opentelemetry/proto/metrics/v1`): histograms with
/// explicit bounds and monotonic sums, cumulative temporality (`AGGREGATION_TEMPORALITY_CUMULATIVE` = 2).
public enum OTLPMetricsEncoder {
    // Field numbers of opentelemetry-proto metrics messages.
    enum F {
        static let resourceMetrics: UInt32 = 1  // ExportMetricsServiceRequest
        static let resource: UInt32 = 1, scopeMetrics: UInt32 = 2  // ResourceMetrics
        static let scope: UInt32 = 1, metrics: UInt32 = 2  // ScopeMetrics
        static let name: UInt32 = 1, description: UInt32 = 2, unit: UInt32 = 3  // Metric
        static let gauge: UInt32 = 5, sum: UInt32 = 7, histogram: UInt32 = 9  // Metric.data
        static let dataPoints: UInt32 = 1, temporality: UInt32 = 2, isMonotonic: UInt32 = 3  // Sum / Histogram
        // HistogramDataPoint
        static let hStart: UInt32 = 2, hTime: UInt32 = 3, hCount: UInt32 = 4, hSum: UInt32 = 5
        static let hBucketCounts: UInt32 = 6, hBounds: UInt32 = 7, hAttributes: UInt32 = 9, hMin: UInt32 = 11, hMax: UInt32 = 12
        // NumberDataPoint
        static let nStart: UInt32 = 2, nTime: UInt32 = 3, nAsDouble: UInt32 = 4, nAttributes: UInt32 = 7
    }

    static let cumulative: UInt64 = 2

    /// Protobuf (`http/protobuf`).
    public static func encodeProtobuf(
        _ groups: [ResourceMetricsData], scope: InstrumentationScope, startTimeUnixNano: UInt64, timeUnixNano: UInt64,
        into w: inout ProtobufWriter
    ) {
        for group in groups where !group.metrics.isEmpty {
            let rm = w.beginMessage(F.resourceMetrics, lengthBytes: 2)
            w.resource(F.resource, group.resource)
            let sm = w.beginMessage(F.scopeMetrics, lengthBytes: 2)
            w.scope(F.scope, scope)
            for metric in group.metrics {
                let m = w.beginMessage(F.metrics, lengthBytes: 2)
                w.stringField(F.name, metric.name)
                if !metric.description.isEmpty { w.stringField(F.description, metric.description) }
                if !metric.unit.isEmpty { w.stringField(F.unit, metric.unit) }
                switch metric.points {
                case .histogram(let bounds, let points):
                    let h = w.beginMessage(F.histogram, lengthBytes: 2)
                    for p in points {
                        let dp = w.beginMessage(F.dataPoints, lengthBytes: 2)
                        w.attributes(F.hAttributes, p.attributes)
                        w.fixed64Field(F.hStart, startTimeUnixNano)
                        w.fixed64Field(F.hTime, timeUnixNano)
                        w.fixed64Field(F.hCount, p.count)
                        w.fixed64Field(F.hSum, p.sum.bitPattern)
                        let counts = w.beginMessage(F.hBucketCounts, lengthBytes: 2)  // packed fixed64
                        for c in p.bucketCounts { w.fixed64(c) }
                        w.endMessage(counts)
                        let b = w.beginMessage(F.hBounds, lengthBytes: 2)  // packed double
                        for bound in bounds { w.fixed64(bound.bitPattern) }
                        w.endMessage(b)
                        if let min = p.min { w.fixed64Field(F.hMin, min.bitPattern) }
                        if let max = p.max { w.fixed64Field(F.hMax, max.bitPattern) }
                        w.endMessage(dp)
                    }
                    w.varintField(F.temporality, cumulative)
                    w.endMessage(h)
                case .counter(let points), .gauge(let points):
                    let isCounter: Bool
                    if case .counter = metric.points { isCounter = true } else { isCounter = false }
                    let s = w.beginMessage(isCounter ? F.sum : F.gauge, lengthBytes: 2)
                    for p in points {
                        let dp = w.beginMessage(F.dataPoints)
                        w.attributes(F.nAttributes, p.attributes)
                        if isCounter { w.fixed64Field(F.nStart, startTimeUnixNano) }
                        w.fixed64Field(F.nTime, timeUnixNano)
                        w.fixed64Field(F.nAsDouble, p.value.bitPattern)
                        w.endMessage(dp)
                    }
                    if isCounter {
                        w.varintField(F.temporality, cumulative)
                        w.varintField(F.isMonotonic, 1)
                    }
                    w.endMessage(s)
                }
                w.endMessage(m)
            }
            w.endMessage(sm)
            w.endMessage(rm)
        }
    }

    /// OTLP/JSON (`http/json`): lowerCamelCase, 64-bit integers as strings, enums as integers.
    public static func encodeJSON(
        _ groups: [ResourceMetricsData], scope: InstrumentationScope, startTimeUnixNano: UInt64, timeUnixNano: UInt64,
        into out: inout [UInt8]
    ) {
        func put(_ s: String) { out.append(contentsOf: s.utf8) }
        put("{\"resourceMetrics\":[")
        for (gi, group) in groups.filter({ !$0.metrics.isEmpty }).enumerated() {
            if gi > 0 { put(",") }
            put("{\"resource\":")
            OTLPTraceJSONEncoder.resource(group.resource, into: &out)
            put(",\"scopeMetrics\":[{\"scope\":")
            OTLPTraceJSONEncoder.scope(scope, into: &out)
            put(",\"metrics\":[")
            for (mi, metric) in group.metrics.enumerated() {
                if mi > 0 { put(",") }
                put("{\"name\":")
                appendJSONString(metric.name, to: &out)
                put(",\"description\":")
                appendJSONString(metric.description, to: &out)
                put(",\"unit\":")
                appendJSONString(metric.unit, to: &out)
                switch metric.points {
                case .histogram(let bounds, let points):
                    put(",\"histogram\":{\"aggregationTemporality\":\(cumulative),\"dataPoints\":[")
                    for (pi, p) in points.enumerated() {
                        if pi > 0 { put(",") }
                        put("{\"attributes\":")
                        OTLPTraceJSONEncoder.attributes(p.attributes, into: &out)
                        put(",\"startTimeUnixNano\":\"\(startTimeUnixNano)\",\"timeUnixNano\":\"\(timeUnixNano)\",\"count\":\"\(p.count)\",\"sum\":")
                        appendJSONDouble(p.sum, to: &out)
                        put(",\"bucketCounts\":[" + p.bucketCounts.map { "\"\($0)\"" }.joined(separator: ",") + "]")
                        put(",\"explicitBounds\":[")
                        for (i, b) in bounds.enumerated() {
                            if i > 0 { put(",") }
                            appendJSONDouble(b, to: &out)
                        }
                        put("]")
                        if let min = p.min { put(",\"min\":"); appendJSONDouble(min, to: &out) }
                        if let max = p.max { put(",\"max\":"); appendJSONDouble(max, to: &out) }
                        put("}")
                    }
                    put("]}")
                case .counter(let points), .gauge(let points):
                    let isCounter: Bool
                    if case .counter = metric.points { isCounter = true } else { isCounter = false }
                    put(isCounter ? ",\"sum\":{\"aggregationTemporality\":\(cumulative),\"isMonotonic\":true," : ",\"gauge\":{")
                    put("\"dataPoints\":[")
                    for (pi, p) in points.enumerated() {
                        if pi > 0 { put(",") }
                        put("{\"attributes\":")
                        OTLPTraceJSONEncoder.attributes(p.attributes, into: &out)
                        if isCounter { put(",\"startTimeUnixNano\":\"\(startTimeUnixNano)\"") }
                        put(",\"timeUnixNano\":\"\(timeUnixNano)\",\"asDouble\":")
                        appendJSONDouble(p.value, to: &out)
                        put("}")
                    }
                    put("]}")
                }
                put("}")
            }
            put("]}]}")
        }
        put("]}")
    }
}
