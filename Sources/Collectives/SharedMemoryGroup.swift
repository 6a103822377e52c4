import CCollectives

/// The ranks of one host meeting in a shared-memory segment (tessel_shm.h): allreduce, gather,
/// barrier. Calls come from one thread of each rank, in the same order on every rank; the
/// copying and summing are split over the caller's threads by the `split` argument (the
/// compute pool), each thread taking one contiguous range.
public final class SharedMemoryGroup: Communicator, @unchecked Sendable {
    public let name: String
    public let rank: Int
    public let worldSize: Int
    public let slotBytes: Int
    /// How long a rank waits for a live peer at one collective.
    public let timeout: Duration
    /// How long a wait spins before it sleeps.
    public let spinMicroseconds: Int
    private let handle: OpaquePointer
    /// Collectives so far; the next one is `sequence + 1`.
    private var sequence: UInt32 = 0
    private let latch = FailureLatch()

    /// Joins the group `name` (rank 0 creates it); waits up to `joinTimeout` for every rank.
    /// `fingerprint` must be equal on every rank (the model and its shard geometry).
    public init(name: String, rank: Int, worldSize: Int, slotBytes: Int, fingerprint: UInt64,
                joinTimeout: Duration, timeout: Duration = .seconds(10), spinMicroseconds: Int = 50) throws {
        var group: OpaquePointer?
        var failed: Int32 = -1
        var message = [CChar](repeating: 0, count: 512)
        let status = tc_group_join(name, Int32(rank), Int32(worldSize), slotBytes, fingerprint,
                                   joinTimeout.nanoseconds, &group, &failed, &message, message.count)
        guard status == TC_OK, let group else {
            throw CollectiveError.joinFailed(group: name, rank: failed >= 0 ? Int(failed) : nil,
                                             detail: String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        handle = group
        self.name = name
        self.rank = rank
        self.worldSize = worldSize
        self.slotBytes = (slotBytes + 63) / 64 * 64
        self.timeout = timeout
        self.spinMicroseconds = spinMicroseconds
    }

    deinit { tc_group_close(handle) }

    public var failure: CollectiveError? { latch.failure }

    public var capacityBytes: Int { slotBytes }

    public var groupID: UInt64 { tc_group_id(handle) }

    private var hasFailed: Bool { latch.isSet }

    public var slotFloats: Int { slotBytes / MemoryLayout<Float>.stride }

    public func allReduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, split: CollectiveSplit) {
        guard worldSize > 1, count > 0, check(bytes: count * 4) else { return }
        let set = Int32(sequence & 1)
        let mine = tc_group_slot(handle, Int32(rank), set)!.assumingMemoryBound(to: Float.self)
        split(count) { range in (mine + range.lowerBound).update(from: values + range.lowerBound, count: range.count) }
        guard meet() else { return }
        let handle = self.handle
        split(count) { range in
            tc_group_sum_floats(handle, set, range.lowerBound, range.count, values + range.lowerBound)
        }
    }

    public func gatherColumns(_ part: UnsafePointer<Float>, rows: Int, columns: [Int],
                              into whole: UnsafeMutablePointer<Float>, split: CollectiveSplit) {
        guard worldSize > 1, check(bytes: rows * (columns.max() ?? 0) * 4) else { return }
        let set = Int32(sequence & 1)
        let mine = tc_group_slot(handle, Int32(rank), set)!.assumingMemoryBound(to: Float.self)
        let own = columns[rank]
        split(rows) { range in
            (mine + range.lowerBound * own).update(from: part + range.lowerBound * own, count: range.count * own)
        }
        guard meet(), rank == 0 else { return }
        let width = columns.reduce(0, +)
        var start = 0
        for (peer, count) in columns.enumerated() {
            let source = tc_group_slot(handle, Int32(peer), set)!.assumingMemoryBound(to: Float.self)
            let offset = start
            split(rows) { range in
                for row in range { (whole + row * width + offset).update(from: source + row * count, count: count) }
            }
            start += count
        }
    }

    public func checkPeers() {
        var failed: Int32 = -1
        if !hasFailed, tc_group_peers_alive(handle, &failed) == 0 { fail(.peerDied(rank: Int(failed))) }
    }

    public func barrier() {
        guard worldSize > 1 else { return }
        _ = meet()
    }

    private func check(bytes: Int) -> Bool {
        guard !hasFailed else { return false }
        guard bytes <= slotBytes else {
            fail(.bufferTooLarge(bytes: bytes, slotBytes: slotBytes))
            return false
        }
        return true
    }

    /// Arrives at the next collective and waits for the others; false (and the group failed)
    /// when a peer is dead or stalled.
    private func meet() -> Bool {
        guard !hasFailed else { return false }
        sequence &+= 1
        var failed: Int32 = -1
        let status = tc_group_arrive_and_wait(handle, sequence, spinMicroseconds * 1000, timeout.nanoseconds, &failed)
        switch status {
        case TC_OK: return true
        case TC_PEER_DEAD: fail(.peerDied(rank: Int(failed)))
        default: fail(.peerStalled(rank: Int(failed), seconds: timeout.seconds))
        }
        return false
    }

    private func fail(_ error: CollectiveError) { latch.record(error) }
}
