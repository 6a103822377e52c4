import Collectives
import Foundation
import RankThreads
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Groups over two "hosts" on this machine: the first half of the ranks listen on 127.0.0.1, the
/// rest on 127.0.0.2 (both loopback), so each half meets in shared memory and the halves' first
/// ranks over TCP, as on two hosts with several workers each.
@Suite("hierarchical groups (shared memory within a host, TCP across)")
struct HierarchicalGroupTests {
    static func endpoints(_ world: Int) -> [CollectiveEndpoint] {
        freeLoopbackEndpoints(world).enumerated().map { rank, endpoint in
            CollectiveEndpoint(host: rank < (world + 1) / 2 ? "127.0.0.1" : "127.0.0.2", port: endpoint.port)
        }
    }

    static func ranks<Value: Sendable>(_ world: Int, _ capacity: Int, _ timeout: Duration,
                                        _ body: @escaping @Sendable (any Communicator) throws -> Value) throws -> [Value] {
        let endpoints = endpoints(world)
        let name = SharedMemoryGroupTests.uniqueName()
        return try onRankThreads(world) { rank in
            try body(try HierarchicalGroup(endpoints: endpoints, rank: rank, sharedMemoryName: name, capacityBytes: capacity,
                                           fingerprint: 42, joinTimeout: .seconds(10), timeout: timeout))
        }
    }

    @Test("allreduce sums every rank's values with the same bits on every rank",
          arguments: [(2, 1000), (3, 1000), (4, 1000), (4, 70_001)])
    func allReduce(world: Int, count: Int) throws {
        try CommunicatorContract.allReduce(world: world, count: count, ranks: Self.ranks)
    }

    @Test("gather puts every rank's columns side by side on rank 0 (two ranks on one host, one on the other)")
    func gather() throws { try CommunicatorContract.gather(ranks: Self.ranks) }

    @Test("a rank that stops coming fails the collective, naming it, once the timeout passes")
    func stalledPeer() throws { try CommunicatorContract.stalledPeer(ranks: Self.ranks) }

    @Test("a collective bigger than the capacity is refused and fails the group")
    func oversized() throws { try CommunicatorContract.oversized(ranks: Self.ranks) }

    @Test("a stalled rank on the other host is named by its global rank")
    func stalledRemoteRank() throws {
        let failures = try Self.ranks(4, 64, .milliseconds(300)) { group -> CollectiveError? in
            var value: Float = 1
            group.allReduceSum(&value, count: 1, split: CommunicatorContract.serial)
            if group.rank == 3 {
                Thread.sleep(forTimeInterval: 1.5)
            } else {
                group.allReduceSum(&value, count: 1, split: CommunicatorContract.serial)
            }
            return group.failure
        }
        // Rank 2 waits for rank 3 in their host's segment; rank 0 waits for rank 2 over TCP.
        #expect(failures[2] == .peerStalled(rank: 3, seconds: 0.3))
        #expect(failures[0] == .peerStalled(rank: 2, seconds: 0.3))
    }

    @Test("every rank reports the leaders' group id")
    func groupID() throws {
        let ids = try Self.ranks(4, 64, .seconds(5)) { $0.groupID }
        #expect(ids[0] != 0 && Set(ids).count == 1)
    }

    @Test("hosts are read off the endpoints; a host's ranks must be consecutive")
    func layout() throws {
        let list = try CollectiveEndpoint.list("tcp://a:1,tcp://a:2,tcp://b:1,tcp://b:2,tcp://b:3")
        let layout = try HostLayout(endpoints: list)
        #expect(layout.hosts == [0..<2, 2..<5] && layout.isHierarchical)
        #expect(try !HostLayout(endpoints: CollectiveEndpoint.list("tcp://a:1,tcp://b:1")).isHierarchical)
        #expect(try !HostLayout(endpoints: CollectiveEndpoint.list("tcp://a:1,tcp://a:2")).isHierarchical)
        #expect(throws: CollectiveError.invalidEndpoint("tcp://a:3", reason:
            "the ranks of host a must be consecutive (rank 2 follows a rank of another host)")) {
            try HostLayout(endpoints: CollectiveEndpoint.list("tcp://a:1,tcp://b:1,tcp://a:3"))
        }
    }
}
