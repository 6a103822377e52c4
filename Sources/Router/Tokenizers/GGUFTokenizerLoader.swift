import Foundation
import ModelFormats

/// llama.cpp's token types in `tokenizer.ggml.token_type`.
enum GGUFTokenType: Int {
    case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

/// The vocabulary of a GGUF file as the model readers below need it.
struct GGUFVocabulary {
    let metadata: GGUFMetadata
    let source: String
    let tokens: [String]
    let types: [GGUFTokenType]

    /// An id key, nil when absent or outside the vocabulary.
    func optionalID(_ key: String) throws -> TokenID? {
        guard let value = try metadata.optionalInt(key), value >= 0, value < tokens.count else { return nil }
        return TokenID(value)
    }

    /// `tokenizer.ggml.scores`, one per token.
    func scores() throws -> [Float] {
        let scores = try metadata.optionalFloatArray("tokenizer.ggml.scores") ?? Array(repeating: 0, count: tokens.count)
        guard scores.count == tokens.count else {
            throw TokenizerError.inconsistentVocabulary(
                source: source, reason: "tokenizer.ggml.scores has \(scores.count) entries for \(tokens.count) tokens")
        }
        return scores
    }

    /// Decode bytes of every token of a SentencePiece-spelled vocabulary.
    func sentencePiecePieces() -> [[UInt8]] {
        tokens.indices.map { GGUFTokenizerLoader.sentencePiecePiece(tokens[$0], types[$0]) }
    }
}

/// What one `tokenizer.ggml.model` contributes: the model, its text handling and its special-token habits.
struct GGUFModelParts {
    var model: TokenizerModel
    var pieces: [[UInt8]]
    var transforms: [TextTransform] = []
    var preTokenizer = PreTokenizer(rules: [])
    var stripsLeadingSpace = false
    var addBOSDefault = false
    var addEOSDefault = false
    /// llama.cpp adds a BOS whatever add_bos_token says (Gemma 4).
    var alwaysAddsBOS = false
    /// Ids that replace the file's (or its missing) keys: BERT's [CLS] as BOS, T5's default ids.
    var bos: TokenID?
    var eos: TokenID?
    var unknown: TokenID?
    var pad: TokenID?
    /// What add_eos appends instead of EOS (BERT's [SEP]).
    var suffix: TokenID?
}

/// Builds a tokenizer from the `tokenizer.ggml.*` metadata of a GGUF file (a model or a vocabulary-only file).
enum GGUFTokenizerLoader {
    static func load(_ file: GGUFFile) throws -> PipelineTokenizer {
        let metadata = file.metadata
        let source = file.url.path
        let modelName = try metadata.string("tokenizer.ggml.model")
        let tokens = try metadata.stringArray("tokenizer.ggml.tokens")
        let rawTypes = try metadata.optionalIntArray("tokenizer.ggml.token_type")
            ?? Array(repeating: GGUFTokenType.normal.rawValue, count: tokens.count)
        guard rawTypes.count == tokens.count else {
            throw TokenizerError.inconsistentVocabulary(
                source: source, reason: "tokenizer.ggml.token_type has \(rawTypes.count) entries for \(tokens.count) tokens")
        }
        let types = rawTypes.map { GGUFTokenType(rawValue: $0) ?? .normal }
        let vocabulary = GGUFVocabulary(metadata: metadata, source: source, tokens: tokens, types: types)

        let parts: GGUFModelParts
        switch modelName {
        case "gpt2": parts = try byteLevelBPE(vocabulary)
        case "gemma4": parts = try gemma4(vocabulary)
        case "llama": parts = try sentencePieceBPE(vocabulary)
        case "bert": parts = try wordPiece(vocabulary)
        case "t5": parts = try unigram(vocabulary)
        default:
            throw TokenizerError.unsupportedModel(source: source, model: "tokenizer.ggml.model=\(modelName)")
        }
        let bos = try parts.bos ?? vocabulary.optionalID("tokenizer.ggml.bos_token_id")
        let eos = try parts.eos ?? vocabulary.optionalID("tokenizer.ggml.eos_token_id")
        let unknown = try parts.unknown ?? vocabulary.optionalID("tokenizer.ggml.unknown_token_id")
        let pad = try parts.pad ?? vocabulary.optionalID("tokenizer.ggml.padding_token_id")
        let eotKey = try vocabulary.optionalID("tokenizer.ggml.eot_token_id")
        let eom = try vocabulary.optionalID("tokenizer.ggml.eom_token_id")

        var addedTokens: [AddedToken] = []
        for (id, token) in tokens.enumerated() where types[id] == .control || types[id] == .userDefined {
            addedTokens.append(AddedToken(content: Array(token.utf8), id: TokenID(id), special: types[id] == .control))
        }
        let isSpecial = types.map { $0 == .control || $0 == .unknown }

        let eot = eotKey ?? EndOfTurnNames.preferredEOT.lazy.compactMap { name in
            tokens.firstIndex(of: name).flatMap { types[$0] == .control ? TokenID($0) : nil }
        }.first
        var stop = Set<TokenID>()
        for id in [eos, eot, eom].compactMap({ $0 }) { stop.insert(id) }
        for (id, token) in tokens.enumerated()
        where (types[id] == .control || types[id] == .userDefined) && EndOfTurnNames.all.contains(token) {
            stop.insert(TokenID(id))
        }

        let addBOS = try parts.alwaysAddsBOS || (metadata.optionalBool("tokenizer.ggml.add_bos_token") ?? parts.addBOSDefault)
        let addEOS = try metadata.optionalBool("tokenizer.ggml.add_eos_token") ?? parts.addEOSDefault
        return PipelineTokenizer(TokenizerDefinition(
            source: source, tokens: tokens, pieces: parts.pieces, isSpecial: isSpecial, model: parts.model,
            transforms: parts.transforms, preTokenizer: parts.preTokenizer, addedTokens: addedTokens,
            prefixIDs: addBOS ? [bos].compactMap { $0 } : [],
            suffixIDs: addEOS ? [parts.suffix ?? eos].compactMap { $0 } : [],
            specialTokens: SpecialTokenIDs(bos: bos, eos: eos, pad: pad, eot: eot, unknown: unknown, stop: stop),
            chatTemplate: try metadata.optionalString("tokenizer.chat_template"),
            stripsLeadingSpace: parts.stripsLeadingSpace))
    }

