import Collectives
import Foundation
import RankThreads
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// TCP groups with each rank on a thread of this process, over the loopback interface: the
/// sockets behave the same between threads as between hosts. A rank "dies" by dropping its
/// group, which closes its connections as the kernel does for a process that exits.
@Suite("TCP groups")
struct SocketGroupTests {
    /// Runs `body` for every rank on its own thread, each with its own group.
    static func withRanks<Value: Sendable>(_ world: Int, capacity: Int = 1 << 20, timeout: Duration = .seconds(5),
                                            fingerprint: @escaping @Sendable (Int) -> UInt64 = { _ in 42 },
                                            _ body: @escaping @Sendable (SocketGroup) throws -> Value) throws -> [Value] {
        let endpoints = freeLoopbackEndpoints(world)
        return try onRankThreads(world) { rank in
            try body(try SocketGroup(endpoints: endpoints, rank: rank, capacityBytes: capacity, fingerprint: fingerprint(rank),
                                     joinTimeout: .seconds(10), timeout: timeout))
        }
    }

    static func ranks<Value: Sendable>(_ world: Int, _ capacity: Int, _ timeout: Duration,
                                        _ body: @escaping @Sendable (any Communicator) throws -> Value) throws -> [Value] {
        try withRanks(world, capacity: capacity, timeout: timeout, body)
    }

    static let serial = CommunicatorContract.serial

    @Test("allreduce sums every rank's values with the same bits on every rank: direct and ring",
          arguments: [(2, 1000), (3, 1000), (4, 1000), (2, 70_000), (3, 70_000), (4, 70_001)])
    func allReduce(world: Int, count: Int) throws { try CommunicatorContract.allReduce(world: world, count: count, ranks: Self.ranks) }

    @Test("a two-rank allreduce has the bits of the shared-memory one: v0 + v1")
    func rankOrder() throws {
        let inputs: [[Float]] = [[1e8, 0.1, -3.25], [1, 0.2, 7.5]]
        let sums = try Self.withRanks(2) { group -> [Float] in
            var values = inputs[group.rank]
            values.withUnsafeMutableBufferPointer { group.allReduceSum($0.baseAddress!, count: 3, split: Self.serial) }
            return values
        }
        let expected: [Float] = zip(inputs[0], inputs[1]).map { pair -> Float in pair.0 + pair.1 }
        #expect(sums[0] == expected)
        #expect(sums[1] == sums[0])
    }

    @Test("gather puts every rank's columns side by side on rank 0")
    func gather() throws { try CommunicatorContract.gather(ranks: Self.ranks) }

    @Test("ranks may start in any order: the first waits for the last")
    func lateRank() throws {
        let endpoints = freeLoopbackEndpoints(3)
        let sums = try onRankThreads(3) { rank -> Float in
            if rank == 0 { Thread.sleep(forTimeInterval: 0.5) }
            let group = try SocketGroup(endpoints: endpoints, rank: rank, capacityBytes: 64, fingerprint: 1,
                                        joinTimeout: .seconds(10))
            var value = Float(rank + 1)
            group.allReduceSum(&value, count: 1, split: Self.serial)
            return value
        }
        #expect(sums == [6, 6, 6])
    }

    @Test("a rank that stops coming fails the collective, naming it, once the timeout passes")
    func stalledPeer() throws { try CommunicatorContract.stalledPeer(ranks: Self.ranks) }

    @Test("a rank that is gone fails the others' collective at once and their peer check, naming it")
    func deadPeer() throws {
        let survivorsDone = Arrivals(expected: 2)
        let failures = try Self.withRanks(3, timeout: .seconds(30)) { group -> [CollectiveError?] in
            var value: Float = 1
            group.allReduceSum(&value, count: 1, split: Self.serial)
            group.barrier()
            if group.rank == 2 { return [] }  // its group is released here: its connections close
            Thread.sleep(forTimeInterval: 0.2)
            group.checkPeers()
            let checked = group.failure
            let started = ContinuousClock.now
            group.allReduceSum(&value, count: 1, split: Self.serial)
            #expect(ContinuousClock.now - started < .seconds(2))
            // Keep this rank's connections open until the other survivor has looked too.
            survivorsDone.arriveAndWait()
            return [checked, group.failure]
        }
        #expect(failures[0] == [.peerDied(rank: 2), .peerDied(rank: 2)])
        #expect(failures[1] == [.peerDied(rank: 2), .peerDied(rank: 2)])
    }

