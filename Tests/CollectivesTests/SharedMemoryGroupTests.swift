import CCollectives
import Collectives
import Foundation
import RankThreads
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Shared-memory groups with each rank on a thread of this process (the segment and its futexes
/// work the same within one process as across several), and one case with a forked rank.
@Suite("shared-memory groups")
struct SharedMemoryGroupTests {
    static func uniqueName() -> String { "/tessel-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" }

    /// Runs `body` for every rank on its own thread, each with its own group.
    static func withRanks<Value: Sendable>(_ world: Int, slotBytes: Int = 1 << 16, timeout: Duration = .seconds(5),
                                            _ body: @escaping @Sendable (SharedMemoryGroup) throws -> Value) throws -> [Value] {
        let name = uniqueName()
        return try onRankThreads(world) { rank in
            try body(try SharedMemoryGroup(name: name, rank: rank, worldSize: world, slotBytes: slotBytes,
                                           fingerprint: 42, joinTimeout: .seconds(10), timeout: timeout))
        }
    }

    static func ranks<Value: Sendable>(_ world: Int, _ capacity: Int, _ timeout: Duration,
                                        _ body: @escaping @Sendable (any Communicator) throws -> Value) throws -> [Value] {
        try withRanks(world, slotBytes: capacity, timeout: timeout, body)
    }

    @Test("allreduce sums every rank's values, with the same bits on every rank", arguments: [2, 3, 4])
    func allReduce(world: Int) throws { try CommunicatorContract.allReduce(world: world, count: 1000, ranks: Self.ranks) }

    @Test("gather puts every rank's columns side by side on rank 0")
    func gather() throws { try CommunicatorContract.gather(ranks: Self.ranks) }

    @Test("a rank that stops coming fails the collective, naming it, once the timeout passes")
    func stalledPeer() throws { try CommunicatorContract.stalledPeer(ranks: Self.ranks) }

    @Test("a collective bigger than the slots is refused and fails the group")
    func oversized() throws { try CommunicatorContract.oversized(ranks: Self.ranks) }

    @Test("joining with another model's fingerprint is refused with a message")
    func fingerprintMismatch() throws {
        let name = Self.uniqueName()
        let results = try onRankThreads(2) { rank -> String in
            do {
                _ = try SharedMemoryGroup(name: name, rank: rank, worldSize: 2, slotBytes: 1024,
                                          fingerprint: UInt64(rank), joinTimeout: .seconds(2))
                return "joined"
            } catch let error as CollectiveError { return error.description }
        }
        #expect(results[1].contains("rank 0 loaded a different model"), "\(results[1])")
        #expect(results[0].contains("rank 1 did not join"), "\(results[0])")
    }

    @Test("a rank whose process dies fails the others' collective at once, naming it")
    func deadPeer() throws {
        let name = Self.uniqueName()
        // The child must not allocate (another thread may hold malloc's lock at the fork): its
        // arguments are made before, and it calls only C.
        let cName = strdup(name)!
        defer { free(cName) }
        var childGroup: OpaquePointer?
        var childFailed: Int32 = 0
        let child = fork()
        if child == 0 {
            // Rank 1 joins, then exits without ever arriving (and stays a zombie until reaped
            // below, which must count as dead).
            _ = tc_group_join(cName, 1, 2, 1024, 7, 10_000_000_000, &childGroup, &childFailed, nil, 0)
            _exit(0)
        }
        #expect(child > 0)
        let group = try SharedMemoryGroup(name: name, rank: 0, worldSize: 2, slotBytes: 1024, fingerprint: 7,
                                          joinTimeout: .seconds(10), timeout: .seconds(30))
        let started = ContinuousClock.now
        var value: Float = 1
        group.allReduceSum(&value, count: 1, split: CommunicatorContract.serial)
        #expect(group.failure == .peerDied(rank: 1))
        #expect(ContinuousClock.now - started < .seconds(2))
        var status: Int32 = 0
        waitpid(child, &status, 0)
    }
}
