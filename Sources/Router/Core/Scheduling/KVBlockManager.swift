import Tokenizers

/// Identifies the contents of one full KV block: its tokens and, through `parent`, every token
/// before it. Two sequences whose prompts share the first k full blocks get the same k keys.
struct BlockContentKey: Hashable, Sendable {
    var parent: UInt64
    var tokens: [TokenID]

    /// The chain value the next block uses as its `parent` (FNV-1a over the parent and the tokens).
    var chainValue: UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325 ^ parent
        for token in tokens {
            var value = UInt32(bitPattern: token)
            for _ in 0..<4 {
                hash ^= UInt64(value & 0xFF)
                hash = hash &* 0x0000_0100_0000_01B3
                value >>= 8
            }
        }
        return hash
    }
}

/// The paged KV cache as the router accounts for it: `blockCount` blocks of `blockSize` token
/// slots on every worker. A block is held by the sequences that reference it (reference count);
/// at zero it goes to the free queue, where a block that holds a full, hashed prefix stays
/// reusable (a prefix-cache hit) until allocation needs it, oldest-freed first.
public struct KVBlockManager: Sendable {
    public let blockCount: Int
    public let blockSize: Int
    public let prefixCaching: Bool

    private var referenceCount: [Int]
    private var contentKey: [BlockContentKey?]
    private var blockByKey: [BlockContentKey: Int] = [:]
    // The free queue: a doubly linked list over block ids; index `blockCount` is the sentinel.
    private var previous: [Int]
    private var next: [Int]
    private var inFreeQueue: [Bool]
    public private(set) var freeBlockCount: Int

    public init(blockCount: Int, blockSize: Int, prefixCaching: Bool = true) {
        precondition(blockCount > 0 && blockSize > 0, "KV cache needs at least one block of one slot")
        self.blockCount = blockCount
        self.blockSize = blockSize
        self.prefixCaching = prefixCaching
        referenceCount = Array(repeating: 0, count: blockCount)
        contentKey = Array(repeating: nil, count: blockCount)
        previous = Array(repeating: 0, count: blockCount + 1)
        next = Array(repeating: 0, count: blockCount + 1)
        inFreeQueue = Array(repeating: false, count: blockCount)
        freeBlockCount = 0
        let sentinel = blockCount
        previous[sentinel] = sentinel
        next[sentinel] = sentinel
        for block in 0..<blockCount { appendToFreeQueue(block) }
    }

    /// Blocks needed to hold `tokenCount` token slots.
    public func blocksNeeded(forTokens tokenCount: Int) -> Int {
        (tokenCount + blockSize - 1) / blockSize
    }

    /// The number of blocks referenced by at least one sequence.
    public var usedBlockCount: Int { blockCount - freeBlockCount }

    /// Number of cached (hashed) blocks, free or in use.
    public var cachedBlockCount: Int { blockByKey.count }

    public func referenceCount(of block: Int) -> Int { referenceCount[block] }

    // MARK: Allocation

    /// Takes `count` blocks from the free queue (evicting cached contents), or nothing when
    /// fewer than `count` are free.
    public mutating func allocate(_ count: Int) -> [Int]? {
        guard count <= freeBlockCount else { return nil }
        var blocks: [Int] = []
        blocks.reserveCapacity(count)
        for _ in 0..<count {
            let block = next[blockCount]
            removeFromFreeQueue(block)
            if let key = contentKey[block] {
                blockByKey[key] = nil
                contentKey[block] = nil
            }
            referenceCount[block] = 1
            blocks.append(block)
        }
        return blocks
    }

    /// Drops one reference to each block. Blocks at zero join the free queue in reverse order,
    /// so a sequence's last blocks are evicted before the prefix blocks others may share.
    public mutating func free(_ blocks: [Int]) {
        for block in blocks.reversed() {
            precondition(referenceCount[block] > 0, "block \(block) freed more often than allocated")
            referenceCount[block] -= 1
            if referenceCount[block] == 0 {
                if contentKey[block] == nil {
                    prependToFreeQueue(block)
                } else {
                    appendToFreeQueue(block)
                }
            }
        }
    }

    // MARK: Prefix cache

    /// Where KV group `group`'s hash chains start, so that its blocks and another group's for
    /// the same tokens (other layers' keys and values) never share a key; group 0's is 0.
    public static func chainSeed(group: Int) -> UInt64 { UInt64(group) &* 0x9E37_79B9_7F4A_7C15 }

    /// The cached blocks of KV group `group` holding the longest prefix of `tokens`, limited to
    /// `maxTokens` tokens, each with one more reference. Returns [] when prefix caching is off.
    public mutating func acquireCachedPrefix(of tokens: [TokenID], maxTokens: Int, group: Int = 0) -> [Int] {
        guard prefixCaching else { return [] }
        let fullBlocks = min(tokens.count, maxTokens) / blockSize
        var blocks: [Int] = []
        var parent = Self.chainSeed(group: group)
        for index in 0..<fullBlocks {
            let key = BlockContentKey(parent: parent, tokens: Array(tokens[index * blockSize..<(index + 1) * blockSize]))
            guard let block = blockByKey[key] else { break }
            if referenceCount[block] == 0 { removeFromFreeQueue(block) }
            referenceCount[block] += 1
            blocks.append(block)
            parent = key.chainValue
        }
        return blocks
    }

    /// Records that group `group`'s block of a group-interleaved table (`blocks[i × groups +
    /// group]`) holds the i-th full block of `tokens`, for blocks `from..<computedTokens /
    /// blockSize`; `parentChain` starts at `chainSeed(group:)`. A block whose contents another
    /// block already caches stays unindexed. Returns the new count of registered blocks.
    public mutating func registerFullBlocks(_ blocks: [Int], group: Int = 0, of groups: Int = 1, tokens: [TokenID],
                                            computedTokens: Int, alreadyRegistered from: Int,
                                            parentChain: inout UInt64) -> Int {
        guard prefixCaching else { return from }
        let fullBlocks = min(computedTokens / blockSize, blocks.count / groups)
        guard fullBlocks > from else { return from }
        if from == 0 { parentChain = Self.chainSeed(group: group) }
        for index in from..<fullBlocks {
            let key = BlockContentKey(parent: parentChain, tokens: Array(tokens[index * blockSize..<(index + 1) * blockSize]))
            let block = blocks[index * groups + group]
            if blockByKey[key] == nil, contentKey[block] == nil {
                blockByKey[key] = block
                contentKey[block] = key
            }
            parentChain = key.chainValue
        }
        return fullBlocks
    }

    /// Forgets every cached block's contents (the workers lost their KV cache, e.g. a restart).
    public mutating func forgetCachedContents() {
        blockByKey.removeAll()
        for block in 0..<blockCount { contentKey[block] = nil }
    }

    // MARK: Free queue

    private mutating func appendToFreeQueue(_ block: Int) {
        insertIntoFreeQueue(block, after: previous[blockCount])
    }

    private mutating func prependToFreeQueue(_ block: Int) {
        insertIntoFreeQueue(block, after: blockCount)
    }

    private mutating func insertIntoFreeQueue(_ block: Int, after predecessor: Int) {
        let successor = next[predecessor]
        next[predecessor] = block
        previous[block] = predecessor
        next[block] = successor
        previous[successor] = block
        inFreeQueue[block] = true
        freeBlockCount += 1
    }

    private mutating func removeFromFreeQueue(_ block: Int) {
        precondition(inFreeQueue[block], "block \(block) is not free")
        next[previous[block]] = next[block]
        previous[next[block]] = previous[block]
        inFreeQueue[block] = false
        freeBlockCount -= 1
    }
}
