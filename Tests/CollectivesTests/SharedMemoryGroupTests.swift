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

    static func serial(_ count: Int, _ body: (Range<Int>) -> Void) { body(0..<count) }

    /// Two parts, as a pool of two threads would cut them.
    static func halves(_ count: Int, _ body: (Range<Int>) -> Void) {
        body(0..<count / 2)
        body(count / 2..<count)
    }

    @Test("allreduce sums every rank's values, with the same bits on every rank", arguments: [2, 3, 4])
    func allReduce(world: Int) throws {
        let count = 1000
        let sums = try Self.withRanks(world) { group -> [[Float]] in
            var rounds: [[Float]] = []
            // Several rounds in a row: the two sets of slots alternate.
            for round in 0..<5 {
                var values = (0..<count).map { Float($0) * 0.001 + Float(group.rank) * 0.37 + Float(round) }
                values.withUnsafeMutableBufferPointer { buffer in
                    group.allReduceSum(buffer.baseAddress!, count: count, split: round % 2 == 0 ? Self.serial : Self.halves)
                }
                rounds.append(values)
            }
            #expect(group.failure == nil)
            return rounds
        }
        for round in 0..<5 {
            for i in stride(from: 0, to: count, by: 97) {
                var expected: Float = 0
                for rank in 0..<world { expected += Float(i) * 0.001 + Float(rank) * 0.37 + Float(round) }
                #expect(abs(sums[0][round][i] - expected) < 1e-3)
            }
            for rank in 1..<world { #expect(sums[rank][round] == sums[0][round]) }
        }
    }

    @Test("gather puts every rank's columns side by side on rank 0")
    func gather() throws {
        let columns = [3, 2, 2]
        let rows = 4
        let wholes = try Self.withRanks(3) { group -> [Float] in
            let own = columns[group.rank], start = columns.prefix(group.rank).reduce(0, +)
            let part = (0..<rows * own).map { Float(($0 / own) * 100 + start + $0 % own) }
            var whole = [Float](repeating: -1, count: rows * 7)
            part.withUnsafeBufferPointer { source in
                whole.withUnsafeMutableBufferPointer { target in
                    group.gatherColumns(source.baseAddress!, rows: rows, columns: columns, into: target.baseAddress!,
                                        split: Self.halves)
                }
            }
            group.barrier()
            return whole
        }
        let expected: [Float] = (0..<rows * 7).map { index -> Float in Float((index / 7) * 100 + index % 7) }
        #expect(wholes[0] == expected)
    }

    @Test("a rank that stops coming fails the collective, naming it, once the timeout passes")
    func stalledPeer() throws {
        let started = ContinuousClock.now
        let failures = try Self.withRanks(2, timeout: .milliseconds(300)) { group -> CollectiveError? in
            var value: Float = 1
            if group.rank == 0 {
                group.allReduceSum(&value, count: 1, split: Self.serial)
                group.allReduceSum(&value, count: 1, split: Self.serial)
            } else {
                group.allReduceSum(&value, count: 1, split: Self.serial)
                Thread.sleep(forTimeInterval: 1.5)  // alive, but late for the second one
            }
            return group.failure
        }
        #expect(failures[0] == .peerStalled(rank: 1, seconds: 0.3))
        #expect(failures[1] == nil)
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    @Test("a collective bigger than the slots is refused and fails the group")
    func oversized() throws {
        let failures = try Self.withRanks(2, slotBytes: 64) { group -> CollectiveError? in
            var values = [Float](repeating: 1, count: 32)
            values.withUnsafeMutableBufferPointer { group.allReduceSum($0.baseAddress!, count: 32, split: Self.serial) }
            return group.failure
        }
        #expect(failures[0] == .bufferTooLarge(bytes: 128, slotBytes: 64))
    }

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
        group.allReduceSum(&value, count: 1, split: Self.serial)
        #expect(group.failure == .peerDied(rank: 1))
        #expect(ContinuousClock.now - started < .seconds(2))
        var status: Int32 = 0
        waitpid(child, &status, 0)
    }
}
