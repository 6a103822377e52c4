import Synchronization

/// What a word starts as before merging.
enum InitialSymbols: Sendable {
    /// One symbol per byte (GPT-2 style byte-level BPE).
    case bytes
    /// One symbol per Unicode scalar; scalars missing from the vocabulary become `<0xXX>` byte tokens
    /// when the model has them (SentencePiece byte fallback), else the unknown token.
    case characters
}

/// Words looked up whole before merging (llama.cpp's ignore_merges and its Gemma 4 newline rule).
enum WholeWordTokens: Sendable {
    case never
    /// Every word (Llama 3, Tekken; HF `ignore_merges`).
    case always
    /// Runs of newlines only (Gemma 4, whose merges do not rebuild its newline-run tokens).
    case newlineRuns

    @inline(__always)
    func applies(to word: UnsafeBufferPointer<UInt8>) -> Bool {
        switch self {
        case .never: return false
        case .always: return true
        case .newlineRuns: return word.allSatisfy { $0 == 0x0A }
        }
    }
}

/// Reusable buffers of one encode call, so the merge loop allocates nothing per word.
struct BPEScratch {
    var ids: [TokenID] = []
    var prev: [Int32] = []
    var next: [Int32] = []
    var heap: [UInt64] = []
    var output: [TokenID] = []
}

/// Results of recent words, shared by all callers of one tokenizer. Words repeat a lot in real text.
final class WordCache: Sendable {
    private struct State {
        var index = ByteStringTable(expectedCount: 1 << 14)
        var results: [TokenID] = []
    }

    /// Longer pre-tokens (a SentencePiece text is one) are rare enough not to be worth keeping.
    static let longestWord = 256
    private let state = Mutex(State())
    private let capacity: Int

    init(capacity: Int = 1 << 15) {
        self.capacity = capacity
    }

    /// Appends the cached ids of `word` to `output` and returns true, or returns false.
    func lookup(_ word: UnsafeBufferPointer<UInt8>, into output: inout [TokenID]) -> Bool {
        state.withLock { state in
            guard let packed = state.index.find(word) else { return false }
            let start = Int(packed >> 32), count = Int(packed & 0xFFFF_FFFF)
            output.append(contentsOf: state.results[start..<(start + count)])
            return true
        }
    }

    func store(_ word: UnsafeBufferPointer<UInt8>, ids: ArraySlice<TokenID>) {
        state.withLock { state in
            if state.index.count >= capacity {
                state.index.removeAll()
                state.results.removeAll(keepingCapacity: true)
            }
            let packed = Int64(state.results.count) << 32 | Int64(ids.count)
            if state.index.insert(word, value: packed) { state.results.append(contentsOf: ids) }
        }
    }
}

/// A BPE model over token ids: merges are looked up by (left id, right id) and applied lowest rank
/// first, ties to the leftmost pair, with a binary heap over a linked list of symbols.
struct BPEModel: Sendable {
    let initialSymbols: InitialSymbols
    /// Per byte value: the token of that single byte (byte-level) or its `<0xXX>` token (-1 if none).
    let byteTokens: [TokenID]
    let merges: MergeTable
    /// Raw bytes of every mergeable token -> id.
    let vocabulary: ByteStringTable
    let unknownID: TokenID?
    let fuseUnknown: Bool
    /// Which words that are themselves in the vocabulary become that token without merging.
    let wholeWords: WholeWordTokens
    let cache = WordCache()

    /// Appends the ids of one pre-tokenized word.
    func encodeWord(_ word: UnsafeBufferPointer<UInt8>, into output: inout [TokenID], scratch: inout BPEScratch) {
        guard word.count > 0 else { return }
        if wholeWords.applies(to: word), let id = vocabulary.find(word) {
            output.append(TokenID(id))
            return
        }
        let cacheable = word.count > 1 && word.count <= WordCache.longestWord
        if cacheable, cache.lookup(word, into: &output) { return }
        let start = output.count
        initialize(word, scratch: &scratch)
        merge(&scratch)
        var i: Int32 = scratch.ids.isEmpty ? -1 : 0
        while i >= 0 {
            output.append(scratch.ids[Int(i)])
            i = scratch.next[Int(i)]
        }
        if cacheable { cache.store(word, ids: output[start...]) }
    }

