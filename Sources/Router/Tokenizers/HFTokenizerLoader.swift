import Foundation

/// Builds a tokenizer from a Hugging Face model directory: tokenizer.json (model, normalizer,
/// pre-tokenizer, added tokens, post-processor, decoder), tokenizer_config.json (special tokens, chat
/// template, add_bos/add_eos), chat_template.jinja and generation_config.json (extra eos ids).
enum HFTokenizerLoader {
    typealias JSON = [String: Any]

    static func load(directory: URL) throws -> PipelineTokenizer {
        let tokenizerURL = directory.appendingPathComponent("tokenizer.json")
        let source = tokenizerURL.path
        let root = try readJSON(tokenizerURL, required: true)!
        let config = try readJSON(directory.appendingPathComponent("tokenizer_config.json"), required: false) ?? [:]
        let generation = try readJSON(directory.appendingPathComponent("generation_config.json"), required: false) ?? [:]

        guard let model = root["model"] as? JSON else { throw TokenizerError.missingKey(source: source, key: "model") }
        let modelType = model["type"] as? String ?? (model["merges"] != nil ? "BPE" : "unknown")
        guard ["BPE", "WordPiece", "Unigram"].contains(modelType) else {
            throw TokenizerError.unsupportedModel(source: source, model: modelType)
        }
        if modelType == "BPE" {
            for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
                if let affix = model[key] as? String, !affix.isEmpty {
                    throw TokenizerError.unsupportedComponent(source: source, kind: "BPE \(key)", type: affix)
                }
            }
        }
        // Unigram lists [piece, score] pairs, the id being the position; the others map token -> id.
        var unigramPieces: [(text: String, score: Double)] = []
        let vocab: [String: Int]
        if modelType == "Unigram" {
            guard let list = model["vocab"] as? [[Any]] else { throw TokenizerError.missingKey(source: source, key: "model.vocab") }
            var map = [String: Int](minimumCapacity: list.count)
            for (id, entry) in list.enumerated() {
                guard entry.count == 2, let piece = entry[0] as? String, let score = entry[1] as? Double else {
                    throw TokenizerError.missingKey(source: source, key: "model.vocab[\(id)]")
                }
                unigramPieces.append((piece, score))
                if map[piece] == nil { map[piece] = id }
            }
            vocab = map
        } else {
            guard let map = model["vocab"] as? [String: Int] else {
                throw TokenizerError.missingKey(source: source, key: "model.vocab")
            }
            vocab = map
        }

        // Pre-tokenizer and normalizer.
        var transforms: [TextTransform] = []
        if let normalizer = root["normalizer"] as? JSON {
            try addNormalizer(normalizer, to: &transforms, source: source)
        }
        var preTokenizer = PreTokenizer(rules: [])
        var byteLevel = false
        if let pre = root["pre_tokenizer"] as? JSON {
            var afterWhitespaceSplit = false
            try addPreTokenizer(pre, transforms: &transforms, preTokenizer: &preTokenizer, byteLevel: &byteLevel,
                                afterWhitespaceSplit: &afterWhitespaceSplit, source: source)
        }
        var stripsLeadingSpace = false
        var decoderSteps: [DecoderStep] = []
        if let decoder = root["decoder"] as? JSON {
            try addDecoder(decoder, to: &decoderSteps, stripsLeadingSpace: &stripsLeadingSpace, source: source)
        }
        if decoderSteps.contains(.byteLevel) { byteLevel = true }

