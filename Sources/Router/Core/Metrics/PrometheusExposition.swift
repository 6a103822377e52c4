/// Observations counted into fixed buckets, as a Prometheus histogram exposes them. Observing
/// allocates nothing: the buckets are made once.
public struct Histogram: Sendable, Equatable {
    /// Upper bounds of the buckets, ascending; a last, implicit bucket is +Inf.
    public let upperBounds: [Double]
    /// Observations per bucket (not cumulative); one more entry than `upperBounds`, for +Inf.
    public private(set) var bucketCounts: [UInt64]
    public private(set) var sum: Double = 0
    public private(set) var count: UInt64 = 0

    public init(upperBounds: [Double]) {
        precondition(zip(upperBounds, upperBounds.dropFirst()).allSatisfy { $0 < $1 }, "bucket bounds must ascend")
        self.upperBounds = upperBounds
        bucketCounts = Array(repeating: 0, count: upperBounds.count + 1)
    }

    public mutating func observe(_ value: Double) {
        var bucket = 0
        while bucket < upperBounds.count, value > upperBounds[bucket] { bucket += 1 }
        bucketCounts[bucket] += 1
        sum += value
        count += 1
    }
}

/// Prometheus' text exposition format 0.0.4 (what `prometheus_client` and every scraper read):
/// `# HELP` and `# TYPE` once per family, then one line per sample. Written by hand rather than
/// through swift-prometheus: the router exposes a dozen fixed families computed at scrape time,
/// which does not need a registry, swift-metrics or atomics in the build.
public struct PrometheusExposition: Sendable {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"
    public private(set) var text = ""

    public init() {}

    public mutating func counter(_ name: String, help: String, samples: [(labels: [(String, String)], value: Double)]) {
        family(name, type: "counter", help: help)
        for sample in samples { line(name, sample.labels, sample.value) }
    }

    public mutating func gauge(_ name: String, help: String, labels: [(String, String)], value: Double) {
        family(name, type: "gauge", help: help)
        line(name, labels, value)
    }

    /// `name_bucket{le=…}` (cumulative, ending with +Inf), `name_sum` and `name_count` per series.
    public mutating func histogram(_ name: String, help: String, series: [(labels: [(String, String)], histogram: Histogram)]) {
        family(name, type: "histogram", help: help)
        for (labels, histogram) in series {
            var cumulative: UInt64 = 0
            for (index, count) in histogram.bucketCounts.enumerated() {
                cumulative += count
                let bound = index < histogram.upperBounds.count ? Self.format(histogram.upperBounds[index]) : "+Inf"
                line(name + "_bucket", labels + [("le", bound)], Double(cumulative))
            }
            line(name + "_sum", labels, histogram.sum)
            line(name + "_count", labels, Double(histogram.count))
        }
    }

    private mutating func family(_ name: String, type: String, help: String) {
        text += "# HELP \(name) \(help.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n"))\n"
        text += "# TYPE \(name) \(type)\n"
    }

    private mutating func line(_ name: String, _ labels: [(String, String)], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        text += " " + Self.format(value) + "\n"
    }

    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    /// Whole numbers without a fraction (`12`, not `12.0`), others as Swift's shortest round trip.
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }
}