    private func initialize(_ word: UnsafeBufferPointer<UInt8>, scratch: inout BPEScratch) {
        scratch.ids.removeAll(keepingCapacity: true)
        switch initialSymbols {
        case .bytes:
            for byte in word {
                let id = byteTokens[Int(byte)]
                if id >= 0 { scratch.ids.append(id) } else if let unknownID { appendUnknown(unknownID, &scratch) }
            }
        case .characters:
            var i = 0
            while i < word.count {
                let lead = word[i]
                let length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
                let end = min(i + length, word.count)
                let character = UnsafeBufferPointer(rebasing: word[i..<end])
                if let id = vocabulary.find(character) {
                    scratch.ids.append(TokenID(id))
                } else if character.allSatisfy({ byteTokens[Int($0)] >= 0 }) {
                    for byte in character { scratch.ids.append(byteTokens[Int(byte)]) }
                } else if let unknownID {
                    appendUnknown(unknownID, &scratch)
                }
                i = end
            }
        }
        let n = scratch.ids.count
        scratch.prev.removeAll(keepingCapacity: true)
        scratch.next.removeAll(keepingCapacity: true)
        for i in 0..<n {
            scratch.prev.append(Int32(i - 1))
            scratch.next.append(i + 1 < n ? Int32(i + 1) : -1)
        }
    }

    private func appendUnknown(_ id: TokenID, _ scratch: inout BPEScratch) {
        if fuseUnknown, scratch.ids.last == id { return }
        scratch.ids.append(id)
    }

    private func merge(_ scratch: inout BPEScratch) {
        let n = scratch.ids.count
        guard n > 1 else { return }
        scratch.heap.removeAll(keepingCapacity: true)
        let merges = self.merges
        scratch.ids.withUnsafeMutableBufferPointer { ids in
            scratch.prev.withUnsafeMutableBufferPointer { prev in
                scratch.next.withUnsafeMutableBufferPointer { next in
                    var heap = MinHeap(storage: scratch.heap)
                    for i in 0..<(n - 1) {
                        let found = merges.lookup(ids[i], ids[i + 1])
                        if found != MergeTable.absent { heap.push(found & 0xFFFF_FFFF_0000_0000 | UInt64(i)) }
                    }
                    while let top = heap.pop() {
                        let left = Int(top & 0xFFFF_FFFF)
                        let rank = top >> 32
                        guard ids[left] >= 0 else { continue }
                        let right = Int(next[left])
                        guard right >= 0 else { continue }
                        let found = merges.lookup(ids[left], ids[right])
                        guard found != MergeTable.absent, found >> 32 == rank else { continue }
                        ids[left] = TokenID(truncatingIfNeeded: found & 0xFFFF_FFFF)
                        ids[right] = -1
                        let after = next[right]
                        next[left] = after
                        if after >= 0 { prev[Int(after)] = Int32(left) }
                        let before = prev[left]
                        if before >= 0 {
                            let pair = merges.lookup(ids[Int(before)], ids[left])
                            if pair != MergeTable.absent { heap.push(pair & 0xFFFF_FFFF_0000_0000 | UInt64(before)) }
                        }
                        if after >= 0 {
                            let pair = merges.lookup(ids[left], ids[Int(after)])
                            if pair != MergeTable.absent { heap.push(pair & 0xFFFF_FFFF_0000_0000 | UInt64(left)) }
                        }
                    }
                    scratch.heap = heap.storage
                }
            }
        }
        // Compact the surviving symbols into a plain list linked in order.
        var compacted = 0
        var i: Int32 = 0
        while i >= 0 {
            scratch.ids[compacted] = scratch.ids[Int(i)]
            compacted += 1
            i = scratch.next[Int(i)]
        }
        scratch.ids.removeLast(n - compacted)
        for j in 0..<compacted { scratch.next[j] = j + 1 < compacted ? Int32(j + 1) : -1 }
    }
}

/// A binary min-heap of packed (rank << 32 | position) keys.
struct MinHeap {
    var storage: [UInt64]

    mutating func push(_ value: UInt64) {
        storage.append(value)
        var i = storage.count - 1
        while i > 0 {
            let parent = (i - 1) >> 1
            if storage[parent] <= value { break }
            storage[i] = storage[parent]
            i = parent
        }
        storage[i] = value
    }

    mutating func pop() -> UInt64? {
        guard let last = storage.popLast() else { return nil }
        guard !storage.isEmpty else { return last }
        let top = storage[0]
        let n = storage.count
        var i = 0
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            let r = l + 1
            let child = r < n && storage[r] < storage[l] ? r : l
            if storage[child] >= last { break }
            storage[i] = storage[child]
            i = child
        }
        storage[i] = last
        return top
    }
}