        // Tokens: the model vocabulary plus added tokens.
        let addedJSON = root["added_tokens"] as? [JSON] ?? []
        var size = (vocab.values.max() ?? -1) + 1
        for token in addedJSON { if let id = token["id"] as? Int { size = max(size, id + 1) } }
        var tokens = [String](repeating: "", count: size)
        if modelType == "Unigram" {
            for (id, piece) in unigramPieces.enumerated() { tokens[id] = piece.text }
        } else {
            for (token, id) in vocab where id >= 0 { tokens[id] = token }
        }
        var addedTokens: [AddedToken] = []
        var isSpecial = [Bool](repeating: false, count: size)
        for token in addedJSON {
            guard let id = token["id"] as? Int, id >= 0, let content = token["content"] as? String else {
                throw TokenizerError.missingKey(source: source, key: "added_tokens[].id/content")
            }
            let special = token["special"] as? Bool ?? false
            tokens[id] = content
            isSpecial[id] = special
            addedTokens.append(AddedToken(content: Array(content.utf8), id: TokenID(id), special: special,
                                          leftStrip: token["lstrip"] as? Bool ?? false,
                                          rightStrip: token["rstrip"] as? Bool ?? false))
        }

        let tokenizerModel: TokenizerModel
        switch modelType {
        case "WordPiece": tokenizerModel = .wordPiece(try wordPieceModel(model, vocab: vocab, source: source))
        case "Unigram": tokenizerModel = .unigram(try unigramModel(model, pieces: unigramPieces, source: source))
        default: tokenizerModel = .bpe(try bpeModel(model, vocab: vocab, byteLevel: byteLevel, source: source))
        }
        let unknownID = tokenizerModel.unknownID

        let pieces = tokens.map { DecoderStep.piece(of: $0, steps: decoderSteps) }

        // Special tokens.
        func configToken(_ key: String) -> String? {
            if let text = config[key] as? String { return text }
            return (config[key] as? JSON)?["content"] as? String
        }
        var ids = [String: TokenID](minimumCapacity: size)
        for (id, token) in tokens.enumerated() where ids[token] == nil { ids[token] = TokenID(id) }
        func idOf(_ text: String?) -> TokenID? { text.flatMap { ids[$0] } }
        func generationIDs(_ key: String) -> [TokenID] {
            if let one = generation[key] as? Int { return [TokenID(one)] }
            return (generation[key] as? [Int] ?? []).map { TokenID($0) }
        }
        let bos = idOf(configToken("bos_token")) ?? generationIDs("bos_token_id").first
        let eos = idOf(configToken("eos_token")) ?? generationIDs("eos_token_id").first
        let pad = idOf(configToken("pad_token")) ?? generationIDs("pad_token_id").first
        let unknown = idOf(configToken("unk_token")) ?? unknownID
        var stop = Set(generationIDs("eos_token_id"))
        if let eos { stop.insert(eos) }
        for token in addedTokens where token.special {
            if EndOfTurnNames.all.contains(String(decoding: token.content, as: UTF8.self)) { stop.insert(token.id) }
        }
        let eot = EndOfTurnNames.preferredEOT.lazy.compactMap { name in
            ids[name].flatMap { isSpecial[Int($0)] ? $0 : nil }
        }.first

        // BOS/EOS: the post-processor's template, else tokenizer_config's add_bos_token/add_eos_token.
        var prefix: [TokenID] = []
        var suffix: [TokenID] = []
        let hasTemplate = try postProcessor(root["post_processor"] as? JSON, prefix: &prefix, suffix: &suffix,
                                            source: source)
        if !hasTemplate {
            if config["add_bos_token"] as? Bool == true, let bos { prefix = [bos] }
            if config["add_eos_token"] as? Bool == true, let eos { suffix = [eos] }
        }

        var chatTemplate: String?
        let templateFile = directory.appendingPathComponent("chat_template.jinja")
        if let text = try? String(contentsOf: templateFile, encoding: .utf8) {
            chatTemplate = text
        } else if let text = config["chat_template"] as? String {
            chatTemplate = text
        } else if let named = config["chat_template"] as? [JSON] {
            chatTemplate = (named.first { $0["name"] as? String == "default" } ?? named.first)?["template"] as? String
        }

