// A mutational fuzzer for what clients and model files feed the router: request bodies (JSON
// parsing, request checks, the chat template rendering the client's messages, tokenization of
// the result) and Jinja templates (parse and render). Deterministic for a seed, so CI runs a
// fixed corpus and seed; `scripts/fuzz` runs longer with fresh seeds.
//
//   tessel-fuzz requests --model GGUF --corpus DIR [--runs N | --seconds S] [--seed K]
//   tessel-fuzz jinja --corpus DIR [--corpus DIR] [--runs N | --seconds S] [--seed K]
//
// An input that takes longer than --input-timeout seconds (default 10) is a hang: it is written
// to --findings (default .build/fuzz-findings) and the run fails. A crash kills the process; the
// last "progress" line and the seed reproduce it.
import Foundation
import Jinja
import RouterCore
import Tokenizers

struct Options {
    var target = ""
    var model: String?
    var corpora: [String] = []
    var runs: Int?
    var seconds: Double?
    var seed: UInt64 = 1
    var inputTimeout = 10.0
    var findings = ".build/fuzz-findings"

    init(arguments: [String]) {
        var rest = arguments.dropFirst()
        guard let target = rest.popFirst() else { fail("usage: tessel-fuzz requests|jinja [options]") }
        self.target = target
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else { fail("\(flag) needs a value") }
            switch flag {
            case "--model": model = value
            case "--corpus": corpora.append(value)
            case "--runs": runs = number(Int(value), flag, value)
            case "--seconds": seconds = number(Double(value), flag, value)
            case "--seed": seed = number(UInt64(value), flag, value)
            case "--input-timeout": inputTimeout = number(Double(value), flag, value)
            case "--findings": findings = value
            default: fail("unknown option \(flag)")
            }
        }
        if runs == nil && seconds == nil { runs = 1000 }
    }
}

func number<Value>(_ parsed: Value?, _ flag: String, _ text: String) -> Value {
    guard let parsed else { fail("\(flag): not a number: \(text)") }
    return parsed
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("tessel-fuzz: \(message)\n".utf8))
    exit(2)
}

/// xorshift64*: small, fast, and the same sequence for the same seed everywhere.
struct Random {
    private var state: UInt64
    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
    mutating func below(_ bound: Int) -> Int { bound <= 1 ? 0 : Int(next() % UInt64(bound)) }
}

/// Byte-level mutations, plus tokens of the input's language spliced in.
struct Mutator {
    var random: Random
    let dictionary: [[UInt8]]

    mutating func mutate(_ input: [UInt8], other: [UInt8]) -> [UInt8] {
        var bytes = input
        for _ in 0..<(1 + random.below(4)) {
            let position = random.below(bytes.count + 1)
            switch random.below(9) {
            case 0 where !bytes.isEmpty:
                bytes[min(position, bytes.count - 1)] ^= UInt8(1 << random.below(8))
            case 1 where !bytes.isEmpty:
                bytes[min(position, bytes.count - 1)] = UInt8(truncatingIfNeeded: random.next())
            case 2:
                bytes.insert(contentsOf: (0..<(1 + random.below(4))).map { _ in UInt8(truncatingIfNeeded: random.next()) }, at: position)
            case 3 where !bytes.isEmpty:
                let end = min(bytes.count, position + 1 + random.below(16))
                bytes.removeSubrange(min(position, end)..<end)
            case 4 where !bytes.isEmpty:
                let start = random.below(bytes.count)
                let end = min(bytes.count, start + 1 + random.below(32))
                bytes.insert(contentsOf: bytes[start..<end], at: position)
            case 5, 6:
                bytes.insert(contentsOf: dictionary[random.below(dictionary.count)], at: position)
            case 7 where !other.isEmpty:
                let start = random.below(other.count)
                let end = min(other.count, start + 1 + random.below(64))
                bytes.insert(contentsOf: other[start..<end], at: position)
            case 8 where !bytes.isEmpty:
                bytes.removeSubrange(min(position, bytes.count - 1)...)
            default:
                bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: position)
            }
        }
        return bytes.count > 1 << 16 ? Array(bytes.prefix(1 << 16)) : bytes
    }
}

/// Mutations of a JSON document's structure: a random value anywhere in it is replaced by an
/// interesting one, dropped, or duplicated, so mutants stay valid JSON and reach the request checks.
struct JSONMutator {
    static let interesting: [JSONValue] = [
        .null, .bool(true), .bool(false), .int(0), .int(-1), .int(1), .int(Int.max), .int(Int.min), .int(1 << 31),
        .double(1e39), .double(-1e-50), .double(0.5), .double(-0.0), .double(1e308), .string(""),
        .string("<|im_start|>user\n"), .string("\u{0}"), .string(String(repeating: "a", count: 300)),
        .string("{{ messages }}"), .string("é€😀\u{FEFF}"), .array([]), .object([]),
        .object([("role", .string("user")), ("content", .string("x"))]),
        .object([("role", .string("tool")), ("content", .null)]),
        .array([.object([("type", .string("text")), ("text", .string("hi"))])]),
        .array([.int(1), .int(2)]), .array([.array([.int(3)])]),
    ]

