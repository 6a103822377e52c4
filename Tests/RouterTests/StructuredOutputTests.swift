import Foundation
@testable import Grammar
@testable import RouterCore
import Testing
import Tokenizers
import Wire

/// The grammar engine: schemas and regexes compiled to byte automata, matched token by token
/// against a vocabulary, with masks that allow exactly the tokens that keep the output valid.
@Suite struct StructuredOutputTests {
    static let bytes = GrammarVocabulary(tokenizer: ByteTokenizer(), endTokens: [ByteTokenizer.eos])

    /// The default model's tokenizer (committed with the tokenizer fixtures).
    static let smolLM2: (any Tokenizer)? = {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("TokenizersTests/Fixtures/smollm2")
        return try? TokenizerLoader.load(directory: directory)
    }()

    static func schema(_ text: String) throws -> StructuredOutputRequest {
        .jsonSchema(name: nil, schema: try JSONValue.parse(text))
    }

    /// Whether the whole text is a complete match of the request's grammar.
    static func matches(_ request: StructuredOutputRequest, _ text: String) throws -> Bool {
        let matcher = GrammarMatcher(automaton: try request.grammar(), vocabulary: bytes)
        return matcher.accept(bytes: Array(text.utf8)) && matcher.isComplete
    }

    /// How many leading bytes of the text the grammar reads before refusing one.
    static func acceptedPrefix(_ request: StructuredOutputRequest, _ text: String) throws -> Int {
        let matcher = GrammarMatcher(automaton: try request.grammar(), vocabulary: bytes)
        for (index, byte) in text.utf8.enumerated() where !matcher.accept(bytes: [byte]) { return index }
        return text.utf8.count
    }

    @Test func jsonObjectModeTakesObjectsOnly() throws {
        for text in [#"{}"#, #"{"a": 1, "b": [true, null, {"c": "d\n\u00e9"}]}"#, " {\n  \"x\": -1.5e3\n}\n"] {
            #expect(try Self.matches(.jsonObject, text), "\(text)")
        }
        for text in [#"[]"#, #""a""#, #"{"a"}"#, #"{"a": 01}"#, #"{"a": 1,}"#, "{\"a\": \"\u{1}\"}"] {
            #expect(try !Self.matches(.jsonObject, text), "\(text)")
        }
    }

