/// Which ranks share a host, read off their TCP endpoints: ranks whose endpoints name the same
/// host meet in shared memory, and the first rank of each host (its leader) meets the other
/// hosts' leaders over TCP. A host's ranks must be consecutive, so that the hosts' columns of a
/// gather follow each other in rank order.
public struct HostLayout: Sendable, Equatable {
    /// Per host, in order of their first rank: its ranks.
    public let hosts: [Range<Int>]

    public init(endpoints: [CollectiveEndpoint]) throws {
        var hosts: [Range<Int>] = []
        var names: [String] = []
        for (rank, endpoint) in endpoints.enumerated() {
            if names.last == endpoint.host {
                hosts[hosts.count - 1] = hosts[hosts.count - 1].lowerBound..<(rank + 1)
                continue
            }
            guard !names.contains(endpoint.host) else {
                throw CollectiveError.invalidEndpoint(endpoint.description, reason:
                    "the ranks of host \(endpoint.host) must be consecutive (rank \(rank) follows a rank of another host)")
            }
            names.append(endpoint.host)
            hosts.append(rank..<(rank + 1))
        }
        self.hosts = hosts
    }

    /// Several hosts, one of them with several ranks: the case for a hierarchical group.
    public var isHierarchical: Bool { hosts.count > 1 && hosts.contains { $0.count > 1 } }

    public func host(of rank: Int) -> Int { hosts.firstIndex { $0.contains(rank) }! }
}

/// A group spanning hosts with several ranks each: the ranks of a host meet in shared memory,
/// the hosts' leaders over TCP. An allreduce sums within each host, then across the leaders,
/// then hands the leader's total to its host (the others add zeros to it, so every rank ends
/// with the same bits); a gather collects each host's columns on its leader, then the leaders'
/// on rank 0. Errors name global ranks.
public final class HierarchicalGroup: Communicator, @unchecked Sendable {
    public let rank: Int
    public let worldSize: Int
    public let capacityBytes: Int
    public let layout: HostLayout
    /// This host's ranks in shared memory (nil when it has only this one).
    private let local: SharedMemoryGroup?
    /// On a host's leader: the leaders of every host.
    private let leaders: SocketGroup?
    private let host: Int
    private let latch = FailureLatch()
    public let groupID: UInt64
    /// On a leader: its host's columns of a gather, side by side.
    private let hostColumns: UnsafeMutablePointer<Float>

    /// Joins as `rank` of the group whose ranks listen at `endpoints`; the ranks of each host
    /// meet in the shared-memory segment `sharedMemoryName` + the host's index (so two "hosts"
    /// on one machine keep apart).
    public init(endpoints: [CollectiveEndpoint], rank: Int, sharedMemoryName: String, capacityBytes: Int,
                fingerprint: UInt64, key: CollectiveKey? = nil, joinTimeout: Duration, timeout: Duration = .seconds(10)) throws {
        let layout = try HostLayout(endpoints: endpoints)
        let host = layout.host(of: rank)
        let ranks = layout.hosts[host]
        self.rank = rank
        worldSize = endpoints.count
        self.capacityBytes = capacityBytes
        self.layout = layout
        self.host = host
        // A leader's share of a gather is its whole host's columns.
        let widest = layout.hosts.map(\.count).max() ?? 1
        // Leaders meet first: the others wait for their leader in the segment's join (bounded by
        // `joinTimeout`), not at a first collective (bounded by `timeout`).
        let leaders = rank == ranks.lowerBound
            ? try SocketGroup(endpoints: layout.hosts.map { endpoints[$0.lowerBound] }, rank: host,
                              capacityBytes: capacityBytes * widest, fingerprint: fingerprint, key: key, joinTimeout: joinTimeout,
                              timeout: timeout)
            : nil
        let local = ranks.count > 1
            ? try SharedMemoryGroup(name: "\(sharedMemoryName)-\(host)", rank: rank - ranks.lowerBound, worldSize: ranks.count,
                                    slotBytes: capacityBytes, fingerprint: fingerprint, joinTimeout: joinTimeout,
                                    timeout: timeout)
            : nil
        // The leaders' formation names the group; each leader hands it to its host 16 bits a float.
        var id = [Float](repeating: 0, count: 4)
        if let leaders {
            for part in 0..<4 { id[part] = Float((leaders.groupID >> (16 * UInt64(part))) & 0xFFFF) }
        }
        id.withUnsafeMutableBufferPointer { local?.allReduceSum($0.baseAddress!, count: 4) { $1(0..<$0) } }
        groupID = (0..<4).reduce(UInt64(0)) { $0 | UInt64(id[$1]) << (16 * UInt64($1)) }
        self.local = local
        self.leaders = leaders
        hostColumns = .allocate(capacity: max(1, capacityBytes * widest / MemoryLayout<Float>.stride))
        guard healthy() else { throw latch.failure! }
    }

    deinit { hostColumns.deallocate() }

    public var failure: CollectiveError? { latch.failure }

    public func allReduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, split: CollectiveSplit) {
        guard count > 0, !latch.isSet else { return }
        local?.allReduceSum(values, count: count, split: split)
        guard healthy() else { return }
        if let leaders {
            leaders.allReduceSum(values, count: count, split: split)
            guard healthy() else { return }
        } else {
            split(count) { range in (values + range.lowerBound).update(repeating: 0, count: range.count) }
        }
        local?.allReduceSum(values, count: count, split: split)
        _ = healthy()
    }

    public func gatherColumns(_ part: UnsafePointer<Float>, rows: Int, columns: [Int],
                              into whole: UnsafeMutablePointer<Float>, split: CollectiveSplit) {
        guard !latch.isSet else { return }
        var own = part
        if let local {
            local.gatherColumns(part, rows: rows, columns: Array(columns[layout.hosts[host]]), into: hostColumns, split: split)
            guard healthy() else { return }
            own = UnsafePointer(hostColumns)
        }
        leaders?.gatherColumns(own, rows: rows, columns: layout.hosts.map { columns[$0].reduce(0, +) }, into: whole,
                               split: split)
        _ = healthy()
    }

    public func barrier() {
        guard !latch.isSet else { return }
        local?.barrier()
        guard healthy() else { return }
        leaders?.barrier()
        guard healthy() else { return }
        local?.barrier()
        _ = healthy()
    }

    public func checkPeers() {
        local?.checkPeers()
        leaders?.checkPeers()
        _ = healthy()
    }

    /// Copies a part's first failure into this group's, with the rank it names made global;
    /// false once the group has failed. A failed leader leaves its host waiting for it: the
    /// worker exits on a failed collective, and the others then see it die.
    private func healthy() -> Bool {
        if let failure = local?.failure { latch.record(global(failure, leaders: false)) }
        if let failure = leaders?.failure { latch.record(global(failure, leaders: true)) }
        return !latch.isSet
    }

    /// Copies a part's first failure into this group's, with the rank it names made global.
    private func global(_ failure: CollectiveError, leaders: Bool) -> CollectiveError {
        func map(_ rank: Int) -> Int { leaders ? layout.hosts[rank].lowerBound : layout.hosts[host].lowerBound + rank }
        switch failure {
        case .peerDied(let rank): return .peerDied(rank: map(rank))
        case .peerStalled(let rank, let seconds): return .peerStalled(rank: map(rank), seconds: seconds)
        case .outOfStep(let rank): return .outOfStep(rank: map(rank))
        case .forged(let rank): return .forged(rank: map(rank))
        case .joinFailed(let group, let rank, let detail): return .joinFailed(group: group, rank: rank.map(map), detail: detail)
        default: return failure
        }
    }
}
