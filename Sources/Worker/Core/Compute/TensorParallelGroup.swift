import Collectives

/// Where the ranks of one tensor-parallel group meet, and how long they wait for each other.
public struct GroupSettings: Sendable, Equatable {
    public enum Transport: Sendable, Equatable {
        /// The ranks of one host, in a shared-memory segment of this name (`/tessel-…`).
        case sharedMemory(name: String)
        /// Ranks on any hosts, over TCP: every rank's endpoint in rank order.
        case tcp([CollectiveEndpoint])
        /// Several hosts with several ranks each: shared memory within a host (`sharedMemoryName`
        /// and the host's index), TCP between the hosts' first ranks.
        case hierarchical([CollectiveEndpoint], sharedMemoryName: String)

        /// Ranks whose endpoints name one host share memory: one host is `sharedMemory`, one
        /// rank per host is `tcp`, and anything else `hierarchical`.
        public static func byHost(_ endpoints: [CollectiveEndpoint], sharedMemoryName: String) throws -> Transport {
            let layout = try HostLayout(endpoints: endpoints)
            if layout.hosts.count == 1 { return .sharedMemory(name: sharedMemoryName) }
            return layout.isHierarchical ? .hierarchical(endpoints, sharedMemoryName: sharedMemoryName) : .tcp(endpoints)
        }
    }

    public var transport: Transport
    /// How long a rank waits at load for the others to join.
    public var joinTimeout: Duration
    /// How long a rank waits at one collective for a peer that is alive (a dead one fails it at once).
    public var timeout: Duration
    /// Seals the TCP payloads (`--curve-keys`); shared memory stays within the host.
    public var key: CollectiveKey?

    public init(_ transport: Transport, joinTimeout: Duration = .seconds(600), timeout: Duration = .seconds(10)) {
        self.transport = transport
        self.joinTimeout = joinTimeout
        self.timeout = timeout
    }

    public var description: String {
        switch transport {
        case .sharedMemory(let name): "shared memory \(name)"
        case .tcp(let endpoints): "TCP \(endpoints.map(\.description).joined(separator: ","))"
        case .hierarchical(let endpoints, let name):
            "shared memory \(name) within each host, TCP across \(endpoints.map(\.description).joined(separator: ","))"
        }
    }

    /// Joins the group as `rank` of `worldSize`, with collectives of up to `capacityBytes`.
    func join(rank: Int, worldSize: Int, capacityBytes: Int, fingerprint: UInt64) throws -> any Communicator {
        switch transport {
        case .sharedMemory(let name):
            return try SharedMemoryGroup(name: name, rank: rank, worldSize: worldSize, slotBytes: capacityBytes,
                                         fingerprint: fingerprint, joinTimeout: joinTimeout, timeout: timeout)
        case .tcp(let endpoints):
            try check(endpoints, worldSize: worldSize)
            return try SocketGroup(endpoints: endpoints, rank: rank, capacityBytes: capacityBytes, fingerprint: fingerprint,
                                   key: key, joinTimeout: joinTimeout, timeout: timeout)
        case .hierarchical(let endpoints, let name):
            try check(endpoints, worldSize: worldSize)
            return try HierarchicalGroup(endpoints: endpoints, rank: rank, sharedMemoryName: name, capacityBytes: capacityBytes,
                                         fingerprint: fingerprint, key: key, joinTimeout: joinTimeout, timeout: timeout)
        }
    }

    private func check(_ endpoints: [CollectiveEndpoint], worldSize: Int) throws {
        guard endpoints.count == worldSize else {
            throw CollectiveError.joinFailed(group: description, rank: nil, detail:
                "\(endpoints.count) collective endpoints given for a group of \(worldSize) ranks")
        }
    }
}

/// The model's collectives, run on the compute pool: with shared memory the copy into and the
/// sum out of the shared slots are split over the pool's threads.
public final class TensorParallelGroup: @unchecked Sendable {
    public let group: any Communicator
    let pool: ComputePool
    /// Floats per thread below which a copy or sum stays on one thread.
    static let floatsPerThread = 8192

    init(group: any Communicator, pool: ComputePool) {
        self.group = group
        self.pool = pool
    }

    public var rank: Int { group.rank }
    public var worldSize: Int { group.worldSize }
    public var failure: CollectiveError? { group.failure }
    public var groupID: UInt64 { group.groupID }

    /// Records a failure if a peer's process is gone.
    public func checkPeers() { group.checkPeers() }

    /// In place: every rank ends with the sum of every rank's `values`.
    func allReduce(_ values: UnsafeMutablePointer<Float>, count: Int) {
        let pool = self.pool
        group.allReduceSum(values, count: count) { count, body in
            pool.forEachRange(count, granule: 16, minimumPerThread: Self.floatsPerThread, body)
        }
        pool.progress.advance()
    }

    /// In place: every rank ends with rank 0's `values`, as an allreduce to which the other ranks
    /// give zeros (exact: x + 0 is x). For a handful of values, where one collective's latency is
    /// all it costs.
    func broadcastFromRankZero(_ values: UnsafeMutablePointer<Float>, count: Int) {
        if rank != 0 { values.update(repeating: 0, count: count) }
        allReduce(values, count: count)
    }

    /// Rank 0 gets every rank's columns side by side (see `Communicator.gatherColumns`).
    func gatherColumns(_ part: UnsafePointer<Float>, rows: Int, columns: [Int], into whole: UnsafeMutablePointer<Float>) {
        let pool = self.pool
        group.gatherColumns(part, rows: rows, columns: columns, into: whole) { count, body in
            pool.forEachRange(count, minimumPerThread: max(1, Self.floatsPerThread / max(1, columns.max() ?? 1)), body)
        }
        pool.progress.advance()
    }
}
