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
    static let families = ["llama-bpe", "qwen2", "gpt-2", "llama-spm", "starcoder", "deepseek-llm"]

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

    @Test("decoding the expected ids gives back the input", arguments: families)
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