    @Test("an idle rank sees a peer gone even when the peer's last payload is still unread")
    func deadPeerWithPendingData() throws {
        let endpoints = freeLoopbackEndpoints(2)
        let closed = Arrivals(expected: 2)
        let failures = try onRankThreads(2) { rank -> CollectiveError? in
            let join = { try SocketGroup(endpoints: endpoints, rank: rank, capacityBytes: 64, fingerprint: 3,
                                         joinTimeout: .seconds(10), timeout: .milliseconds(200)) }
            if rank == 1 {
                do {
                    // Sends its payload into a collective rank 0 never joins, times out, leaves.
                    let group = try join()
                    var value: Float = 1
                    group.allReduceSum(&value, count: 1, split: Self.serial)
                }
                closed.arriveAndWait()
                return nil
            }
            let group = try join()
            closed.arriveAndWait()
            Thread.sleep(forTimeInterval: 0.1)
            group.checkPeers()
            return group.failure
        }
        #expect(failures[0] == .peerDied(rank: 1))
    }

    @Test("a collective bigger than the capacity is refused and fails the group")
    func oversized() throws { try CommunicatorContract.oversized(ranks: Self.ranks) }

    @Test("a rank of another model is refused, and the message names it")
    func fingerprintMismatch() throws {
        let endpoints = freeLoopbackEndpoints(2)
        let results = try onRankThreads(2) { rank -> String in
            do {
                _ = try SocketGroup(endpoints: endpoints, rank: rank, capacityBytes: 64, fingerprint: UInt64(rank),
                                    joinTimeout: .seconds(5))
                return "joined"
            } catch let error as CollectiveError { return error.description }
        }
        #expect(results[0].contains("rank 1 serves another model or shard geometry"), "\(results[0])")
        #expect(results[1].contains("refused rank 1"), "\(results[1])")
    }

    static let key = CollectiveKey(bytes: (0..<32).map { UInt8($0 * 7 + 1) })!

    static func sealedRanks<Value: Sendable>(_ world: Int, _ capacity: Int, _ timeout: Duration,
                                              _ body: @escaping @Sendable (any Communicator) throws -> Value) throws -> [Value] {
        let endpoints = freeLoopbackEndpoints(world)
        return try onRankThreads(world) { rank in
            try body(try SocketGroup(endpoints: endpoints, rank: rank, capacityBytes: capacity, fingerprint: 42, key: Self.key,
                                     joinTimeout: .seconds(10), timeout: timeout))
        }
    }

    @Test("with a key, payloads are sealed and the collectives still sum and gather: direct and ring",
          arguments: [(2, 1000), (3, 70_000)])
    func sealed(world: Int, count: Int) throws {
        try CommunicatorContract.allReduce(world: world, count: count, ranks: Self.sealedRanks)
        try CommunicatorContract.gather(ranks: Self.sealedRanks)
    }

    @Test("a rank without the group's key, or with another, is refused at the join by rank")
    func wrongKey() throws {
        for (other, refusal) in [(nil, "rank 1 differs from this rank in encrypting payloads"),
                                 (CollectiveKey(bytes: Array(repeating: 9, count: 32)), "rank 1 does not hold this group's key")] {
            let endpoints = freeLoopbackEndpoints(2)
            let results = try onRankThreads(2) { rank -> String in
                do {
                    _ = try SocketGroup(endpoints: endpoints, rank: rank, capacityBytes: 64, fingerprint: 1,
                                        key: rank == 0 ? Self.key : other, joinTimeout: .seconds(5))
                    return "joined"
                } catch let error as CollectiveError { return error.description }
            }
            #expect(results[0].contains(refusal), "\(results[0])")
            #expect(results[1] != "joined", "\(results[1])")
        }
    }

    @Test("endpoints parse as tcp://host:port, and anything else is refused saying why")
    func endpoints() throws {
        let parsed = try CollectiveEndpoint.list("tcp://10.0.0.1:7100, tcp://[::1]:7101,tcp://node-b:80")
        let expected = [CollectiveEndpoint(host: "10.0.0.1", port: 7100), CollectiveEndpoint(host: "::1", port: 7101),
                        CollectiveEndpoint(host: "node-b", port: 80)]
        #expect(parsed == expected)
        #expect(CollectiveEndpoint(host: "::1", port: 7101).description == "tcp://[::1]:7101")
        for bad in ["10.0.0.1:7100", "tcp://host", "tcp://host:0", "tcp://:7100", "ipc:///tmp/x"] {
            #expect(throws: CollectiveError.self) { try CollectiveEndpoint(parsing: bad) }
        }
    }
}

/// A one-shot meeting point for threads: each `arriveAndWait` returns once `expected` have come.
private final class Arrivals: @unchecked Sendable {
    private let condition = NSCondition()
    private var count = 0
    private let expected: Int

    init(expected: Int) { self.expected = expected }

    func arriveAndWait() {
        condition.withLock {
            count += 1
            condition.broadcast()
            while count < expected { condition.wait() }
        }
    }
}
