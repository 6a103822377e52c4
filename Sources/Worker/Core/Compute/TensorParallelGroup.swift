import Collectives

/// Where the ranks of one tensor-parallel group meet, and how long they wait for each other.
public struct GroupSettings: Sendable, Equatable {
    /// The shared-memory name of the group (`/tessel-…`), equal on every rank.
    public var name: String
    /// How long a rank waits at load for the others to join.
    public var joinTimeout: Duration
    /// How long a rank waits at one collective for a peer that is alive (a dead one fails it at once).
    public var timeout: Duration

    public init(name: String, joinTimeout: Duration = .seconds(600), timeout: Duration = .seconds(10)) {
        self.name = name
        self.joinTimeout = joinTimeout
        self.timeout = timeout
    }
}

/// The model's collectives, run on the compute pool: the copy into and the sum out of the
/// shared slots are split over the pool's threads.
public final class TensorParallelGroup: @unchecked Sendable {
    public let group: SharedMemoryGroup
    let pool: ComputePool
    /// Floats per thread below which a copy or sum stays on one thread.
    static let floatsPerThread = 8192

    init(group: SharedMemoryGroup, pool: ComputePool) {
        self.group = group
        self.pool = pool
    }

    public var rank: Int { group.rank }
    public var worldSize: Int { group.worldSize }
    public var failure: CollectiveError? { group.failure }

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

    /// Rank 0 gets every rank's columns side by side (see `SharedMemoryGroup.gatherColumns`).
    func gatherColumns(_ part: UnsafePointer<Float>, rows: Int, columns: [Int], into whole: UnsafeMutablePointer<Float>) {
        let pool = self.pool
        group.gatherColumns(part, rows: rows, columns: columns, into: whole) { count, body in
            pool.forEachRange(count, minimumPerThread: max(1, Self.floatsPerThread / max(1, columns.max() ?? 1)), body)
        }
        pool.progress.advance()
    }
}
