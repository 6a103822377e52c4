import Foundation
import ModelFormats
import Testing
@testable import Tokenizers

extension Fixtures {
    static func text(_ name: String) throws -> String {
        try String(contentsOf: url("\(name).txt", in: "texts"), encoding: .utf8)
    }

    /// Ids written by scripts/fixtures/tokenizer_reference.py from HF `tokenizers` (int32 little-endian).
    static func referenceIDs(_ family: String, _ text: String) throws -> [TokenID] {
        let data = try Data(contentsOf: url("\(family).\(text).i32", in: "reference"))
        try #require(data.count % 4 == 0)
        return data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map { TokenID(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
        }
    }

    /// HF's decode of the reference ids (scripts/fixtures/tokenizer_models.py).
    static func referenceDecoded(_ family: String, _ text: String) throws -> String {
        try String(contentsOf: url("\(family).\(text).decoded.txt", in: "reference"), encoding: .utf8)
    }

    /// A tokenizer.json fixture (`wordpiece`, `unigram`) with one entry of its variants.json applied
    /// (dotted key -> new value), written to a fresh temporary directory.
    static func variant(_ name: String, of folder: String) throws -> URL {
        func read(_ file: String) throws -> [String: Any] {
            let data = try Data(contentsOf: url(file, in: folder))
            return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        }
        func setting(_ value: Any, at path: ArraySlice<Substring>, in object: [String: Any]) -> [String: Any] {
            var object = object
            let key = String(path.first!)
            object[key] = path.count == 1
                ? value : setting(value, at: path.dropFirst(), in: object[key] as? [String: Any] ?? [:])
            return object
        }
        var document = try read("tokenizer.json")
        let edits = try #require(try read("variants.json")[name] as? [String: Any], "no variant \(name)")
        for (key, value) in edits { document = setting(value, at: key.split(separator: ".")[...], in: document) }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(folder)-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: document).write(to: directory.appendingPathComponent("tokenizer.json"))
        return directory
    }

    static func smolLM2Directory() throws -> URL {
        try url("", in: "smollm2")
    }

    /// The default model, where scripts/fetch-model puts it ($TESSEL_MODEL_CACHE, default ~/.cache/tessel/models).
    static var smolLM2GGUF: URL {
        let cache = ProcessInfo.processInfo.environment["TESSEL_MODEL_CACHE"]
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/tessel/models").path
        return URL(fileURLWithPath: cache).appendingPathComponent("SmolLM2-135M-Instruct.Q4_1.gguf")
    }
}

/// The first index where two id lists differ, for readable failures on long texts.
func firstDifference(_ a: [TokenID], _ b: [TokenID]) -> String {
    let common = zip(a, b).prefix { $0 == $1 }.count
    if common == a.count && common == b.count { return "equal" }
    let slice = { (ids: [TokenID]) in Array(ids[common..<min(ids.count, common + 8)]) }
    return "first difference at \(common) of \(a.count)/\(b.count): \(slice(a)) vs \(slice(b))"
}

@Suite("Same ids as Hugging Face tokenizers on real text")
struct ReferenceTextTests {
    static let texts = ["alice29", "mixed-script", "fuzz"]
    static let cases: [(family: String, text: String)] =
        ["llama-bpe", "qwen2", "llama-spm"].flatMap { family in texts.map { (family, $0) } }

    @Test("a GGUF vocabulary encodes a novel, a mixed-script text and a fuzz text like HF", arguments: cases)
    func ggufMatchesHF(family: String, text: String) throws {
        let tokenizer = try Fixtures.gguf(family)
        let input = try Fixtures.text(text)
        let expected = try Fixtures.referenceIDs(family, text)
        #expect(expected.count > 500)
        let ids = tokenizer.encode(input, addSpecialTokens: false, parseSpecial: false)
        #expect(firstDifference(ids, expected) == "equal")
        // Byte-level vocabularies spell any text; SentencePiece does too through <0xXX> byte fallback.
        #expect(tokenizer.decode(ids, skipSpecialTokens: false) == input)
    }

    @Test("special tokens written in the text are parsed like HF", arguments: ["llama-bpe", "qwen2"])
    func specialTokensParsed(family: String) throws {
        let tokenizer = try Fixtures.gguf(family)
        let expected = try Fixtures.referenceIDs(family, "special-sample")
        let ids = tokenizer.encode("<|im_start|>user\nHi there<|im_end|>\n", addSpecialTokens: false, parseSpecial: true)
        #expect(ids == expected)
    }

    @Test("a tokenizer.json directory (SmolLM2) encodes like HF", arguments: texts)
    func directoryMatchesHF(text: String) throws {
        let tokenizer = try TokenizerLoader.load(directory: Fixtures.smolLM2Directory())
        let input = try Fixtures.text(text)
        let expected = try Fixtures.referenceIDs("smollm2", text)
        let ids = tokenizer.encode(input, addSpecialTokens: false, parseSpecial: false)
        #expect(firstDifference(ids, expected) == "equal")
        #expect(tokenizer.decode(ids, skipSpecialTokens: false) == input)
    }

