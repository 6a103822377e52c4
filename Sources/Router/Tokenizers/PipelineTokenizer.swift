import Foundation

/// A rewrite of a text segment before pre-tokenization (HF normalizers, and the parts of
/// pre-tokenizers that change the text rather than split it).
enum TextTransform: Sendable, Equatable {
    case nfc, nfd, nfkc, nfkd, lowercase
    /// Drops every mark (Mn, Mc, Me): HF `StripAccents`, which leaves decomposing to an NFD/NFKD before it.
    case stripMarks
    /// Prepends `text` to a non-empty segment; with `firstSegmentOnly`, only to a segment at the start of the input.
    case prepend(String, firstSegmentOnly: Bool)
    case replace(String, with: String)
    /// ByteLevel `add_prefix_space`: a space in front unless the segment starts with one.
    case prefixSpace
    /// Metaspace's prefix: the marker in front unless the (already replaced) segment starts with it.
    case metaspacePrefix(String, firstSegmentOnly: Bool)
    case strip(left: Bool, right: Bool)
    /// Runs of at least `minimum` of `scalar` (nil: of any whitespace) become `replacement`
    /// (HF `Replace` with a regex like ` {2,}`).
    case collapseRuns(of: Unicode.Scalar?, minimum: Int, with: String)
    case bert(BertNormalization)
    case precompiled(PrecompiledCharsmap)
    case sentencePiece(SentencePieceNormalizer)

    /// Unicode normalization forms (and mark stripping) leave ASCII text unchanged; skipping them saves a
    /// copy of every segment.
    var isIdentityOnASCII: Bool {
        switch self {
        case .nfc, .nfd, .nfkc, .nfkd, .stripMarks: return true
        default: return false
        }
    }

    func apply(_ text: String, isFirstSegment: Bool) -> String {
        switch self {
        case .nfc: return text.precomposedStringWithCanonicalMapping
        case .nfd: return text.decomposedStringWithCanonicalMapping
        case .nfkc: return text.precomposedStringWithCompatibilityMapping
        case .nfkd: return text.decomposedStringWithCompatibilityMapping
        case .lowercase: return text.lowercased()
        case .stripMarks:
            var output: [UInt8] = []
            output.reserveCapacity(text.utf8.count)
            for scalar in text.unicodeScalars {
                switch scalar.properties.generalCategory {
                case .nonspacingMark, .spacingMark, .enclosingMark: continue
                default: UTF8.encode(scalar) { output.append($0) }
                }
            }
            return String(decoding: output, as: UTF8.self)
        case .prepend(let prefix, let firstOnly):
            if text.isEmpty || (firstOnly && !isFirstSegment) { return text }
            return prefix + text
        case .replace(let pattern, let replacement):
            return text.replacingScalars(of: pattern, with: replacement)
        case .prefixSpace:
            return text.isEmpty || text.utf8.first == 0x20 ? text : " " + text
        case .metaspacePrefix(let marker, let firstOnly):
            if text.isEmpty || (firstOnly && !isFirstSegment) || text.hasScalarPrefix(marker) { return text }
            return marker + text
        case .strip(let left, let right):
            var scalars = Substring(text).unicodeScalars[...]
            if left { while let first = scalars.first, first.properties.isWhitespace { scalars.removeFirst() } }
            if right { while let last = scalars.last, last.properties.isWhitespace { scalars.removeLast() } }
            return String(String.UnicodeScalarView(scalars))
        case .collapseRuns(let target, let minimum, let replacement):
            // Bytes, not String.UnicodeScalarView: appending to that copies the whole string each time.
            var output: [UInt8] = []
            output.reserveCapacity(text.utf8.count)
            var runStart = 0, runScalars = 0
            func flush() {
                if runScalars >= minimum { output.replaceSubrange(runStart..., with: replacement.utf8) }
                runScalars = 0
            }
            for scalar in text.unicodeScalars {
                if target.map({ scalar == $0 }) ?? scalar.properties.isWhitespace {
                    if runScalars == 0 { runStart = output.count }
                    runScalars += 1
                } else {
                    flush()
                }
                UTF8.encode(scalar) { output.append($0) }
            }
            flush()
            return String(decoding: output, as: UTF8.self)
        case .bert(let options): return options.apply(text)
        case .precompiled(let charsmap): return charsmap.apply(text)
        case .sentencePiece(let normalizer): return normalizer.apply(text)
        }
    }
}

/// A token matched in the raw text before normalization (HF `added_tokens`, GGUF control and user-defined tokens).
struct AddedToken: Sendable {
    var content: [UInt8]
    var id: TokenID
    /// Special tokens are only recognised with `parseSpecial`; the others always are.
    var special: Bool
    var leftStrip = false
    var rightStrip = false
}

/// Splits text into runs of plain text and added tokens, longest token first at the leftmost position.
struct AddedTokenMatcher: Sendable {
    enum Segment: Equatable {
        case text(Range<Int>)
        case token(TokenID)
    }

    private let tokens: [AddedToken]
    /// Per first byte: indices into `tokens`, longest first.
    private let candidates: [[Int32]]

