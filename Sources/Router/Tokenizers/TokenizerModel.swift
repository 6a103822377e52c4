/// The model that turns one pre-tokenized word into ids.
enum TokenizerModel: Sendable {
    case bpe(BPEModel)
    case wordPiece(WordPieceModel)
    case unigram(UnigramModel)

    var unknownID: TokenID? {
        switch self {
        case .bpe(let model): model.unknownID
        case .wordPiece(let model): model.unknownID
        case .unigram(let model): model.unknownID
        }
    }
}

/// Reusable buffers of one encode call, per model kind.
struct ModelScratch {
    var bpe = BPEScratch()
    var unigram = UnigramScratch()
}

/// WordPiece (BERT): each word is split greedily into the longest vocabulary entries from the left; a word
/// with a part no entry covers becomes one unknown token. HF spells a word-inner piece with a prefix
/// (`##ing`); llama.cpp's GGUF spells a word-initial piece with one (`▁walk`) and inner ones bare.
struct WordPieceModel: Sendable {
    let trie: ByteTrie
    /// The trie node after the word-initial prefix (the root when there is none).
    let wordStart: Int32
    /// The trie node after the continuation prefix (the root when there is none).
    let continuation: Int32
    let unknownID: TokenID
    /// Longer words (in Unicode scalars) are unknown without looking (HF `max_input_chars_per_word`).
    let maxScalars: Int

    init(tokens: [(text: String, id: TokenID)], wordPrefix: String, continuationPrefix: String,
         unknownID: TokenID, maxScalars: Int) {
        var trie = ByteTrie(expectedBytes: tokens.reduce(0) { $0 + $1.text.utf8.count })
        for (text, id) in tokens { trie.insert(text.utf8, value: id) }
        self.trie = trie
        wordStart = trie.walk(wordPrefix.utf8)
        continuation = trie.walk(continuationPrefix.utf8)
        self.unknownID = unknownID
        self.maxScalars = maxScalars
    }

    func encodeWord(_ word: UnsafeBufferPointer<UInt8>, into output: inout [TokenID]) {
        guard word.count > 0 else { return }
        let first = output.count
        var scalars = 0
        for byte in word where byte & 0xC0 != 0x80 { scalars += 1 }
        var start = 0
        var from = wordStart
        while scalars <= maxScalars && from != ByteTrie.none {
            // The longest entry from `start`; a prefix that is itself an entry (llama.cpp's `▁`) counts too.
            var bestEnd = -1
            var bestID = from == ByteTrie.root ? ByteTrie.none : trie.value(at: from)
            if bestID != ByteTrie.none { bestEnd = start }
            var node = from
            var i = start
            while i < word.count {
                node = trie.child(node, word[i])
                if node == ByteTrie.none { break }
                i += 1
                let id = trie.value(at: node)
                if id != ByteTrie.none && (i == word.count || word[i] & 0xC0 != 0x80) {
                    bestEnd = i
                    bestID = id
                }
            }
            guard bestEnd >= 0, bestEnd > start || from == wordStart else { break }
            output.append(bestID)
            if bestEnd == word.count { return }
            start = bestEnd
            from = continuation
        }
        output.removeSubrange(first...)
        output.append(unknownID)
    }
}