    /// Variants (see the folders' variants.json): `wordpiece-whitespace`: HF's Whitespace pre-tokenizer;
    /// `unigram-unk`: no byte fallback, so unknown runs are fused into one <unk>; `unigram-accents`: NFKD,
    /// StripAccents and Lowercase normalizers; `unigram-words`: T5's WhitespaceSplit + Metaspace pre-tokenizer.
    static let modelCases: [(model: String, text: String)] =
        ["wordpiece", "wordpiece-whitespace", "unigram", "unigram-unk", "unigram-accents", "unigram-words"]
            .flatMap { model in texts.map { (model, $0) } }

    @Test("WordPiece and Unigram tokenizer.json files encode and decode like HF", arguments: modelCases)
    func otherModelsMatchHF(model: String, text: String) throws {
        let parts = model.split(separator: "-", maxSplits: 1).map(String.init)
        let directory = parts.count == 2
            ? try Fixtures.variant(parts[1], of: parts[0]) : try Fixtures.url("", in: model)
        defer { if parts.count == 2 { try? FileManager.default.removeItem(at: directory) } }
        let tokenizer = try TokenizerLoader.load(directory: directory)
        let input = try Fixtures.text(text)
        let expected = try Fixtures.referenceIDs(model, text)
        #expect(expected.count > 500)
        let ids = tokenizer.encode(input, addSpecialTokens: false, parseSpecial: false)
        #expect(firstDifference(ids, expected) == "equal")
        let decoded = tokenizer.decode(expected, skipSpecialTokens: false)
        #expect(decoded == (try Fixtures.referenceDecoded(model, text)))
    }

    @Test("a T5-style GGUF (llama.cpp UGM) encodes like SentencePiece", arguments: texts)
    func t5GGUFMatchesSentencePiece(text: String) throws {
        let tokenizer = try TokenizerLoader.load(gguf: GGUFFile.open(Fixtures.url("t5.gguf", in: "unigram")))
        let input = try Fixtures.text(text)
        let expected = try Fixtures.referenceIDs("t5", text)
        #expect(expected.count > 500)
        let ids = tokenizer.encode(input, addSpecialTokens: false, parseSpecial: false)
        #expect(firstDifference(ids, expected) == "equal")
        #expect(tokenizer.encode(input, addSpecialTokens: true, parseSpecial: false) == ids + [1])
        if text == "alice29" {
            #expect(tokenizer.decode(ids, skipSpecialTokens: false) == (try Fixtures.referenceDecoded("t5", text)))
        }
    }

    @Test("the SmolLM2 directory reads special tokens, stop ids and chat template")
    func directorySpecials() throws {
        let tokenizer = try TokenizerLoader.load(directory: Fixtures.smolLM2Directory())
        #expect(tokenizer.vocabularySize == 49152)
        #expect(tokenizer.specialTokens.bos == 1)
        #expect(tokenizer.specialTokens.eos == 2)
        #expect(tokenizer.specialTokens.eot == 2)
        #expect(tokenizer.specialTokens.stop == [0, 2])
        #expect(tokenizer.bosToken == "<|im_start|>")
        #expect(tokenizer.chatTemplate?.contains("<|im_start|>") == true)
        let sample = try Fixtures.referenceIDs("smollm2", "special-sample")
        #expect(tokenizer.encode("<|im_start|>user\nHi there<|im_end|>\n", addSpecialTokens: true, parseSpecial: true)
                == sample)
        #expect(tokenizer.decode(sample, skipSpecialTokens: true) == "user\nHi there\n")
    }

    @Test("the default model GGUF and its tokenizer.json give the same ids")
    func modelGGUFMatchesDirectory() throws {
        try #require(FileManager.default.fileExists(atPath: Fixtures.smolLM2GGUF.path),
                     "default model missing: \(Fixtures.smolLM2GGUF.path) (run scripts/fetch-model)")
        let gguf = try TokenizerLoader.load(gguf: GGUFFile.open(Fixtures.smolLM2GGUF))
        let directory = try TokenizerLoader.load(directory: Fixtures.smolLM2Directory())
        for name in Self.texts {
            let input = try Fixtures.text(name)
            let expected = try Fixtures.referenceIDs("smollm2", name)
            let ids = gguf.encode(input, addSpecialTokens: false, parseSpecial: false)
            #expect(firstDifference(ids, expected) == "equal")
        }
        #expect(gguf.specialTokens.stop == directory.specialTokens.stop)
        #expect(gguf.chatTemplate == directory.chatTemplate)
        // SmolLM2's GGUF says add_bos_token = false.
        #expect(gguf.encode("Hi", addSpecialTokens: true, parseSpecial: false) == gguf.encode("Hi"))
    }
}
