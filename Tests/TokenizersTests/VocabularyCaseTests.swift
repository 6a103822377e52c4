import Foundation
import ModelFormats
import Testing
@testable import Tokenizers

/// Fixture access shared by the test files.
enum Fixtures {
    static func url(_ name: String, in folder: String = "vocab") throws -> URL {
        let base = try #require(Bundle.module.resourceURL, "test bundle has no resources")
        let url = base.appendingPathComponent("Fixtures").appendingPathComponent(folder).appendingPathComponent(name)
        try #require(FileManager.default.fileExists(atPath: url.path), "missing fixture \(url.path)")
        return url
    }

    static func gguf(_ family: String) throws -> any Tokenizer {
        try TokenizerLoader.load(gguf: GGUFFile.open(url("ggml-vocab-\(family).gguf")))
    }

    /// The llama.cpp test cases: inputs separated by `\n__ggml_vocab_test__\n`, one line of ids per input.
    static func vocabularyCases(_ family: String) throws -> [(text: String, ids: [TokenID])] {
        let input = try String(contentsOf: url("ggml-vocab-\(family).gguf.inp"), encoding: .utf8)
        let output = try String(contentsOf: url("ggml-vocab-\(family).gguf.out"), encoding: .utf8)
        var texts = input.components(separatedBy: "\n__ggml_vocab_test__\n")
        if texts.last?.isEmpty == true || texts.last == "\n" { texts.removeLast() }
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        try #require(lines.count >= texts.count, "\(family): \(texts.count) inputs but \(lines.count) output lines")
        return texts.enumerated().map { index, text in
            (text, lines[index].split(separator: " ").map { TokenID($0)! })
        }
    }
}

@Suite("llama.cpp vocabulary test cases")
struct VocabularyCaseTests {
    static let families = [
        "llama-bpe", "qwen2", "qwen35", "gpt-2", "llama-spm", "phi-3", "gemma-4", "starcoder", "refact", "command-r",
        "deepseek-llm", "deepseek-coder", "falcon", "mpt", "bert-bge",
    ]
    /// BERT lowercases and strips accents, so its ids do not spell the input back.
    static let losslessFamilies = families.filter { $0 != "bert-bge" }

    @Test("every llama.cpp case encodes to the expected ids", arguments: families)
    func encodesLikeReference(family: String) throws {
        let tokenizer = try Fixtures.gguf(family)
        let cases = try Fixtures.vocabularyCases(family)
        #expect(cases.count > 30)
        for (text, expected) in cases {
            let ids = tokenizer.encode(text, addSpecialTokens: false, parseSpecial: false)
            #expect(ids == expected, "\(family): \(text.debugDescription)")
        }
    }

    @Test("decoding the expected ids gives back the input", arguments: losslessFamilies)
    func decodesBack(family: String) throws {
        let tokenizer = try Fixtures.gguf(family)
        var checked = 0
        for (text, expected) in try Fixtures.vocabularyCases(family) {
            let decoded = tokenizer.decode(expected, skipSpecialTokens: false)
            #expect(decoded == text, "\(family): \(text.debugDescription)")
            checked += 1
        }
        #expect(checked > 25)
    }
}

@Suite("WordPiece")
struct WordPieceTests {
    @Test("BERT GGUF (llama.cpp WPM): [CLS] and [SEP] with special tokens, words decode lowercased")
    func bertGGUF() throws {
        let tokenizer = try Fixtures.gguf("bert-bge")
        let ids = tokenizer.encode("Hello, Wörld!", addSpecialTokens: true, parseSpecial: false)
        #expect(ids.first == 101 && ids.last == 102)
        #expect(ids.dropFirst().dropLast().map { tokenizer.token(for: $0)! } == ["▁hello", "▁,", "▁world", "▁!"])
        #expect(tokenizer.decode(ids, skipSpecialTokens: true) == "hello , world !")
        #expect(tokenizer.encode("unaffable") == [14477, 20961, 3468])
        // A word with a part no piece covers is one unknown token.
        #expect(tokenizer.encode("a🦙b c") == [100, tokenizer.id(for: "▁c")!])
    }

    @Test("BERT tokenizer.json: [CLS] text [SEP] from the template, ## pieces joined when decoding")
    func bertDirectory() throws {
        let tokenizer = try TokenizerLoader.load(directory: Fixtures.url("", in: "wordpiece"))
        let ids = tokenizer.encode("Alice's  sister, ALICE!", addSpecialTokens: true, parseSpecial: false)
        #expect(ids.first == tokenizer.id(for: "[CLS]") && ids.last == tokenizer.id(for: "[SEP]"))
        // HF's cleanup joins " ," and " !" but not a lone apostrophe token.
        #expect(tokenizer.decode(ids, skipSpecialTokens: true) == "alice ' s sister, alice!")
        #expect(tokenizer.specialTokens.unknown == tokenizer.id(for: "[UNK]"))
        #expect(tokenizer.encode(String(repeating: "a", count: 101)) == [tokenizer.id(for: "[UNK]")!])
    }
}
