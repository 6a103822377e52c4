import Collectives
import Foundation
import Testing

/// What every transport's group must do, checked by each transport's suite on its own ranks:
/// `ranks(world, slotBytes, timeout, body)` runs `body` for every rank on a thread of its own.
enum CommunicatorContract {
    typealias Ranks<Value: Sendable> = (_ world: Int, _ capacity: Int, _ timeout: Duration,
                                        _ body: @escaping @Sendable (any Communicator) throws -> Value) throws -> [Value]

    static func serial(_ count: Int, _ body: (Range<Int>) -> Void) { body(0..<count) }

    /// Two parts, as a pool of two threads would cut them.
    static func halves(_ count: Int, _ body: (Range<Int>) -> Void) {
        body(0..<count / 2)
        body(count / 2..<count)
    }

    /// Several allreduces in a row sum every rank's values, with the same bits on every rank.
    static func allReduce(world: Int, count: Int, ranks: Ranks<[[Float]]>) throws {
        let sums = try ranks(world, count * 4, .seconds(5)) { group in
            var rounds: [[Float]] = []
            for round in 0..<4 {
                var values = (0..<count).map { Float($0 % 1000) * 0.001 + Float(group.rank) * 0.37 + Float(round) }
                values.withUnsafeMutableBufferPointer { buffer in
                    group.allReduceSum(buffer.baseAddress!, count: count, split: round % 2 == 0 ? serial : halves)
                }
                rounds.append(values)
            }
            #expect(group.failure == nil)
            return rounds
        }
        for round in 0..<4 {
            for i in stride(from: 0, to: count, by: 97) {
                var expected: Float = 0
                for rank in 0..<world { expected += Float(i % 1000) * 0.001 + Float(rank) * 0.37 + Float(round) }
                #expect(abs(sums[0][round][i] - expected) < 1e-3)
            }
            for rank in 1..<world { #expect(sums[rank][round] == sums[0][round]) }
        }
    }

    /// Rank 0 gets every rank's columns side by side.
    static func gather(ranks: Ranks<[Float]>) throws {
        let columns = [3, 2, 2]
        let rows = 4
        let wholes = try ranks(3, 1 << 12, .seconds(5)) { group in
            let own = columns[group.rank], start = columns.prefix(group.rank).reduce(0, +)
            let part = (0..<rows * own).map { Float(($0 / own) * 100 + start + $0 % own) }
            var whole = [Float](repeating: -1, count: rows * 7)
            part.withUnsafeBufferPointer { source in
                whole.withUnsafeMutableBufferPointer { target in
                    group.gatherColumns(source.baseAddress!, rows: rows, columns: columns, into: target.baseAddress!,
                                        split: halves)
                }
            }
            group.barrier()
            #expect(group.failure == nil)
            return whole
        }
        let expected: [Float] = (0..<rows * 7).map { index -> Float in Float((index / 7) * 100 + index % 7) }
        #expect(wholes[0] == expected)
    }

    /// A live rank that stops coming fails the other's collective, naming it, after the timeout.
    static func stalledPeer(ranks: Ranks<CollectiveError?>) throws {
        let started = ContinuousClock.now
        let failures = try ranks(2, 64, .milliseconds(300)) { group in
            var value: Float = 1
            group.allReduceSum(&value, count: 1, split: serial)
            if group.rank == 0 {
                group.allReduceSum(&value, count: 1, split: serial)
            } else {
                Thread.sleep(forTimeInterval: 1.5)  // alive, but late for the second one
            }
            return group.failure
        }
        #expect(failures[0] == .peerStalled(rank: 1, seconds: 0.3))
        #expect(failures[1] == nil)
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    /// A collective bigger than the group's capacity is refused and fails the group.
    static func oversized(ranks: Ranks<CollectiveError?>) throws {
        let failures = try ranks(2, 64, .seconds(5)) { group in
            var values = [Float](repeating: 1, count: 32)
            values.withUnsafeMutableBufferPointer { group.allReduceSum($0.baseAddress!, count: 32, split: serial) }
            return group.failure
        }
        #expect(failures[0] == .bufferTooLarge(bytes: 128, slotBytes: 64))
    }
}
