import Collectives

/// One chunk of a step's tokens, flattened across its sequences, in buffers the executor owns.
/// Tokens of one sequence appear in position order, so a token's earlier context is already in
/// the cache (from earlier steps, earlier chunks, or earlier rows of this chunk).
public struct TokenBatch {
    public var count: Int
    public var tokens: UnsafePointer<Int32>
    public var positions: UnsafePointer<Int32>
    /// Per token: where its sequence's block table starts in each group's tables.
    public var blockTableStarts: UnsafePointer<Int32>
    /// The block tables of KV group 0, then those of group 1 (`groupTableStride` entries on), …
    public var blockTables: UnsafePointer<Int32>
    public var groupTableStride: Int

    public init(count: Int, tokens: UnsafePointer<Int32>, positions: UnsafePointer<Int32>,
                blockTableStarts: UnsafePointer<Int32>, blockTables: UnsafePointer<Int32>, groupTableStride: Int = 0) {
        self.count = count
        self.tokens = tokens
        self.positions = positions
        self.blockTableStarts = blockTableStarts
        self.blockTables = blockTables
        self.groupTableStride = groupTableStride
    }

    /// The block tables of KV group `group` (index them with `blockTableStarts`).
    @inline(__always)
    public func tables(group: Int) -> UnsafePointer<Int32> { blockTables + group * groupTableStride }
}

/// What the step executor needs from an architecture's graph. Implementations own their weights
/// and scratch; calls come from one thread at a time.
public protocol CausalLanguageModel: AnyObject, Sendable {
    var hiddenSize: Int { get }
    var vocabSize: Int { get }
    var maxContextLength: Int { get }
    /// One page's shape: `cacheShape.layers` is the layers of one of `cacheGroups`.
    var cacheShape: KVCacheShape { get }
    /// How the layers share pages; every sequence's block table holds, per position block, one
    /// page of each group (group-interleaved: entry `b × groups + g`).
    var cacheGroups: KVCacheGroups { get }
    /// The most tokens `forward` accepts in one call.
    var maxChunkTokens: Int { get }
    /// The encoding most weight bytes are stored in (it picks the default KV element type).
    var weightEncoding: WeightEncoding { get }
    /// Bytes of weight matrices the graph reads per token.
    var weightBytes: Int { get }

    /// Runs `batch` through the model: writes each token's keys and values into `cache` and its
    /// final-normed hidden state into `hidden` (`batch.count × hiddenSize`).
    func forward(_ batch: TokenBatch, cache: KVCachePool, hidden: UnsafeMutablePointer<Float>)

    /// Logits (`rows × vocabSize`) of final-normed hidden states; in a tensor-parallel group
    /// every rank calls it and rank 0 gets the whole vocabulary's.
    func logits(hidden: UnsafePointer<Float>, rows: Int, into logits: UnsafeMutablePointer<Float>)

    /// In a tensor-parallel group every rank ends with rank 0's `values` (the tokens a decode
    /// pass sampled, which the next pass's embedding needs on every rank); alone, nothing to do.
    func shareFromRankZero(_ values: UnsafeMutablePointer<Float>, count: Int)

    /// The first failed collective of a tensor-parallel group (then the step's results are
    /// garbage and the group is broken for good); nil when the model runs alone.
    var collectiveFailure: CollectiveError? { get }

    /// The id of the tensor-parallel group's formation (`Communicator.groupID`); 0 alone.
    var groupID: UInt64 { get }

    /// Looks whether the group's other processes are alive (a failure then shows in
    /// `collectiveFailure`): an idle rank meets no collective that would notice a dead peer.
    func checkGroup()
}

extension CausalLanguageModel {
    /// One group of every layer, attending over the whole context (a model with sliding
    /// windows says which layers slide, and how far, in its own `cacheGroups`).
    public var cacheGroups: KVCacheGroups {
        KVCacheGroups(layerWindows: Array(repeating: 0, count: cacheShape.layers))
    }
    public func shareFromRankZero(_ values: UnsafeMutablePointer<Float>, count: Int) {}
    public var collectiveFailure: CollectiveError? { nil }
    public var groupID: UInt64 { 0 }
    public func checkGroup() {}
}
