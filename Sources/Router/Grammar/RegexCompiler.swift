/// Compiles the regular subset of regex syntax that JSON Schema `pattern`s and vLLM's `regex`
/// output use into a byte grammar. The whole text must match (leading `^` and trailing `$` are
/// accepted and mean the same); anything that is not regular, or that this subset leaves out
/// (backreferences, lookaround, `\b`, anchors in the middle, possessive quantifiers), is an error
/// naming the construct.
///
/// In `jsonString` mode the pattern constrains the *value* of a JSON string, so characters JSON
/// must escape are matched in their escaped form: `"` as `\"`, `\` as `\\`, control characters as
/// `\n \t \r \b \f` or `\u00XX` (one spelling each, the one `JSONSerialization` writes).
struct RegexCompiler {
    let pattern: String
    let jsonString: Bool
    private let scalars: [Unicode.Scalar]
    private var position = 0

    static let maximumRepeat = 1_000

    init(pattern: String, jsonString: Bool) {
        self.pattern = pattern
        self.jsonString = jsonString
        self.scalars = Array(pattern.unicodeScalars)
    }

    static func compile(_ pattern: String, jsonString: Bool) throws(GrammarError) -> GrammarNode {
        var compiler = RegexCompiler(pattern: pattern, jsonString: jsonString)
        return try compiler.parseWhole()
    }

    private func error(_ construct: String, at offset: Int? = nil) -> GrammarError {
        .unsupportedRegex(construct, pattern: pattern, offset: offset ?? position)
    }

    private var atEnd: Bool { position >= scalars.count }
    private var current: Unicode.Scalar? { atEnd ? nil : scalars[position] }

    private mutating func parseWhole() throws(GrammarError) -> GrammarNode {
        if current == "^" { position += 1 }
        let node = try parseAlternation()
        if current == "$" { position += 1 }
        if !atEnd {
            throw current == ")" ? error("unbalanced ')'") : error("'\(current!)' (anchors are allowed only at the ends)")
        }
        return node
    }

    private mutating func parseAlternation() throws(GrammarError) -> GrammarNode {
        var branches = [try parseSequence()]
        while current == "|" {
            position += 1
            branches.append(try parseSequence())
        }
        return branches.count == 1 ? branches[0] : .choice(branches)
    }

    private mutating func parseSequence() throws(GrammarError) -> GrammarNode {
        var items: [GrammarNode] = []
        while let scalar = current, scalar != "|", scalar != ")" {
            if scalar == "$", position == scalars.count - 1 { break }
            var atom = try parseAtom()
            atom = try parseQuantifiers(atom)
            items.append(atom)
        }
        return items.count == 1 ? items[0] : .sequence(items)
    }

    private mutating func parseQuantifiers(_ atom: GrammarNode) throws(GrammarError) -> GrammarNode {
        var node = atom
        while let scalar = current {
            let start = position
            var bounds: (Int, Int?)
            switch scalar {
            case "?": bounds = (0, 1); position += 1
            case "*": bounds = (0, nil); position += 1
            case "+": bounds = (1, nil); position += 1
            case "{":
                guard let parsed = try parseBraces() else { return node }
                bounds = parsed
            default: return node
            }
            if current == "?" { position += 1 }  // lazy: the same language
            if current == "+" { throw error("possessive quantifier") }
            if let max = bounds.1, max < bounds.0 { throw error("{m,n} with n < m", at: start) }
            if bounds.0 > Self.maximumRepeat || (bounds.1 ?? 0) > Self.maximumRepeat {
                throw error("repeat count above \(Self.maximumRepeat)", at: start)
            }
            node = .repeating(node, min: bounds.0, max: bounds.1)
        }
        return node
    }