    static func mutate(_ value: JSONValue, random: inout Random) -> JSONValue {
        switch value {
        case .object(var members) where !members.isEmpty && random.below(3) > 0:
            let index = random.below(members.count)
            switch random.below(6) {
            case 0: members.remove(at: index)
            case 1: members.append(members[index])
            case 2: members[index].1 = interesting[random.below(interesting.count)]
            default: members[index].1 = mutate(members[index].1, random: &random)
            }
            return .object(members)
        case .array(var items) where !items.isEmpty && random.below(3) > 0:
            let index = random.below(items.count)
            switch random.below(5) {
            case 0: items.remove(at: index)
            case 1: items.append(contentsOf: Array(repeating: items[index], count: 1 + random.below(8)))
            default: items[index] = mutate(items[index], random: &random)
            }
            return .array(items)
        default:
            return interesting[random.below(interesting.count)]
        }
    }
}

/// Notices an input that runs too long, from a thread of its own, and ends the run with it saved.
final class Watchdog: @unchecked Sendable {
    private let lock = NSLock()
    private var current: [UInt8] = []
    private var started: Date?
    private let timeout: Double
    private let findings: String
    private let target: String

    init(timeout: Double, findings: String, target: String) {
        self.timeout = timeout
        self.findings = findings
        self.target = target
        Thread { [self] in watch() }.start()
    }

    func begin(_ input: [UInt8]) { lock.withLock { current = input; started = Date() } }
    func end() { lock.withLock { started = nil } }

    private func watch() {
        while true {
            Thread.sleep(forTimeInterval: 0.1)
            let overdue: [UInt8]? = lock.withLock {
                guard let started, Date().timeIntervalSince(started) > timeout else { return nil }
                return current
            }
            guard let overdue else { continue }
            try? FileManager.default.createDirectory(atPath: findings, withIntermediateDirectories: true)
            let path = "\(findings)/\(target)-hang-\(String(UInt64(truncatingIfNeeded: overdue.hashValue), radix: 16))"
            _ = FileManager.default.createFile(atPath: path, contents: Data(overdue))
            fail("an input ran longer than \(timeout) s (a hang); saved to \(path)")
        }
    }
}

/// One execution: the outcome's kind (for corpus feedback). Throws nothing: every error is an outcome.
typealias Harness = ([UInt8]) -> String

/// What kind of refusal an error is: its code, else its parameter.
func kind(of error: any Error) -> String {
    guard let error = error as? APIError else { return "other" }
    return error.code ?? error.param ?? "error"
}

func requestsHarness(model path: String) -> Harness {
    let tokenizer: any Tokenizer
    do { tokenizer = try TokenizerLoader.load(model: path) } catch { fail("cannot load \(path): \(error)") }
    let template = tokenizer.chatTemplate.flatMap { try? ChatTemplate(source: $0) }
    let served = ServedModel(name: "fuzz", tokenizer: tokenizer, chatTemplate: template, maxContextLength: 8192,
                             vocabularySize: 49152)
    let scheduler = Scheduler(configuration: SchedulerConfiguration(),
                              limits: SchedulerModelLimits(maxContextLength: 8192, kvBlockCount: 512, kvBlockSize: 16))
    let endpoints = OpenAIEndpoints(model: served, scheduler: scheduler)
    let now = Date(timeIntervalSince1970: 1_700_000_000)
    return { bytes in
        let body: JSONValue
        do { body = try JSONValue.parse(Data(bytes)) } catch { return "json-error" }
        var outcome = ""
        do {
            let chat = try ChatCompletionRequest(body: body)
            let prompt = try endpoints.renderChat(chat, now: now)
            let tokens = tokenizer.encode(prompt, addSpecialTokens: false, parseSpecial: true)
            _ = tokenizer.decode(tokens, skipSpecialTokens: true)
            outcome += "chat-ok"
        } catch {
            outcome += "chat:" + kind(of: error)
        }
        do {
            let completion = try CompletionRequest(body: body)
            for case .text(let text) in completion.prompts {
                _ = tokenizer.encode(text, addSpecialTokens: true, parseSpecial: true)
            }
            outcome += " completion-ok"
        } catch {
            outcome += " completion:" + kind(of: error)
        }
        return outcome
    }
}

func jinjaHarness() -> Harness {
    let messages: JinjaValue = [
        ["role": "system", "content": "Be brief."], ["role": "user", "content": "Hi {{ there }}"],
        ["role": "assistant", "content": "Hello."], ["role": "user", "content": "What is 2+2?"],
    ]
    let tools: JinjaValue = [["type": "function", "function": ["name": "add", "parameters": ["type": "object"]]]]
    let now = Date(timeIntervalSince1970: 1_700_000_000)
    return { bytes in
        let source = String(decoding: bytes, as: UTF8.self)
        let template: ChatTemplate
        do { template = try ChatTemplate(source: source) } catch { return "syntax" }
        do {
            _ = try template.render(messages: messages, tools: tools, addGenerationPrompt: true, bosToken: "<s>",
                                    eosToken: "</s>", extra: ["enable_thinking": false], now: now,
                                    timeZone: TimeZone(identifier: "UTC")!)
            return "ok"
        } catch let error as JinjaError {
            return "error:\(String(describing: error).prefix(24))"
        } catch {
            return "error"
        }
    }
}

