/// A set of scalars a pre-tokenizer rule matches: a general category or explicit ranges.
enum ScalarSet: Sendable, Equatable {
    case letters
    case punctuation
    /// `\p{P}` plus some ASCII symbols (Falcon).
    case punctuationOr([UInt32])
    case ranges([ClosedRange<UInt32>])

    @inline(__always)
    func contains(_ value: UInt32, class flags: UInt8) -> Bool {
        switch self {
        case .letters: return flags & ScalarClass.letter.rawValue != 0
        case .punctuation: return flags & ScalarClass.punctuation.rawValue != 0
        case .punctuationOr(let extra): return flags & ScalarClass.punctuation.rawValue != 0 || extra.contains(value)
        case .ranges(let ranges):
            for range in ranges where range.contains(value) { return true }
            return false
        }
    }
}

/// One regex of a tokenizer family, written as a scanner over scalars. Applied to a piece of text the
/// way `Split(behavior: Isolated)` applies a regex: every match and every gap between matches becomes a piece.
enum SplitRule: Sendable, Equatable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` (GPT-2, ByteLevel use_regex).
    case gpt2
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxDigits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    /// (Llama 3 with maxDigits 3, Qwen2 with 1).
    case llama3(maxDigits: Int)
    /// Qwen 3.5's: Llama 3's with single digits and marks counted with letters:
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case qwen35
    /// tiktoken's o200k (GPT-4o, Llama 4; `contractions`, maxDigits 3) and Mistral's Tekken (neither, maxDigits 1):
    /// `[^\r\n\p{L}\p{N}]?U*L+C?|[^\r\n\p{L}\p{N}]?U+L*C?|\p{N}{1,maxDigits}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    /// with U = `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`, L = `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`, C = `(?i:'s|'t|'re|'ve|'m|'ll|'d)`.
    case caseAwareWords(contractions: Bool, maxDigits: Int)
    /// `\p{N}` (individual) or `\p{N}+` (HF `Digits`).
    case digits(individual: Bool)
    /// `\p{N}{1,maxLength}`
    case digitGroups(maxLength: Int)
    /// `[0-9][0-9][0-9]` (Falcon)
    case asciiDigitTriples
    /// DeepSeek V3's main regex:
    /// `[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case deepSeekV3
    /// `[\r\n]`
    case newline
    /// `[^\n]+|[\n]+` (Gemma 4, newlines only) or `\S+|\s+` (whitespace splitting)
    case alternatingRuns(newlinesOnly: Bool)
    /// Every scalar of the set is a piece of its own (BERT's punctuation).
    case isolated(ScalarSet)
    /// `\s?[set]+`
    case optionalWhitespaceThenRun(ScalarSet)
    /// `[set]+`
    case run(ScalarSet)
    /// `\s+$`
    case trailingWhitespace
    /// Split before every U+2581 (Metaspace with split, MergedWithNext).
    case beforeMetaspace
    /// `\w+|[^\w\s]+` (HF `Whitespace`), `\w` being Unicode's word characters: alphabetic, marks,
    /// decimal digits, connector punctuation, joiners.
    case words

    private static let letter = ScalarClass.letter.rawValue
    private static let number = ScalarClass.number.rawValue
    private static let whitespace = ScalarClass.whitespace.rawValue
    private static let letterNumberOrSpace = letter | number | whitespace

    /// Refines the pieces given by `cuts` (sorted scalar indices, first 0, last count) into `output`.
    func refine(_ text: ScalarText, cuts: [Int32], into output: inout [Int32]) {
        output.removeAll(keepingCapacity: true)
        output.append(0)
        text.scalars.withUnsafeBufferPointer { scalars in
            text.classes.withUnsafeBufferPointer { classes in
                for p in 1..<cuts.count {
                    let start = Int(cuts[p - 1]), end = Int(cuts[p])
                    var i = start
                    while i < end {
                        let (matchEnd, next) = match(scalars, classes, at: i, end: end)
                        if matchEnd > i {
                            if output.last! != Int32(i) { output.append(Int32(i)) }
                            output.append(Int32(matchEnd))
                            i = matchEnd
                        } else {
                            i = next
                        }
                    }
                    if output.last! != Int32(end) { output.append(Int32(end)) }
                }
            }
        }
    }

    /// The end of the match starting at `i` (> i), or (-1, next position worth trying).
    @inline(__always)
    private func match(_ s: UnsafeBufferPointer<UInt32>, _ c: UnsafeBufferPointer<UInt8>,
                       at i: Int, end b: Int) -> (Int, Int) {
        switch self {
        case .gpt2:
            return (Self.matchGPT2(s, c, i, b), i + 1)
        case .llama3(let maxDigits):
            return (Self.matchLlama3(s, c, i, b, maxDigits, letters: Self.letter), i + 1)
        case .qwen35:
            return (Self.matchLlama3(s, c, i, b, 1, letters: Self.letterOrMark), i + 1)
        case .caseAwareWords(let contractions, let maxDigits):
            return (Self.matchCaseAware(s, c, i, b, contractions: contractions, maxDigits: maxDigits), i + 1)
        case .digits(let individual):
            guard c[i] & Self.number != 0 else { return (-1, i + 1) }
            if individual { return (i + 1, i + 1) }
            return (Self.runEnd(c, i, b, Self.number), i + 1)
        case .digitGroups(let maxLength):
            guard c[i] & Self.number != 0 else { return (-1, i + 1) }
            var k = i + 1
            while k < b && k - i < maxLength && c[k] & Self.number != 0 { k += 1 }
            return (k, i + 1)
        case .asciiDigitTriples:
            if i + 3 <= b, (0x30...0x39).contains(s[i]), (0x30...0x39).contains(s[i + 1]), (0x30...0x39).contains(s[i + 2]) {
                return (i + 3, i + 3)
            }
            return (-1, i + 1)
        case .deepSeekV3:
            return (Self.matchDeepSeekV3(s, c, i, b), i + 1)
        case .newline:
            return (s[i] == 0x0A || s[i] == 0x0D ? i + 1 : -1, i + 1)
        case .alternatingRuns(let newlinesOnly):
            @inline(__always) func isBreak(_ k: Int) -> Bool {
                newlinesOnly ? s[k] == 0x0A : c[k] & Self.whitespace != 0
            }
            let kind = isBreak(i)
            var k = i + 1
            while k < b && isBreak(k) == kind { k += 1 }
            return (k, k)
        case .isolated(let set):
            return (set.contains(s[i], class: c[i]) ? i + 1 : -1, i + 1)
        case .optionalWhitespaceThenRun(let set):
            var j = i
            if c[i] & Self.whitespace != 0, i + 1 < b, set.contains(s[i + 1], class: c[i + 1]) { j = i + 1 }
            guard set.contains(s[j], class: c[j]) else { return (-1, i + 1) }
            var k = j + 1
            while k < b && set.contains(s[k], class: c[k]) { k += 1 }
            return (k, i + 1)
        case .run(let set):
            guard set.contains(s[i], class: c[i]) else { return (-1, i + 1) }
            var k = i + 1
            while k < b && set.contains(s[k], class: c[k]) { k += 1 }
            return (k, i + 1)
        case .trailingWhitespace:
            guard c[i] & Self.whitespace != 0 else { return (-1, i + 1) }
            let k = Self.runEnd(c, i, b, Self.whitespace)
            // No position inside a whitespace run that stops before the end can match either.
            return k == b ? (b, b) : (-1, k)
        case .beforeMetaspace:
            // Matches "▁[^▁]*": each piece starts with its marker.
            var k = i + 1
            while k < b && s[k] != 0x2581 { k += 1 }
            return (k, i + 1)
        case .words:
            if c[i] & Self.whitespace != 0 { return (-1, i + 1) }
            let word = Self.isWordCharacter(s[i], c[i])
            var k = i + 1
            while k < b && c[k] & Self.whitespace == 0 && Self.isWordCharacter(s[k], c[k]) == word { k += 1 }
            return (k, k)
        }
    }

    @inline(__always)
    private static func isWordCharacter(_ v: UInt32, _ flags: UInt8) -> Bool {
        if flags & (letter | ScalarClass.mark.rawValue) != 0 { return true }
        if v < 0x80 { return (0x30...0x39).contains(v) || v == 0x5F }
        guard let scalar = Unicode.Scalar(v) else { return false }
        let properties = scalar.properties
        switch properties.generalCategory {
        case .decimalNumber, .connectorPunctuation: return true
        default: return properties.isAlphabetic || properties.isJoinControl
        }
    }

    @inline(__always)
    private static func runEnd(_ c: UnsafeBufferPointer<UInt8>, _ i: Int, _ b: Int, _ flag: UInt8) -> Int {
        var k = i + 1
        while k < b && c[k] & flag != 0 { k += 1 }
        return k
    }

    @inline(__always)
    private static func isOther(_ flags: UInt8) -> Bool { flags & letterNumberOrSpace == 0 }

    @inline(__always)
    private static func matchGPT2(_ s: UnsafeBufferPointer<UInt32>, _ c: UnsafeBufferPointer<UInt8>,
                                  _ i: Int, _ b: Int) -> Int {
        let ch = s[i]
        if ch == 0x27, i + 1 < b {  // '
            let n1 = s[i + 1]
            if n1 == 0x73 || n1 == 0x74 || n1 == 0x6D || n1 == 0x64 { return i + 2 }  // s t m d
            if i + 2 < b {
                let n2 = s[i + 2]
                if (n1 == 0x72 && n2 == 0x65) || (n1 == 0x76 && n2 == 0x65) || (n1 == 0x6C && n2 == 0x6C) {
                    return i + 3  // re ve ll
                }
            }
        }
        var j = i
        if ch == 0x20, i + 1 < b, c[i + 1] & whitespace == 0 { j = i + 1 }
        let cj = c[j]
        if cj & letter != 0 { return runEnd(c, j, b, letter) }
        if cj & number != 0 { return runEnd(c, j, b, number) }
        if isOther(cj) {
            var k = j + 1
            while k < b && isOther(c[k]) { k += 1 }
            return k
        }
        return whitespaceTail(c, i, b)
    }

    /// `\s+(?!\S)|\s+` at a whitespace scalar.
    @inline(__always)
    private static func whitespaceTail(_ c: UnsafeBufferPointer<UInt8>, _ i: Int, _ b: Int) -> Int {
        let k = runEnd(c, i, b, whitespace)
        if k == b || k - i == 1 { return k }
        return k - 1
    }

    @inline(__always)
    private static func lower(_ v: UInt32) -> UInt32 { (v >= 0x41 && v <= 0x5A) ? v | 0x20 : v }

    @inline(__always)
    /// `letters`: the class of the letter runs (`\p{L}`, or `[\p{L}\p{M}]` for Qwen 3.5, whose
    /// punctuation runs then leave marks out).
    private static func matchLlama3(_ s: UnsafeBufferPointer<UInt32>, _ c: UnsafeBufferPointer<UInt8>,
                                    _ i: Int, _ b: Int, _ maxDigits: Int, letters: UInt8) -> Int {
        let ch = s[i]
        let ci = c[i]
        if ch == 0x27, let end = contraction(s, i, b) { return end }
        if ci & letters != 0 { return runEnd(c, i, b, letters) }
        let isLineBreak = ch == 0x0A || ch == 0x0D
        if !isLineBreak, ci & (letter | number) == 0, i + 1 < b, c[i + 1] & letters != 0 {
            return runEnd(c, i + 1, b, letters)
        }
        if ci & number != 0 {
            var k = i + 1
            while k < b && k - i < maxDigits && c[k] & number != 0 { k += 1 }
            return k
        }
        return punctuationRun(s, c, i, b, excluding: letters | number | whitespace, trailingSlash: false)
            ?? whitespaceWithLineBreaks(s, c, i, b)
    }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at `i` (an apostrophe): its end, or nil.
    @inline(__always)
    private static func contraction(_ s: UnsafeBufferPointer<UInt32>, _ i: Int, _ b: Int) -> Int? {
        guard s[i] == 0x27, i + 1 < b else { return nil }
        let n1 = lower(s[i + 1])
        if n1 == 0x73 || n1 == 0x74 || n1 == 0x6D || n1 == 0x64 { return i + 2 }
        if i + 2 < b {
            let n2 = lower(s[i + 2])
            if (n1 == 0x72 && n2 == 0x65) || (n1 == 0x76 && n2 == 0x65) || (n1 == 0x6C && n2 == 0x6C) { return i + 3 }
        }
        return nil
    }

    /// ` ?[^classes]+[\r\n]*` (with `trailingSlash`, `[\r\n/]*`) at `i`: its end, or nil.
    @inline(__always)
    private static func punctuationRun(_ s: UnsafeBufferPointer<UInt32>, _ c: UnsafeBufferPointer<UInt8>, _ i: Int, _ b: Int,
                                       excluding classes: UInt8, trailingSlash: Bool) -> Int? {
        var j = i
        if s[i] == 0x20, i + 1 < b, c[i + 1] & classes == 0 { j = i + 1 }
        guard c[j] & classes == 0 else { return nil }
        var k = j + 1
        while k < b && c[k] & classes == 0 { k += 1 }
        while k < b && (s[k] == 0x0A || s[k] == 0x0D || (trailingSlash && s[k] == 0x2F)) { k += 1 }
        return k
    }

    private static let upperOrMark = ScalarClass.upperLike.rawValue | ScalarClass.mark.rawValue
    private static let lowerOrMark = ScalarClass.lowerLike.rawValue | ScalarClass.mark.rawValue

    /// `.caseAwareWords` at `i`, alternative by alternative as a backtracking regex tries them.
    private static func matchCaseAware(_ s: UnsafeBufferPointer<UInt32>, _ c: UnsafeBufferPointer<UInt8>, _ i: Int, _ b: Int,
                                       contractions: Bool, maxDigits: Int) -> Int {
        /// The optional `[^\r\n\p{L}\p{N}]` first, then without it.
        let prefixed = s[i] != 0x0A && s[i] != 0x0D && c[i] & (letter | number) == 0 && i + 1 < b
        func suffixed(_ end: Int) -> Int { contractions ? (contraction(s, end, b) ?? end) : end }
        func run(_ from: Int, _ set: UInt8) -> Int {
            var k = from
            while k < b && c[k] & set != 0 { k += 1 }
            return k
        }
        // U*L+: the longest U run, given back until an L can start (the L run is greedy).
        func upperThenLower(_ start: Int) -> Int? {
            var u = run(start, upperOrMark)
            while u >= start {
                if u < b && c[u] & lowerOrMark != 0 { return suffixed(run(u, lowerOrMark)) }
                u -= 1
            }
            return nil
        }
        // U+L*
        func upperThenOptionalLower(_ start: Int) -> Int? {
            let u = run(start, upperOrMark)
            return u > start ? suffixed(run(u, lowerOrMark)) : nil
        }
        if prefixed, let end = upperThenLower(i + 1) { return end }
        if let end = upperThenLower(i) { return end }
        if prefixed, let end = upperThenOptionalLower(i + 1) { return end }
        if let end = upperThenOptionalLower(i) { return end }
        if c[i] & number != 0 {
            var k = i + 1
            while k < b && k - i < maxDigits && c[k] & number != 0 { k += 1 }
            return k
        }
        return punctuationRun(s, c, i, b, excluding: letter | number | whitespace, trailingSlash: true)
            ?? whitespaceWithLineBreaks(s, c, i, b)
    }

    /// `\s*[\r\n]+|\s+(?!\S)|\s+` at `i`: ends after the whitespace run's last line break, else as GPT-2.
    @inline(__always)
    private static func whitespaceWithLineBreaks(_ s: UnsafeBufferPointer<UInt32>, _ c: UnsafeBufferPointer<UInt8>,
                                                 _ i: Int, _ b: Int) -> Int {
        guard c[i] & whitespace != 0 else { return -1 }
        let k = runEnd(c, i, b, whitespace)
        var p = k - 1
        while p >= i {
            if s[p] == 0x0A || s[p] == 0x0D { return p + 1 }
            p -= 1
        }
        if k == b || k - i == 1 { return k }
        return k - 1
    }

    private static let letterOrMark = letter | ScalarClass.mark.rawValue
    private static let punctuationOrSymbol = ScalarClass.punctuation.rawValue | ScalarClass.symbol.rawValue

    @inline(__always)
    private static func isASCIIPunctuation(_ v: UInt32) -> Bool {
        (0x21...0x2F).contains(v) || (0x3A...0x40).contains(v) || (0x5B...0x60).contains(v) || (0x7B...0x7E).contains(v)
    }

    @inline(__always)
    private static func isASCIILetter(_ v: UInt32) -> Bool { (0x41...0x5A).contains(v) || (0x61...0x7A).contains(v) }

    @inline(__always)
    private static func matchDeepSeekV3(_ s: UnsafeBufferPointer<UInt32>, _ c: UnsafeBufferPointer<UInt8>,
                                        _ i: Int, _ b: Int) -> Int {
        let ch = s[i], ci = c[i]
        if isASCIIPunctuation(ch), i + 1 < b, isASCIILetter(s[i + 1]) {
            var k = i + 2
            while k < b && isASCIILetter(s[k]) { k += 1 }
            return k
        }
        if ci & letterOrMark != 0 { return runEnd(c, i, b, letterOrMark) }
        let isLineBreak = ch == 0x0A || ch == 0x0D
        if !isLineBreak, ci & (letter | punctuationOrSymbol) == 0, i + 1 < b, c[i + 1] & letterOrMark != 0 {
            return runEnd(c, i + 1, b, letterOrMark)
        }
        var j = i
        if ch == 0x20, i + 1 < b, c[i + 1] & punctuationOrSymbol != 0 { j = i + 1 }
        if c[j] & punctuationOrSymbol != 0 {
            var k = runEnd(c, j, b, punctuationOrSymbol)
            while k < b && (s[k] == 0x0A || s[k] == 0x0D) { k += 1 }
            return k
        }
        return whitespaceWithLineBreaks(s, c, i, b)
    }
}

