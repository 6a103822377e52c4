/// What a tensor-parallel split counts: whole heads or single MLP columns.
public enum ShardUnit: Sendable, Equatable {
    case attentionHeads
    /// Split like the attention heads they serve; replicated when there are fewer than ranks.
    case kvHeads
    case mlpColumns
}

/// How a weight is divided among tensor-parallel ranks (Megatron style: column-parallel
/// projections into the block, row-parallel projections out of it, one allreduce after each).
public enum ShardAxis: Sendable, Equatable {
    /// Every rank holds the whole tensor (norms, embeddings, LM head).
    case replicated
    /// Output rows split by unit: Q/K/V, gate, up.
    case outputRows(ShardUnit)
    /// Input columns split to match the previous projection's rows: attention output, down.
    case inputColumns(ShardUnit)
}

/// This rank's place in the tensor-parallel group. Only a group of one can execute today; the
/// plan validates that up front so a multi-rank launch fails clearly at load.
public struct TensorParallelPlan: Sendable, Equatable {
    public let rank: Int
    public let worldSize: Int

    public init(rank: Int, worldSize: Int) throws {
        guard worldSize >= 1, rank >= 0, rank < worldSize else {
            throw ModelLoadError.invalidRank(rank: rank, worldSize: worldSize)
        }
        guard worldSize == 1 else { throw ModelLoadError.tensorParallelismUnavailable(worldSize: worldSize) }
        self.rank = rank
        self.worldSize = worldSize
    }

    /// The units (heads, MLP columns) this rank owns out of `count`.
    public func units(of count: Int) -> Range<Int> {
        Self.units(of: count, rank: rank, worldSize: worldSize)
    }

    /// Uneven splits allowed: the first `count % worldSize` ranks take one more unit.
    public static func units(of count: Int, rank: Int, worldSize: Int) -> Range<Int> {
        let base = count / worldSize, extra = count % worldSize
        let start = rank * base + min(rank, extra)
        return start..<(start + base + (rank < extra ? 1 : 0))
    }
}