    init(_ tokens: [AddedToken]) {
        let usable = tokens.filter { !$0.content.isEmpty }
        self.tokens = usable
        var candidates = Array(repeating: [Int32](), count: 256)
        for (index, token) in usable.enumerated() { candidates[Int(token.content[0])].append(Int32(index)) }
        for b in 0..<256 {
            candidates[b].sort { usable[Int($0)].content.count > usable[Int($1)].content.count }
        }
        self.candidates = candidates
    }

    var isEmpty: Bool { tokens.isEmpty }

    func split(_ text: UnsafeBufferPointer<UInt8>, parseSpecial: Bool) -> [Segment] {
        var segments: [Segment] = []
        var textStart = 0
        var i = 0
        let n = text.count
        while i < n {
            let list = candidates[Int(text[i])]
            var matched: AddedToken?
            if !list.isEmpty {
                for index in list {
                    let token = tokens[Int(index)]
                    if token.special && !parseSpecial { continue }
                    let length = token.content.count
                    if i + length > n { continue }
                    var equal = true
                    for j in 0..<length where text[i + j] != token.content[j] {
                        equal = false
                        break
                    }
                    if equal {
                        matched = token
                        break
                    }
                }
            }
            guard let token = matched else {
                i += 1
                continue
            }
            var textEnd = i
            if token.leftStrip {
                while textEnd > textStart, Self.isASCIIWhitespace(text[textEnd - 1]) { textEnd -= 1 }
            }
            if textEnd > textStart { segments.append(.text(textStart..<textEnd)) }
            segments.append(.token(token.id))
            i += token.content.count
            if token.rightStrip {
                while i < n, Self.isASCIIWhitespace(text[i]) { i += 1 }
            }
            textStart = i
        }
        if textStart < n { segments.append(.text(textStart..<n)) }
        return segments
    }

    private static func isASCIIWhitespace(_ b: UInt8) -> Bool {
        b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D || b == 0x0B || b == 0x0C
    }
}

/// The vocabulary-side description a loader produces; `PipelineTokenizer` turns it into lookup tables.
struct TokenizerDefinition {
    var source: String
    var tokens: [String]
    /// Bytes each token contributes to decoded text.
    var pieces: [[UInt8]]
    var isSpecial: [Bool]
    var model: TokenizerModel
    var transforms: [TextTransform]
    var preTokenizer: PreTokenizer
    var addedTokens: [AddedToken]
    var prefixIDs: [TokenID]
    var suffixIDs: [TokenID]
    var specialTokens: SpecialTokenIDs
    var chatTemplate: String?
    var stripsLeadingSpace: Bool
}

/// Every tokenizer this module loads, from GGUF metadata or tokenizer.json, as one pipeline: added tokens are
/// split off, each text run is normalized (`transforms`) and pre-tokenized, and the model (BPE, WordPiece or
/// Unigram) turns each piece into ids; decoding concatenates per-token bytes.
public struct PipelineTokenizer: Tokenizer {
    let model: TokenizerModel
    let transforms: [TextTransform]
    let preTokenizer: PreTokenizer
    let addedTokens: AddedTokenMatcher
    let tokens: [String]
    let tokenIDs: [String: TokenID]
    let pieceBytes: [UInt8]
    let pieceOffsets: [Int32]
    let special: [Bool]
    let prefixIDs: [TokenID]
    let suffixIDs: [TokenID]
    public let specialTokens: SpecialTokenIDs
    public let chatTemplate: String?
    public let stripsLeadingSpace: Bool

    init(_ definition: TokenizerDefinition) {
        model = definition.model
        transforms = definition.transforms
        preTokenizer = definition.preTokenizer
        addedTokens = AddedTokenMatcher(definition.addedTokens)
        tokens = definition.tokens
        var ids = [String: TokenID](minimumCapacity: definition.tokens.count)
        for (id, token) in definition.tokens.enumerated() where ids[token] == nil { ids[token] = TokenID(id) }
        tokenIDs = ids
        var bytes: [UInt8] = []
        var offsets: [Int32] = [0]
        bytes.reserveCapacity(definition.pieces.reduce(0) { $0 + $1.count })
        for piece in definition.pieces {
            bytes.append(contentsOf: piece)
            offsets.append(Int32(bytes.count))
        }
        pieceBytes = bytes
        pieceOffsets = offsets
        special = definition.isSpecial
        prefixIDs = definition.prefixIDs
        suffixIDs = definition.suffixIDs
        specialTokens = definition.specialTokens
        chatTemplate = definition.chatTemplate
        stripsLeadingSpace = definition.stripsLeadingSpace
    }

    public var vocabularySize: Int { tokens.count }

    public func token(for id: TokenID) -> String? {
        id >= 0 && Int(id) < tokens.count ? tokens[Int(id)] : nil
    }

    public func id(for token: String) -> TokenID? { tokenIDs[token] }

    public func isSpecial(_ id: TokenID) -> Bool {
        id >= 0 && Int(id) < special.count && special[Int(id)]
    }