    /// `gpt2`: byte-level BPE with the pre-tokenizer `tokenizer.ggml.pre` names.
    static func byteLevelBPE(_ vocabulary: GGUFVocabulary) throws -> GGUFModelParts {
        let (metadata, tokens, types) = (vocabulary.metadata, vocabulary.tokens, vocabulary.types)
        let preName = try metadata.optionalString("tokenizer.ggml.pre") ?? "default"
        guard let rules = PreTokenizer.rules(forGGUFName: preName) else {
            throw TokenizerError.unsupportedPreTokenizer(source: vocabulary.source, name: "tokenizer.ggml.pre=\(preName)")
        }
        // As llama.cpp: Llama 3 and Tekken vocabularies add BOS, and a word that is itself a
        // token is not merged piece by piece.
        let wholeWordTokens = rules == PreTokenizer.llama3Rules || preName == "tekken"
        var table = ByteStringTable(expectedCount: tokens.count)
        var pieces: [[UInt8]] = []
        pieces.reserveCapacity(tokens.count)
        for (id, token) in tokens.enumerated() {
            let type = types[id]
            if type == .normal || type == .byte || type == .unused, let raw = ByteLevel.decode(token) {
                pieces.append(raw)
                if type != .unused { table.insert(raw, value: Int64(id)) }
            } else {
                pieces.append(Array(token.utf8))
            }
        }
        var byteTokens = [TokenID](repeating: -1, count: 256)
        for b in 0..<256 {
            if let id = table.find([UInt8(b)]) { byteTokens[b] = TokenID(id) }
        }
        let model = BPEModel(initialSymbols: .bytes, byteTokens: byteTokens,
                             merges: try mergeTable(vocabulary), vocabulary: table,
                             unknownID: try vocabulary.optionalID("tokenizer.ggml.unknown_token_id"), fuseUnknown: false,
                             wholeWords: wholeWordTokens ? .always : .never)
        var parts = GGUFModelParts(model: .bpe(model), pieces: pieces, preTokenizer: PreTokenizer(rules: rules),
                                   addBOSDefault: wholeWordTokens)
        if try metadata.optionalBool("tokenizer.ggml.add_space_prefix") == true { parts.transforms = [.prefixSpace] }
        return parts
    }

