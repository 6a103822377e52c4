import Foundation
import ModelFormats

/// llama.cpp's token types in `tokenizer.ggml.token_type`.
enum GGUFTokenType: Int {
    case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

/// Builds a tokenizer from the `tokenizer.ggml.*` metadata of a GGUF file (a model or a vocabulary-only file).
enum GGUFTokenizerLoader {
    static func load(_ file: GGUFFile) throws -> BPETokenizer {
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

        func optionalID(_ key: String) throws -> TokenID? {
            guard let value = try metadata.optionalInt(key), value >= 0, value < tokens.count else { return nil }
            return TokenID(value)
        }
        let bos = try optionalID("tokenizer.ggml.bos_token_id")
        let eos = try optionalID("tokenizer.ggml.eos_token_id")
        let unknown = try optionalID("tokenizer.ggml.unknown_token_id")
        let pad = try optionalID("tokenizer.ggml.padding_token_id")
        let eotKey = try optionalID("tokenizer.ggml.eot_token_id")
        let eom = try optionalID("tokenizer.ggml.eom_token_id")
        let preName = try metadata.optionalString("tokenizer.ggml.pre") ?? "default"

        var definitionModel: BPEModel
        var pieces: [[UInt8]] = []
        pieces.reserveCapacity(tokens.count)
        var transforms: [TextTransform] = []
        var preTokenizer = PreTokenizer(rules: [])
        var stripsLeadingSpace = false
        var addBOSDefault = false

        switch modelName {
        case "gpt2":
            guard let rules = PreTokenizer.rules(forGGUFName: preName) else {
                throw TokenizerError.unsupportedPreTokenizer(source: source, name: "tokenizer.ggml.pre=\(preName)")
            }
            preTokenizer = PreTokenizer(rules: rules)
            // As llama.cpp: Llama 3 and Tekken vocabularies add BOS, and a word that is itself a
            // token is not merged piece by piece.
            let wholeWordTokens = rules == PreTokenizer.llama3Rules || preName == "tekken"
            addBOSDefault = wholeWordTokens
            if try metadata.optionalBool("tokenizer.ggml.add_space_prefix") == true { transforms = [.prefixSpace] }
            var vocabulary = ByteStringTable(expectedCount: tokens.count)
            for (id, token) in tokens.enumerated() {
                let type = types[id]
                if type == .normal || type == .byte || type == .unused, let raw = ByteLevel.decode(token) {
                    pieces.append(raw)
                    if type != .unused { vocabulary.insert(raw, value: Int64(id)) }
                } else {
                    pieces.append(Array(token.utf8))
                }
            }
            var byteTokens = [TokenID](repeating: -1, count: 256)
            for b in 0..<256 {
                if let id = vocabulary.find([UInt8(b)]) { byteTokens[b] = TokenID(id) }
            }
            let mergeLines = try metadata.stringArray("tokenizer.ggml.merges")
            var ids = [String: TokenID](minimumCapacity: tokens.count)
            for (id, token) in tokens.enumerated() where ids[token] == nil { ids[token] = TokenID(id) }
            var merges = MergeTable(expectedCount: mergeLines.count)
            for (rank, line) in mergeLines.enumerated() {
                guard let space = line.firstIndex(of: " ") else {
                    throw TokenizerError.inconsistentVocabulary(
                        source: source, reason: "tokenizer.ggml.merges[\(rank)] \(line.debugDescription) is not 'left right'")
                }
                let left = String(line[..<space]), right = String(line[line.index(after: space)...])
                guard let l = ids[left], let r = ids[right], let m = ids[left + right] else { continue }
                merges.insert(left: l, right: r, rank: UInt32(rank), merged: m)
            }
            definitionModel = BPEModel(initialSymbols: .bytes, byteTokens: byteTokens, merges: merges,
                                       vocabulary: vocabulary, unknownID: unknown, fuseUnknown: false,
                                       ignoreMerges: wholeWordTokens)
        case "llama":
            let scores = try metadata.optionalFloatArray("tokenizer.ggml.scores")
                ?? Array(repeating: 0, count: tokens.count)
            guard scores.count == tokens.count else {
                throw TokenizerError.inconsistentVocabulary(
                    source: source, reason: "tokenizer.ggml.scores has \(scores.count) entries for \(tokens.count) tokens")
            }
            let addSpacePrefix = try metadata.optionalBool("tokenizer.ggml.add_space_prefix") ?? true
            transforms = [.replace(" ", with: SentencePiece.spaceMarker)]
            if addSpacePrefix { transforms.append(.prepend(SentencePiece.spaceMarker, firstSegmentOnly: false)) }
            stripsLeadingSpace = addSpacePrefix
            addBOSDefault = true
            definitionModel = sentencePieceModel(tokens: tokens, types: types, scores: scores, unknown: unknown)
            for (id, token) in tokens.enumerated() {
                switch types[id] {
                case .byte: pieces.append(SentencePiece.byteValue(of: token).map { [$0] } ?? Array(token.utf8))
                case .normal, .userDefined, .unused: pieces.append(SentencePiece.unescape(token))
                case .control, .unknown: pieces.append(Array(token.utf8))
                }
            }
        default:
            throw TokenizerError.unsupportedModel(source: source, model: "tokenizer.ggml.model=\(modelName)")
        }

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

        let addBOS = try metadata.optionalBool("tokenizer.ggml.add_bos_token") ?? addBOSDefault
        let addEOS = try metadata.optionalBool("tokenizer.ggml.add_eos_token") ?? false
        return BPETokenizer(TokenizerDefinition(
            source: source, tokens: tokens, pieces: pieces, isSpecial: isSpecial, model: definitionModel,
            transforms: transforms, preTokenizer: preTokenizer, addedTokens: addedTokens,
            prefixIDs: addBOS ? [bos].compactMap { $0 } : [], suffixIDs: addEOS ? [eos].compactMap { $0 } : [],
            specialTokens: SpecialTokenIDs(bos: bos, eos: eos, pad: pad, eot: eot, unknown: unknown, stop: stop),
            chatTemplate: try metadata.optionalString("tokenizer.chat_template"),
            stripsLeadingSpace: stripsLeadingSpace))
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
                        unknownID: unknown, fuseUnknown: false, ignoreMerges: false)
    }
}