/// The pre-tokenizer of a family: the rules applied in order, each refining the pieces of the previous.
struct PreTokenizer: Sendable, Equatable {
    var rules: [SplitRule]
    /// Pieces of whitespace are dropped rather than encoded (BERT, `WhitespaceSplit`); the rules then
    /// must keep whitespace runs apart from other text.
    var removesWhitespace = false

    /// BERT's: whitespace splits words and is dropped, punctuation (and ASCII symbols) stands alone.
    static let bert = PreTokenizer(rules: [.alternatingRuns(newlinesOnly: false), .isolated(punctuationAndASCIISymbols)],
                                   removesWhitespace: true)
    static let whitespaceSplit = PreTokenizer(rules: [.alternatingRuns(newlinesOnly: false)], removesWhitespace: true)
    /// `\p{P}` and the ASCII symbols `$+<=>^`|~` (BERT's punctuation; Falcon's first split).
    static let punctuationAndASCIISymbols: ScalarSet = .punctuationOr([0x24, 0x2B, 0x3C, 0x3D, 0x3E, 0x5E, 0x60, 0x7C, 0x7E])

    /// Fills `cuts` with the piece boundaries (scalar indices) of `text`.
    func split(_ text: ScalarText, cuts: inout [Int32], scratch: inout [Int32]) {
        cuts.removeAll(keepingCapacity: true)
        cuts.append(0)
        if text.count > 0 { cuts.append(Int32(text.count)) }
        guard text.count > 0 else { return }
        for rule in rules {
            rule.refine(text, cuts: cuts, into: &scratch)
            swap(&cuts, &scratch)
        }
    }