        return PipelineTokenizer(TokenizerDefinition(
            source: source, tokens: tokens, pieces: pieces, isSpecial: isSpecial, model: tokenizerModel,
            transforms: transforms, preTokenizer: preTokenizer, addedTokens: addedTokens, prefixIDs: prefix, suffixIDs: suffix,
            specialTokens: SpecialTokenIDs(bos: bos, eos: eos, pad: pad, eot: eot, unknown: unknown, stop: stop),
            chatTemplate: chatTemplate, stripsLeadingSpace: stripsLeadingSpace))
    }

    /// The BPE model: merges as pairs of ids, a byte-level or character (byte fallback) start.
    private static func bpeModel(_ model: JSON, vocab: [String: Int], byteLevel: Bool, source: String) throws -> BPEModel {
        let unknownToken = model["unk_token"] as? String
        let unknownID = unknownToken.flatMap { vocab[$0] }.map { TokenID($0) }
        let byteFallback = model["byte_fallback"] as? Bool ?? false
        var vocabulary = ByteStringTable(expectedCount: vocab.count)
        var byteTokens = [TokenID](repeating: -1, count: 256)
        for (token, id) in vocab.sorted(by: { $0.value < $1.value }) {
            if byteLevel {
                if let raw = ByteLevel.decode(token) { vocabulary.insert(raw, value: Int64(id)) }
            } else {
                vocabulary.insert(Array(token.utf8), value: Int64(id))
                if byteFallback, let b = SentencePiece.byteValue(of: token) { byteTokens[Int(b)] = TokenID(id) }
            }
        }
        if byteLevel {
            for b in 0..<256 { if let id = vocabulary.find([UInt8(b)]) { byteTokens[b] = TokenID(id) } }
        }
        let mergeList = model["merges"] as? [Any] ?? []
        var merges = MergeTable(expectedCount: mergeList.count)
        for (rank, entry) in mergeList.enumerated() {
            let left: String, right: String
            if let line = entry as? String, let space = line.firstIndex(of: " ") {
                left = String(line[..<space])
                right = String(line[line.index(after: space)...])
            } else if let pair = entry as? [String], pair.count == 2 {
                left = pair[0]
                right = pair[1]
            } else {
                throw TokenizerError.missingKey(source: source, key: "model.merges[\(rank)]")
            }
            guard let l = vocab[left], let r = vocab[right], let m = vocab[left + right] else { continue }
            merges.insert(left: TokenID(l), right: TokenID(r), rank: UInt32(rank), merged: TokenID(m))
        }
        return BPEModel(initialSymbols: byteLevel ? .bytes : .characters, byteTokens: byteTokens, merges: merges,
                        vocabulary: vocabulary, unknownID: unknownID,
                        fuseUnknown: model["fuse_unk"] as? Bool ?? false,
                        wholeWords: model["ignore_merges"] as? Bool == true ? .always : .never)
    }

    /// WordPiece: `##`-style continuation prefix, the unknown token, `max_input_chars_per_word`.
    private static func wordPieceModel(_ model: JSON, vocab: [String: Int], source: String) throws -> WordPieceModel {
        guard let unknown = model["unk_token"] as? String, let unknownID = vocab[unknown] else {
            throw TokenizerError.missingKey(source: source, key: "model.unk_token")
        }
        return WordPieceModel(tokens: vocab.map { ($0.key, TokenID($0.value)) }.sorted { $0.1 < $1.1 },
                              wordPrefix: "", continuationPrefix: model["continuing_subword_prefix"] as? String ?? "##",
                              unknownID: TokenID(unknownID), maxScalars: model["max_input_chars_per_word"] as? Int ?? 100)
    }

    private static func unigramModel(_ model: JSON, pieces: [(text: String, score: Double)], source: String) throws -> UnigramModel {
        guard let unknownID = model["unk_id"] as? Int, unknownID >= 0, unknownID < pieces.count else {
            throw TokenizerError.missingKey(source: source, key: "model.unk_id")
        }
        return UnigramModel(pieces: pieces, lowestScore: pieces.map(\.score).min() ?? 0, unknownID: TokenID(unknownID),
                            byteFallback: model["byte_fallback"] as? Bool ?? false)
    }

    private static func readJSON(_ url: URL, required: Bool) throws -> JSON? {
        guard FileManager.default.fileExists(atPath: url.path) else {
            if required { throw TokenizerError.missingFile(url.path) }
            return nil
        }
        do {
            let data = try Data(contentsOf: url)
            guard let object = try JSONSerialization.jsonObject(with: data) as? JSON else {
                throw TokenizerError.invalidJSON(file: url.path, reason: "top level is not an object")
            }
            return object
        } catch let error as TokenizerError {
            throw error
        } catch {
            throw TokenizerError.invalidJSON(file: url.path, reason: "\(error)")
        }
    }

    private static func addNormalizer(_ json: JSON, to transforms: inout [TextTransform], source: String) throws {
        let type = json["type"] as? String ?? "?"
        switch type {
        case "Sequence":
            for item in json["normalizers"] as? [JSON] ?? [] { try addNormalizer(item, to: &transforms, source: source) }
        case "NFC": transforms.append(.nfc)
        case "NFD": transforms.append(.nfd)
        case "NFKC": transforms.append(.nfkc)
        case "NFKD": transforms.append(.nfkd)
        case "Lowercase": transforms.append(.lowercase)
        case "StripAccents": transforms.append(.stripMarks)
        case "Prepend":
            transforms.append(.prepend(json["prepend"] as? String ?? "", firstSegmentOnly: false))
        case "Replace":
            let content = json["content"] as? String ?? ""
            let pattern = json["pattern"] as? JSON
            if let literal = pattern?["String"] as? String {
                transforms.append(.replace(literal, with: content))
            } else if let regex = pattern?["Regex"] as? String, let run = repeatedScalar(regex) {
                transforms.append(.collapseRuns(of: run.scalar, minimum: run.minimum, with: content))
            } else {
                throw TokenizerError.unsupportedPattern(source: source, pattern: "\(json["pattern"] ?? "nil")")
            }
        case "Strip":
            transforms.append(.strip(left: json["strip_left"] as? Bool ?? true, right: json["strip_right"] as? Bool ?? true))
        case "BertNormalizer":
            let lowercase = json["lowercase"] as? Bool ?? true
            transforms.append(.bert(BertNormalization(
                cleanText: json["clean_text"] as? Bool ?? true,
                chineseCharacters: json["handle_chinese_chars"] as? Bool ?? true,
                stripAccents: json["strip_accents"] as? Bool ?? lowercase, lowercase: lowercase)))
        case "Precompiled":
            guard let base64 = json["precompiled_charsmap"] as? String, let data = Data(base64Encoded: base64),
                  let charsmap = PrecompiledCharsmap(Array(data)) else {
                throw TokenizerError.missingKey(source: source, key: "normalizer.precompiled_charsmap")
            }
            transforms.append(.precompiled(charsmap))
        default:
            throw TokenizerError.unsupportedComponent(source: source, kind: "normalizer", type: type)
        }
    }

    /// A regex `X{n,}` (one literal scalar repeated at least n times), as SentencePiece converters write
    /// the collapsing of space runs.
    static func repeatedScalar(_ regex: String) -> (scalar: Unicode.Scalar, minimum: Int)? {
        let scalars = Array(regex.unicodeScalars)
        guard scalars.count >= 4, scalars[1] == "{", scalars.last == "}", scalars[scalars.count - 2] == ",",
              !"\\.[](){}*+?|^$".unicodeScalars.contains(scalars[0]),
              let minimum = Int(String(String.UnicodeScalarView(scalars[2..<(scalars.count - 2)]))) else { return nil }
        return (scalars[0], minimum)
    }

    /// `afterWhitespaceSplit`: a `WhitespaceSplit` came first, so a following Metaspace sees words, not spaces.
    private static func addPreTokenizer(_ json: JSON, transforms: inout [TextTransform], preTokenizer: inout PreTokenizer,
                                        byteLevel: inout Bool, afterWhitespaceSplit: inout Bool, source: String) throws {
        let type = json["type"] as? String ?? "?"
        switch type {
        case "Sequence":
            for item in json["pretokenizers"] as? [JSON] ?? [] {
                try addPreTokenizer(item, transforms: &transforms, preTokenizer: &preTokenizer, byteLevel: &byteLevel,
                                    afterWhitespaceSplit: &afterWhitespaceSplit, source: source)
            }
        case "BertPreTokenizer":
            preTokenizer.rules.append(contentsOf: PreTokenizer.bert.rules)
            preTokenizer.removesWhitespace = true
        case "Whitespace":
            preTokenizer.rules.append(.words)
            preTokenizer.removesWhitespace = true
        case "WhitespaceSplit":
            preTokenizer.rules.append(contentsOf: PreTokenizer.whitespaceSplit.rules)
            preTokenizer.removesWhitespace = true
            afterWhitespaceSplit = true
        case "ByteLevel":
            byteLevel = true
            if json["add_prefix_space"] as? Bool == true { transforms.append(.prefixSpace) }
            if json["use_regex"] as? Bool ?? true { preTokenizer.rules.append(.gpt2) }
        case "Split":
            let behavior = json["behavior"] as? String ?? "Isolated"
            guard behavior == "Isolated", json["invert"] as? Bool != true else {
                throw TokenizerError.unsupportedComponent(source: source, kind: "Split behavior", type: behavior)
            }
            let patternJSON = json["pattern"] as? JSON
            let pattern = patternJSON?["Regex"] as? String
                ?? (patternJSON?["String"] as? String).map { NSRegularExpression.escapedPattern(for: $0) } ?? ""
            guard let known = PreTokenizer.rule(forSplitPattern: pattern) else {
                throw TokenizerError.unsupportedPattern(source: source, pattern: pattern)
            }
            preTokenizer.rules.append(contentsOf: known)
        case "Digits":
            preTokenizer.rules.append(.digits(individual: json["individual_digits"] as? Bool ?? false))
        case "Metaspace":
            let marker = json["replacement"] as? String ?? SentencePiece.spaceMarker
            if afterWhitespaceSplit {
                // Each whitespace-separated word gets its own marker: the same as every whitespace run
                // becoming one marker, with none at either end.
                transforms.append(.strip(left: true, right: true))
                transforms.append(.collapseRuns(of: nil, minimum: 1, with: marker))
            } else {
                transforms.append(.replace(" ", with: marker))
            }
            let scheme = json["prepend_scheme"] as? String
                ?? ((json["add_prefix_space"] as? Bool ?? true) ? "always" : "never")
            if scheme != "never" { transforms.append(.metaspacePrefix(marker, firstSegmentOnly: scheme == "first")) }
            if json["split"] as? Bool ?? true { preTokenizer.rules.append(.beforeMetaspace) }
        default:
            throw TokenizerError.unsupportedComponent(source: source, kind: "pre-tokenizer", type: type)
        }
    }

    private static func addDecoder(_ json: JSON, to steps: inout [DecoderStep], stripsLeadingSpace: inout Bool,
                                   source: String) throws {
        let type = json["type"] as? String ?? "?"
        switch type {
        case "Sequence":
            for item in json["decoders"] as? [JSON] ?? [] {
                try addDecoder(item, to: &steps, stripsLeadingSpace: &stripsLeadingSpace, source: source)
            }
        case "ByteLevel": steps.append(.byteLevel)
        case "ByteFallback": steps.append(.byteFallback)
        case "Fuse": break
        case "Replace":
            guard let pattern = (json["pattern"] as? JSON)?["String"] as? String else {
                throw TokenizerError.unsupportedPattern(source: source, pattern: "\(json["pattern"] ?? "nil")")
            }
            steps.append(.replace(pattern, json["content"] as? String ?? ""))
        case "Strip":
            let content = json["content"] as? String ?? " "
            let start = json["start"] as? Int ?? 0
            guard content == " ", start <= 1, (json["stop"] as? Int ?? 0) == 0 else {
                throw TokenizerError.unsupportedComponent(source: source, kind: "decoder", type: "Strip(\(json))")
            }
            if start == 1 { stripsLeadingSpace = true }
        case "WordPiece":
            steps.append(.wordPiece(prefix: json["prefix"] as? String ?? "##", cleanup: json["cleanup"] as? Bool ?? true))
            stripsLeadingSpace = true
        case "Metaspace":
            let marker = json["replacement"] as? String ?? SentencePiece.spaceMarker
            steps.append(.replace(marker, " "))
            let scheme = json["prepend_scheme"] as? String
                ?? ((json["add_prefix_space"] as? Bool ?? true) ? "always" : "never")
            if scheme != "never" { stripsLeadingSpace = true }
        default:
            throw TokenizerError.unsupportedComponent(source: source, kind: "decoder", type: type)
        }
    }

    /// Reads BOS/EOS around the sequence from a TemplateProcessing (or Roberta/Bert) post-processor.
    private static func postProcessor(_ json: JSON?, prefix: inout [TokenID], suffix: inout [TokenID],
                                      source: String) throws -> Bool {
        guard let json else { return false }
        let type = json["type"] as? String ?? "?"
        switch type {
        case "Sequence":
            var found = false
            for item in json["processors"] as? [JSON] ?? [] {
                if try postProcessor(item, prefix: &prefix, suffix: &suffix, source: source) { found = true }
            }
            return found
        case "ByteLevel":
            return false
        case "TemplateProcessing":
            let specials = json["special_tokens"] as? [String: JSON] ?? [:]
            var seenSequence = false
            for item in json["single"] as? [JSON] ?? [] {
                if item["Sequence"] != nil {
                    seenSequence = true
                } else if let special = item["SpecialToken"] as? JSON, let name = special["id"] as? String {
                    let ids = (specials[name]?["ids"] as? [Int] ?? []).map { TokenID($0) }
                    if seenSequence { suffix.append(contentsOf: ids) } else { prefix.append(contentsOf: ids) }
                }
            }
            return true
        case "RobertaProcessing", "BertProcessing":
            if let cls = json["cls"] as? [Any], cls.count == 2, let id = cls[1] as? Int { prefix = [TokenID(id)] }
            if let sep = json["sep"] as? [Any], sep.count == 2, let id = sep[1] as? Int { suffix = [TokenID(id)] }
            return true
        default:
            throw TokenizerError.unsupportedComponent(source: source, kind: "post-processor", type: type)
        }
    }
}

