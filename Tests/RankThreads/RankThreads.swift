import Foundation

/// Runs `body(rank)` for `count` ranks, each on a thread of its own (not a pool's: ranks wait
/// for each other in collectives, so all must run at once even on fewer cores), and returns
/// their results in rank order once all are done; the first rank's error is rethrown.
public func onRankThreads<Value: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) throws -> Value) throws -> [Value] {
    let slots = RankResults<Value>(count: count)
    for rank in 0..<count {
        Thread { slots.set(rank, Result { try body(rank) }) }.start()
    }
    return try slots.wait().map { try $0.get() }
}

private final class RankResults<Value: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var values: [Result<Value, any Error>?]

    init(count: Int) { values = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ value: Result<Value, any Error>) {
        condition.withLock {
            values[index] = value
            condition.broadcast()
        }
    }

    func wait() -> [Result<Value, any Error>] {
        condition.withLock {
            while values.contains(where: { $0 == nil }) { condition.wait() }
            return values.map { $0! }
        }
    }
}