    /// `gemma4`, as llama.cpp runs it: BPE merges over characters with spaces spelled U+2581, the text
    /// cut only into runs of newlines and runs of other characters, <0xXX> byte fallback, always a BOS.
    static func gemma4(_ vocabulary: GGUFVocabulary) throws -> GGUFModelParts {
        let (tokens, types) = (vocabulary.tokens, vocabulary.types)
        var table = ByteStringTable(expectedCount: tokens.count)
        var byteTokens = [TokenID](repeating: -1, count: 256)
        for (id, token) in tokens.enumerated() {
            switch types[id] {
            case .byte: if let b = SentencePiece.byteValue(of: token) { byteTokens[Int(b)] = TokenID(id) }
            case .normal: table.insert(Array(token.utf8), value: Int64(id))
            default: break
            }
        }
        let model = BPEModel(initialSymbols: .characters, byteTokens: byteTokens, merges: try mergeTable(vocabulary),
                             vocabulary: table, unknownID: try vocabulary.optionalID("tokenizer.ggml.unknown_token_id"),
                             fuseUnknown: false, wholeWords: .newlineRuns)
        return GGUFModelParts(model: .bpe(model), pieces: vocabulary.sentencePiecePieces(),
                              transforms: [.replace(" ", with: SentencePiece.spaceMarker)],
                              preTokenizer: PreTokenizer(rules: [.alternatingRuns(newlinesOnly: true)]),
                              addBOSDefault: true, alwaysAddsBOS: true)
    }

    /// `llama`: SentencePiece BPE (scores as merge ranks), dummy prefix, BOS.
    static func sentencePieceBPE(_ vocabulary: GGUFVocabulary) throws -> GGUFModelParts {
        let addSpacePrefix = try vocabulary.metadata.optionalBool("tokenizer.ggml.add_space_prefix") ?? true
        var transforms: [TextTransform] = [.replace(" ", with: SentencePiece.spaceMarker)]
        if addSpacePrefix { transforms.append(.prepend(SentencePiece.spaceMarker, firstSegmentOnly: false)) }
        let model = sentencePieceModel(tokens: vocabulary.tokens, types: vocabulary.types, scores: try vocabulary.scores(),
                                       unknown: try vocabulary.optionalID("tokenizer.ggml.unknown_token_id"))
        return GGUFModelParts(model: .bpe(model), pieces: vocabulary.sentencePiecePieces(), transforms: transforms,
                              stripsLeadingSpace: addSpacePrefix, addBOSDefault: true)
    }