    /// `{m}`, `{m,}`, `{m,n}`; nil (and position unchanged) when the brace is not a quantifier.
    private mutating func parseBraces() throws(GrammarError) -> (Int, Int?)? {
        let start = position
        position += 1
        func number(_ compiler: inout RegexCompiler) -> Int? {
            var digits = ""
            while let scalar = compiler.current, ("0"..."9").contains(scalar) { digits.unicodeScalars.append(scalar); compiler.position += 1 }
            return digits.isEmpty ? nil : Int(digits.prefix(6))
        }
        guard let low = number(&self) else { position = start; throw error("'{' that is not a quantifier") }
        var high: Int? = low
        if current == "," {
            position += 1
            high = number(&self)
        }
        guard current == "}" else { position = start; throw error("unterminated quantifier") }
        position += 1
        return (low, high)
    }

    private mutating func parseAtom() throws(GrammarError) -> GrammarNode {
        let scalar = current!
        let start = position
        position += 1
        switch scalar {
        case "(":
            if current == "?" {
                if scalars.count > position + 1, scalars[position + 1] == ":" {
                    position += 2
                } else if scalars.count > position + 1, scalars[position + 1] == "<" || scalars[position + 1] == "P" {
                    // A named group: (?<name>…) or (?P<name>…); the name has no effect on the language.
                    if scalars[position + 1] == "<", scalars.count > position + 2, ["=", "!"].contains(scalars[position + 2]) {
                        throw error("lookbehind", at: start)
                    }
                    while let next = current, next != ">" { position += 1 }
                    guard current == ">" else { throw error("unterminated group name", at: start) }
                    position += 1
                } else {
                    throw error("group '(?\(scalars.count > position + 1 ? String(scalars[position + 1]) : "")' (lookaround and flags are not regular here)", at: start)
                }
            }
            let inner = try parseAlternation()
            guard current == ")" else { throw error("unbalanced '('", at: start) }
            position += 1
            return inner
        case "[":
            return scalarSet(try parseClass(start: start))
        case ".":
            return scalarSet(Self.complement([10...10]))
        case "\\":
            return try parseEscape(inClass: false, start: start).node(self)
        case "^", "$":
            throw error("anchor '\(scalar)' inside the pattern", at: start)
        case "*", "+", "?":
            throw error("quantifier '\(scalar)' with nothing to repeat", at: start)
        case "{":
            position = start
            throw error("'{' that is not a quantifier")
        default:
            return scalarSet([scalar.value...scalar.value])
        }
    }

    private enum Escape {
        case scalar(UInt32)
        case set([ClosedRange<UInt32>])

        func node(_ compiler: RegexCompiler) -> GrammarNode {
            switch self {
            case .scalar(let value): return compiler.scalarSet([value...value])
            case .set(let ranges): return compiler.scalarSet(ranges)
            }
        }
        var ranges: [ClosedRange<UInt32>] {
            switch self {
            case .scalar(let value): return [value...value]
            case .set(let ranges): return ranges
            }
        }
    }

    static let digit: [ClosedRange<UInt32>] = [0x30...0x39]
    static let word: [ClosedRange<UInt32>] = [0x30...0x39, 0x41...0x5A, 0x5F...0x5F, 0x61...0x7A]
    static let space: [ClosedRange<UInt32>] = [0x09...0x0D, 0x20...0x20]

