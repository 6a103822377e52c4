/// Turns a stream of token ids into text as it becomes complete: never splits a UTF-8 sequence,
/// and the concatenation of everything it returns equals `tokenizer.decode` of all the ids.
public struct IncrementalDetokenizer: Sendable {
    public let tokenizer: any Tokenizer
    public let skipSpecialTokens: Bool
    /// Bytes of an unfinished UTF-8 sequence held back until the next token completes it.
    private var pending: [UInt8] = []
    /// Nothing has been produced yet, so a leading space may still need stripping.
    private var atStart = true

    /// `continuingText`: the ids continue text that came before them (a completion after its
    /// prompt), so a SentencePiece leading space is real text and is kept, as vLLM streams it.
    /// Without it the ids are a whole text and the output equals `tokenizer.decode` of them.
    public init(tokenizer: any Tokenizer, skipSpecialTokens: Bool = true, continuingText: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
        atStart = !continuingText
    }

    /// Adds one token and returns the text it completed (possibly empty).
    public mutating func append(_ id: TokenID) -> String {
        var bytes = tokenizer.pieceBytes(id, skipSpecialTokens: skipSpecialTokens)
        if atStart, !bytes.isEmpty {
            atStart = false
            if tokenizer.stripsLeadingSpace, bytes[0] == 0x20 { bytes.removeFirst() }
        }
        pending.append(contentsOf: bytes)
        return drainComplete()
    }

    public mutating func append(_ ids: [TokenID]) -> String {
        var text = ""
        for id in ids { text += append(id) }
        return text
    }

    /// Flushes what is held back at the end of the stream (an unfinished sequence becomes U+FFFD).
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    private mutating func drainComplete() -> String {
        let keep = Self.incompleteSuffixLength(pending)
        let ready = pending.count - keep
        guard ready > 0 else { return "" }
        let text = String(decoding: pending[..<ready], as: UTF8.self)
        pending.removeFirst(ready)
        return text
    }

    /// Length of a trailing lead byte plus continuation bytes that a later byte could still complete.
    static func incompleteSuffixLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        var back = 1
        while back <= min(3, n) {
            let b = bytes[n - back]
            if b & 0xC0 == 0x80 {
                back += 1
                continue
            }
            let needed = b >= 0xF0 && b <= 0xF4 ? 4 : b >= 0xE0 && b < 0xF0 ? 3 : b >= 0xC2 && b < 0xE0 ? 2 : 1
            return needed > back ? back : 0
        }
        return 0
    }
}
