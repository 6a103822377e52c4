import Testing
@testable import RouterCore
import Tokenizers

@Suite("KVBlockManager")
struct KVBlockManagerTests {
    @Test("allocation takes free blocks and refuses when too few are left")
    func allocation() {
        var manager = KVBlockManager(blockCount: 4, blockSize: 2)
        let first = manager.allocate(3)
        #expect(first?.count == 3)
        #expect(manager.freeBlockCount == 1)
        #expect(manager.allocate(2) == nil)
        #expect(manager.freeBlockCount == 1)
        manager.free(first!)
        #expect(manager.freeBlockCount == 4)
        #expect(manager.usedBlockCount == 0)
    }

    @Test("a block shared by two sequences is free only when both let go")
    func sharing() {
        var manager = KVBlockManager(blockCount: 4, blockSize: 2)
        let tokens: [TokenID] = [1, 2, 3, 4, 5]
        let blocks = manager.allocate(3)!
        var chain: UInt64 = 0
        let registered = manager.registerFullBlocks(blocks, tokens: tokens, computedTokens: 5, alreadyRegistered: 0,
                                                    parentChain: &chain)
        #expect(registered == 2)
        let hit = manager.acquireCachedPrefix(of: tokens, maxTokens: 4)
        #expect(hit == Array(blocks.prefix(2)))
        #expect(manager.referenceCount(of: blocks[0]) == 2)
        manager.free(blocks)
        #expect(manager.referenceCount(of: blocks[0]) == 1)
        #expect(manager.freeBlockCount == 2)
        manager.free(hit)
        #expect(manager.freeBlockCount == 4)
    }

    @Test("a cached prefix survives freeing and is found again until its blocks are reused")
    func cacheSurvivesFree() {
        var manager = KVBlockManager(blockCount: 3, blockSize: 2)
        let tokens: [TokenID] = [7, 8, 9, 10]
        let blocks = manager.allocate(2)!
        var chain: UInt64 = 0
        _ = manager.registerFullBlocks(blocks, tokens: tokens, computedTokens: 4, alreadyRegistered: 0, parentChain: &chain)
        manager.free(blocks)
        #expect(manager.cachedBlockCount == 2)
        // One unhashed free block is handed out before the cached ones.
        let other = manager.allocate(1)!
        #expect(!blocks.contains(other[0]))
        let hit = manager.acquireCachedPrefix(of: tokens, maxTokens: 4)
        #expect(hit == blocks)
        manager.free(hit)
        manager.free(other)
        // Needing every block evicts the cache.
        _ = manager.allocate(3)!
        #expect(manager.cachedBlockCount == 0)
        #expect(manager.acquireCachedPrefix(of: tokens, maxTokens: 4).isEmpty)
    }

    @Test("a different earlier block means a different key for the same later tokens")
    func chainedKeys() {
        var manager = KVBlockManager(blockCount: 4, blockSize: 2)
        let blocks = manager.allocate(2)!
        var chain: UInt64 = 0
        _ = manager.registerFullBlocks(blocks, tokens: [1, 2, 3, 4], computedTokens: 4, alreadyRegistered: 0, parentChain: &chain)
        #expect(manager.acquireCachedPrefix(of: [9, 9, 3, 4], maxTokens: 4).isEmpty)
        #expect(manager.acquireCachedPrefix(of: [1, 2, 9, 9], maxTokens: 4) == [blocks[0]])
    }

    @Test("the least recently freed cached block is evicted first")
    func lruOrder() {
        var manager = KVBlockManager(blockCount: 2, blockSize: 1)
        let a = manager.allocate(1)!
        var chainA: UInt64 = 0
        _ = manager.registerFullBlocks(a, tokens: [1], computedTokens: 1, alreadyRegistered: 0, parentChain: &chainA)
        let b = manager.allocate(1)!
        var chainB: UInt64 = 0
        _ = manager.registerFullBlocks(b, tokens: [2], computedTokens: 1, alreadyRegistered: 0, parentChain: &chainB)
        manager.free(a)
        manager.free(b)
        let reused = manager.allocate(1)!
        #expect(reused == a)
        #expect(manager.acquireCachedPrefix(of: [1], maxTokens: 1).isEmpty)
        #expect(manager.acquireCachedPrefix(of: [2], maxTokens: 1) == b)
    }
}
