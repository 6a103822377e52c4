import Collectives

/// What a tensor-parallel split counts.
public enum ShardUnit: Sendable, Equatable {
    /// Query heads, dealt with the KV heads they read (`TensorParallelPlan.attentionHeads`).
    case queryHeads
    /// KV heads; replicated when there are fewer than ranks.
    case kvHeads
    /// MLP columns, in whole blocks of the row-parallel projection's encoding.
    case mlpColumns
    /// Vocabulary entries (embedding and LM head rows).
    case vocabulary
}

/// How a weight is divided among tensor-parallel ranks (Megatron style: column-parallel
/// projections into the block, row-parallel projections out of it, one allreduce after each).
public enum ShardAxis: Sendable, Equatable {
    /// Every rank holds the whole tensor (norms).
    case replicated
    /// Output rows split by unit: Q/K/V, gate, up, the vocabulary's rows.
    case outputRows(ShardUnit)
    /// Input columns split to match the previous projection's rows: attention output, down.
    case inputColumns(ShardUnit)
}

/// This rank's place in the tensor-parallel group, and which heads, MLP columns and vocabulary
/// rows it owns (Megatron's split: attention by KV group, MLP by columns, the vocabulary by rows).
public struct TensorParallelPlan: Sendable, Equatable {
    public let rank: Int
    public let worldSize: Int

    public init(rank: Int, worldSize: Int) throws {
        guard worldSize >= 1, rank >= 0, rank < worldSize else {
            throw ModelLoadError.invalidRank(rank: rank, worldSize: worldSize)
        }
        self.rank = rank
        self.worldSize = worldSize
    }

    public var isSharded: Bool { worldSize > 1 }

    /// The units (rows, blocks of columns) this rank owns out of `count`.
    public func units(of count: Int) -> Range<Int> {
        Self.units(of: count, rank: rank, worldSize: worldSize)
    }

    /// Uneven splits allowed: the first `count % worldSize` ranks take one more unit.
    public static func units(of count: Int, rank: Int, worldSize: Int) -> Range<Int> {
        EvenSplit.part(rank, of: count, parts: worldSize)
    }

    /// `blocks` blocks of `blockWeights` weights each, dealt so that every rank's weights,
    /// these and its `otherWeights[rank]`, add up to about the same: a decode step reads every
    /// weight once, so the slowest rank sets the pace. With an uneven attention split (3 KV heads
    /// over 2 ranks) the rank with fewer heads takes more MLP columns. Every rank gets at least
    /// one block when there are enough.
    public func balancedBlocks(_ blocks: Int, blockWeights: Int, otherWeights: [Int]) -> Range<Int> {
        precondition(otherWeights.count == worldSize, "one weight count per rank")
        let total = otherWeights.reduce(0, +) + blocks * blockWeights
        var start = 0, before = 0
        for part in 0..<worldSize {
            before += otherWeights[part]
            let reserved = blocks >= worldSize ? worldSize - part - 1 : 0
            var end = blocks
            if part < worldSize - 1 {
                let target = Double(total) * Double(part + 1) / Double(worldSize)
                let ideal = Int(((target - Double(before)) / Double(max(blockWeights, 1))).rounded())
                end = min(max(ideal, start + (blocks >= worldSize ? 1 : 0)), blocks - reserved)
            }
            if part == rank { return start..<end }
            start = end
        }
        preconditionFailure("rank \(rank) is outside the world of \(worldSize)")
    }

    /// The attention heads this rank computes: KV heads dealt over the ranks with their query
    /// heads; with fewer KV heads than ranks, each KV head is replicated on the ranks dealt to
    /// it and its query heads are split among them.
    public func attentionHeads(queryHeads: Int, kvHeads: Int) throws -> AttentionShard {
        guard kvHeads > 0, queryHeads % kvHeads == 0 else {
            throw TensorParallelError.headsNotGrouped(queryHeads: queryHeads, kvHeads: kvHeads)
        }
        let group = queryHeads / kvHeads
        if kvHeads >= worldSize {
            let kv = units(of: kvHeads)
            return AttentionShard(queryHeads: kv.lowerBound * group..<kv.upperBound * group, kvHeads: kv)
        }
        let head = rank * kvHeads / worldSize
        let sharers = (0..<worldSize).filter { $0 * kvHeads / worldSize == head }
        guard group >= sharers.count else {
            throw TensorParallelError.tooFewQueryHeads(kvHead: head, queryHeads: group, ranks: sharers.count)
        }
        let part = Self.units(of: group, rank: rank - sharers[0], worldSize: sharers.count)
        return AttentionShard(queryHeads: head * group + part.lowerBound..<head * group + part.upperBound,
                              kvHeads: head..<head + 1)
    }
}

/// The heads one rank computes: its query heads all read its KV heads, in order.
public struct AttentionShard: Sendable, Equatable {
    public let queryHeads: Range<Int>
    public let kvHeads: Range<Int>
}

public enum TensorParallelError: Error, CustomStringConvertible, Equatable {
    case headsNotGrouped(queryHeads: Int, kvHeads: Int)
    case tooFewQueryHeads(kvHead: Int, queryHeads: Int, ranks: Int)

    public var description: String {
        switch self {
        case .headsNotGrouped(let queryHeads, let kvHeads):
            "\(queryHeads) query heads do not divide into groups over \(kvHeads) KV heads"
        case .tooFewQueryHeads(let kvHead, let queryHeads, let ranks):
            "KV head \(kvHead) is replicated on \(ranks) ranks but has only \(queryHeads) query heads to split among them; use fewer workers"
        }
    }
}