    // MARK: - Families

    static let gpt2Rules: [SplitRule] = [.gpt2]
    static let llama3Rules: [SplitRule] = [.llama3(maxDigits: 3)]
    static let qwen2Rules: [SplitRule] = [.llama3(maxDigits: 1)]
    static let digitsThenGPT2Rules: [SplitRule] = [.digits(individual: true), .gpt2]

    /// DeepSeek LLM: the Latin/Greek/Cyrillic/… cased-letter ranges its tokenizer.json spells out.
    static let deepSeekLetters: ScalarSet = .ranges([
        0x41...0x5A, 0x61...0x7A, 0xB5...0xB5, 0xC0...0xD6, 0xD8...0xF6, 0xF8...0x1BA, 0x1BC...0x1BF,
        0x1C4...0x293, 0x295...0x2AF, 0x370...0x373, 0x376...0x377, 0x37B...0x37D, 0x37F...0x37F,
        0x386...0x386, 0x388...0x38A, 0x38C...0x38C, 0x38E...0x3A1, 0x3A3...0x3F5, 0x3F7...0x481,
        0x48A...0x52F, 0x531...0x556, 0x10A0...0x10C5, 0x13A0...0x13F5, 0x13F8...0x13FD,
        0x1C90...0x1CBA, 0x1CBD...0x1CBF, 0x1D00...0x1D2B, 0x1D6B...0x1D77, 0x1D79...0x1D9A,
        0x1E00...0x1F15, 0x1F18...0x1F1D, 0x1F20...0x1F45, 0x1F48...0x1F4D, 0x1F50...0x1F57,
        0x1F59...0x1F59, 0x1F5B...0x1F5B, 0x1F5D...0x1F5D, 0x1F5F...0x1F7D, 0x1F80...0x1FB4,
        0x1FB6...0x1FBC, 0x1FBE...0x1FBE, 0x1FC2...0x1FC4, 0x1FC6...0x1FCC, 0x1FD0...0x1FD3,
        0x1FD6...0x1FDB, 0x1FE0...0x1FEC, 0x1FF2...0x1FF4, 0x1FF6...0x1FFC, 0x2102...0x2102,
        0x2107...0x2107, 0x210A...0x2113, 0x2115...0x2115, 0x2119...0x211D, 0x2124...0x2124,
        0x2126...0x2126, 0x2128...0x2128, 0x212A...0x212D, 0x212F...0x2134, 0x2139...0x2139,
        0x213C...0x213F, 0x2145...0x2149, 0x214E...0x214E, 0x2183...0x2184, 0x2C00...0x2C7B,
        0x2C7E...0x2CE4, 0x2CEB...0x2CEE, 0x2CF2...0x2CF3, 0xA640...0xA66D, 0xA680...0xA69B,
        0xA722...0xA76F, 0xA771...0xA787, 0xA78B...0xA78E, 0xAB70...0xABBF, 0xFB00...0xFB06,
        0xFB13...0xFB17, 0xFF21...0xFF3A, 0xFF41...0xFF5A, 0x10400...0x1044F, 0x104B0...0x104D3,
        0x104D8...0x104FB, 0x10C80...0x10CB2, 0x10CC0...0x10CF2, 0x118A0...0x118DF, 0x1E900...0x1E943,
    ])
    static let deepSeekPunctuation: ScalarSet = .ranges([
        0x21...0x2F, 0x3A...0x7E, 0xFF01...0xFF0F, 0xFF1A...0xFF5E, 0x2018...0x201F, 0x3000...0x3002,
    ])
    static let deepSeekCJK: ScalarSet = .ranges([0x4E00...0x9FA5, 0x800...0x4E00, 0xAC00...0xD7FF])

