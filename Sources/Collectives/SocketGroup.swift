import CCollectives
#if canImport(Glibc)
import Glibc
#endif

/// Where one rank of a TCP group listens: `tcp://host:port` (host a name, an IPv4 literal or a
/// bracketed IPv6 literal).
public struct CollectiveEndpoint: Sendable, Equatable, CustomStringConvertible {
    public let host: String
    public let port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init(parsing text: String) throws {
        guard text.hasPrefix("tcp://") else { throw CollectiveError.invalidEndpoint(text, reason: "it must start with tcp://") }
        let rest = text.dropFirst("tcp://".count)
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else {
            throw CollectiveError.invalidEndpoint(text, reason: "it needs a port from 1 to 65535 after the host")
        }
        var host = rest[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { throw CollectiveError.invalidEndpoint(text, reason: "the host is empty") }
        self.init(host: String(host), port: port)
    }

    /// A comma-separated list, one endpoint per rank in rank order.
    public static func list(_ text: String) throws -> [CollectiveEndpoint] {
        try text.split(separator: ",").map { part in
            try CollectiveEndpoint(parsing: String(part.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed()))
        }
    }

    public var description: String { host.contains(":") ? "tcp://[\(host)]:\(port)" : "tcp://\(host):\(port)" }
}

/// The secret a TCP group encrypts its payloads with: 32 bytes every rank holds (the workers'
/// CURVE secret key, `router keygen`).
public struct CollectiveKey: Sendable, Equatable {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }
}

/// The ranks of a group on several hosts meeting over TCP (tessel_net.h): a connection between
/// every two ranks, payloads sent as they are. Small allreduces (and every one with two ranks)
/// exchange whole buffers and sum in rank order; larger ones with more ranks go round a ring.
public final class SocketGroup: Communicator, @unchecked Sendable {
    public let endpoints: [CollectiveEndpoint]
    public let rank: Int
    public var worldSize: Int { endpoints.count }
    public let capacityBytes: Int
    /// How long a rank waits for a live peer that sends nothing.
    public let timeout: Duration
    /// Up to this payload, allreduces exchange whole buffers (one round trip) rather than going
    /// round the ring (2 (N − 1) round trips of 1/N of it).
    public static let directBytes = 64 << 10
    private let handle: OpaquePointer
    private let latch = FailureLatch()
    /// The float a barrier reduces.
    private let token = UnsafeMutablePointer<Float>.allocate(capacity: 1)

    /// Joins the group whose ranks listen at `endpoints` (rank order; this rank listens on its
    /// own entry), waiting up to `joinTimeout` for every peer. `fingerprint` must be equal on
    /// every rank (the model and its shard geometry): a peer of another is refused by name.
    /// With `key`, payloads are encrypted and authenticated, and a peer without it is refused.
    public init(endpoints: [CollectiveEndpoint], rank: Int, capacityBytes: Int, fingerprint: UInt64,
                key: CollectiveKey? = nil, joinTimeout: Duration, timeout: Duration = .seconds(10)) throws {
        var net: OpaquePointer?
        var failed: Int32 = -1
        var message = [CChar](repeating: 0, count: 512)
        let hosts = endpoints.map { strdup($0.host) }
        defer { hosts.forEach { free($0) } }
        let ports = endpoints.map { Int32($0.port) }
        let status = hosts.map { UnsafePointer($0) }.withUnsafeBufferPointer { hostList in
            func join(_ key: UnsafePointer<UInt8>?) -> tc_status {
                tc_net_join(hostList.baseAddress, ports, Int32(rank), Int32(endpoints.count), fingerprint,
                            max(capacityBytes, 4), key, joinTimeout.nanoseconds, &net, &failed, &message, message.count)
            }
            guard let key else { return join(nil) }
            return key.bytes.withUnsafeBufferPointer { join($0.baseAddress) }
        }
        guard status == TC_OK, let net else {
            let detail = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw CollectiveError.joinFailed(group: endpoints.map(\.description).joined(separator: ","),
                                             rank: failed >= 0 ? Int(failed) : nil, detail: detail)
        }
        handle = net
        self.endpoints = endpoints
        self.rank = rank
        self.capacityBytes = max(capacityBytes, 4)
        self.timeout = timeout
    }

    deinit {
        tc_net_close(handle)
        token.deallocate()
    }

    public var failure: CollectiveError? { latch.failure }

    public var groupID: UInt64 { tc_net_group_id(handle) }

    public func allReduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, split: CollectiveSplit) {
        guard count > 0, check(bytes: count * 4) else { return }
        var failed: Int32 = -1
        let status = tc_net_allreduce_sum(handle, values, count, Self.directBytes, timeout.nanoseconds, &failed)
        record(status, rank: failed)
    }

    public func gatherColumns(_ part: UnsafePointer<Float>, rows: Int, columns: [Int],
                              into whole: UnsafeMutablePointer<Float>, split: CollectiveSplit) {
        guard check(bytes: rows * (columns.max() ?? 0) * 4) else { return }
        var failed: Int32 = -1
        let status = withUnsafeTemporaryAllocation(of: Int.self, capacity: columns.count) { widths in
            for (index, width) in columns.enumerated() { widths[index] = width }
            return tc_net_gather_columns(handle, part, rows, widths.baseAddress, whole, timeout.nanoseconds, &failed)
        }
        record(status, rank: failed)
    }

    public func barrier() {
        token.pointee = 0
        allReduceSum(token, count: 1) { count, body in body(0..<count) }
    }

    public func checkPeers() {
        var failed: Int32 = -1
        if !latch.isSet, tc_net_peers_alive(handle, &failed) == 0 { latch.record(.peerDied(rank: Int(failed))) }
    }

    private func check(bytes: Int) -> Bool {
        guard !latch.isSet else { return false }
        guard bytes <= capacityBytes else {
            latch.record(.bufferTooLarge(bytes: bytes, slotBytes: capacityBytes))
            return false
        }
        return true
    }

    private func record(_ status: tc_status, rank: Int32) {
        switch status {
        case TC_OK: return
        case TC_PEER_DEAD: latch.record(.peerDied(rank: Int(rank)))
        case TC_TIMEOUT: latch.record(.peerStalled(rank: Int(rank), seconds: timeout.seconds))
        case TC_FORGED: latch.record(.forged(rank: Int(rank)))
        default: latch.record(.outOfStep(rank: Int(rank)))
        }
    }
}
