import Foundation

// How this module is put together (decisions worth knowing before changing it):
// - One pipeline for every model (PipelineTokenizer): added tokens split off, text runs normalized
//   (TextTransform), pre-tokenized (PreTokenizer), and each piece handed to the model (TokenizerModel):
//   BPE, WordPiece (BERT; greedy longest pieces over a ByteTrie) or Unigram (Viterbi over a ByteTrie, as
//   HF runs it; GGUF `t5` as llama.cpp's UGM, with SentencePiece's own normalization). Decoding
//   concatenates per-token bytes, so streaming works the same for all of them.
// - BPE runs over token ids. Byte-level vocabularies (GPT-2, Llama 3,
//   Qwen2, …) start from one symbol per byte; SentencePiece vocabularies (Llama 2, Mistral v0.1) start
//   from one symbol per character with <0xXX> byte fallback, and their scores become merge ranks
//   (every split of a token into two tokens is a merge, ranked by the token's score). Gemma 4 (GGUF
//   `gemma4`) is BPE with real merges over characters, spaces spelled U+2581 and <0xXX> byte fallback.
// - Pre-tokenizer regexes are hand-written scanners over Unicode scalars (PreTokenizer.swift). Only the
//   known family patterns are accepted; an unknown tokenizer.json `Split` regex is a load error naming it.
// - Special tokens written in text are recognised only with `parseSpecial` (llama.cpp's parse_special);
//   non-special added tokens (GGUF user-defined) always are, as in both references.
// - GGUF follows llama.cpp (add_bos defaults, ignore_merges for the Llama 3 family, no NFC);
//   tokenizer.json follows HF `tokenizers`.

/// Token ids are 32-bit everywhere: they go over the wire to workers as int32 and index embedding rows.
public typealias TokenID = Int32

/// The special token ids a model declares. Any of them may be absent.
public struct SpecialTokenIDs: Sendable, Equatable {
    public var bos: TokenID?
    public var eos: TokenID?
    public var pad: TokenID?
    public var eot: TokenID?
    public var unknown: TokenID?
    /// Every id that ends a generation: eos, eot, the `eos_token_id` list of generation_config.json and
    /// control tokens named like an end of turn (`<|eot_id|>`, `<|im_end|>`, `<|endoftext|>`, `<end_of_turn>`, …).
    public var stop: Set<TokenID>

    public init(bos: TokenID? = nil, eos: TokenID? = nil, pad: TokenID? = nil, eot: TokenID? = nil,
                unknown: TokenID? = nil, stop: Set<TokenID> = []) {
        self.bos = bos
        self.eos = eos
        self.pad = pad
        self.eot = eot
        self.unknown = unknown
        self.stop = stop
    }
}

/// Text <-> token ids for one model.
public protocol Tokenizer: Sendable {
    /// Encodes UTF-8 text.
    /// - Parameters:
    ///   - addSpecialTokens: add BOS/EOS the way the model asks for (add_bos/add_eos, post-processor template).
    ///   - parseSpecial: recognise special and control tokens written in the text (`<|im_start|>`);
    ///     when false they are tokenized as plain text. Non-special added tokens are always recognised.
    func encode(_ text: String, addSpecialTokens: Bool, parseSpecial: Bool) -> [TokenID]
    /// Decodes ids to text; invalid UTF-8 (a token sequence cut inside a character) becomes U+FFFD.
    func decode(_ ids: [TokenID], skipSpecialTokens: Bool) -> String
    /// The bytes token `id` contributes to decoded text, before the first-token space stripping.
    /// Empty for ids outside the vocabulary, and for special tokens when `skipSpecialTokens`.
    func pieceBytes(_ id: TokenID, skipSpecialTokens: Bool) -> [UInt8]
    /// The vocabulary string of a token as the model file writes it (`Ġthe`, `▁the`, `<0x0A>`, `<|eot_id|>`).
    func token(for id: TokenID) -> String?
    func id(for token: String) -> TokenID?
    /// True for control/special tokens (the ones `skipSpecialTokens` removes).
    func isSpecial(_ id: TokenID) -> Bool
    var specialTokens: SpecialTokenIDs { get }
    var vocabularySize: Int { get }
    /// The Jinja chat template shipped with the model, if any.
    var chatTemplate: String? { get }
    /// The text of the BOS / EOS tokens, which chat templates receive as `bos_token` / `eos_token`.
    var bosToken: String? { get }
    var eosToken: String? { get }
    /// True when decoding drops one leading space from the start of the text (SentencePiece's dummy prefix).
    var stripsLeadingSpace: Bool { get }
}

extension Tokenizer {
    public func encode(_ text: String) -> [TokenID] {
        encode(text, addSpecialTokens: false, parseSpecial: false)
    }

    public func decode(_ ids: [TokenID]) -> String {
        decode(ids, skipSpecialTokens: false)
    }

    public var bosToken: String? { specialTokens.bos.flatMap { token(for: $0) } }
    public var eosToken: String? { specialTokens.eos.flatMap { token(for: $0) } }
}

public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    case missingFile(String)
    case invalidJSON(file: String, reason: String)
    case missingKey(source: String, key: String)
    case unsupportedModel(source: String, model: String)
    case unsupportedPreTokenizer(source: String, name: String)
    case unsupportedPattern(source: String, pattern: String)
    case unsupportedComponent(source: String, kind: String, type: String)
    case inconsistentVocabulary(source: String, reason: String)

    public var description: String {
        switch self {
        case .missingFile(let path):
            return "tokenizer file not found: \(path)"
        case .invalidJSON(let file, let reason):
            return "\(file): invalid JSON: \(reason)"
        case .missingKey(let source, let key):
            return "\(source): missing or malformed key '\(key)'"
        case .unsupportedModel(let source, let model):
            return "\(source): unsupported tokenizer model '\(model)' (supported: tokenizer.json BPE, WordPiece, Unigram; GGUF gpt2, llama, gemma4, bert, t5)"
        case .unsupportedPreTokenizer(let source, let name):
            return "\(source): unsupported pre-tokenizer '\(name)'"
        case .unsupportedPattern(let source, let pattern):
            return "\(source): unsupported Split pattern \(pattern.debugDescription); known patterns are those of GPT-2, Llama 3, Qwen2, DeepSeek and digit splitting"
        case .unsupportedComponent(let source, let kind, let type):
            return "\(source): unsupported \(kind) type '\(type)'"
        case .inconsistentVocabulary(let source, let reason):
            return "\(source): \(reason)"
        }
    }
}