    static let deepSeekLLMRules: [SplitRule] = [
        .newline, .optionalWhitespaceThenRun(deepSeekLetters), .optionalWhitespaceThenRun(deepSeekPunctuation),
        .trailingWhitespace, .run(deepSeekCJK), .digits(individual: false),
    ]
    static let deepSeekCoderRules: [SplitRule] = [
        .newline, .optionalWhitespaceThenRun(.letters), .optionalWhitespaceThenRun(.punctuation),
        .run(deepSeekCJK), .digits(individual: true),
    ]

    static let deepSeekV3CJK: ScalarSet = .ranges([0x4E00...0x9FA5, 0x3040...0x309F, 0x30A0...0x30FF])
    static let deepSeekV3Rules: [SplitRule] = [.digitGroups(maxLength: 3), .run(deepSeekV3CJK), .deepSeekV3]
    static let falconRules: [SplitRule] = [.run(punctuationAndASCIISymbols), .gpt2, .asciiDigitTriples]
    /// llama.cpp's rules when `tokenizer.ggml.pre` is "default" or missing (GPT-NeoX and Aquila vocabularies):
    /// Falcon's without the backtick, and digit runs before the triples.
    static let defaultRules: [SplitRule] = [
        .run(.punctuationOr([0x24, 0x2B, 0x3C, 0x3D, 0x3E, 0x5E, 0x7C, 0x7E])), .gpt2, .digits(individual: false),
        .asciiDigitTriples,
    ]

