import Foundation
import ModelFormats
import Testing
@testable import Tokenizers

@Suite("Special tokens, BOS/EOS and stop ids")
struct SpecialTokenTests {
    @Test("Llama 3: BOS added with special tokens, <|end_of_text|> and <|eot_id|> stop generation")
    func llama3() throws {
        let tokenizer = try Fixtures.gguf("llama-bpe")
        #expect(tokenizer.vocabularySize == 128256)
        #expect(tokenizer.specialTokens.bos == 128000)
        #expect(tokenizer.specialTokens.eos == 128001)
        #expect(tokenizer.specialTokens.eot == 128009)
        // Llama 3.0's vocabulary: 128008 is still a reserved token (3.1 made it <|eom_id|>).
        #expect(tokenizer.token(for: 128008) == "<|reserved_special_token_4|>")
        #expect(tokenizer.specialTokens.stop == [128001, 128009])
        #expect(tokenizer.encode("Hello world", addSpecialTokens: true, parseSpecial: false) == [128000, 9906, 1917])
        #expect(tokenizer.encode("Hello world", addSpecialTokens: false, parseSpecial: false) == [9906, 1917])
        // Without parseSpecial, a special token written in the text is plain text.
        let plain = tokenizer.encode("<|eot_id|>", addSpecialTokens: false, parseSpecial: false)
        #expect(!plain.contains(128009) && plain.count > 1)
        #expect(tokenizer.encode("a<|eot_id|>b", addSpecialTokens: false, parseSpecial: true) == [64, 128009, 65])
        #expect(tokenizer.id(for: "<|eot_id|>") == 128009)
        #expect(tokenizer.token(for: 9906) == "Hello")
        #expect(tokenizer.token(for: 220) == "Ġ")
        #expect(tokenizer.isSpecial(128009) && !tokenizer.isSpecial(9906))
    }

    @Test("Qwen2: no BOS, <|im_end|> is the end of turn, chat template present")
    func qwen2() throws {
        let tokenizer = try Fixtures.gguf("qwen2")
        #expect(tokenizer.encode("Hello", addSpecialTokens: true, parseSpecial: true) == [9707])
        #expect(tokenizer.specialTokens.eot == 151645)
        #expect(tokenizer.specialTokens.stop.isSuperset(of: [151643, 151645]))
        #expect(tokenizer.chatTemplate?.contains("<|im_start|>") == true)
        let ids = tokenizer.encode("<|im_start|>user\nHi<|im_end|>", addSpecialTokens: false, parseSpecial: true)
        #expect(ids.first == 151644 && ids.last == 151645)
        #expect(tokenizer.decode(ids, skipSpecialTokens: true) == "user\nHi")
        #expect(tokenizer.decode(ids, skipSpecialTokens: false) == "<|im_start|>user\nHi<|im_end|>")
    }

    @Test("Llama 2 SentencePiece: BOS only, dummy prefix added and stripped again")
    func sentencePiece() throws {
        let tokenizer = try Fixtures.gguf("llama-spm")
        let ids = tokenizer.encode("Hello world", addSpecialTokens: true, parseSpecial: false)
        #expect(ids == [1, 15043, 3186])
        #expect(tokenizer.decode(ids, skipSpecialTokens: true) == "Hello world")
        #expect(tokenizer.decode(ids, skipSpecialTokens: false) == "<s> Hello world")
        #expect(tokenizer.stripsLeadingSpace)
        // Byte fallback: a character missing from the vocabulary is spelled as <0xXX> tokens.
        let llama = tokenizer.encode("🦙", addSpecialTokens: false, parseSpecial: false)
        #expect(llama.map { tokenizer.token(for: $0)! } == ["▁", "<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"])
        #expect(tokenizer.decode(llama) == "🦙")
        // A space followed by a combining mark is one Character but still a space to SentencePiece.
        #expect(tokenizer.encode("a \u{300}b", addSpecialTokens: false, parseSpecial: false) == [263, 29871, 30712, 29890])
    }