    /// `bert`, llama.cpp's WPM: BERT normalization and splitting, then greedy longest pieces, word-initial
    /// ones spelled with U+2581 and inner ones bare; [CLS] text [SEP] with special tokens.
    static func wordPiece(_ vocabulary: GGUFVocabulary) throws -> GGUFModelParts {
        let metadata = vocabulary.metadata
        // Files without the normalizer keys predate them and come from uncased BERTs, which llama.cpp
        // then lowercased and stripped of accents (the bge test cases expect it).
        let lowercase = try metadata.optionalBool("tokenizer.ggml.normalizer.lowercase") ?? true
        let stripAccents = try metadata.optionalBool("tokenizer.ggml.normalizer.strip_accents") ?? lowercase
        guard let unknown = try vocabulary.optionalID("tokenizer.ggml.unknown_token_id") else {
            throw TokenizerError.missingKey(source: vocabulary.source, key: "tokenizer.ggml.unknown_token_id")
        }
        let normal = vocabulary.tokens.indices.filter { vocabulary.types[$0] == .normal }
            .map { (vocabulary.tokens[$0], TokenID($0)) }
        let model = WordPieceModel(tokens: normal, wordPrefix: SentencePiece.spaceMarker, continuationPrefix: "",
                                   unknownID: unknown, maxScalars: .max)
        let separator = try vocabulary.optionalID("tokenizer.ggml.seperator_token_id")
        return GGUFModelParts(
            model: .wordPiece(model), pieces: vocabulary.sentencePiecePieces(),
            transforms: [.bert(BertNormalization(cleanText: true, chineseCharacters: true, stripAccents: stripAccents,
                                                 lowercase: lowercase))],
            preTokenizer: .bert, stripsLeadingSpace: true, addBOSDefault: true, addEOSDefault: separator != nil,
            bos: try vocabulary.optionalID("tokenizer.ggml.cls_token_id"), suffix: separator)
    }

    /// `t5`, llama.cpp's UGM: SentencePiece normalization, then Unigram over normal, user-defined (scored 0)
    /// and unused tokens; unknown runs become one unknown token; EOS appended by default; pad, eos and
    /// unk default to T5's 0, 1, 2 as in llama.cpp.
    static func unigram(_ vocabulary: GGUFVocabulary) throws -> GGUFModelParts {
        let (metadata, tokens, types, source) = (vocabulary.metadata, vocabulary.tokens, vocabulary.types, vocabulary.source)
        let scores = try vocabulary.scores()
        var charsmap: PrecompiledCharsmap?
        if let raw = try metadata.optionalIntArray("tokenizer.ggml.precompiled_charsmap") {
            charsmap = PrecompiledCharsmap(raw.map { UInt8(truncatingIfNeeded: $0) })
            if charsmap == nil {
                throw TokenizerError.inconsistentVocabulary(
                    source: source, reason: "tokenizer.ggml.precompiled_charsmap is not a SentencePiece charsmap")
            }
        }
        guard let unknown = try vocabulary.optionalID("tokenizer.ggml.unknown_token_id") ?? (tokens.count > 2 ? 2 : nil) else {
            throw TokenizerError.missingKey(source: source, key: "tokenizer.ggml.unknown_token_id")
        }
        let matchable: [(text: String, score: Double)?] = tokens.indices.map { id in
            switch types[id] {
            case .normal, .unused: return (tokens[id], Double(scores[id]))
            case .userDefined: return (tokens[id], 0)
            default: return nil
            }
        }
        let normalScores = tokens.indices.filter { types[$0] == .normal }.map { Double(scores[$0]) }
        let model = UnigramModel(pieces: matchable, lowestScore: normalScores.min() ?? 0, unknownID: unknown,
                                 byteFallback: false)
        let addSpacePrefix = try metadata.optionalBool("tokenizer.ggml.add_space_prefix") ?? false
        let normalizer = SentencePieceNormalizer(
            charsmap: charsmap, addDummyPrefix: addSpacePrefix,
            removeExtraWhitespaces: try metadata.optionalBool("tokenizer.ggml.remove_extra_whitespaces") ?? false)
        return GGUFModelParts(
            model: .unigram(model), pieces: vocabulary.sentencePiecePieces(), transforms: [.sentencePiece(normalizer)],
            stripsLeadingSpace: addSpacePrefix, addEOSDefault: true,
            eos: try vocabulary.optionalID("tokenizer.ggml.eos_token_id") ?? 1, unknown: unknown,
            pad: try vocabulary.optionalID("tokenizer.ggml.padding_token_id") ?? 0)
    }