/// A per-token step of an HF decoder chain.
enum DecoderStep: Equatable {
    case byteLevel
    case byteFallback
    case replace(String, String)
    /// Word-initial tokens get a space in front (stripped again at the start of a text), inner ones lose
    /// the prefix; `cleanup` joins punctuation and English contractions to the word before.
    case wordPiece(prefix: String, cleanup: Bool)

    static let wordPieceCleanup = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                                   (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]

    static func piece(of token: String, steps: [DecoderStep]) -> [UInt8] {
        var text = token
        for step in steps {
            switch step {
            case .wordPiece(let prefix, let cleanup):
                if !prefix.isEmpty && text.hasScalarPrefix(prefix) {
                    text = String(decoding: text.utf8.dropFirst(prefix.utf8.count), as: UTF8.self)
                } else {
                    text = " " + text
                }
                if cleanup {
                    for (from, to) in wordPieceCleanup { text = text.replacingScalars(of: from, with: to) }
                }
            case .replace(let pattern, let content):
                text = text.replacingScalars(of: pattern, with: content)
            case .byteFallback:
                if let b = SentencePiece.byteValue(of: text) { return [b] }
            case .byteLevel:
                return ByteLevel.decodeLenient(text)
            }
        }
        return Array(text.utf8)
    }
}

extension EndOfTurnNames {
    /// The end-of-turn token a chat model uses, in order of preference, when the file names none.
    static let preferredEOT = ["<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<turn|>", "<|end|>", "<|end_of_turn|>", "<EOT>"]
}