    @Test("Gemma 4: BOS always, spaces as U+2581 without a dummy prefix, newline runs whole, <turn|> ends a turn")
    func gemma4() throws {
        let tokenizer = try Fixtures.gguf("gemma-4")
        let hello = tokenizer.encode("Hello world", addSpecialTokens: false, parseSpecial: false)
        #expect(tokenizer.encode("Hello world", addSpecialTokens: true, parseSpecial: false) == [2] + hello)
        #expect(hello.map { tokenizer.token(for: $0)! } == ["Hello", "▁world"])
        #expect(tokenizer.encode("\n\n\n", addSpecialTokens: false, parseSpecial: false) == [109])
        #expect(!tokenizer.stripsLeadingSpace)
        #expect(tokenizer.decode(tokenizer.encode(" a  b\n\nc")) == " a  b\n\nc")
        #expect(tokenizer.specialTokens.eot == 106)
        #expect(tokenizer.specialTokens.stop.isSuperset(of: [1, 106]))
        let turn = tokenizer.encode("<|turn>user\nHi<turn|>", addSpecialTokens: false, parseSpecial: true)
        #expect(turn.first == 105 && turn.last == 106)
    }
}

@Suite("Streaming detokenization")
struct IncrementalDetokenizerTests {
    /// GGUF vocabularies and the WordPiece / Unigram tokenizer.json directories.
    static let families = ["llama-bpe", "qwen2", "gpt-2", "llama-spm", "starcoder", "deepseek-llm", "gemma-4", "bert-bge",
                           "wordpiece", "unigram"]

    @Test("token-by-token output concatenates to the full decode and never splits a character",
          arguments: families)
    func streamsWholeCharacters(family: String) throws {
        let tokenizer = ["wordpiece", "unigram"].contains(family)
            ? try TokenizerLoader.load(directory: Fixtures.url("", in: family)) : try Fixtures.gguf(family)
        let text = try Fixtures.text("mixed-script")
        let ids = tokenizer.encode(text, addSpecialTokens: true, parseSpecial: false)
        for skip in [true, false] {
            var stream = IncrementalDetokenizer(tokenizer: tokenizer, skipSpecialTokens: skip)
            var chunks: [String] = []
            for id in ids { chunks.append(stream.append(id)) }
            chunks.append(stream.finish())
            #expect(chunks.joined() == tokenizer.decode(ids, skipSpecialTokens: skip))
            #expect(!chunks.contains { $0.contains("\u{FFFD}") })
            // Tokens that carry only part of a character produce nothing until it completes.
            #expect(chunks.contains(""))
        }
    }

    @Test("a cut inside a character is held back, then flushed as U+FFFD at the end")
    func holdsIncompleteSequences() throws {
        let tokenizer = try Fixtures.gguf("llama-spm")
        var stream = IncrementalDetokenizer(tokenizer: tokenizer)
        let bytes = ["<0xF0>", "<0x9F>", "<0xA6>"].map { tokenizer.id(for: $0)! }
        #expect(stream.append(bytes) == "")
        #expect(stream.finish() == "\u{FFFD}")
        var whole = IncrementalDetokenizer(tokenizer: tokenizer)
        #expect(whole.append(bytes) == "")
        #expect(whole.append(tokenizer.id(for: "<0x99>")!) == "🦙")
    }

    @Test("SentencePiece's leading space is stripped from the first text only, after a skipped BOS")
    func stripsFirstSpace() throws {
        let tokenizer = try Fixtures.gguf("llama-spm")
        var stream = IncrementalDetokenizer(tokenizer: tokenizer, skipSpecialTokens: true)
        #expect(stream.append(1) == "")
        #expect(stream.append(15043) == "Hello")
        #expect(stream.append(3186) == " world")
    }

    @Test("text continuing a prompt keeps SentencePiece's leading space")
    func keepsSpaceWhenContinuing() throws {
        let tokenizer = try Fixtures.gguf("llama-spm")
        var stream = IncrementalDetokenizer(tokenizer: tokenizer, skipSpecialTokens: true, continuingText: true)
        #expect(stream.append(15043) == " Hello")
        #expect(stream.append(3186) == " world")
    }

