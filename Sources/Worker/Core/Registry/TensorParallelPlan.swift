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

    /// The attention heads this rank computes: contiguous runs of query heads, each rank with
    /// the KV heads its queries read. A KV head whose group of query heads is cut between two
    /// ranks is held by both (as one KV head over two ranks always is). The cuts are the ones
    /// that make the largest rank's attention weights (Q and output for its query heads, K and
    /// V for its KV heads) smallest, then the total: 9 query / 3 KV heads over 2 ranks is 4 + 5
    /// query heads reading KV heads 0–1 and 1–2, not 6 + 3, since each layer's first allreduce
    /// waits for the rank with the most attention. With as many KV heads per rank, the cuts
    /// fall on the KV groups and nothing is held twice. Of equal splits, rank 0 (which gathers
    /// and samples) gets the lighter one.
    public func attentionHeads(queryHeads: Int, kvHeads: Int) throws -> AttentionShard {
        guard kvHeads > 0, queryHeads % kvHeads == 0 else {
            throw TensorParallelError.headsNotGrouped(queryHeads: queryHeads, kvHeads: kvHeads)
        }
        guard queryHeads >= worldSize else {
            throw TensorParallelError.tooFewQueryHeads(queryHeads: queryHeads, ranks: worldSize)
        }
        let group = queryHeads / kvHeads
        func cost(_ heads: Range<Int>) -> Int {
            2 * heads.count + 2 * ((heads.upperBound - 1) / group + 1 - heads.lowerBound / group)
        }
        // best[r][end]: the (largest, total) cost of ranks 0..<r over query heads 0..<end, and
        // where rank r - 1's heads start. Ties go to the earlier cut (the first one tried), so
        // earlier ranks get less.
        struct Choice { var largest: Int; var total: Int; var start: Int }
        var best = [[Choice?]](repeating: [Choice?](repeating: nil, count: queryHeads + 1), count: worldSize + 1)
        best[0][0] = Choice(largest: 0, total: 0, start: 0)
        for ranks in 1...worldSize {
            for end in ranks...(queryHeads - (worldSize - ranks)) {
                for start in (ranks - 1)..<end {
                    guard let before = best[ranks - 1][start] else { continue }
                    let own = cost(start..<end)
                    let candidate = Choice(largest: max(before.largest, own), total: before.total + own, start: start)
                    if let current = best[ranks][end], (current.largest, current.total) <= (candidate.largest, candidate.total) {
                        continue
                    }
                    best[ranks][end] = candidate
                }
            }
        }
        var end = queryHeads
        for ranks in stride(from: worldSize, to: rank + 1, by: -1) { end = best[ranks][end]!.start }
        let heads = best[rank + 1][end]!.start..<end
        return AttentionShard(queryHeads: heads, kvHeads: heads.lowerBound / group..<(heads.upperBound - 1) / group + 1,
                              group: group)
    }
}

/// The heads one rank computes: its query heads, in order, and the KV heads they read, in order
/// (each KV head is read by the query heads of its group that the rank holds).
public struct AttentionShard: Sendable, Equatable {
    public let queryHeads: Range<Int>
    public let kvHeads: Range<Int>
    /// Query heads per KV head in the whole model.
    public let group: Int

    public init(queryHeads: Range<Int>, kvHeads: Range<Int>, group: Int) {
        self.queryHeads = queryHeads
        self.kvHeads = kvHeads
        self.group = group
    }

    /// For each of this rank's KV heads, the rank's query heads that read it, counted from its
    /// first query head.
    public var queryRuns: [Range<Int>] {
        kvHeads.map { head in
            let global = max(head * group, queryHeads.lowerBound)..<min((head + 1) * group, queryHeads.upperBound)
            return global.lowerBound - queryHeads.lowerBound..<global.upperBound - queryHeads.lowerBound
        }
    }
}

public enum TensorParallelError: Error, CustomStringConvertible, Equatable {
    case headsNotGrouped(queryHeads: Int, kvHeads: Int)
    case tooFewQueryHeads(queryHeads: Int, ranks: Int)

    public var description: String {
        switch self {
        case .headsNotGrouped(let queryHeads, let kvHeads):
            "\(queryHeads) query heads do not divide into groups over \(kvHeads) KV heads"
        case .tooFewQueryHeads(let queryHeads, let ranks):
            "\(queryHeads) query heads cannot be split over \(ranks) ranks (each needs at least one); use fewer workers"
        }
    }
}