    // MARK: Encoding

    public func encode(_ text: String, addSpecialTokens: Bool, parseSpecial: Bool) -> [TokenID] {
        var output: [TokenID] = []
        output.reserveCapacity(text.utf8.count / 3 + 4)
        if addSpecialTokens { output.append(contentsOf: prefixIDs) }
        var text = text
        text.withUTF8 { utf8 in
            var scratch = EncodeScratch()
            if addedTokens.isEmpty {
                encodeSegment(utf8, isFirstSegment: true, into: &output, scratch: &scratch)
                return
            }
            for segment in addedTokens.split(utf8, parseSpecial: parseSpecial) {
                switch segment {
                case .token(let id):
                    output.append(id)
                case .text(let range):
                    encodeSegment(UnsafeBufferPointer(rebasing: utf8[range]), isFirstSegment: range.lowerBound == 0,
                                  into: &output, scratch: &scratch)
                }
            }
        }
        if addSpecialTokens { output.append(contentsOf: suffixIDs) }
        return output
    }

    private struct EncodeScratch {
        var text = ScalarText()
        var cuts: [Int32] = []
        var cutScratch: [Int32] = []
        var model = ModelScratch()
    }

    private func encodeSegment(_ utf8: UnsafeBufferPointer<UInt8>, isFirstSegment: Bool,
                               into output: inout [TokenID], scratch: inout EncodeScratch) {
        if transforms.isEmpty {
            encodeNormalized(utf8, into: &output, scratch: &scratch)
            return
        }
        var normalized = String(decoding: utf8, as: UTF8.self)
        let isASCII = utf8.allSatisfy { $0 < 0x80 }
        for transform in transforms where !(isASCII && transform.isIdentityOnASCII) {
            normalized = transform.apply(normalized, isFirstSegment: isFirstSegment)
        }
        normalized.withUTF8 { encodeNormalized($0, into: &output, scratch: &scratch) }
    }

    /// Encodes one normalized segment. The model is taken apart once here, not once per word: matching an
    /// enum payload per word would copy (retain and release) the model's tables every time.
    private func encodeNormalized(_ utf8: UnsafeBufferPointer<UInt8>, into output: inout [TokenID],
                                  scratch: inout EncodeScratch) {
        guard utf8.count > 0 else { return }
        switch model {
        case .bpe(let bpe):
            encodePieces(utf8, into: &output, scratch: &scratch) { bpe.encodeWord($0, into: &$1, scratch: &$2.bpe) }
        case .wordPiece(let wordPiece):
            encodePieces(utf8, into: &output, scratch: &scratch) { word, output, _ in wordPiece.encodeWord(word, into: &output) }
        case .unigram(let unigram):
            encodePieces(utf8, into: &output, scratch: &scratch) { unigram.encodeWord($0, into: &$1, scratch: &$2.unigram) }
        }
    }

    /// Pre-tokenizes `utf8` and hands each piece to `encodeWord`.
    @inline(__always)
    private func encodePieces(_ utf8: UnsafeBufferPointer<UInt8>, into output: inout [TokenID], scratch: inout EncodeScratch,
                              _ encodeWord: (UnsafeBufferPointer<UInt8>, inout [TokenID], inout ModelScratch) -> Void) {
        if preTokenizer.rules.isEmpty {
            encodeWord(utf8, &output, &scratch.model)
            return
        }
        scratch.text.load(utf8)
        preTokenizer.split(scratch.text, cuts: &scratch.cuts, scratch: &scratch.cutScratch)
        let cuts = scratch.cuts
        let offsets = scratch.text.byteOffsets
        let removesWhitespace = preTokenizer.removesWhitespace
        for p in 1..<cuts.count {
            if removesWhitespace, scratch.text.classes[Int(cuts[p - 1])] & ScalarClass.whitespace.rawValue != 0 {
                continue
            }
            let start = Int(offsets[Int(cuts[p - 1])]), end = Int(offsets[Int(cuts[p])])
            encodeWord(UnsafeBufferPointer(rebasing: utf8[start..<end]), &output, &scratch.model)
        }
    }

    // MARK: Decoding

    public func pieceBytes(_ id: TokenID, skipSpecialTokens: Bool) -> [UInt8] {
        guard id >= 0, Int(id) < tokens.count else { return [] }
        if skipSpecialTokens && special[Int(id)] { return [] }
        return Array(pieceBytes[Int(pieceOffsets[Int(id)])..<Int(pieceOffsets[Int(id) + 1])])
    }

    public func decode(_ ids: [TokenID], skipSpecialTokens: Bool) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids {
            guard id >= 0, Int(id) < tokens.count else { continue }
            if skipSpecialTokens && special[Int(id)] { continue }
            bytes.append(contentsOf: pieceBytes[Int(pieceOffsets[Int(id)])..<Int(pieceOffsets[Int(id) + 1])])
        }
        if stripsLeadingSpace, bytes.first == 0x20 { bytes.removeFirst() }
        return String(decoding: bytes, as: UTF8.self)
    }
}