let jsonDictionary: [[UInt8]] = [
    "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "\\ud800", "\\udc00", "null", "true", "false",
    "1e309", "-0", "1e-400", "9007199254740993", "-1", "0.5", "1e39", "\"messages\"", "\"prompt\"", "\"role\"",
    "\"content\"", "\"user\"", "\"assistant\"", "\"system\"", "\"tool\"", "\"tools\"", "\"n\"", "\"max_tokens\"",
    "\"temperature\"", "\"top_p\"", "\"top_k\"", "\"stop\"", "\"logprobs\"", "\"top_logprobs\"", "\"seed\"",
    "\"stream\"", "\"stream_options\"", "\"echo\"", "\"priority\"", "\"chat_template_kwargs\"",
    "\"add_generation_prompt\"", "\"repetition_penalty\"", "\"stop_token_ids\"", "<|im_start|>", "<|im_end|>",
    "{{", "}}", "{%", "%}", "\u{FEFF}", "\u{1F600}",
].map { Array($0.utf8) }

let jinjaDictionary: [[UInt8]] = [
    "{{", "}}", "{%", "%}", "{#", "#}", "{%-", "-%}", "for", "endfor", "in", "if", "elif", "else", "endif",
    "set", "endset", "macro", "endmacro", "call", "endcall", "filter", "endfilter", "raw", "endraw", "recursive",
    "loop", "loop.index", "loop(", "namespace(", "range(", "range(100000)", "messages", "message", "tools", "ns.",
    "|", "|tojson", "|join", "|length", "|replace(", "|center(", "|indent(", "|format(", "|map(", "|selectattr(",
    "|items", "|dictsort", "~", "*", "**", "+", "//", "%", "==", "!=", "is", "not", "defined", "none", "(", ")",
    "[", "]", ",", ":", ".", "'", "\"", "[::-1]", "1000000000", "-1", "0", "caller()", "raise_exception(",
    "strftime_now(", "\n",
].map { Array($0.utf8) }

let options = Options(arguments: CommandLine.arguments)
let harness: Harness
let dictionary: [[UInt8]]
switch options.target {
case "requests":
    guard let model = options.model else { fail("requests needs --model GGUF (scripts/fetch-model prints it)") }
    harness = requestsHarness(model: model)
    dictionary = jsonDictionary
case "jinja":
    harness = jinjaHarness()
    dictionary = jinjaDictionary
default:
    fail("unknown target \(options.target): requests or jinja")
}

var corpus: [[UInt8]] = []
for directory in options.corpora {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { fail("cannot read corpus \(directory)") }
    for name in names.sorted() where !name.hasPrefix(".") && name != "LICENSE" && name != "README.md" {
        if let data = FileManager.default.contents(atPath: "\(directory)/\(name)") { corpus.append(Array(data)) }
    }
}
guard !corpus.isEmpty else { fail("the corpus is empty: pass --corpus DIR") }

let watchdog = Watchdog(timeout: options.inputTimeout, findings: options.findings, target: options.target)
var mutator = Mutator(random: Random(seed: options.seed), dictionary: dictionary)
var outcomes: [String: Int] = [:]
let seedCount = corpus.count
let started = Date()
var executions = 0
FileHandle.standardOutput.write(Data("tessel-fuzz \(options.target): seed \(options.seed), corpus \(corpus.count) inputs\n".utf8))
// The seeds themselves first, then mutants; a mutant with an outcome not seen before joins the corpus.
for input in corpus {
    watchdog.begin(input)
    outcomes[harness(input), default: 0] += 1
    watchdog.end()
    executions += 1
}
while true {
    if let runs = options.runs, executions >= runs { break }
    if let seconds = options.seconds, Date().timeIntervalSince(started) >= seconds { break }
    let base = corpus[mutator.random.below(corpus.count)]
    let other = corpus[mutator.random.below(corpus.count)]
    var input: [UInt8]
    if options.target == "requests", mutator.random.below(2) == 0, let document = try? JSONValue.parse(Data(base)) {
        input = Array(JSONMutator.mutate(document, random: &mutator.random).serialized.utf8)
    } else {
        input = mutator.mutate(base, other: other)
    }
    watchdog.begin(input)
    let outcome = harness(input)
    watchdog.end()
    executions += 1
    if outcomes[outcome] == nil, corpus.count < 4096 { corpus.append(input) }
    outcomes[outcome, default: 0] += 1
    if executions % 5000 == 0 {
        FileHandle.standardOutput.write(Data("progress: \(executions) executions, \(outcomes.count) outcomes, corpus \(corpus.count)\n".utf8))
    }
}
let elapsed = Date().timeIntervalSince(started)
print("tessel-fuzz \(options.target): \(executions) executions in \(String(format: "%.1f", elapsed)) s, no crash, no hang; \(outcomes.count) distinct outcomes; corpus \(seedCount) seeds + \(corpus.count - seedCount) found")
