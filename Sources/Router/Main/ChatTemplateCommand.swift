import ArgumentParser
import Foundation
import Jinja
import Tokenizers

/// `router chat-template`: renders a conversation with the model's chat template (or another
/// one) exactly as the server does, to check what the model will see.
struct ChatTemplateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat-template",
        abstract: "Print the prompt a chat template renders for a conversation.")

    /// The model whose template and BOS/EOS tokens are used.
    @OptionGroup var model: TokenizerModelOption

    @Option(name: .long, help: "A Jinja template file to use instead of the model's own.")
    var template: String?

    @Option(name: .long, help: "A JSON file holding the messages array (OpenAI chat format).")
    var messages: String

    @Option(name: .long, help: "A JSON file holding the tools array, passed to the template as `tools`.")
    var tools: String?

    @Flag(name: .long, help: "End the prompt with the assistant turn's opening, as the server does.")
    var addGenerationPrompt = false

    func run() async throws {
        let tokenizer = try model.loadTokenizer()
        let source: String
        if let template {
            source = try String(contentsOfFile: template, encoding: .utf8)
        } else if let own = tokenizer.chatTemplate {
            source = own
        } else {
            throw ValidationError("\(model.model) has no chat template; pass --template FILE")
        }
        let chat = try ChatTemplate(source: source)
        let conversation = try Self.readJSON(messages, option: "--messages")
        let toolList = try tools.map { try Self.readJSON($0, option: "--tools") }
        let prompt = try chat.render(
            messages: conversation, tools: toolList, addGenerationPrompt: addGenerationPrompt,
            bosToken: tokenizer.bosToken ?? "", eosToken: tokenizer.eosToken ?? "")
        FileHandle.standardOutput.write(Data(prompt.utf8))
    }

    private static func readJSON(_ path: String, option: String) throws -> JinjaValue {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ValidationError("\(option) \(path): cannot read: \(error.localizedDescription)")
        }
        do {
            return try JinjaValue.parseJSON(data)
        } catch {
            throw ValidationError("\(option) \(path): \(error)")
        }
    }
}