    /// `tokenizer.ggml.pre` names (as llama.cpp's converter writes them) -> rules.
    static func rules(forGGUFName name: String) -> [SplitRule]? {
        switch name {
        case "gpt-2", "gpt2", "mpt", "olmo", "jais", "phi-2", "roberta-bpe", "jina-es", "jina-de",
             "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code", "poro-chat", "viking", "trillion",
             "gpt-neox", "bloom", "stablelm2-compat":
            return gpt2Rules
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe", "chatglm-bpe":
            return llama3Rules
        case "qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "hunyuan":
            return qwen2Rules
        case "qwen35":
            return [.qwen35]
        case "gpt-4o", "llama4", "kanana2", "minimax-m2":
            return [.caseAwareWords(contractions: true, maxDigits: 3)]
        case "tekken":
            return [.caseAwareWords(contractions: false, maxDigits: 1)]
        case "starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b":
            return digitsThenGPT2Rules
        case "deepseek-llm":
            return deepSeekLLMRules
        case "deepseek-coder":
            return deepSeekCoderRules
        case "deepseek-v3", "hunyuan-dense":
            return deepSeekV3Rules
        case "falcon":
            return falconRules
        case "default":
            return defaultRules
        default:
            return nil
        }
    }

    /// tiktoken's o200k split (GPT-4o, Phi-4, Llama 4) and Mistral's Tekken, as tokenizer.json writes them.
    static let o200kPattern = #"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let tekkenPattern = #"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Regexes of tokenizer.json `Split` pre-tokenizers this package knows, as written in the files.
    static func rule(forSplitPattern pattern: String) -> [SplitRule]? {
        switch pattern {
        case #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#:
            return [.gpt2]
        case #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#,
             #"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#:
            return [.llama3(maxDigits: 3)]
        case #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#,
             #"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#:
            return [.llama3(maxDigits: 1)]
        case Self.o200kPattern: return [.caseAwareWords(contractions: true, maxDigits: 3)]
        case Self.tekkenPattern: return [.caseAwareWords(contractions: false, maxDigits: 1)]
        case #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#:
            return [.qwen35]
        case #"\p{N}"#: return [.digits(individual: true)]
        case #"\p{N}+"#: return [.digits(individual: false)]
        case #"\p{N}{1,3}"#: return [.digitGroups(maxLength: 3)]
        case "[\r\n]", #"[\r\n]"#: return [.newline]
        case #"\s?\p{L}+"#: return [.optionalWhitespaceThenRun(.letters)]
        case #"\s?\p{P}+"#: return [.optionalWhitespaceThenRun(.punctuation)]
        case #"\s+$"#: return [.trailingWhitespace]
        case "[一-龥ࠀ-一가-퟿]+": return [.run(deepSeekCJK)]
        case "[一-龥぀-ゟ゠-ヿ]+": return [.run(deepSeekV3CJK)]
        case ##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##:
            return [.deepSeekV3]
        case "\\s?[!-/:-~！-／：-～‘-‟　-。]+": return [.optionalWhitespaceThenRun(deepSeekPunctuation)]
        default:
            if pattern.hasPrefix("\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽ"),
               pattern.hasSuffix("𞤀-𞥃]+") {
                return [.optionalWhitespaceThenRun(deepSeekLetters)]
            }
            return nil
        }
    }
}
