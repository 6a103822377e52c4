/// The grammar as a tree of byte-level combinators: what the schema and regex compilers produce
/// and the automaton builder consumes. Rules (for `$ref` and the any-JSON-value grammar) are
/// referred to by index so that recursion is finite.
indirect enum GrammarNode: Sendable {
    /// Exactly these bytes.
    case literal([UInt8])
    /// One byte in any of the ranges.
    case byteSet([ClosedRange<UInt8>])
    case sequence([GrammarNode])
    case choice([GrammarNode])
    /// `min...max` copies (unbounded when `max` is nil).
    case repeating(GrammarNode, min: Int, max: Int?)
    /// The grammar of rule `index` (a call: the automaton keeps a return stack).
    case rule(Int)

    static let empty = GrammarNode.sequence([])

    static func text(_ string: String) -> GrammarNode { .literal(Array(string.utf8)) }

    static func optional(_ node: GrammarNode) -> GrammarNode { .repeating(node, min: 0, max: 1) }

    static func byte(_ value: UInt8) -> GrammarNode { .byteSet([value...value]) }

    /// A rough count of automaton states, to refuse schemas whose unrolling would be huge.
    var size: Int {
        switch self {
        case .literal(let bytes): return bytes.count + 1
        case .byteSet: return 2
        case .sequence(let parts), .choice(let parts): return parts.reduce(1) { $0 + $1.size }
        case .repeating(let node, let min, let max): return node.size * Swift.max(max ?? (min + 1), 1) + 1
        case .rule: return 2
        }
    }
}

// MARK: - Unicode scalars as UTF-8 byte sequences

enum UTF8Ranges {
    /// A node matching the UTF-8 encoding of any scalar in `ranges` (surrogates are never produced).
    static func node(for ranges: [ClosedRange<UInt32>]) -> GrammarNode {
        var alternatives: [GrammarNode] = []
        for range in ranges {
            for piece in split(range) { alternatives.append(contentsOf: sequences(piece.lowerBound, piece.upperBound)) }
        }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    /// Splits a range at the UTF-8 length boundaries and drops the surrogate block.
    private static func split(_ range: ClosedRange<UInt32>) -> [ClosedRange<UInt32>] {
        let boundaries: [ClosedRange<UInt32>] = [0...0x7F, 0x80...0x7FF, 0x800...0xD7FF, 0xE000...0xFFFF, 0x10000...0x10FFFF]
        return boundaries.compactMap { boundary in
            let low = max(range.lowerBound, boundary.lowerBound), high = min(range.upperBound, boundary.upperBound)
            return low <= high ? low...high : nil
        }
    }

    private static func encode(_ scalar: UInt32) -> [UInt8] {
        Array(String(Unicode.Scalar(scalar)!).utf8)
    }

    /// Byte-range sequences for scalars low...high of one encoded length (the utf8-ranges construction:
    /// split until every byte position is either fixed or spans its full continuation range).
    private static func sequences(_ low: UInt32, _ high: UInt32) -> [GrammarNode] {
        let a = encode(low), b = encode(high)
        if a.count == 1 { return [.byteSet([a[0]...b[0]])] }
        return byteSequences(a, b).map { parts in
            .sequence(parts.map { GrammarNode.byteSet([$0]) })
        }
    }

    /// All byte-range sequences covering the encodings from `a` to `b` (same length, a <= b).
    private static func byteSequences(_ a: [UInt8], _ b: [UInt8]) -> [[ClosedRange<UInt8>]] {
        if a.count == 1 { return [[a[0]...b[0]]] }
        let restLow = Array(a.dropFirst()), restHigh = Array(b.dropFirst())
        let minRest = [UInt8](repeating: 0x80, count: restLow.count)
        let maxRest = [UInt8](repeating: 0xBF, count: restLow.count)
        if a[0] == b[0] {
            return byteSequences(restLow, restHigh).map { [a[0]...a[0]] + $0 }
        }
        var result: [[ClosedRange<UInt8>]] = []
        var first = a[0], last = b[0]
        if restLow != minRest {
            result += byteSequences(restLow, maxRest).map { [a[0]...a[0]] + $0 }
            first += 1
        }
        var tail: [[ClosedRange<UInt8>]] = []
        if restHigh != maxRest {
            tail = byteSequences(minRest, restHigh).map { [b[0]...b[0]] + $0 }
            last -= 1
        }
        if first <= last { result.append([first...last] + Array(repeating: 0x80...0xBF, count: restLow.count)) }
        return result + tail
    }
}