    /// The bytes a token of a SentencePiece-spelled vocabulary decodes to.
    static func sentencePiecePiece(_ token: String, _ type: GGUFTokenType) -> [UInt8] {
        switch type {
        case .byte: return SentencePiece.byteValue(of: token).map { [$0] } ?? Array(token.utf8)
        case .normal, .userDefined, .unused: return SentencePiece.unescape(token)
        case .control, .unknown: return Array(token.utf8)
        }
    }

    /// `tokenizer.ggml.merges` ("left right", split at the first space after the first byte, so a left
    /// token may be a space) as a table over ids; merges naming tokens that do not exist are skipped.
    static func mergeTable(_ vocabulary: GGUFVocabulary) throws -> MergeTable {
        let (tokens, source) = (vocabulary.tokens, vocabulary.source)
        let lines = try vocabulary.metadata.stringArray("tokenizer.ggml.merges")
        var ids = [String: TokenID](minimumCapacity: tokens.count)
        for (id, token) in tokens.enumerated() where ids[token] == nil { ids[token] = TokenID(id) }
        var merges = MergeTable(expectedCount: lines.count)
        for (rank, line) in lines.enumerated() {
            let utf8 = Array(line.utf8)
            guard utf8.count > 1, let space = utf8[1...].firstIndex(of: 0x20) else {
                throw TokenizerError.inconsistentVocabulary(
                    source: source, reason: "tokenizer.ggml.merges[\(rank)] \(line.debugDescription) is not 'left right'")
            }
            let left = String(decoding: utf8[..<space], as: UTF8.self)
            let right = String(decoding: utf8[(space + 1)...], as: UTF8.self)
            guard let l = ids[left], let r = ids[right], let m = ids[left + right] else { continue }
            merges.insert(left: l, right: r, rank: UInt32(rank), merged: m)
        }
        return merges
    }

    /// SentencePiece BPE as merges: every split of a normal token into two normal tokens is a merge whose
    /// rank is the token's score rank (higher score merges first; equal scores tie to the leftmost pair).
    static func sentencePieceModel(tokens: [String], types: [GGUFTokenType], scores: [Float],
                                   unknown: TokenID?) -> BPEModel {
        var vocabulary = ByteStringTable(expectedCount: tokens.count)
        var byteTokens = [TokenID](repeating: -1, count: 256)
        for (id, token) in tokens.enumerated() {
            switch types[id] {
            case .normal: vocabulary.insert(Array(token.utf8), value: Int64(id))
            case .byte: if let b = SentencePiece.byteValue(of: token) { byteTokens[Int(b)] = TokenID(id) }
            default: break
            }
        }
        let distinctScores = Array(Set(scores)).sorted(by: >)
        var rankOfScore = [Float: UInt32](minimumCapacity: distinctScores.count)
        for (rank, score) in distinctScores.enumerated() { rankOfScore[score] = UInt32(rank) }
        var merges = MergeTable(expectedCount: tokens.count * 4)
        for (id, token) in tokens.enumerated() where types[id] == .normal {
            let utf8 = Array(token.utf8)
            guard utf8.count > 1 else { continue }
            let rank = rankOfScore[scores[id]]!
            var split = 1
            while split < utf8.count {
                if utf8[split] & 0xC0 != 0x80,
                   let left = vocabulary.find(Array(utf8[..<split])),
                   let right = vocabulary.find(Array(utf8[split...])) {
                    merges.insert(left: TokenID(left), right: TokenID(right), rank: rank, merged: TokenID(id))
                }
                split += 1
            }
        }
        return BPEModel(initialSymbols: .characters, byteTokens: byteTokens, merges: merges, vocabulary: vocabulary,
                        unknownID: unknown, fuseUnknown: false, wholeWords: .never)
    }
}