    @Test("byte-level: emoji spread over several tokens comes out whole")
    func byteLevelEmoji() throws {
        let tokenizer = try Fixtures.gguf("llama-bpe")
        let ids = tokenizer.encode("🦙🦙", addSpecialTokens: false, parseSpecial: false)
        #expect(ids.count > 2)
        var stream = IncrementalDetokenizer(tokenizer: tokenizer)
        var chunks = ids.map { stream.append($0) }
        chunks.append(stream.finish())
        #expect(chunks.joined() == "🦙🦙")
        #expect(chunks.allSatisfy { $0.isEmpty || $0 == "🦙" })
    }
}

@Suite("Loading tokenizer.json")
struct TokenizerJSONTests {
    /// Writes a tokenizer directory into a fresh temporary folder.
    static func directory(_ tokenizerJSON: String, config: String? = nil) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tessel-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        try tokenizerJSON.write(to: url.appendingPathComponent("tokenizer.json"), atomically: true, encoding: .utf8)
        if let config {
            try config.write(to: url.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        }
        return url
    }

    /// A small SentencePiece-style BPE: NFC normalizer, Metaspace, byte fallback, ▁-aware decoder.
    static func sentencePieceJSON(bosTemplate: Bool) -> String {
        let template = #"""
         "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},
           {"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},
        """#
        return #"""
        {"added_tokens":[{"id":0,"content":"<unk>","special":true},{"id":1,"content":"<s>","special":true},
          {"id":2,"content":"</s>","special":true}],
         "normalizer":{"type":"NFC"},
         "pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":false},
        """# + (bosTemplate ? template : "") + #"""
         "decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},
           {"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
         "model":{"type":"BPE","unk_token":"<unk>","byte_fallback":true,"fuse_unk":true,
           "vocab":{"<unk>":0,"<s>":1,"</s>":2,"<0xC3>":3,"<0xA9>":4,"▁":5,"c":6,"a":7,"f":8,"▁c":9,"af":10,
             "▁caf":11,"é":12,"▁café":13},
           "merges":["▁ c","a f","▁c af","▁caf é"]}}
        """#
    }

    @Test("NFC, Metaspace, byte fallback and the SentencePiece decoder from tokenizer.json")
    func sentencePieceStyle() throws {
        let tokenizer = try TokenizerLoader.load(directory: Self.directory(Self.sentencePieceJSON(bosTemplate: true)))
        // "cafe\u{301}" is NFC-normalized to "café" and merges to one token.
        #expect(tokenizer.encode("cafe\u{301}", addSpecialTokens: true, parseSpecial: false) == [1, 13])
        #expect(tokenizer.encode("café é", addSpecialTokens: false, parseSpecial: false) == [13, 5, 12])
        // "é" decomposed stays NFC-composed; "ë" (C3 AB) has no <0xAB> token, so it is <unk>, and
        // consecutive unknowns fuse.
        #expect(tokenizer.encode("éë", addSpecialTokens: false, parseSpecial: false) == [5, 12, 0])
        #expect(tokenizer.encode("ëë", addSpecialTokens: false, parseSpecial: false) == [5, 0])
        #expect(tokenizer.decode([1, 13, 5, 12], skipSpecialTokens: true) == "café é")
        #expect(tokenizer.decode([13, 5, 3, 4]) == "café é")
        #expect(tokenizer.stripsLeadingSpace)
        #expect(tokenizer.specialTokens.bos == nil)  // no tokenizer_config.json
    }

    @Test("tokenizer_config.json supplies special tokens, add_bos_token and the chat template")
    func configFile() throws {
        let json = Self.sentencePieceJSON(bosTemplate: false)
        let config = #"{"bos_token":{"content":"<s>"},"eos_token":"</s>","add_bos_token":true,"add_eos_token":true,"chat_template":"{{ bos_token }}"}"#
        let tokenizer = try TokenizerLoader.load(directory: Self.directory(json, config: config))
        #expect(tokenizer.encode("café", addSpecialTokens: true, parseSpecial: false) == [1, 13, 2])
        #expect(tokenizer.specialTokens.bos == 1 && tokenizer.specialTokens.eos == 2)
        #expect(tokenizer.specialTokens.stop == [2])
        #expect(tokenizer.chatTemplate == "{{ bos_token }}")
        #expect(tokenizer.eosToken == "</s>")
    }

    @Test("an unknown Split regex fails with an error naming the pattern")
    func unknownPattern() throws {
        let json = #"""
        {"added_tokens":[],"pre_tokenizer":{"type":"Split","pattern":{"Regex":"[a-z]+|\\d{4}"},"behavior":"Isolated","invert":false},
         "model":{"type":"BPE","vocab":{"a":0},"merges":[]}}
        """#
        let error = #expect(throws: TokenizerError.self) {
            try TokenizerLoader.load(directory: Self.directory(json))
        }
        #expect(error?.description.contains(#"[a-z]+|\\d{4}"#) == true)
        #expect(error?.description.contains("tokenizer.json") == true)
    }

    @Test("Unigram: the best-scoring segmentation, unknown characters fused into one <unk>")
    func unigramLattice() throws {
        let json = #"""
        {"added_tokens":[],
         "model":{"type":"Unigram","unk_id":0,"vocab":[["<unk>",0.0],["▁",-1.0],["a",-2.0],["b",-2.0],["ab",-3.5],["c",-1.0]]}}
        """#
        let tokenizer = try TokenizerLoader.load(directory: Self.directory(json))
        #expect(tokenizer.encode("abc") == [4, 5])     // ab+c scores -4.5, a+b+c -5
        #expect(tokenizer.encode("xyab") == [0, 4])    // x and y are one fused unknown
        #expect(tokenizer.encode("axb") == [2, 0, 3])
        #expect(tokenizer.specialTokens.unknown == 0)
    }

    @Test("an unsupported model or component is an error naming the file and what it is")
    func unsupportedParts() throws {
        let wordLevel = #"{"added_tokens":[],"model":{"type":"WordLevel","vocab":{"a":0},"unk_token":"a"}}"#
        let modelError = #expect(throws: TokenizerError.self) {
            try TokenizerLoader.load(directory: Self.directory(wordLevel))
        }
        #expect(modelError?.description.contains("'WordLevel'") == true)
        #expect(modelError?.description.contains("tokenizer.json") == true)
        #expect(modelError?.description.contains("WordPiece, Unigram") == true)
        let punctuation = #"""
        {"added_tokens":[],"pre_tokenizer":{"type":"Punctuation","behavior":"Isolated"},
         "model":{"type":"WordPiece","vocab":{"[UNK]":0,"a":1},"unk_token":"[UNK]"}}
        """#
        let directory = try Self.directory(punctuation)
        #expect(throws: TokenizerError.unsupportedComponent(
            source: directory.appendingPathComponent("tokenizer.json").path, kind: "pre-tokenizer", type: "Punctuation")) {
            try TokenizerLoader.load(directory: directory)
        }
    }

    @Test("a directory without tokenizer.json is an error naming the file")
    func missingFile() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tessel-empty-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        #expect(throws: TokenizerError.missingFile(url.appendingPathComponent("tokenizer.json").path)) {
            try TokenizerLoader.load(directory: url)
        }
    }
}

@Suite("Pre-tokenizer scanners")
struct PreTokenizerTests {
    func pieces(_ rules: [SplitRule], _ text: String) -> [String] {
        var scalars = ScalarText()
        var text = text
        text.withUTF8 { scalars.load($0) }
        var cuts: [Int32] = []
        var scratch: [Int32] = []
        PreTokenizer(rules: rules).split(scalars, cuts: &cuts, scratch: &scratch)
        let view = Array(text.unicodeScalars)
        return (1..<cuts.count).map { String(String.UnicodeScalarView(view[Int(cuts[$0 - 1])..<Int(cuts[$0])])) }
    }

    @Test("GPT-2 rule: contractions, optional space before letters/digits/other, whitespace lookahead")
    func gpt2() {
        #expect(pieces([.gpt2], "I'm  here,  123!!\n") == ["I", "'m", " ", " here", ",", " ", " 123", "!!", "\n"])
        #expect(pieces([.gpt2], "DON'T") == ["DON", "'", "T"])
    }

    @Test("Llama 3 rule: case-insensitive contractions, digit triples, newlines kept with punctuation")
    func llama3() {
        #expect(pieces([.llama3(maxDigits: 3)], "DON'T 1234567 ok.\n\n  x") ==
                ["DON", "'T", " ", "123", "456", "7", " ok", ".\n\n", " ", " x"])
        #expect(pieces([.llama3(maxDigits: 1)], "12 ab") == ["1", "2", " ab"])
    }

    @Test("o200k and Tekken rules: a word is its upper-case letters then its lower-case ones")
    func caseAwareWords() {
        #expect(pieces([.caseAwareWords(contractions: true, maxDigits: 3)], "HTTPServer isn't 12345 a/b\n") ==
                ["HTTPServer", " isn't", " ", "123", "45", " a", "/b", "\n"])
        #expect(pieces([.caseAwareWords(contractions: false, maxDigits: 1)], "CamelCase don't 12") ==
                ["Camel", "Case", " don", "'t", " ", "1", "2"])
        // tokenizer.json files name them by their regexes, GGUF files by tokenizer.ggml.pre.
        #expect(PreTokenizer.rule(forSplitPattern: PreTokenizer.o200kPattern) == PreTokenizer.rules(forGGUFName: "gpt-4o"))
        #expect(PreTokenizer.rule(forSplitPattern: PreTokenizer.tekkenPattern) == PreTokenizer.rules(forGGUFName: "tekken"))
        #expect(PreTokenizer.rules(forGGUFName: "llama4") == [.caseAwareWords(contractions: true, maxDigits: 3)])
    }

    static let familyTexts: [(family: String, text: String)] =
        ["gpt-2", "llama-bpe", "qwen2", "starcoder", "deepseek-llm", "deepseek-coder", "deepseek-v3", "falcon",
         "gpt-4o", "tekken", "qwen35", "default"]
            .flatMap { family in ["mixed-script", "fuzz"].map { (family, $0) } }

    @Test("each family's scanners split like its regexes do in Python's regex module", arguments: familyTexts)
    func matchesRegexReference(family: String, text: String) throws {
        let rules = try #require(PreTokenizer.rules(forGGUFName: family))
        let data = try Data(contentsOf: Fixtures.url("pieces.\(family).\(text).json", in: "reference"))
        let expected = try #require(JSONSerialization.jsonObject(with: data) as? [String])
        let actual = pieces(rules, try Fixtures.text(text))
        #expect(expected.count > 500)
        let same = zip(actual, expected).prefix { $0 == $1 }.count
        #expect(same == expected.count && actual.count == expected.count, "first difference at piece \(same): \(actual.dropFirst(same).prefix(3)) vs \(expected.dropFirst(same).prefix(3))")
    }

    @Test("digits then GPT-2 (StarCoder, SmolLM): every digit alone")
    func digitsFirst() {
        #expect(pieces(PreTokenizer.digitsThenGPT2Rules, "a 42b") == ["a", " ", "4", "2", "b"])
    }
}

@Suite("Sharing one tokenizer")
struct ConcurrencyTests {
    @Test("concurrent encodes through the shared word cache give the same ids as one at a time")
    func concurrentEncodes() async throws {
        let tokenizer = try Fixtures.gguf("qwen2")
        let text = try Fixtures.text("mixed-script")
        let lines = text.split(separator: "\n").map(String.init)
        let expected = lines.map { tokenizer.encode($0) }
        let results = await withTaskGroup(of: (Int, [TokenID]).self) { group in
            for _ in 0..<4 {
                for (index, line) in lines.enumerated() {
                    group.addTask { (index, tokenizer.encode(line)) }
                }
            }
            var results: [(Int, [TokenID])] = []
            for await result in group { results.append(result) }
            return results
        }
        #expect(results.count == lines.count * 4)
        for (index, ids) in results { #expect(ids == expected[index]) }
    }
}