    /// After the backslash.
    private mutating func parseEscape(inClass: Bool, start: Int) throws(GrammarError) -> Escape {
        guard let scalar = current else { throw error("trailing backslash", at: start) }
        position += 1
        switch scalar {
        case "d": return .set(Self.digit)
        case "D": return .set(Self.complement(Self.digit))
        case "w": return .set(Self.word)
        case "W": return .set(Self.complement(Self.word))
        case "s": return .set(Self.space)
        case "S": return .set(Self.complement(Self.space))
        case "n": return .scalar(0x0A)
        case "t": return .scalar(0x09)
        case "r": return .scalar(0x0D)
        case "f": return .scalar(0x0C)
        case "v": return .scalar(0x0B)
        case "0": return .scalar(0)
        case "x", "u":
            let count = scalar == "x" ? 2 : 4
            var value: UInt32 = 0
            for _ in 0..<count {
                guard let digit = current, let hex = UInt32(String(digit), radix: 16) else { throw error("malformed \\\(scalar) escape", at: start) }
                value = value * 16 + hex
                position += 1
            }
            return .scalar(value)
        case "b" where inClass: return .scalar(0x08)
        default:
            if ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar) {
                throw error("escape '\\\(scalar)'", at: start)
            }
            return .scalar(scalar.value)
        }
    }

    /// After `[`.
    private mutating func parseClass(start: Int) throws(GrammarError) -> [ClosedRange<UInt32>] {
        var negated = false
        if current == "^" { negated = true; position += 1 }
        var ranges: [ClosedRange<UInt32>] = []
        var first = true
        while true {
            guard let scalar = current else { throw error("unterminated character class", at: start) }
            if scalar == "]" && !first { position += 1; break }
            first = false
            let itemStart = position
            position += 1
            var low: Escape
            if scalar == "\\" {
                low = try parseEscape(inClass: true, start: itemStart)
            } else if scalar == "[" && current == ":" {
                throw error("POSIX class", at: itemStart)
            } else {
                low = .scalar(scalar.value)
            }
            if case .scalar(let lowValue) = low, current == "-", position + 1 < scalars.count, scalars[position + 1] != "]" {
                position += 1
                let highStart = position
                let highScalar = current!
                position += 1
                var high: UInt32 = highScalar.value
                if highScalar == "\\" {
                    guard case .scalar(let value) = try parseEscape(inClass: true, start: highStart) else {
                        throw error("class shorthand as a range end", at: highStart)
                    }
                    high = value
                }
                guard lowValue <= high else { throw error("reversed range", at: itemStart) }
                low = .set([lowValue...high])
            }
            ranges += low.ranges
        }
        let normalised = Self.normalise(ranges)
        return negated ? Self.complement(normalised) : normalised
    }

    static func normalise(_ ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
        var result: [ClosedRange<UInt32>] = []
        for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = result.last, range.lowerBound <= last.upperBound &+ 1 {
                result[result.count - 1] = last.lowerBound...max(last.upperBound, range.upperBound)
            } else {
                result.append(range)
            }
        }
        return result
    }

    /// Every scalar not in `ranges` (surrogates are dropped later, when encoding).
    static func complement(_ ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
        var result: [ClosedRange<UInt32>] = []
        var next: UInt32 = 0
        for range in normalise(ranges) {
            if range.lowerBound > next { result.append(next...(range.lowerBound - 1)) }
            next = range.upperBound + 1
        }
        if next <= 0x10FFFF { result.append(next...0x10FFFF) }
        return result
    }

    /// The bytes of any scalar in the set, JSON-escaped when the pattern is a string's value.
    func scalarSet(_ ranges: [ClosedRange<UInt32>]) -> GrammarNode {
        guard jsonString else { return UTF8Ranges.node(for: ranges) }
        var plain: [ClosedRange<UInt32>] = []
        var escaped: [GrammarNode] = []
        for range in Self.normalise(ranges) {
            var low = range.lowerBound
            while low <= range.upperBound {
                if low < 0x20 || low == 0x22 || low == 0x5C {
                    escaped.append(.text(JSONText.escape(low)))
                    low += 1
                    continue
                }
                // The longest run from `low` that needs no escaping.
                var high = range.upperBound
                if low < 0x22 { high = min(high, 0x21) } else if low < 0x5C { high = min(high, 0x5B) }
                plain.append(low...high)
                if high == UInt32.max { break }
                low = high + 1
            }
        }
        var alternatives = escaped
        if !plain.isEmpty { alternatives.append(UTF8Ranges.node(for: plain)) }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }
}

/// JSON text pieces shared by the schema and regex compilers.
enum JSONText {
    /// The one escape written for a scalar JSON requires escaping.
    static func escape(_ scalar: UInt32) -> String {
        switch scalar {
        case 0x22: return "\\\""
        case 0x5C: return "\\\\"
        case 0x08: return "\\b"
        case 0x0C: return "\\f"
        case 0x0A: return "\\n"
        case 0x0D: return "\\r"
        case 0x09: return "\\t"
        default:
            let hex = String(scalar, radix: 16)
            return "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        }
    }
}
