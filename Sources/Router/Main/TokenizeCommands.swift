import ArgumentParser
import Foundation
import RouterCore
import Tokenizers

/// The `--model` option of the tokenizer side commands.
struct TokenizerModelOption: ParsableArguments {
    @Option(name: .long, help: "A .gguf file, a Hugging Face model directory (with tokenizer.json), or org/name from the Hugging Face cache.")
    var model: String

    func loadTokenizer() throws -> any Tokenizer {
        try TokenizerLoader.load(model: model)
    }
}

/// `router tokenize`: text on stdin -> token ids on stdout.
struct Tokenize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the token ids of the UTF-8 text read from standard input.",
        discussion: """
            The ids are printed on one line, separated by spaces. Without --special the text is tokenized \
            as plain text: no BOS/EOS is added and special tokens written in it (<|im_start|>) are not \
            recognised. With --special, BOS/EOS are added as the model asks and special tokens are parsed.
            """)

    @OptionGroup var model: TokenizerModelOption

    @Flag(name: .long, help: "Add BOS/EOS as the model does and parse special tokens written in the text.")
    var special = false

    func run() async throws {
        let tokenizer = try model.loadTokenizer()
        let input = FileHandle.standardInput.readDataToEndOfFile()
        guard let text = String(data: input, encoding: .utf8) else {
            throw ValidationError("standard input is not valid UTF-8")
        }
        let ids = tokenizer.encode(text, addSpecialTokens: special, parseSpecial: special)
        print(ids.map(String.init).joined(separator: " "))
    }
}

/// `router detokenize`: token ids on stdin -> text on stdout.
struct Detokenize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the text of the token ids (whitespace-separated integers) read from standard input.")

    @OptionGroup var model: TokenizerModelOption

    @Flag(name: .long, help: "Leave out special tokens (BOS, EOS, <|im_end|>, …) from the text.")
    var skipSpecial = false

    func run() async throws {
        let tokenizer = try model.loadTokenizer()
        let input = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        var ids: [TokenID] = []
        for word in input.split(whereSeparator: { $0.isWhitespace }) {
            guard let id = TokenID(word), id >= 0, Int(id) < tokenizer.vocabularySize else {
                throw ValidationError("'\(word)' is not a token id of this model (0..<\(tokenizer.vocabularySize))")
            }
            ids.append(id)
        }
        FileHandle.standardOutput.write(Data(tokenizer.decode(ids, skipSpecialTokens: skipSpecial).utf8))
    }
}

/// `router bench-tokenizer`: single-thread encoding throughput, for scripts/bench/tokenizer.sh.
struct BenchTokenizer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-tokenizer",
        abstract: "Single-thread encoding throughput (MB/s) of a model's tokenizer on a UTF-8 text file.")

    @OptionGroup var model: TokenizerModelOption

    @Option(name: .long, help: "The text file to encode.")
    var text: String

    @Option(name: .long, help: "Timed encodes after the first (cold) one; the fastest is reported.")
    var repetitions = 5

    func run() async throws {
        let tokenizer = try model.loadTokenizer()
        let input = try String(contentsOfFile: text, encoding: .utf8)
        print(TokenizerBenchmark.run(tokenizer: tokenizer, text: input, repetitions: repetitions))
    }
}

/// `router bench-grammar`: the per-token cost of structured-output masks, for scripts/bench/structured-output.sh.
struct BenchGrammar: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-grammar",
        abstract: "Microseconds per constrained token (p50/p99) of structured-output masks, walking a document valid under a JSON schema.")

    @OptionGroup var model: TokenizerModelOption

    @Option(name: .long, help: "The JSON schema file.")
    var schema: String

    @Option(name: .long, help: "A JSON document valid under the schema, walked token by token.")
    var document: String

    @Option(name: .long, help: "Walks with the grammar's tables filled (as for a repeated schema).")
    var repetitions = 5

    func run() async throws {
        let tokenizer = try model.loadTokenizer()
        let schemaValue = try JSONValue.parse(try Data(contentsOf: URL(fileURLWithPath: schema)))
        let text = try String(contentsOfFile: document, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let ends = ServedModel.stopTokenIDs(of: tokenizer)
        guard !ends.isEmpty else { throw ValidationError("the tokenizer has no end-of-sequence token") }
        print(try GrammarBenchmark.run(request: .jsonSchema(name: nil, schema: schemaValue), document: text,
                                       tokenizer: tokenizer, endTokens: ends, repetitions: repetitions))
    }
}
