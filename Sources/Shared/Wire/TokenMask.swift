import Foundation

/// A set of token ids as one bit per id (bit i is bit i % 64 of word i / 64): the tokens a
/// structured-output sequence may sample next. On the wire it is the words' little-endian bytes,
/// cut after the last non-zero byte but never empty (an empty field means "no mask").
public struct TokenMask: Sendable, Equatable {
    public private(set) var words: [UInt64]

    /// An empty mask with room for `vocabularySize` tokens.
    public init(vocabularySize: Int) {
        words = [UInt64](repeating: 0, count: (vocabularySize + 63) / 64)
    }

    public init(words: [UInt64]) {
        self.words = words
    }

    public func contains(_ token: Int32) -> Bool {
        guard token >= 0 else { return false }
        let word = Int(token) >> 6
        return word < words.count && words[word] & (1 << UInt64(token & 63)) != 0
    }

    public mutating func insert(_ token: Int32) {
        precondition(token >= 0, "token ids are not negative")
        let word = Int(token) >> 6
        if word >= words.count { words.append(contentsOf: repeatElement(0, count: word + 1 - words.count)) }
        words[word] |= 1 << UInt64(token & 63)
    }

    /// How many tokens are allowed.
    public var count: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    /// How many allowed tokens have ids below `limit`.
    public func count(below limit: Int) -> Int {
        var total = 0
        for (index, word) in words.enumerated() where index * 64 < limit {
            let bits = limit - index * 64
            total += (bits >= 64 ? word : word & ((1 << UInt64(bits)) - 1)).nonzeroBitCount
        }
        return total
    }

    /// Calls `body` with the mask's words (for the sampler's loop over the vocabulary).
    public func withWords<R>(_ body: (UnsafeBufferPointer<UInt64>) throws -> R) rethrows -> R {
        try words.withUnsafeBufferPointer(body)
    }

    // MARK: Wire encoding

    public var wireBytes: Data {
        // The words' bytes in little-endian order, up to the last non-zero byte.
        var length = 0
        if let last = words.lastIndex(where: { $0 != 0 }) {
            length = last * 8 + (64 - words[last].leadingZeroBitCount + 7) / 8
        }
        guard length > 0 else { return Data([0]) }
        var bytes = Data(count: length)
        bytes.withUnsafeMutableBytes { raw in
            for index in 0..<(length + 7) / 8 {
                let little = words[index].littleEndian
                withUnsafeBytes(of: little) { word in
                    let count = min(8, length - index * 8)
                    raw.baseAddress!.advanced(by: index * 8).copyMemory(from: word.baseAddress!, byteCount: count)
                }
            }
        }
        return bytes
    }

    public init(wireBytes: Data) {
        var words = [UInt64](repeating: 0, count: (wireBytes.count + 7) / 8)
        for (index, byte) in wireBytes.enumerated() {
            words[index >> 3] |= UInt64(byte) << UInt64((index & 7) * 8)
        }
        self.words = words
    }
}