    @Test func requiredAndOptionalPropertiesInOrder() throws {
        let request = try Self.schema(#"""
        {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
         "email": {"type": "string", "format": "email"}}, "required": ["name"], "additionalProperties": false}
        """#)
        for text in [#"{"name": "Ann"}"#, #"{"name": "Ann", "age": 30}"#, #"{"name":"Ann","email":"ann@example.org"}"#,
                     #"{"name": "Ann", "age": 30, "email": "a.b@c.io"}"#] {
            #expect(try Self.matches(request, text), "\(text)")
        }
        for text in [#"{}"#, #"{"age": 30}"#, #"{"name": "Ann", "age": 3.5}"#, #"{"name": "Ann", "other": 1}"#,
                     #"{"name": "Ann", "email": "not an address"}"#, #"{"name": "Ann",}"#] {
            #expect(try !Self.matches(request, text), "\(text)")
        }
        // The refusal comes at the first byte no valid document has.
        #expect(try Self.acceptedPrefix(request, #"{"nome": 1}"#) == 3)
    }

    @Test func mapsArraysEnumsConstAndUnions() throws {
        let request = try Self.schema(#"""
        {"type": "object", "properties": {
           "tags": {"type": "array", "items": {"enum": ["a", "b", 3, null]}, "minItems": 1, "maxItems": 2},
           "kind": {"const": "fixed"},
           "scores": {"type": "object", "additionalProperties": {"type": "number"}},
           "value": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "boolean"}]}},
         "required": ["tags", "kind", "scores", "value"]}
        """#)
        #expect(try Self.matches(request, #"{"tags": ["a"], "kind": "fixed", "scores": {}, "value": "abc"}"#))
        #expect(try Self.matches(request, #"{"tags": [3, null], "kind": "fixed", "scores": {"x": 1.25, "y": -2}, "value": true}"#))
        #expect(try !Self.matches(request, #"{"tags": [], "kind": "fixed", "scores": {}, "value": "abc"}"#))
        #expect(try !Self.matches(request, #"{"tags": ["a", "b", "a"], "kind": "fixed", "scores": {}, "value": true}"#))
        #expect(try !Self.matches(request, #"{"tags": ["c"], "kind": "fixed", "scores": {}, "value": true}"#))
        #expect(try !Self.matches(request, #"{"tags": ["a"], "kind": "other", "scores": {}, "value": true}"#))
        #expect(try !Self.matches(request, #"{"tags": ["a"], "kind": "fixed", "scores": {"x": "1"}, "value": true}"#))
        #expect(try !Self.matches(request, #"{"tags": ["a"], "kind": "fixed", "scores": {}, "value": "abcd"}"#))
    }

    @Test func recursiveReferences() throws {
        let request = try Self.schema(#"""
        {"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {
           "label": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
         "required": ["label", "children"]}}}
        """#)
        #expect(try Self.matches(request, #"{"label": "root", "children": [{"label": "a", "children": []}, {"label": "b", "children": [{"label": "c", "children": []}]}]}"#))
        #expect(try !Self.matches(request, #"{"label": "root", "children": [{"label": "a"}]}"#))
        let list = try Self.schema(##"{"type": "array", "items": {"$ref": "#"}}"##)
        #expect(try Self.matches(list, "[[], [[[]]], []]"))
        #expect(try !Self.matches(list, "[[], [1]]"))
    }

    @Test func integerAndNumberBounds() throws {
        let integer = try Self.schema(#"{"type": "integer", "minimum": -12, "maximum": 305}"#)
        for value in -30...400 {
            #expect(try Self.matches(integer, String(value)) == (-12...305).contains(value), "\(value)")
        }
        #expect(try !Self.matches(integer, "007"))
        #expect(try !Self.matches(integer, "-0"))
        let exclusive = try Self.schema(#"{"type": "number", "exclusiveMinimum": 0, "maximum": 1}"#)
        for (text, valid) in [("0", false), ("0.0", false), ("0.5", true), ("0.0001", true), ("1", true), ("1.0", true),
                              ("1.5", false), ("-0.5", false), ("2", false)] {
            #expect(try Self.matches(exclusive, text) == valid, "\(text)")
        }
        let negative = try Self.schema(#"{"type": "number", "minimum": -2, "exclusiveMaximum": -1}"#)
        for (text, valid) in [("-2", true), ("-1.5", true), ("-1", false), ("-2.5", false), ("-1.999", true), ("0", false)] {
            #expect(try Self.matches(negative, text) == valid, "\(text)")
        }
        #expect(throws: GrammarError.unsatisfiable("no integer lies within the bounds", path: "$")) {
            try Self.schema(#"{"type": "integer", "minimum": 5, "exclusiveMaximum": 5}"#).grammar()
        }
    }

    @Test func stringFormatsPatternsAndLengths() throws {
        let formats: [(String, String, Bool)] = [
            ("date", "2024-02-29", true), ("date", "2024-13-01", false),
            ("date-time", "2024-02-29T23:59:00Z", true), ("date-time", "2024-02-29T23:59:00.123+05:30", true),
            ("date-time", "2024-02-29 23:59:00", false),
            ("uuid", "123e4567-e89b-12d3-a456-426614174000", true), ("uuid", "123e4567e89b12d3a456426614174000", false),
            ("email", "first.last@sub.example.com", true), ("email", "@example.com", false),
        ]
        for (format, value, valid) in formats {
            let request = try Self.schema(#"{"type": "string", "format": "\#(format)"}"#)
            #expect(try Self.matches(request, "\"\(value)\"") == valid, "\(format) \(value)")
        }
        let pattern = try Self.schema(#"{"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"}"#)
        #expect(try Self.matches(pattern, #""AB-123""#))
        #expect(try !Self.matches(pattern, #""AB-12""#))
        // Unanchored patterns match anywhere in the string, as JSON Schema defines them.
        let unanchored = try Self.schema(#"{"type": "string", "pattern": "ab+"}"#)
        #expect(try Self.matches(unanchored, #""xxabbby""#))
        #expect(try !Self.matches(unanchored, #""xxa""#))
        let lengths = try Self.schema(#"{"type": "string", "minLength": 2, "maxLength": 3}"#)
        for (text, valid) in [(#""a""#, false), (#""ab""#, true), (#""é\n""#, true), (#""\u00e9bc""#, true), (#""abcd""#, false)] {
            #expect(try Self.matches(lengths, text) == valid, "\(text)")
        }
    }

    @Test func choicesAndRegexes() throws {
        let choice = StructuredOutputRequest.choice(["Paris", "Pa", "London"])
        #expect(try Self.matches(choice, "Pa"))
        #expect(try Self.matches(choice, "Paris"))
        #expect(try !Self.matches(choice, "Par"))
        let regex = StructuredOutputRequest.regex(#"(\+1 )?\(?[0-9]{3}\)?-[0-9]{4}|n/a"#)
        for (text, valid) in [("555-1234", true), ("+1 (555)-1234", true), ("n/a", true), ("55-1234", false), ("n/b", false)] {
            #expect(try Self.matches(regex, text) == valid, "\(text)")
        }
        let classes = StructuredOutputRequest.regex(#"[^\s,]+(, [\w.]+)*\.?"#)
        #expect(try Self.matches(classes, "é_1, b.c, d9."))
        #expect(try !Self.matches(classes, "a,b"))
    }

    @Test func unsupportedKeywordsNameKeywordAndPlace() throws {
        let cases: [(String, GrammarError)] = [
            (#"{"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": true}}}"#,
             .unsupportedKeyword("uniqueItems", path: "$.properties.tags")),
            (#"{"type": "integer", "multipleOf": 5}"#, .unsupportedKeyword("multipleOf", path: "$")),
            (#"{"type": "string", "format": "hostname"}"#, .unsupportedKeyword("format: hostname", path: "$")),
            (##"{"$ref": "#/$defs/missing"}"##, .unresolvedReference("#/$defs/missing", path: "$")),
            (#"{"type": "array", "minItems": 3, "maxItems": 2}"#, .unsatisfiable("maxItems is below minItems", path: "$")),
            (#"{"type": "array", "minItems": "3"}"#, .invalidValue(keyword: "minItems", path: "$", reason: "must be a non-negative integer")),
        ]
        for (text, error) in cases {
            #expect(throws: error, "\(text)") { try Self.schema(text).grammar() }
        }
        #expect(throws: GrammarError.self) { try StructuredOutputRequest.regex("(a)\\1").grammar() }
        #expect(throws: GrammarError.self) { try StructuredOutputRequest.regex("a(?=b)").grammar() }
    }

    @Test func endTokenOnlyWhenCompleteAndFinishedWhenNothingCanFollow() throws {
        let matcher = GrammarMatcher(automaton: try StructuredOutputRequest.choice(["ab", "abc"]).grammar(), vocabulary: Self.bytes)
        #expect(!matcher.allowedTokens().contains(ByteTokenizer.eos))
        #expect(!matcher.accept(ByteTokenizer.eos))
        #expect(matcher.accept(TokenID(UInt8(ascii: "a"))))
        #expect(matcher.accept(TokenID(UInt8(ascii: "b"))))
        let mask = matcher.allowedTokens()
        #expect(mask.contains(ByteTokenizer.eos) && mask.contains(TokenID(UInt8(ascii: "c"))) && mask.count == 2)
        #expect(!matcher.isFinished)
        #expect(matcher.accept(TokenID(UInt8(ascii: "c"))))
        #expect(matcher.isFinished)
        #expect(!matcher.accept(TokenID(UInt8(ascii: "c"))))
    }

    /// With a real vocabulary: a valid document, tokenized as the model would write it, is in the
    /// mask token after token; every masked token is accepted and every other one refused.
    @Test func masksAreExactOnTheDefaultVocabulary() throws {
        let tokenizer = try #require(Self.smolLM2, "the SmolLM2 tokenizer fixture (Tests/TokenizersTests/Fixtures/smollm2) is missing")
        let end = tokenizer.specialTokens.stop
        let vocabulary = GrammarVocabulary(tokenizer: tokenizer, endTokens: end)
        let request = try Self.schema(#"""
        {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0},
         "districts": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"},
           "founded": {"type": "string", "format": "date"}}, "required": ["name"]}}}, "required": ["city", "population"]}
        """#)
        let automaton = try request.grammar()
        let document = #"{"city": "Zürich", "population": 421878, "districts": [{"name": "Altstadt", "founded": "1291-08-01"}]}"#
        let tokens = tokenizer.encode(document, addSpecialTokens: false, parseSpecial: false)
        let matcher = GrammarMatcher(automaton: automaton, vocabulary: vocabulary)
        var random = SystemRandomNumberGenerator()
        for (position, token) in tokens.enumerated() {
            let mask = matcher.allowedTokens()
            #expect(mask.contains(token), "token \(position) (\(tokenizer.pieceBytes(token, skipSpecialTokens: false))) is not in its mask")
            // Soundness on a sample: what the mask allows is accepted, what it refuses is refused.
            for _ in 0..<64 {
                let candidate = TokenID(Int.random(in: 0..<vocabulary.vocabularySize, using: &random))
                #expect(matcher.copy().accept(candidate) == mask.contains(candidate), "token \(candidate) at position \(position)")
            }
            #expect(matcher.accept(token))
        }
        let last = matcher.allowedTokens()
        #expect(end.allSatisfy(last.contains))
        #expect(matcher.accept(end.first!))
        #expect(matcher.isFinished)
    }

    /// Every committed end-to-end schema compiles, and its example document (validated by
    /// `jsonschema` when scripts/fixtures/structured_output_schemas.py wrote it) is in the masks
    /// token after token, as the default model's tokenizer splits it, and ends complete.
    @Test func committedSchemasAcceptTheirExamples() throws {
        let tokenizer = try #require(Self.smolLM2, "the SmolLM2 tokenizer fixture (Tests/TokenizersTests/Fixtures/smollm2) is missing")
        let vocabulary = GrammarVocabulary(tokenizer: tokenizer, endTokens: tokenizer.specialTokens.stop)
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("EndToEnd/fixtures")
        let names = try FileManager.default.contentsOfDirectory(atPath: fixtures.appendingPathComponent("schemas").path)
            .filter { $0.hasSuffix(".json") }.sorted()
        #expect(names.count >= 50, "run python scripts/fixtures/structured_output_schemas.py")
        for name in names {
            let schema = try JSONValue.parse(try Data(contentsOf: fixtures.appendingPathComponent("schemas/\(name)")))
            let example = try String(contentsOf: fixtures.appendingPathComponent("schema-examples/\(name)"), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let matcher = GrammarMatcher(automaton: try StructuredOutputRequest.jsonSchema(name: nil, schema: schema).grammar(),
                                         vocabulary: vocabulary)
            for token in tokenizer.encode(example, addSpecialTokens: false, parseSpecial: false) {
                guard matcher.allowedTokens().contains(token), matcher.accept(token) else {
                    Issue.record("\(name): token \(token) (\(String(decoding: tokenizer.pieceBytes(token, skipSpecialTokens: false), as: UTF8.self))) refused")
                    break
                }
            }
            #expect(matcher.isComplete, "\(name): the example ends before the schema is satisfied")
        }
    }

    /// As the token budget runs out the mask narrows to what still completes the output in
    /// time (end token included); when nothing can, to what gets closest.
    @Test func masksNarrowAsTheBudgetRunsOut() throws {
        let request = try Self.schema(#"{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}"#)
        let matcher = GrammarMatcher(automaton: try request.grammar(), vocabulary: Self.bytes)
        #expect(matcher.accept(bytes: Array(#"{"a": "xyz"#.utf8)))
        let quote = TokenID(UInt8(ascii: "\"")), brace = TokenID(UInt8(ascii: "}"))
        let free = matcher.allowedTokens(remainingTokens: 500)
        #expect(free == matcher.allowedTokens() && free.count > 100)
        // `x"}` and the end still fit: one more ASCII character, not an escape or a multi-byte one.
        let tight = matcher.allowedTokens(remainingTokens: 4)
        #expect(tight.count == 95 && tight.contains(TokenID(UInt8(ascii: "x"))) && !tight.contains(TokenID(UInt8(ascii: "\\"))))
        #expect(!tight.contains(TokenID(0xC3)))
        let closing = matcher.allowedTokens(remainingTokens: 3)
        #expect(closing.count == 1 && closing.contains(quote))
        #expect(matcher.allowedTokens(remainingTokens: 1) == closing)  // nothing fits: the closest
        #expect(matcher.accept(quote))
        let last = matcher.allowedTokens(remainingTokens: 2)
        #expect(last.count == 1 && last.contains(brace))
        #expect(matcher.accept(brace))
        let end = matcher.allowedTokens(remainingTokens: 1)
        #expect(end.count == 1 && end.contains(ByteTokenizer.eos))
        #expect(matcher.allowedTokens(remainingTokens: 3).count > 1)  // whitespace may still come
    }

    /// On a real vocabulary, the budgeted mask is what its definition says, token by token: a
    /// masked token stays when the shortest completion after it still fits before the end token.
    @Test func budgetedMasksMatchTheirDefinition() throws {
        let tokenizer = try #require(Self.smolLM2, "the SmolLM2 tokenizer fixture (Tests/TokenizersTests/Fixtures/smollm2) is missing")
        let vocabulary = GrammarVocabulary(tokenizer: tokenizer, endTokens: tokenizer.specialTokens.stop)
        let request = try Self.schema(#"""
        {"type": "object", "properties": {"title": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
         "rating": {"type": "integer", "minimum": 1, "maximum": 5}}, "required": ["title", "tags", "rating"]}
        """#)
        let document = #"{"title": "A long walk through the hills", "tags": ["travel", "hills"], "rating": 4}"#
        let matcher = GrammarMatcher(automaton: try request.grammar(), vocabulary: vocabulary)
        var random = SystemRandomNumberGenerator()
        for token in tokenizer.encode(document, addSpecialTokens: false, parseSpecial: false) {
            let free = matcher.allowedTokens()
            let needed = matcher.shortestCompletionBytes
            for remaining in [needed + 1, needed + 2, needed + 4, needed + 12] {
                let budgeted = matcher.allowedTokens(remainingTokens: remaining)
                var fits: [TokenID] = [], all: [TokenID] = []
                for _ in 0..<48 {
                    let candidate = TokenID(Int.random(in: 0..<vocabulary.vocabularySize, using: &random))
                    guard free.contains(candidate) else { continue }
                    let after = matcher.copy()
                    #expect(after.accept(candidate))
                    all.append(candidate)
                    if after.shortestCompletionBytes <= remaining - 2 { fits.append(candidate) }
                }
                let sampled = matcher.copy()
                _ = sampled.accept(token)
                if sampled.shortestCompletionBytes <= remaining - 2 { fits.append(token) }
                all.append(token)
                // Where something fits, exactly what fits is kept (else the closest are, unchecked here).
                guard !fits.isEmpty else { continue }
                for candidate in all where !vocabulary.endTokens.contains(candidate) {
                    #expect(budgeted.contains(candidate) == fits.contains(candidate),
                            "token \(candidate) with \(remaining) left (\(needed) needed)")
                }
            }
            #expect(matcher.accept(token))
        }
    }

    /// A UTF-8 character split across tokens is followed byte by byte.
    @Test func charactersSplitAcrossTokens() throws {
        let request = try Self.schema(#"{"type": "string", "maxLength": 1}"#)
        let matcher = GrammarMatcher(automaton: try request.grammar(), vocabulary: Self.bytes)
        let snowman = Array("\"☃\"".utf8)
        for byte in snowman { #expect(matcher.accept(TokenID(byte))) }
        #expect(matcher.isComplete)
        let two = GrammarMatcher(automaton: try request.grammar(), vocabulary: Self.bytes)
        #expect(!two.accept(bytes: Array("\"☃☃".utf8)))
    }

    @Test func hugeUnrollingsAreRefused() throws {
        #expect(throws: GrammarError.tooLarge(path: "$")) { try Self.schema(#"{"type": "string", "maxLength": 100000}"#).grammar() }
    }
}
