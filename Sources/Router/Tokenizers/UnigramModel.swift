/// Reusable buffers of the Unigram lattice.
struct UnigramScratch {
    /// Per byte position: the best path score ending there, where that last piece starts (-1: none yet) and its id.
    var score: [Double] = []
    var start: [Int32] = []
    var id: [TokenID] = []
    var reversed: [TokenID] = []
}

/// Unigram (SentencePiece): the segmentation of a word into vocabulary pieces with the highest total score,
/// by Viterbi over every piece the trie finds at each character, as HF `tokenizers` runs it. A character
/// no piece starts with becomes an unknown piece scored 10 below the lowest score; consecutive unknown
/// pieces are fused into one, which is then spelled with <0xXX> byte tokens under byte fallback.
struct UnigramModel: Sendable {
    static let unknownPenalty = 10.0

    let trie: ByteTrie
    let scores: [Double]
    let unknownID: TokenID
    let unknownScore: Double
    /// Per byte value: its `<0xXX>` token, or -1; all -1 without byte fallback.
    let byteTokens: [TokenID]
    /// Every piece's bytes -> id, for a fused unknown run that happens to be a piece.
    let vocabulary: ByteStringTable

    /// `pieces`: per id, its text and score, or nil for a token the text never matches (llama.cpp leaves
    /// control, unknown and byte tokens out). `lowestScore`: what the unknown penalty is taken from.
    init(pieces: [(text: String, score: Double)?], lowestScore: Double, unknownID: TokenID, byteFallback: Bool) {
        var trie = ByteTrie(expectedBytes: pieces.reduce(0) { $0 + ($1?.text.utf8.count ?? 0) })
        var vocabulary = ByteStringTable(expectedCount: pieces.count)
        var byteTokens = [TokenID](repeating: -1, count: 256)
        for (id, piece) in pieces.enumerated() {
            guard let piece else { continue }
            trie.insert(piece.text.utf8, value: Int32(id))
            vocabulary.insert(Array(piece.text.utf8), value: Int64(id))
            if byteFallback, let b = SentencePiece.byteValue(of: piece.text), byteTokens[Int(b)] < 0 {
                byteTokens[Int(b)] = TokenID(id)
            }
        }
        self.trie = trie
        self.vocabulary = vocabulary
        self.byteTokens = byteTokens
        scores = pieces.map { $0?.score ?? 0 }
        self.unknownID = unknownID
        unknownScore = lowestScore - Self.unknownPenalty
    }

    func encodeWord(_ word: UnsafeBufferPointer<UInt8>, into output: inout [TokenID], scratch: inout UnigramScratch) {
        let n = word.count
        guard n > 0 else { return }
        scratch.score.removeAll(keepingCapacity: true)
        scratch.start.removeAll(keepingCapacity: true)
        scratch.id.removeAll(keepingCapacity: true)
        scratch.score.append(contentsOf: repeatElement(0, count: n + 1))
        scratch.start.append(contentsOf: repeatElement(-1, count: n + 1))
        scratch.id.append(contentsOf: repeatElement(unknownID, count: n + 1))
        scratch.score.withUnsafeMutableBufferPointer { score in
            scratch.start.withUnsafeMutableBufferPointer { start in
                scratch.id.withUnsafeMutableBufferPointer { id in
                    scores.withUnsafeBufferPointer { scores in
                        @inline(__always)
                        func relax(_ end: Int, _ from: Int, _ candidate: Double, _ piece: TokenID) {
                            if start[end] < 0 || candidate > score[end] {
                                score[end] = candidate
                                start[end] = Int32(from)
                                id[end] = piece
                            }
                        }
                        var p = 0
                        while p < n {
                            let lead = word[p]
                            let characterEnd = min(n, p + (lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4))
                            let base = score[p]
                            var coversCharacter = false
                            var node = ByteTrie.root
                            var i = p
                            while i < n {
                                node = trie.child(node, word[i])
                                if node == ByteTrie.none { break }
                                i += 1
                                let piece = trie.value(at: node)
                                if piece != ByteTrie.none {
                                    relax(i, p, base + scores[Int(piece)], piece)
                                    if i == characterEnd { coversCharacter = true }
                                }
                            }
                            if !coversCharacter { relax(characterEnd, p, base + unknownScore, unknownID) }
                            p = characterEnd
                        }
                    }
                }
            }
        }
        // Back from the end; runs of unknown pieces are fused.
        scratch.reversed.removeAll(keepingCapacity: true)
        var end = n
        var unknownEnd = -1
        while end > 0 {
            let from = Int(scratch.start[end])
            let piece = scratch.id[end]
            if piece == unknownID {
                if unknownEnd < 0 { unknownEnd = end }
            } else {
                if unknownEnd >= 0 { appendUnknownReversed(word, end..<unknownEnd, &scratch.reversed) }
                unknownEnd = -1
                scratch.reversed.append(piece)
            }
            end = from
        }
        if unknownEnd >= 0 { appendUnknownReversed(word, 0..<unknownEnd, &scratch.reversed) }
        output.append(contentsOf: scratch.reversed.reversed())
    }

    /// A fused unknown run, pushed in reverse: the piece it spells if any, else its byte tokens, else unknown.
    private func appendUnknownReversed(_ word: UnsafeBufferPointer<UInt8>, _ range: Range<Int>,
                                       _ reversed: inout [TokenID]) {
        let bytes = UnsafeBufferPointer(rebasing: word[range])
        if let id = vocabulary.find(bytes) {
            reversed.append(TokenID(id))
        } else if bytes.allSatisfy({ byteTokens[Int($0)] >= 0 }) {
            for b in bytes.reversed() { reversed.append(byteTokens[Int(b)]) }
        } else {
            reversed.append(unknownID)
        }
    }
}
